"""The stage store: each stage's output in `root/<stage>/<key>/`, computed once under a file lock.

    store = StageStore(root)
    for event in store.run("pose", key, compute):   # compute(out_dir) yields events, ends with finish(...)
        ...

A stage is done when `done.json` exists and every file it vouches for has the recorded size. A file lock per
stage key makes concurrent trials (on any node that sees the store) wait for the one that computes.
"""
from __future__ import annotations

import json
import logging
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock

DONE = "done.json"
log = logging.getLogger(__name__)


def _write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary name beside `path`, flush it to disk, then rename it over `path`: a reader
    (or a crash) sees the old file, the new file or none, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _outputs(out: Path) -> dict[str, int]:
    """{file name: size} of a finished stage's files (model.pt, epoch_N.pt): what done.json vouches for."""
    return {p.name: p.stat().st_size for p in sorted(out.iterdir())
            if p.is_file() and p.name != DONE and not p.name.startswith(".")}


def _valid_checkpoint(path: Path) -> bool:
    """torch.save writes a zip: a truncated file has no end-of-archive record."""
    return zipfile.is_zipfile(path)


def read_done(out: Path) -> dict | None:
    """done.json of a finished stage, or None when the stage is not (validly) done: no marker, an unreadable
    one (empty, truncated JSON), or a file it vouches for that is missing or of another size (a truncated
    model.pt). Markers from before sizes were recorded are checked by opening their checkpoints' zip index."""
    try:
        done = json.loads((out / DONE).read_text())
        files = done.get("files")
        if files is None:
            return done if all(_valid_checkpoint(p) for p in out.glob("*.pt")) else None
        return done if all((out / name).stat().st_size == size for name, size in files.items()) else None
    except (OSError, ValueError, AttributeError):
        return None


@dataclass
class StageStore:
    root: Path

    def path(self, stage: str, key: str) -> Path:
        return Path(self.root) / stage.replace("/", "_") / key

    def run(self, stage: str, key: str, compute: Callable[[Path], Iterator[dict]]) -> Iterator[dict]:
        """Yield `compute(dir)`'s events unless the stage is done; always end with a "stage" event.
        A stage whose marker or outputs are unreadable is not done: it is recomputed under the lock."""
        out = self.path(stage, key)
        done = read_done(out)
        if done is None:
            out.mkdir(parents=True, exist_ok=True)
            with FileLock(str(out) + ".lock"):
                done = read_done(out)  # somebody may have finished it while we waited
                if done is None:
                    _discard_unreadable(out)
                    yield from compute(out)
                    return
        yield {"kind": "stage", "stage": stage, "status": "reused", "seconds": done["seconds"], "key": key,
               "path": str(out)}


def _discard_unreadable(out: Path) -> None:
    """Before (re)computing under the lock: drop an invalid done.json and set aside an unreadable progress.pt,
    so the stage starts over (from its last epoch when progress.pt is fine) instead of failing on them."""
    if (out / DONE).exists():
        log.warning("stage %s: done.json or its outputs are unreadable; recomputing the stage", out)
        (out / DONE).unlink()
    progress = out / "progress.pt"
    if progress.exists() and not _valid_checkpoint(progress):
        log.warning("stage %s: progress.pt is unreadable; set aside as .progress.pt.corrupt, starting over", out)
        progress.replace(out / ".progress.pt.corrupt")


def finish(out: Path, stage: str, key: str, seconds: float) -> dict:
    """Mark a computed stage done (atomically) and return its "stage" event."""
    marker = {"seconds": seconds, "stage": stage, "key": key, "files": _outputs(out)}
    _write_atomic(out / DONE, json.dumps(marker))
    return {"kind": "stage", "stage": stage, "status": "computed", "seconds": seconds, "key": key, "path": str(out)}
