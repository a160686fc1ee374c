"""Prepare a dataset once, offline, into the cache that training reads (format: DESIGN.md).

    python -m csvr.prepare --data ucf101:/data/UCF101 [--cache DIR] [--size 128] [--split 1]
                           [--workers N | --address auto]

One Ray task per video (payload: the entry and paths, never arrays):
  1. probe the original (a broken file becomes a status=error row with the decoder's message);
  2. re-encode it to videos/<key>.mp4 at short side --size with a fixed GOP of 12, no B-frames (CoViAR);
  3. read the key-frame indices back (they must be 0, 12, 24, ...);
  4. run MediaPipe Pose on the original frames (decoded at short side <= 256) -> poses/<key>.npz;
  5. write done/<key>.json (the manifest row, with the source's size and mtime) last, so a finished video
     is never redone unless its source file changed.
Every file is written to a temporary name and renamed, so an interrupted run resumes where it stopped.
Then manifest.parquet and classes.json are written and a summary (ok / error / missing) is printed.

`status=error` means the video itself is bad (the decoder's message). A lost worker or node (Ray's
WorkerCrashedError, NodeDiedError, LocalRayletDiedError, ...) is retried (MAX_RETRIES) and never recorded
as the video's error; if videos stay unprepared for such a reason, no manifest is written and the command
exits 3 saying how to resume. Every output path stays inside the cache (a key with `..` is refused).

`--address auto` joins a running cluster (`ray start --head`); by default a local Ray with --workers CPUs
runs; `--workers 0` processes the videos in this process without Ray (debugging). Inside a process where
Ray is already initialised (a Ray Tune trial, a test fixture) that Ray is used as is.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from csvr.cluster import NoClusterError, join_cluster
from csvr.data.layouts import DatasetIndex, LayoutError, VideoEntry, read_dataset

POSE_SHORT_SIDE = 256  # MediaPipe runs on the originals, decoded no larger than this (speed)
MANIFEST_COLUMNS = ["key", "video", "label", "class_name", "split", "status", "error", "frames", "fps",
                    "width", "height", "iframes", "pose_detect_rate", "source_size", "source_mtime_ns"]
RESULT_COLUMNS = ["status", "error", "frames", "fps", "width", "height", "iframes", "pose_detect_rate",
                  "source_size", "source_mtime_ns"]
MAX_RETRIES = 3  # Ray re-runs a video's task this often when its worker or node dies
FAULT_ENV = "CSVR_PREPARE_FAULT"  # test hook: '{"dir": D, "kills": {KEY: N}}' kills KEY's worker N times


class PrepareError(RuntimeError):
    """prepare cannot run at all (no Ray cluster at --address, ...); the message says what to do."""


class PrepareIncomplete(PrepareError):
    """Some videos were not prepared because workers or nodes were lost (not because the videos are bad)."""


@dataclass(frozen=True)
class Outputs:
    """The files one video owns in the cache."""

    video: Path
    poses: Path
    done: Path

    @staticmethod
    def of(cache: Path, key: str) -> "Outputs":
        norm = os.path.normpath(key)
        if os.path.isabs(key) or norm == ".." or norm.startswith(".." + os.sep) or norm != key:
            raise PrepareError(f"video key {key!r} would write outside the cache {cache}; keys are paths "
                               "relative to the dataset folder, without '..'")
        return Outputs(cache / "videos" / f"{key}.mp4", cache / "poses" / f"{key}.npz",
                       cache / "done" / f"{key}.json")

    def complete(self) -> bool:
        return self.video.is_file() and self.poses.is_file() and self.done.is_file()


def _tmp(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


# ---------------------------------------------------------------------------------------------
# one video (runs inside a Ray task)


def _poses(path: Path, info: dict) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe on every original frame, streamed in chunks: (F, 33, 3) float32, (F,) bool."""
    from csvr.data.pose import PoseEstimator
    from csvr.data.video import iter_frames, scaled_size

    w, h = info["width"], info["height"]
    size = scaled_size(w, h, POSE_SHORT_SIDE, even=False) if min(w, h) > POSE_SHORT_SIDE else (-1, -1)
    keypoints, detected = [], []
    with PoseEstimator() as estimator:
        for chunk in iter_frames(path, *size):
            k, d = estimator.frames(chunk)
            keypoints.append(k)
            detected.append(d)
    return np.concatenate(keypoints), np.concatenate(detected)


