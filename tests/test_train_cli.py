"""End to end: `python -m csvr.train --preset tiny` on the embedded dataset learns (real videos, real
MediaPipe poses, the whole pipeline), and its artifacts are written."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest


# The tiny preset's pipeline with shortened branch pretraining (the full tiny run takes ~5 min on 2 idle cores;
# tests/test_learning.py shows the branches learning on longer runs).
SHORT = ["--set", "train.pose_epochs=2", "train.context_epochs=2", "train.video_epochs=1", "train.joint_epochs=1",
         "train.checkpoint_epochs=1", "eval.probe_every=1", "finetune.epochs=2"]  # finetune: the IS classifier


@pytest.mark.slow
def test_tiny_pipeline_end_to_end_with_baselines_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "csvr.train", "--preset", "tiny", "--out", str(out), *SHORT]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    stages = {e["stage"]: e["status"] for e in lines if e["kind"] == "stage"}
    assert {"pose", "context", "video", "joint"} <= set(stages) and "finetune/synthetic" not in stages  # k-NN
    probes = [e["probe/synthetic/knn_top1"] for e in lines if e["kind"] == "epoch" and "probe/synthetic/knn_top1" in e]
    assert len(probes) == 2 + 2 + 1 + 1 and all(0.0 <= p <= 1.0 for p in probes)  # one per pretraining epoch
    result = next(e for e in lines if e["kind"] == "result")
    per_class = pd.read_csv(out / "artifacts" / "eval" / "synthetic" / "per_class.csv")
    chance = 1 / len(per_class)
    assert result["eval/synthetic/top1"] >= 2 * chance, result
    assert set(per_class["group"]) == {"motion", "context", "both"}
    assert {f"eval/synthetic/group/{g}" for g in ("motion", "context", "both")} <= set(result)
    for key in ("pretext/context_acc", "pretext/context_chance", "pretext/pose_mse", "pretext/pose_mse_copy_last",
                "pretext/pose_mse_const_velocity", "pretext/video_l2_reconstruct", "pretext/video_l2_predict",
                "pretext/video_l2_mean_frame", "pretext/video_is", "eval/synthetic/retrieval_r1",
                "pretext/context_acc_pixels", "pretext/video_l2_person", "pretext/video_l2_person_train_mean"):
        assert key in result, key
    assert result["pretext/pose_mse"] < result["pretext/pose_mse_const_velocity"]
    assert (out / "artifacts" / "samples" / "generated.png").stat().st_size > 1000

    # a rerun in the same folder is refused without --resume (in-process: the refusal happens before any work, and
    # a subprocess only added a Python start-up); with --resume every stage is reused
    code, refused = run_main(capsys, *cmd[3:])
    assert code == 2 and len(refused) == 1 and "--resume" in refused[0], refused
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    statuses = [json.loads(x) for x in resumed.stdout.splitlines() if x.startswith("{")]
    assert all(e["status"] == "reused" for e in statuses if e["kind"] == "stage")


# ---------------------------------------------------------------------------------------------
# bad input: one line naming the problem and the fix, exit code 2, before any folder is touched


def run_main(capsys, *argv: str) -> tuple[int, list[str]]:
    from csvr.train import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    err = capsys.readouterr().err
    return exit_info.value.code, [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("argv,expected", [
    (["--set", "loss.sigmap=1.0"], "did you mean loss.sigma_p"),
    (["model.backbon=r3d"], "did you mean model.backbone?"),
    (["--set", "train.lr=0.1"], "did you mean train.lr_per_sample?"),
    (["--set", "model.backbone=resnet"], "valid values: c3d, r2plus1d, r3d, s3d"),
    (["--data", "nosuch:/x"], "nosuch"),
])
def test_config_and_data_mistakes_are_one_line(capsys, tmp_path, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    code, lines = run_main(capsys, *argv)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert not (tmp_path / "runs").exists()  # nothing was created


def test_missing_dataset_folder_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, lines = run_main(capsys, "--data", f"ucf101:{tmp_path / 'no_such_folder'}")
    assert code == 2 and len(lines) == 1 and "no_such_folder" in lines[0], lines


def test_the_real_error_comes_before_the_folder_check(capsys, tmp_path):
    out = tmp_path / "used"
    out.mkdir()
    (out / "artifacts").mkdir()  # a folder that already holds a run
    code, lines = run_main(capsys, "--out", str(out), "--set", "loss.sigmap=1")
    assert code == 2 and "did you mean loss.sigma_p" in lines[0]  # not "already holds a run"
    code, lines = run_main(capsys, "--out", str(out))
    assert code == 2 and len(lines) == 1 and "--resume" in lines[0] and "drop --out" in lines[0]


def test_each_run_without_out_gets_a_new_folder(tmp_path, monkeypatch):
    import argparse

    from csvr import train

    monkeypatch.setattr(train, "RUNS", tmp_path / "runs" / "train")
    args = argparse.Namespace(out=None, resume=False)
    (first, stages), (second, stages2) = train.run_folders(args), train.run_folders(args)
    assert first != second and first.is_dir() and second.is_dir() and stages == stages2  # stages shared
    resumed, _ = train.run_folders(argparse.Namespace(out=None, resume=True))
    assert resumed == second  # --resume without --out continues the latest


def test_train_and_studies_share_the_smoke_overrides():
    from csvr.cli import SMOKE
    from csvr.train import build_config, parse_args
    from trainables.study import SMOKE as STUDY_SMOKE

    assert STUDY_SMOKE is SMOKE
    cfg = build_config(parse_args(["--smoke", "--set", "loss.sigma_p=1.0"]))
    assert cfg.train.steps_per_epoch == SMOKE["train.steps_per_epoch"] and cfg.data.max_videos == 8
    assert cfg.loss.sigma_p == 1.0


def test_dataset_generation_reports_progress(tmp_path, capsys, monkeypatch):
    from csvr.cli import show_progress
    from csvr.data import synthetic
    from csvr.data.synthetic import CLASSES, ensure_synthetic

    monkeypatch.setattr(synthetic, "write_avi", lambda path, frames: path.write_bytes(b""))  # the lines, not the
    monkeypatch.setattr(synthetic, "render_video", lambda spec: None)  # ~15 s of rendering, are under test here
    show_progress()
    ensure_synthetic(tmp_path / "synthetic")
    lines = [line for line in capsys.readouterr().err.splitlines() if "generating the embedded dataset" in line]
    assert len(lines) == len(CLASSES) and lines[-1].startswith(f"generating the embedded dataset: class {len(CLASSES)}/")


def test_progress_lines_follow_the_current_stderr(monkeypatch):
    """The progress handler writes to sys.stderr as it is now, not the stream it was made with: a closed earlier
    stderr (a redirect, or another test's capture) used to turn every progress line into a logging error."""
    import io
    import logging

    from csvr.cli import show_progress

    logger = logging.getLogger("csvr.progress")
    monkeypatch.setattr(logger, "handlers", [])
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    show_progress()
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logger.info("generating the embedded dataset: class 1/6")
    assert second.getvalue() == "generating the embedded dataset: class 1/6\n"
