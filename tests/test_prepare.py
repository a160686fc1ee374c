"""Video I/O and `prepare` on real media: GOP-12 re-encoding, broken files, resuming, the cache layout.

    python -m pytest tests/test_prepare.py -q     # ~25 s (one local Ray with 2 CPUs)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from csvr.data import video
from csvr.data.layouts import read_dataset
from csvr.data.sources import cache_dir_for, ensure_prepared
from csvr.prepare import MANIFEST_COLUMNS, main, prepare
from tests.media import sample, write_broken, write_clip
from tests.test_layouts import make_ucf101

GOOD = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01", "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01",
        "HandstandPushups/v_HandStandPushups_g01_c01"]
BROKEN = {"HandstandPushups/v_HandStandPushups_g02_c01": "truncated",
          "HandstandPushups/v_HandStandPushups_g03_c01": "empty",
          "ApplyEyeMakeup/v_ApplyEyeMakeup_g03_c01": "text"}


@pytest.fixture(scope="module")
def ucf_tree(tmp_path_factory) -> Path:
    """UCF101 layout: 3 real 30-frame 88x72 clips cut from carphone + 3 broken .avi files."""
    root = make_ucf101(tmp_path_factory.mktemp("data") / "UCF101")
    for i, key in enumerate(GOOD):
        write_clip(root / "UCF-101" / f"{key}.avi", frames=30, size=(88, 72), start=40 * i)
    for key, kind in BROKEN.items():
        write_broken(root / "UCF-101" / f"{key}.avi", kind)
    return root


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


# ---------------------------------------------------------------------------------------------
# video I/O


def test_keyframes_agree_with_pyav_on_bikes():
    path = sample("bikes.mp4")
    assert video.keyframe_indices(path).tolist() == [0, 30, 76, 137, 187, 242]
    assert video.keyframe_indices_pyav(path).tolist() == [0, 30, 76, 137, 187, 242]


def test_reencode_has_gop_12(tmp_path):
    dst = tmp_path / "bikes.mp4"
    frames = video.reencode(sample("bikes.mp4"), dst, short_side=64)  # 640x272 -> 150x64
    assert frames == 250
    assert video.probe(dst) == {"frames": 250, "fps": pytest.approx(25.0), "width": 150, "height": 64}
    expected = list(range(0, 250, 12))
    assert video.keyframe_indices(dst).tolist() == expected
    assert video.keyframe_indices_pyav(dst).tolist() == expected


@pytest.mark.parametrize("kind, needle", [("truncated", "moov atom not found"), ("empty", "empty file"),
                                          ("text", "Invalid data")])
def test_probe_reports_the_decoder_message(tmp_path, kind, needle):
    path = write_broken(tmp_path / "broken.avi", kind)
    with pytest.raises(video.VideoError, match=needle) as err:
        video.probe(path)
    assert err.value.path == str(path)


# ---------------------------------------------------------------------------------------------
# prepare


def test_address_auto_without_cluster_says_what_to_do(ucf_tree, tmp_path, capsys, monkeypatch):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray session is already running in this process")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    code = main(["--data", f"ucf101:{ucf_tree}", "--cache", str(tmp_path), "--address", "auto"])
    assert code == 2 and "ray start --head" in capsys.readouterr().err


def _check_cache(cache: Path, df: pd.DataFrame) -> None:
    assert list(df.columns) == MANIFEST_COLUMNS
    stored = pd.read_parquet(cache / "manifest.parquet")
    assert stored.key.tolist() == df.key.tolist()
    for key in GOOD:
        row = stored.set_index("key").loc[key]
        assert (row.frames, row.width, row.height) == (30, 78, 64) and list(row.iframes) == [0, 12, 24]
        poses = np.load(cache / "poses" / f"{key}.npz")
        assert poses["keypoints"].shape == (30, 33, 3) and poses["detected"].shape == (30,)
        assert poses["iframes"].tolist() == [0, 12, 24] and row.pose_detect_rate >= 0.9
        assert video.keyframe_indices(cache / "videos" / f"{key}.mp4").tolist() == [0, 12, 24]
    classes = json.loads((cache / "classes.json").read_text())
    assert [c["name"] for c in classes] == ["ApplyEyeMakeup", "HandstandPushups"]


def test_prepare_marks_broken_files_and_resumes(ucf_tree, tmp_path, ray_session):
    index = read_dataset(f"ucf101:{ucf_tree}")
    cache = tmp_path / "cache"
    df = prepare(index, cache, size=64)
    status = dict(zip(df.key, df.status))
    assert {k: status[k] for k in GOOD} == dict.fromkeys(GOOD, "ok")
    assert {k: status[k] for k in BROKEN} == dict.fromkeys(BROKEN, "error")
    assert df[df.status == "error"].error.str.len().min() > 10
    _check_cache(cache, df)
    assert not list(cache.rglob(".*tmp*")), "temporary files left behind"

    # an interrupted run: one video's outputs are gone; only it (and the broken files) are redone
    (cache / "videos" / f"{GOOD[1]}.mp4").unlink()
    kept = {k: (cache / "videos" / f"{k}.mp4").stat().st_mtime_ns for k in (GOOD[0], GOOD[2])}
    again = prepare(index, cache, size=64)
    assert sorted(again.attrs["processed"]) == sorted([GOOD[1], *BROKEN])
    assert kept == {k: (cache / "videos" / f"{k}.mp4").stat().st_mtime_ns for k in kept}
    assert again.drop(columns="error").equals(df.drop(columns="error"))


def test_ensure_prepared_prepares_once(ucf_tree, tmp_path, monkeypatch):
    spec = f"ucf101:{ucf_tree}"
    cache = ensure_prepared(spec, cache_size=64, cache_root=str(tmp_path), workers=0)  # in process
    assert cache == cache_dir_for(spec, 64, str(tmp_path)) and (cache / "manifest.parquet").is_file()

    def fail(*args, **kwargs):
        raise AssertionError("prepare ran again on a complete cache")

    monkeypatch.setattr("csvr.prepare.prepare", fail)
    assert ensure_prepared(spec, cache_size=64, cache_root=str(tmp_path), workers=0) == cache


def test_cache_dir_names(tmp_path, monkeypatch):
    monkeypatch.setenv("CSVR_HOME", str(tmp_path))
    a = cache_dir_for(f"ucf101:{tmp_path}/a", 128)
    assert a.parent == tmp_path / "cache" and a.name.startswith("ucf101-") and a.name.endswith("-128")
    assert a != cache_dir_for(f"ucf101:{tmp_path}/b", 128) != cache_dir_for(f"ucf101:{tmp_path}/a", 64)
    assert cache_dir_for("synthetic", 64, "/x").parent == Path("/x")
