"""The CLI: `python -m csvr.bench {step,loader,prepare,study,video,context} [--json FILE]` (csvr/bench/__init__.py)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from csvr.bench import __doc__ as PACKAGE_DOC
from csvr.bench.common import STEP_RATE, Report, apply_smoke, bench_config, format_report, machine
from csvr.bench.context import bench_context
from csvr.bench.loader import bench_loader
from csvr.bench.prepare import bench_prepare
from csvr.bench.step import BACKBONES, bench_step
from csvr.bench.study import bench_study
from csvr.bench.video import bench_video
from csvr.cli import add_config_flags, bad_input

# ---------------------------------------------------------------------------------------------
# CLI


COMMANDS: dict[str, Callable[[argparse.Namespace], Report]] = {
    "step": bench_step,
    "loader": bench_loader,
    "prepare": bench_prepare,
    "study": bench_study,
    "video": bench_video,
    "context": bench_context,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m csvr.bench", description=PACKAGE_DOC.split("\n")[0])
    p.add_argument("command", choices=COMMANDS)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run (auto: CUDA if present)")
    p.add_argument("--json", default="", help="write every number to this file (the same as --out)")
    add_config_flags(p, preset_default=None, data_default=None,
                     preset_help="sizes (default: step tiny on CPU / paper on CUDA; loader, prepare paper)",
                     out_help="write every number to this JSON file (the same as --json)")
    p.add_argument("--backbones", nargs="+", choices=BACKBONES, default=None, help="step: V-networks")
    p.add_argument("--batch", type=int, default=0, help="step: batch size (default 4 on CPU, 16 on CUDA)")
    p.add_argument("--steps", type=int, default=0, help="step: timed steps (default 3 on CPU, 20 on CUDA); study: "
                   "steps per epoch (default 2); video: video-stage steps to train (default 0: floors only)")
    p.add_argument("--stages", default="", help="video: a stage store whose pose and context stages the video "
                   "stage starts from (e.g. runs/train/stages)")
    p.add_argument("--every", type=int, default=0, help="video: held-out L2 every N steps (default steps / 4)")
    p.add_argument("--joint", action="store_true", help="video: train Eq. 9 (every part) instead of the video stage")
    p.add_argument("--warmup", type=int, default=None,
                   help="step: untimed steps after the FLOP-counted one (default 2 on CPU, 5 on CUDA)")
    p.add_argument("--threads", type=int, default=0, help="step on the CPU: torch threads (default 1)")
    p.add_argument("--cache", default="", help="loader: a prepared cache (default: make one from sample videos)")
    p.add_argument("--originals", default="", help="loader: root of the originals (<key>.*) if not the manifest's")
    p.add_argument("--clips", type=int, default=0, help="loader: timed clips per source (default 40)")
    p.add_argument("--frames", type=int, default=0, help="cut sample videos to N frames (loader: 0 = whole; "
                   "prepare: default 60)")
    p.add_argument("--videos", type=int, default=4, help="prepare: copies of the sample video")
    p.add_argument("--grid", type=int, default=2, help="study: sigma values per axis (grid of N x N trials)")
    p.add_argument("--trials", type=int, default=0, help="study: only the first N trials of the grid; with "
                   "--search: trials per search (default 8)")
    p.add_argument("--search", choices=("optuna",), default=None,
                   help="study: an Optuna search run with fifo and with --scheduler (same sampler seed)")
    p.add_argument("--scheduler", choices=("asha", "median"), default="asha", help="study --search: the pruner")
    p.add_argument("--seeds", type=int, default=0, help="study --search: paired searches (default 3); "
                   "context: seeds 0..N-1 (default 1)")
    p.add_argument("--joint-epochs", type=int, default=0, help="study --search: joint epochs per trial (default 4)")
    p.add_argument("--step-rate", type=float, default=STEP_RATE, help="loader: clips/s one GPU consumes")
    return p


def main(argv: list[str] | None = None) -> Report:
    args = parser().parse_args(argv)
    args.json = args.json or args.out or ""
    with bad_input():
        if args.smoke:
            apply_smoke(args)
        bench_config(args, "paper")  # a mistyped --set key or --data fails here, in one line
    report = COMMANDS[args.command](args)
    print(format_report(report), flush=True)
    if args.json:
        out = {"command": report.command, "machine": machine(), "settings": report.settings, "rows": report.rows,
               "headline": report.numbers}
        Path(args.json).write_text(json.dumps(out, indent=1))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
