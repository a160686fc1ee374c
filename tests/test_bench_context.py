"""`python -m csvr.bench context`: the held-out shuffles by hand, and the command on the embedded dataset."""
import json

import pytest
import torch

from csvr.bench.__main__ import main
from csvr.bench.context import held_out_shuffles, matching

torch.set_num_threads(1)


def test_held_out_shuffles_hold_every_clip_once_per_shuffle():
    clips = {"clip": torch.arange(10.0)[:, None], "iframes": torch.arange(10.0)[:, None, None],
             "iframe_mask": torch.ones(10, 1, dtype=torch.bool)}
    batches = held_out_shuffles(clips, batch_size=4, shuffles=3)
    assert [len(b["clip"]) for b in batches] == [4, 4, 2] * 3
    for s in range(3):
        seen = torch.cat([b["clip"][:, 0] for b in batches[3 * s:3 * s + 3]])
        assert sorted(seen.tolist()) == list(range(10))
        assert torch.equal(torch.cat([b["iframes"][:, 0, 0] for b in batches[3 * s:3 * s + 3]]), seen)  # rows stay
    assert batches[0]["clip"].tolist() != batches[3]["clip"].tolist()  # the shuffles differ


def test_matching_counts_own_iframes_in_batches_and_among_all():
    x = torch.eye(4)
    every = {"x": x, "z": x[:, None], "iframe_mask": torch.ones(4, 1, dtype=torch.bool)}
    swapped = {"x": x, "z": x[[1, 0, 2, 3], None], "iframe_mask": every["iframe_mask"]}
    assert matching(lambda b: (b["x"], b["z"]), [every, swapped], every) == (0.75, 1.0)


@pytest.mark.benchmark  # ~70 s of real context training and k-NN: `pytest -m benchmark`, off the 15-min default run
def test_bench_context_on_the_embedded_dataset(tmp_path):
    """Two seeds of one context epoch: a row per seed and the mean; the raw-pixel reference matches every clip."""
    report = main(["context", "--seeds", "2", "--set", "train.context_epochs=1", "--json", str(tmp_path / "c.json")])
    seeds, mean = report.rows[:-1], report.rows[-1]
    assert [r["seed"] for r in seeds] == [0, 1] and mean["seed"] == "mean (n=2)"
    for r in seeds:
        assert 0 <= r["context_acc"] <= 1 and 0 <= r["all_way"] <= 1
        assert abs(r["knn_gain"] - (r["knn_context"] - r["knn_random"])) < 1e-9
    assert report.numbers["pixels"] == 1.0 and 0.1 < report.numbers["chance"] < 0.2
    assert json.loads((tmp_path / "c.json").read_text())["settings"]["context_epochs"] == 1
