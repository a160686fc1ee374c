"""A study's console: one line per trial event, a progress line with an ETA, the summary; the rest to a log.

    with Capture(storage / "sigma_grid" / ".console.log", verbose=False) as console:
        console.say("Study sigma_grid: 16 trials")      # the terminal (and the log)
        ...                                             # Ray, Tune, MediaPipe output: the log only
        console.move_to(run_dir / "console.log")        # the log lives in the study's run folder
    tuner = Tuner(..., run_config=RunConfig(callbacks=[TrialEvents(console.say, total=16, ...)]))

Capture redirects the process's file descriptors 1 and 2 to the log file, so everything printed by Ray's
driver, Tune, worker processes forwarded by Ray (log_to_driver) and C++ libraries (MediaPipe/TFLite/absl,
glog) lands in the log and not on the terminal. `say` writes to the original terminal and to the log.
With verbose=True nothing is redirected (the log then holds the console lines only). Progress from
library code (dataset generation) reaches the console through the logger PROGRESS_LOGGER ("csvr.progress").
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

from ray import tune

PROGRESS_LOGGER = "csvr.progress"
PROGRESS_SECONDS = 180.0  # at most one "epoch k of n" line per this many seconds (all trials together),
# and per 1/8 of the elapsed time: a long study stays near 60 lines


class Capture:
    """Redirect fds 1/2 to a log file for the duration; `say` still reaches the terminal."""

    def __init__(self, log_path: Path, verbose: bool = False):
        self.path, self.verbose = Path(log_path), verbose
        self.log: TextIO | None = None
        self.terminal: TextIO = sys.stdout
        self._saved: tuple[int, int] | None = None
        self._handler: logging.Handler | None = None

    def __enter__(self) -> "Capture":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.path, "a", buffering=1)
        if not self.verbose:
            sys.stdout.flush()
            sys.stderr.flush()
            self._saved = (os.dup(1), os.dup(2))
            self.terminal = os.fdopen(os.dup(self._saved[0]), "w", buffering=1)
            os.dup2(self.log.fileno(), 1)
            os.dup2(self.log.fileno(), 2)
        self._handler = ConsoleHandler(self.say)
        logger = logging.getLogger(PROGRESS_LOGGER)
        logger.addHandler(self._handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        return self

    def say(self, text: str) -> None:
        """One line (or a few) for the researcher: the terminal and the log."""
        print(text, file=self.terminal, flush=True)
        if self.log is not None:
            print(text, file=self.log, flush=True)

    def move_to(self, path: Path) -> None:
        """Rename the log (still open: its descriptor stays valid) into the run folder."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():  # a resumed run: keep the earlier log, append this one's
            with open(path, "a") as dst:
                dst.write(self.path.read_text())
            self.log.close()
            self.log = open(path, "a", buffering=1)
            if self._saved is not None:
                os.dup2(self.log.fileno(), 1)
                os.dup2(self.log.fileno(), 2)
            self.path.unlink(missing_ok=True)
        else:
            os.rename(self.path, path)
        self.path = path

    def __exit__(self, *exc: Any) -> None:
        logging.getLogger(PROGRESS_LOGGER).removeHandler(self._handler)
        sys.stdout.flush()
        sys.stderr.flush()
        if self._saved is not None:
            os.dup2(self._saved[0], 1)
            os.dup2(self._saved[1], 2)
            for fd in self._saved:
                os.close(fd)
            self.terminal.close()
            self._saved = None
        if self.log is not None:
            self.log.close()


class ConsoleHandler(logging.Handler):
    def __init__(self, say: Callable[[str], None]):
        super().__init__(logging.INFO)
        self.say_line = say

    def emit(self, record: logging.LogRecord) -> None:
        self.say_line(self.format(record))


def clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class TrialEvents(tune.Callback):
    """Tune callback: started / epoch k of n (throttled) / finished / failed / retried, with progress and ETA.

    `epochs_of(config)` gives a trial's total epoch count (trainables.csvr_trainable.GlobalSteps) and
    `name_of(config)` its short name (the varied keys)."""

    def __init__(self, say: Callable[[str], None], total: int, target: str,
                 epochs_of: Callable[[Mapping[str, Any]], int], name_of: Callable[[Mapping[str, Any]], str],
                 every: float = PROGRESS_SECONDS, since: float | None = None):
        self.say_line, self.total, self.target = say, total, target
        self.epochs_of, self.name_of, self.every = epochs_of, name_of, every
        self.start = time.monotonic()  # the trials' pace (the ETA) counts from here
        self.since = self.start if since is None else since  # the clock and "elapsed" count from here
        self.last_line = -math.inf
        self.done = self.failed = self.stopped = 0
        self.seen: set[str] = set()

    def __getstate__(self) -> dict:
        """Tune pickles its run config (callbacks included) with the experiment: keep the counters, drop the
        console; a restored study swaps in a fresh callback (trainables.study.build_tuner)."""
        return {**self.__dict__, "say_line": None, "epochs_of": None, "name_of": None}

    # progress ---------------------------------------------------------------------------------

    def progress(self) -> str:
        """Trials done, elapsed, ETA from the finished trials' pace (epochs of different stages take very
        different times, so running trials do not enter it; shared stages make it err on the long side)."""
        now, finished = time.monotonic(), self.done + self.failed + self.stopped
        pace = (now - self.start) / finished if finished else 0.0
        eta = f"ETA {clock(pace * (self.total - finished))}" if finished else "ETA after the first trial"
        elapsed = now - self.since
        failed = f", {self.failed} failed" if self.failed else ""
        failed += f", {self.stopped} stopped early" if self.stopped else ""
        return f"{finished}/{self.total} trials done{failed}, elapsed {clock(elapsed)}, {eta}"

    def emit(self, text: str) -> None:
        if self.say_line is None:  # a copy restored from Tune's saved state
            return
        self.say_line(f"[{clock(time.monotonic() - self.since)}] {text}")
        self.last_line = time.monotonic()

    # Tune hooks -------------------------------------------------------------------------------

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        if self.say_line is None:
            return
        again = trial.trial_id in self.seen
        self.seen.add(trial.trial_id)
        self.emit(f"{'restarted' if again else 'started'}  {self.name_of(trial.config)}")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        if self.say_line is None:
            return
        epoch, n = int(result.get("global_epoch", 0)), self.epochs_of(trial.config)
        now = time.monotonic()
        if now - self.last_line >= max(self.every, (now - self.since) / 8) and epoch < n:  # ~8 lines per doubling
            self.emit(f"epoch {epoch}/{n} {self.name_of(trial.config)}{stage_metric(result)} | {self.progress()}")

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        if self.say_line is None:
            return
        result = trial.last_result or {}
        value = result.get(self.target, math.nan)
        if result.get("trial_failed"):  # a non-finite loss: the trainable ended it without a retry
            self.failed += 1
            self.emit(f"failed   {self.name_of(trial.config)}: non-finite loss (MLflow tag csvr.error) | "
                      f"{self.progress()}")
            return
        if not math.isfinite(value):
            self.stopped += 1
            self.emit(f"stopped  {self.name_of(trial.config)} at epoch {result.get('global_epoch', '?')} by the "
                      f"scheduler | {self.progress()}")
            return
        self.done += 1
        self.emit(f"finished {self.name_of(trial.config)}: {self.target} = {value:.4f} | {self.progress()}")

    def on_trial_recover(self, iteration: int, trials: list, trial, **info: Any) -> None:
        if self.say_line is None:
            return
        self.emit(f"retrying {self.name_of(trial.config)} from its last checkpoint ({error_line(trial)})")

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        if self.say_line is None:
            return
        self.failed += 1
        self.emit(f"failed   {self.name_of(trial.config)} ({error_line(trial)}) | {self.progress()}")


def stage_metric(result: Mapping[str, Any]) -> str:
    """The epoch's stage and its accuracy (else loss), e.g. " finetune/synthetic acc=0.61"."""
    keys = [k for k in result if k.startswith(("train/", "finetune/", "is_classifier/"))
            and isinstance(result[k], (int, float))]
    for suffix in ("/acc", "/loss"):
        for key in keys:
            if key.endswith(suffix) and key.count("/") <= 2:
                return f" {key.rsplit('/', 1)[0]} {suffix[1:]}={result[key]:.3f}"
    return ""


def error_line(trial) -> str:
    """The first line of the trial's error, from Tune's error file when there is one."""
    path = getattr(trial, "error_file", None) or ""
    try:
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()] if path else []
    except OSError:
        lines = []
    errors = [line for line in lines if "Error" in line or "Exception" in line]
    return (errors[-1] if errors else lines[-1] if lines else "error").strip()[:160]
