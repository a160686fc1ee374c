"""`python -m csvr.bench video`: the resolution floors by hand, and the command on the embedded dataset."""
import pytest
import torch

from csvr import losses as L
from csvr.bench.__main__ import main
from csvr.bench.video import resolution_floors

torch.set_num_threads(1)


def test_resolution_floors_by_hand():
    """Frames that are one colour each are decoded exactly at every grid, per frame, while one mean frame per clip
    misses their change over time by exactly the frames' variance; a clip that does not change over time has the
    same floor per frame and with its mean frame; the predict row compares the future with the clip's mean."""
    torch.manual_seed(0)
    flat = torch.randn(2, 3, 8, 1, 1).expand(2, 3, 8, 16, 16).contiguous()  # one colour per frame
    future = torch.randn(2, 3, 8, 1, 1).expand(2, 3, 8, 16, 16).contiguous()
    rows = {r["decoder"]: r for r in resolution_floors(flat, future, grids=(1, 4))}
    assert set(rows) == {"1x1 cells (16 px)", "4x4 cells (4 px)"}
    mean = flat.mean(2, keepdim=True)
    for row in rows.values():
        assert row["reconstruct"] < 1e-10
        assert abs(row["clip mean frame"] - float(L.pixel_l2(mean.expand_as(flat), flat))) < 1e-5
        assert abs(row["predict (from the clip)"] - float(L.pixel_l2(mean.expand_as(future), future))) < 1e-5
    still = torch.randn(2, 3, 1, 16, 16).expand(2, 3, 8, 16, 16).contiguous()  # no change over time
    for row in resolution_floors(still, future, grids=(1, 2, 4)):
        assert abs(row["reconstruct"] - row["clip mean frame"]) < 1e-5
    coarse, fine = resolution_floors(still, future, grids=(2, 8))
    assert fine["reconstruct"] < coarse["reconstruct"]


@pytest.mark.benchmark  # ~60 s of real video-branch training: `pytest -m benchmark`, off the 15-min default run
def test_bench_video_floors_on_the_embedded_dataset(tmp_path):
    report = main(["video", "--preset", "tiny", "--json", str(tmp_path / "video.json")])
    floors = [r for r in report.rows if "cells" in r["decoder"]]
    per_frame = [r["reconstruct"] for r in floors]
    assert per_frame[1:] == sorted(per_frame[1:], reverse=True)  # finer cells, lower floor (from 2 x 2 on)
    unconditional = next(r for r in report.rows if r["decoder"].startswith("unconditional"))
    zeros = next(r for r in report.rows if r["decoder"] == "zeros")
    assert report.numbers["mean_frame"] < unconditional["reconstruct"] < zeros["reconstruct"]
    assert (tmp_path / "video.json").exists()


def test_bench_video_needs_the_configs_own_branch_stages(tmp_path, monkeypatch):
    """--stages is read by this config's stage keys: a store without them is refused, naming the missing file,
    before the dataset is prepared (a minute on the embedded dataset, longer on a real one)."""
    import csvr.data.loaders

    def prepared(*args, **kwargs):
        raise AssertionError("the dataset was prepared before --stages was checked")

    monkeypatch.setattr(csvr.data.loaders, "prepared", prepared)
    with pytest.raises(FileNotFoundError, match=r"pose/[0-9a-f]{16}/model.pt is missing"):
        main(["video", "--preset", "tiny", "--steps", "1", "--stages", str(tmp_path)])
