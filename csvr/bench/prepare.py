"""Benchmark `prepare`: csvr.prepare with 1 and 2 Ray workers, and MediaPipe alone on one core.

    python -m csvr.bench prepare [--videos 4] [--frames 60]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from csvr.bench.common import SAMPLES, Report, folder_tree, sample_video
from csvr.bench.common import bench_config

# ---------------------------------------------------------------------------------------------
# prepare: videos/s and pose frames/s per core, 1 vs 2 Ray workers


def pose_rate(video: Path, frames: int) -> tuple[float, float]:
    """MediaPipe Pose in this process (tracking mode, as prepare runs it): frames per wall second and per
    CPU second of this process (MediaPipe may run more than one thread)."""
    from csvr.data.pose import PoseEstimator
    from csvr.data.video import read_frames

    rgb = read_frames(video, range(frames))
    with PoseEstimator() as estimator:
        estimator.frames(rgb[:2])  # graph warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        estimator.frames(rgb)
        return len(rgb) / (time.perf_counter() - t0), len(rgb) / (time.process_time() - c0)


def prepare_run(index, tmp: Path, workers: int, size: int) -> dict:
    """prepare() on a fresh cache with a local Ray of `workers` CPUs, workers warmed on a throwaway cache."""
    import ray

    from csvr.prepare import prepare

    if ray.is_initialized():
        raise SystemExit("bench prepare starts its own local Ray; run it in a process without Ray")
    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        ray_start = time.perf_counter() - t0
        prepare(replace(index, entries=index.entries[:workers]), tmp / f"warm{workers}", size)
        t0 = time.perf_counter()
        df = prepare(index, tmp / f"cache{workers}", size)
        seconds = time.perf_counter() - t0
    finally:
        ray.shutdown()
    ok = df[df.status == "ok"]
    return {"run": f"prepare, {workers} Ray worker(s)", "workers": workers, "videos": len(ok),
            "frames": int(ok.frames.sum()), "seconds": seconds, "videos_per_s": len(ok) / seconds,
            "frames_per_s": int(ok.frames.sum()) / seconds, "videos_per_s_per_core": len(ok) / seconds / workers,
            "ray_start_s": ray_start}


def bench_prepare(args: argparse.Namespace) -> Report:
    from csvr.data.layouts import read_dataset

    frames, videos = args.frames or 60, args.videos
    size = bench_config(args, "paper").data.cache_size
    with tempfile.TemporaryDirectory(prefix="csvr-bench-") as tmp:
        root = folder_tree(Path(tmp) / "originals", [sample_video(SAMPLES[0])], videos, frames)
        index = read_dataset(f"folder:{root}")
        pose, pose_cpu = pose_rate(index.entries[0].path, frames)
        rows = [prepare_run(index, Path(tmp), w, size) for w in (1, 2)]
    rows.append({"run": "MediaPipe Pose alone, this process", "workers": 1, "frames": frames,
                 "frames_per_s": pose, "frames_per_cpu_s": pose_cpu})
    speedup = rows[1]["videos_per_s"] / rows[0]["videos_per_s"]
    return Report("prepare", ["run", "videos", "frames", "videos_per_s", "frames_per_s", "videos_per_s_per_core",
                              "frames_per_cpu_s", "ray_start_s"], rows,
                  f"prepare speed-up from 1 to 2 Ray workers: {speedup:.2f}x",
                  {"speedup_1_to_2_workers": speedup, "pose_frames_per_s": pose, "pose_frames_per_cpu_s": pose_cpu},
                  {"source": f"{videos} x {SAMPLES[0]} cut to {frames} frames", "cache_size": size})
