"""What every entry point shares: the flags `--preset`, `--data`, `--set`, `--smoke`, `--out` (the same words
mean the same in `python -m csvr.train` and `python studies/<name>.py`), the one set of smoke overrides,
and the one error path for bad input: one line naming the problem and the fix, exit code 2.

    p = argparse.ArgumentParser(...)
    add_config_flags(p, preset_default="tiny")
    args = p.parse_args()
    with bad_input():                          # ConfigError / LayoutError / CacheError -> "error: ...", exit 2
        cfg = apply_overrides(preset(args.preset), smoke_and_sets(args))
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Any, Iterator, NoReturn

# --smoke: every stage 1 epoch of 2 steps on a few videos; a minute or two on 2 cores (studies and csvr.train)
SMOKE: dict[str, Any] = {
    "train.pose_epochs": 1, "train.context_epochs": 1, "train.video_epochs": 1, "train.joint_epochs": 1,
    "train.checkpoint_epochs": (1,), "train.steps_per_epoch": 2, "train.log_every": 2,
    "finetune.epochs": 1, "finetune.steps_per_epoch": 2, "data.max_videos": 8, "data.workers": 0,
    "eval.retrieval_clips": 1, "eval.test_clips": 1,
    "eval.protocol": "finetune", "eval.probe_every": 0,  # smoke covers the paper's finetune path, no probe cost
}
EXIT_BAD_INPUT = 2  # like argparse's own usage errors


def add_config_flags(p: argparse.ArgumentParser, preset_default: str | None, data_default: str | None,
                     preset_help: str, out_help: str) -> None:
    p.add_argument("--preset", choices=["tiny", "paper"], default=preset_default, help=preset_help)
    p.add_argument("--data", default=data_default, metavar="KIND:PATH",
                   help="pretraining dataset: ucf101, hmdb51, kinetics400, ssv2, folder or synthetic (default: "
                        "synthetic, the embedded dataset)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable, e.g. --set loss.sigma_p=1.0 (keys: csvr.config.keys())")
    p.add_argument("--smoke", action="store_true",
                   help="tiny preset, every stage 1 epoch of 2 steps on 8 videos: a minute or two, same code path")
    p.add_argument("--out", default=None, help=out_help)


def bad_input_types() -> tuple[type[Exception], ...]:
    from csvr.config import ConfigError
    from csvr.data.layouts import LayoutError

    types: list[type[Exception]] = [ConfigError, LayoutError]
    with contextlib.suppress(ImportError):
        from csvr.data.sources import CacheError

        types.append(CacheError)
    return tuple(types)


def fail(message: str) -> NoReturn:
    """One line on stderr, exit code 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_BAD_INPUT)


@contextlib.contextmanager
def bad_input() -> Iterator[None]:
    """Config and data mistakes become one line and exit code 2, never a traceback."""
    try:
        yield
    except bad_input_types() as err:
        fail(str(err))


class _CurrentStderr(logging.StreamHandler):
    """A StreamHandler on whatever sys.stderr is when a record is written, not the one it was created with (that
    one may since have been replaced and closed, e.g. by a redirect or pytest's capture)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def show_progress() -> None:
    """Progress lines of long library steps (generating the embedded dataset: logger "csvr.progress") on
    stderr; a study shows them on its console instead (trainables/console.py)."""
    logger = logging.getLogger("csvr.progress")
    if not logger.handlers:
        logger.addHandler(_CurrentStderr())
        logger.setLevel(logging.INFO)
        logger.propagate = False


def new_run_dir(root: Path) -> Path:
    """A fresh folder root/<YYYYmmdd-HHMMSS>[-k] (each `csvr.train` without --out gets its own); root/latest
    names it, so `--resume` without --out continues it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = next(n for n in [stamp, *(f"{stamp}-{i}" for i in range(2, 1000))] if not (root / n).exists())
    (root / name).mkdir(parents=True)
    (root / "latest").write_text(name)
    return root / name


def latest_run_dir(root: Path) -> Path | None:
    latest = root / "latest"
    return root / latest.read_text().strip() if latest.is_file() else None
