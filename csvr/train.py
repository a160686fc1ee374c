"""Run the CSVR pipeline for one config and print one JSON line of metrics per logging interval.

    python -m csvr.train --preset tiny                                    # embedded dataset, ~1-2 min on 2 cores
    python -m csvr.train --preset tiny --steps 2 model.backbone=s3d       # every ablation is one key=value
    python -m csvr.train --preset paper --data ucf101:/data/UCF101 --out runs/r2p1d
    python -m csvr.train --out runs/r2p1d --resume                        # continue an interrupted run

Stages: branch pretraining (pose, context, video) -> joint pretraining (Eq. 9) -> finetuning on each
`data.finetune_sources` dataset (default: the pretraining dataset) -> evaluation. `--steps N` shortens
every stage to one epoch of N steps (a quick check); `--epochs N` sets the joint pretraining epochs.
Stage outputs are kept in OUT/stages, keyed by the config fields they depend on, so a rerun with a
different σ reuses branch pretraining.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from csvr.config import ConfigError, apply_overrides, parse_overrides, preset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m csvr.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=["tiny", "paper"])
    p.add_argument("--data", default=None, help="KIND:PATH (ucf101, hmdb51, kinetics400, ssv2, folder, synthetic)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=int, default=None, help="every stage: one epoch of N steps")
    steps.add_argument("--epochs", type=int, default=None, help="joint pretraining epochs")
    p.add_argument("--out", default="runs/train", help="run folder (stages, artifacts)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. loss.sigma_p=1.0")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace):
    overrides: dict = {}
    if args.data:
        overrides["data.source"] = args.data
    if args.steps is not None:
        overrides.update({"train.steps_per_epoch": args.steps, "train.pose_epochs": 1, "train.context_epochs": 1,
                          "train.video_epochs": 1, "train.joint_epochs": 1, "train.checkpoint_epochs": "1",
                          "train.log_every": 1, "finetune.epochs": 1, "finetune.steps_per_epoch": args.steps})
    if args.epochs is not None:
        overrides["train.joint_epochs"] = args.epochs
    overrides.update(parse_overrides(args.overrides))
    return apply_overrides(preset(args.preset), overrides)


def main(argv: list[str] | None = None) -> int:
    from csvr.pipeline import run_trial

    args = parse_args(argv)
    try:
        cfg = build_config(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.resume:
        print(f"error: {out} already holds a run; pass --resume to continue it or choose another --out",
              file=sys.stderr)
        return 2
    for event in run_trial(cfg, out, out / "stages"):
        if event["kind"] == "result":
            print(json.dumps({"kind": "result", **event["metrics"], "compute_seconds": event["compute_seconds"],
                              "saved_seconds": event["saved_seconds"]}), flush=True)
            print(f"artifacts: {out / 'artifacts'}", file=sys.stderr)
        else:
            print(json.dumps(event), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