def _encode(entry: VideoEntry, out: Outputs, size: int) -> tuple[int, np.ndarray]:
    """Re-encode to the cache and check that the key frames are exactly 0, 12, 24, ..."""
    from csvr.data.video import GOP, keyframe_indices, reencode

    tmp = _tmp(out.video)
    frames = reencode(entry.path, tmp, size)
    iframes = keyframe_indices(tmp)
    expected = np.arange(0, frames, GOP)
    if not np.array_equal(iframes, expected):
        tmp.unlink()
        raise RuntimeError(f"re-encoded key frames {iframes[:8].tolist()}... are not every {GOP} frames")
    os.replace(tmp, out.video)
    return frames, iframes


def _process(entry: VideoEntry, cache: Path, size: int) -> dict:
    from csvr.data.video import probe

    out = Outputs.of(cache, entry.key)
    info = probe(entry.path)
    frames, iframes = _encode(entry, out, size)
    keypoints, detected = _poses(entry.path, info)
    if len(keypoints) != frames:
        raise RuntimeError(f"pose frames ({len(keypoints)}) != re-encoded frames ({frames})")
    tmp = _tmp(out.poses)
    with tmp.open("wb") as f:  # a file object, so numpy does not append ".npz" to the tmp name
        np.savez(f, keypoints=keypoints, detected=detected, iframes=iframes)
    os.replace(tmp, out.poses)
    cached = probe(out.video)
    return _row(entry, status="ok", error="", frames=frames, fps=cached["fps"], width=cached["width"],
                height=cached["height"], iframes=iframes.tolist(), pose_detect_rate=float(detected.mean()))


def source_stat(path: Path) -> dict:
    """What identifies the source file's content cheaply: a replaced or edited video changes one of them."""
    st = Path(path).stat()
    return {"source_size": st.st_size, "source_mtime_ns": st.st_mtime_ns}


def _row(entry: VideoEntry, **result) -> dict:
    return {"key": entry.key, "video": str(entry.path), "label": entry.label, "class_name": entry.class_name,
            "split": entry.split, **result}


def _error_row(entry: VideoEntry, message: str, stat: dict) -> dict:
    return _row(entry, status="error", error=message, frames=0, fps=float("nan"), width=0, height=0,
                iframes=[], pose_detect_rate=float("nan"), **stat)


def _maybe_fault(key: str) -> None:
    """Test hook (FAULT_ENV): die like a crashed worker on the first `kills[key]` attempts at video `key`."""
    spec = json.loads(os.environ.get(FAULT_ENV) or "{}")
    times = spec.get("kills", {}).get(key, 0)
    marks = Path(spec.get("dir", ".")) / key.replace("/", "__")
    if times and (not marks.is_dir() or len(list(marks.iterdir())) < times):
        marks.mkdir(parents=True, exist_ok=True)
        (marks / f"{os.getpid()}-{time.monotonic_ns()}").touch()
        os._exit(1)


def process_video(entry: VideoEntry, cache: str, size: int) -> dict:
    """Prepare one video; return its manifest row (status=error with the message instead of raising)."""
    out = Outputs.of(Path(cache), entry.key)
    _maybe_fault(entry.key)
    stat = {"source_size": -1, "source_mtime_ns": -1}
    try:
        stat = source_stat(entry.path)  # before reading: a change during the run is caught next time
        row = {**_process(entry, Path(cache), size), **stat}
    except Exception as err:  # a broken video must not stop the run
        message = getattr(err, "message", None) or f"{type(err).__name__}: {err}"
        return _error_row(entry, message, stat)
    tmp = _tmp(out.done)
    tmp.write_text(json.dumps(row))
    os.replace(tmp, out.done)
    return row


