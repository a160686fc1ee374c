"""Benchmark `study`: a sigma grid with a fresh stage store per trial against one store for the grid.

    python -m csvr.bench study [--grid 2] [--trials N] [--steps 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable

from csvr.bench.common import Report
from csvr.config import Config

# ---------------------------------------------------------------------------------------------
# study: shared stages against recomputing them


BRANCH_STAGES = ("pose", "context", "video")
# Stage epochs in the paper's proportions (20 + 20 + 20 branch, 200 joint, 100 finetune), divided by 20.
PAPER_PROPORTIONS = {"train.pose_epochs": 1, "train.context_epochs": 1, "train.video_epochs": 1,
                     "train.joint_epochs": 10, "train.checkpoint_epochs": "10", "finetune.epochs": 5,
                     "eval.retrieval_clips": 1, "eval.test_clips": 1}


def _grid_compute(configs: list[Config], stores: Callable[[int], Path], workdir: Path) -> dict:
    """Run every config's pipeline; add up the seconds of the stages computed (not reused), the part of
    them that is branch pretraining, and the wall time."""
    from csvr.pipeline import run_trial

    out = {"compute_s": 0.0, "branch_s": 0.0, "stages_computed": 0, "stages_reused": 0}
    start = time.perf_counter()
    for i, cfg in enumerate(configs):
        for ev in run_trial(cfg, workdir / f"trial{i}", stores(i)):
            if ev["kind"] != "stage":
                continue
            if ev["status"] == "reused":
                out["stages_reused"] += 1
                continue
            out["stages_computed"] += 1
            out["compute_s"] += ev["seconds"]
            out["branch_s"] += ev["seconds"] if ev["stage"] in BRANCH_STAGES else 0.0
    return {**out, "wall_s": time.perf_counter() - start}


def bench_study(args: argparse.Namespace) -> Report:
    """A sigma grid (`--grid` values per axis; tiny models; stage epochs in the paper's proportions, `--steps`
    steps each) run through the pipeline twice in this process: with a fresh store per trial (every stage
    recomputed) and with one store for the whole grid (as studies run it)."""
    from csvr.config import apply_overrides, tiny

    values = [0.5, 0.75, 1.0, 1.25][: args.grid or 2]
    points = [(p, c) for p in values for c in values][: args.trials or None]
    steps = args.steps or 2
    base = {**PAPER_PROPORTIONS, "train.steps_per_epoch": steps, "finetune.steps_per_epoch": steps}
    configs = [apply_overrides(tiny(), {**base, "loss.sigma_p": p, "loss.sigma_c": c}) for p, c in points]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _grid_compute(configs[:1], lambda i: root / "warm", root / "warm")  # data prepared, code paths warm
        alone = _grid_compute(configs, lambda i: root / f"alone{i}", root / "b")
        shared = _grid_compute(configs, lambda i: root / "shared", root / "a")
    saved = 1 - shared["compute_s"] / max(alone["compute_s"], 1e-9)
    branch_share = alone["branch_s"] / max(alone["compute_s"], 1e-9)
    rows = [{"stages": "recomputed", **alone}, {"stages": "shared", **shared}]
    return Report("study", ["stages", "compute_s", "branch_s", "wall_s", "stages_computed", "stages_reused"], rows,
                  f"shared stages: {100 * saved:.0f}% less stage compute for a {len(configs)}-trial grid "
                  f"(branch pretraining: {100 * branch_share:.0f}% of the unshared grid's stage compute)",
                  numbers={"saved_fraction": saved, "branch_share": branch_share, "trials": len(configs),
                           "compute_ratio": alone["compute_s"] / max(shared["compute_s"], 1e-9)},
                  settings={"trials": len(configs), "steps": steps, "preset": "tiny", "epochs": "paper/20"})
