"""Run the CSVR pipeline for one config and print one JSON line of metrics per logging interval.

    python -m csvr.train --preset tiny                                    # embedded dataset, ~1-2 min on 2 cores
    python -m csvr.train --preset tiny --steps 2 --set model.backbone=s3d # every ablation is one key=value
    python -m csvr.train --smoke                                          # the studies' --smoke overrides
    python -m csvr.train --preset paper --data ucf101:/data/UCF101 --out runs/r2p1d
    python -m csvr.train --out runs/r2p1d --resume                        # continue an interrupted run
    python -m csvr.train --resume                                         # continue the latest runs/train/<stamp>

Without --out every run gets a new folder runs/train/<YYYYmmdd-HHMMSS> (runs/train/latest names it) and
all of them share the stage store runs/train/stages; with --out the run and its stages live in OUT.
Stages: branch pretraining (pose, context, video) -> joint pretraining (Eq. 9) -> finetuning on each
`data.finetune_sources` dataset (default: the pretraining dataset) -> evaluation. `--steps N` shortens
every stage to one epoch of N steps (a quick check); `--epochs N` sets the joint pretraining epochs.
Stage outputs are keyed by the config fields they depend on, so a rerun with a different σ reuses branch
pretraining. A config or data mistake is one line on stderr naming the fix, exit code 2.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Iterator

from csvr.cli import SMOKE, add_config_flags, bad_input, fail, latest_run_dir, new_run_dir, show_progress
from csvr.config import Config, apply_overrides, parse_overrides, preset

RUNS = Path("runs/train")  # without --out: RUNS/<stamp>, stages shared in RUNS/stages


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m csvr.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(p, preset_default="tiny", data_default=None, preset_help="config preset (default: tiny)",
                     out_help=f"run folder for artifacts and stages (default: a new {RUNS}/<date-time> each run)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=int, default=None, help="every stage: one epoch of N steps")
    steps.add_argument("--epochs", type=int, default=None, help="joint pretraining epochs")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="a cache `python -m csvr.prepare --cache DIR` wrote for --data (sets data.cache)")
    p.add_argument("--resume", action="store_true", help=f"continue the run in --out (default: {RUNS}/latest)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, like --set")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> Config:
    overrides: dict = dict(SMOKE) if args.smoke else {}
    if args.data:
        overrides["data.source"] = args.data
    if args.cache:
        overrides["data.cache"] = args.cache
    if args.steps is not None:
        overrides.update({"train.steps_per_epoch": args.steps, "train.pose_epochs": 1, "train.context_epochs": 1,
                          "train.video_epochs": 1, "train.joint_epochs": 1, "train.checkpoint_epochs": "1",
                          "train.log_every": 1, "finetune.epochs": 1, "finetune.steps_per_epoch": args.steps})
    if args.epochs is not None:
        overrides["train.joint_epochs"] = args.epochs
    overrides.update(parse_overrides(args.set + args.overrides))
    return apply_overrides(preset(args.preset), overrides)


def check_data(cfg: Config) -> None:
    """Read every dataset's layout now: a wrong kind or folder is one line, not a traceback mid-run."""
    from csvr.data.layouts import read_dataset

    for source in dict.fromkeys([cfg.data.source, *cfg.data.finetune_sources]):
        read_dataset(source, cfg.data.split)


def run_folders(args: argparse.Namespace) -> tuple[Path, Path]:
    """(run folder, stage store); refuses to mix a new run into a folder that holds one."""
    if args.out is None:
        if args.resume:
            out = latest_run_dir(RUNS)
            if out is None:
                fail(f"--resume: no earlier run under {RUNS}; run without --resume, or pass --out RUN_FOLDER")
            return out, RUNS / "stages"
        return new_run_dir(RUNS), RUNS / "stages"
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.resume:
        fail(f"{out} already holds a run; pass --resume to continue it, or drop --out for a new folder")
    if args.resume and not out.is_dir():
        fail(f"--resume: {out} holds no run; drop --resume to start one there")
    return out, out / "stages"


def quiet_native_logs() -> None:
    """MediaPipe / TFLite / absl write INFO and WARNING lines from C++ (in prepare's Ray workers too, which inherit
    the environment): keep errors only, unless the user set these variables."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def incomplete_prepare() -> Iterator[None]:
    """Workers or nodes lost while preparing: one line saying how to resume, exit code 3 (as csvr.prepare)."""
    from csvr.prepare import PrepareIncomplete

    try:
        yield
    except PrepareIncomplete as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(3) from None


def main(argv: list[str] | None = None) -> int:
    from csvr.pipeline import run_trial

    args = parse_args(argv)
    quiet_native_logs()
    with bad_input():  # config first, then data, then the folder: the first real mistake is the one reported
        cfg = build_config(args)
        check_data(cfg)
    out, stages = run_folders(args)
    print(f"run folder: {out}", file=sys.stderr)
    show_progress()
    with bad_input(), incomplete_prepare():
        for event in run_trial(cfg, out, stages):
            if event["kind"] == "result":
                print(json.dumps({"kind": "result", **event["metrics"], "compute_seconds": event["compute_seconds"],
                                  "saved_seconds": event["saved_seconds"]}), flush=True)
                print(f"artifacts: {out / 'artifacts'}", file=sys.stderr)
            else:
                print(json.dumps(event), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