# ---------------------------------------------------------------------------------------------
# many videos


class Progress:
    """`prepare: 12/100 videos, 3.1 videos/s, ETA 0:00:28` on stderr, at most once a second."""

    def __init__(self, total: int, skipped: int) -> None:
        self.total, self.done, self.skipped = total, 0, skipped
        self.start = self.last = time.monotonic()

    def update(self) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self.last < 1.0 and self.done < self.total:
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        eta = time.strftime("%H:%M:%S", time.gmtime((self.total - self.done) / max(rate, 1e-9)))
        print(f"prepare: {self.done}/{self.total} videos ({self.skipped} already done), "
              f"{rate:.2f} videos/s, ETA {eta}", file=sys.stderr, flush=True)


def _init_ray(workers: int | None, address: str | None) -> bool:
    """Start or join Ray; True when this call started it (and must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        try:
            join_cluster(address, log_to_driver=False)
        except NoClusterError as err:
            raise PrepareError(str(err)) from None
        except ConnectionError as err:
            raise PrepareError(f"--address {address}: no Ray cluster to join ({err}). Start one with "
                               "`ray start --head` (and `ray start --address HEAD:6379` on the other "
                               "nodes), or drop --address to run a local Ray.") from None
    else:
        ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False, log_to_driver=False)
    return True


def _first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"


def _run_ray(todo: list[VideoEntry], cache: Path, size: int, workers: int | None,
             address: str | None, progress: Progress) -> tuple[list[dict], dict[str, str]]:
    """(rows, {key: why it is unprepared}). process_video turns every error of the video itself into a row,
    so whatever `ray.get` raises is the infrastructure's (a lost worker, node or raylet, a cancellation)."""
    import ray

    started = _init_ray(workers, address)
    rows: list[dict] = []
    lost: dict[str, str] = {}
    try:
        task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(process_video)
        pending = {task.remote(entry, str(cache), size): entry for entry in todo}
        while pending:
            try:
                ready, _ = ray.wait(list(pending), num_returns=1)
            except Exception as err:  # Ray itself is gone: nothing pending can finish
                lost.update({e.key: _first_line(err) for e in pending.values()})
                break
            entry = pending.pop(ready[0])
            try:
                rows.append(ray.get(ready[0]))
            except Exception as err:
                lost[entry.key] = _first_line(err)
            progress.update()
        return rows, lost
    finally:
        if started:
            ray.shutdown()


def _run_inline(todo: list[VideoEntry], cache: Path, size: int, progress: Progress) -> list[dict]:
    rows = []
    for entry in todo:
        rows.append(process_video(entry, str(cache), size))
        progress.update()
    return rows


def _finished_row(entry: VideoEntry, cache: Path) -> dict | None:
    """The stored row of a finished video (label/split refreshed from the current index), or None when it
    must be prepared (again): outputs missing, done.json unreadable, or the source changed since."""
    out = Outputs.of(cache, entry.key)
    if not out.complete():
        return None
    try:
        stored = json.loads(out.done.read_text())
        result = {c: stored[c] for c in RESULT_COLUMNS if c in stored}
        now = source_stat(entry.path)
    except (OSError, ValueError, TypeError):
        return None
    if "source_size" not in result:  # written before sizes were recorded: changed if newer than done.json
        if now["source_mtime_ns"] > out.done.stat().st_mtime_ns:
            return None
        result.update(now)
    if (result["source_size"], result["source_mtime_ns"]) != (now["source_size"], now["source_mtime_ns"]):
        return None
    return _row(entry, **{c: result[c] for c in RESULT_COLUMNS})


# ---------------------------------------------------------------------------------------------
# outputs


