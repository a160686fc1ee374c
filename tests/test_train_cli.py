"""End to end: `python -m csvr.train --preset tiny` on the embedded dataset learns (real videos, real
MediaPipe poses, the whole pipeline), and its artifacts are written."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest


@pytest.mark.slow
def test_tiny_preset_learns_the_embedded_dataset(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "csvr.train", "--preset", "tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    stages = {e["stage"]: e["status"] for e in lines if e["kind"] == "stage"}
    assert {"pose", "context", "video", "joint", "finetune/synthetic"} <= set(stages)
    result = next(e for e in lines if e["kind"] == "result")
    per_class = pd.read_csv(out / "artifacts" / "eval" / "synthetic" / "per_class.csv")
    chance = 1 / len(per_class)
    assert result["eval/synthetic/top1"] >= 2 * chance, result
    assert set(per_class["group"]) == {"motion", "context", "both"}
    for key in ("pretext/context_acc", "pretext/pose_mse_x100", "pretext/video_is", "eval/synthetic/retrieval_r1"):
        assert key in result
    assert (out / "artifacts" / "samples" / "generated.png").stat().st_size > 1000

    # a rerun in the same folder is refused without --resume; with --resume every stage is reused
    again = subprocess.run([sys.executable, "-m", "csvr.train", "--preset", "tiny", "--out", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = subprocess.run([sys.executable, "-m", "csvr.train", "--preset", "tiny", "--out", str(out), "--resume"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    statuses = [json.loads(x) for x in resumed.stdout.splitlines() if x.startswith("{")]
    assert all(e["status"] == "reused" for e in statuses if e["kind"] == "stage")