def write_manifest(rows: list[dict], cache: Path) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    df["iframes"] = df["iframes"].map(lambda v: np.asarray(v, dtype=np.int64))
    tmp = _tmp(cache / "manifest.parquet")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, cache / "manifest.parquet")
    return df


def write_classes(index: DatasetIndex, cache: Path) -> None:
    groups = index.groups or {}
    classes = [{"index": i, "name": name, "group": groups.get(name)} for i, name in enumerate(index.classes)]
    tmp = _tmp(cache / "classes.json")
    tmp.write_text(json.dumps(classes, indent=1))
    os.replace(tmp, cache / "classes.json")


def summary(df: pd.DataFrame, missing: list[str]) -> str:
    errors = df[df.status == "error"]
    lines = [f"prepare: {int((df.status == 'ok').sum())} ok, {len(errors)} error, {len(missing)} missing"]
    lines += [f"  error {row.key}: {row.error}" for row in errors.itertuples()]
    lines += [f"  missing {name}" for name in missing[:20]]
    if len(missing) > 20:
        lines.append(f"  ... and {len(missing) - 20} more missing")
    return "\n".join(lines)


def incomplete_message(lost: dict[str, str], done: int, cache: Path) -> str:
    reasons = sorted(set(lost.values()))
    shown = ", ".join(list(lost)[:5]) + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
    return (f"{len(lost)} video(s) not prepared because Ray workers or nodes were lost ({'; '.join(reasons[:3])}), "
            f"not because the videos are bad: {shown}. {done} other video(s) were prepared and are kept. "
            f"No manifest was written to {cache}: rerun the same command to resume (finished videos are not redone)")


def prepare(index: DatasetIndex, cache: Path, size: int = 128, workers: int | None = None,
            address: str | None = None) -> pd.DataFrame:
    """Prepare every video of `index` into `cache`; return the manifest.

    `df.attrs["processed"]` lists the keys processed by this call (the others were already done).
    """
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    finished = {e.key: row for e in index.entries if (row := _finished_row(e, cache)) is not None}
    todo = [e for e in index.entries if e.key not in finished]
    progress = Progress(len(todo), len(finished))
    new, lost = [], {}
    if todo and workers == 0:
        new = _run_inline(todo, cache, size, progress)
    elif todo:
        new, lost = _run_ray(todo, cache, size, workers, address, progress)
    if lost:
        raise PrepareIncomplete(incomplete_message(lost, len(new), cache))
    rows = {**finished, **{row["key"]: row for row in new}}
    df = write_manifest([rows[e.key] for e in index.entries], cache)
    write_classes(index, cache)
    print(summary(df, index.missing), file=sys.stderr, flush=True)
    df.attrs["processed"] = [row["key"] for row in new]
    return df


def main(argv: list[str] | None = None) -> int:
    from csvr.data.sources import cache_dir_for

    parser = argparse.ArgumentParser(prog="python -m csvr.prepare", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="KIND:PATH, e.g. ucf101:/data/UCF101 or synthetic")
    parser.add_argument("--cache", default="", help="output folder (default: $CSVR_HOME/cache/<name>-<size>)")
    parser.add_argument("--address", default=None, help="Ray cluster to join (auto = the local head)")
    parser.add_argument("--workers", type=int, default=None, help="local Ray CPUs (0 = no Ray)")
    parser.add_argument("--size", type=int, default=128, help="short side of the cached videos")
    parser.add_argument("--split", type=int, default=1, help="official split (UCF101 / HMDB51)")
    args = parser.parse_args(argv)
    try:
        index = read_dataset(args.data, args.split)
        cache = Path(args.cache) if args.cache else cache_dir_for(args.data, args.size)
        print(f"prepare: {len(index.entries)} videos of {args.data} -> {cache}", file=sys.stderr)
        df = prepare(index, cache, args.size, args.workers, args.address)
    except PrepareIncomplete as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except (LayoutError, PrepareError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0 if (df.status == "ok").any() or df.empty else 1


if __name__ == "__main__":
    sys.exit(main())
