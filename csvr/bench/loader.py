"""Benchmark `loader`: full training samples from a prepared cache against naive decoding of the originals.

    python -m csvr.bench loader [--cache DIR [--originals DIR]] [--clips N] [--frames N] [--step-rate 433]
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from csvr.bench.common import SAMPLES, Report, folder_tree, sample_video
from csvr.config import Config, preset

# ---------------------------------------------------------------------------------------------
# loader: cache samples vs naive decoding of the originals


def _split_datasets(cache: Path, cfg: Config) -> list:
    """ClipDatasets (train augmentation) over every split that has videos: all of the cache is sampled."""
    import pandas as pd

    from csvr.data.dataset import ClipDataset

    d = cfg.data
    splits = pd.read_parquet(cache / "manifest.parquet").query("status == 'ok'")["split"].unique()
    return [ClipDataset(cache, s, d.clip_len, d.future_len, d.stride, d.size, train=True, seed=cfg.train.seed)
            for s in ("train", "test") if s in splits]


def _original(ds, i: int, originals: Path | None) -> Path:
    """The original video of row i: --originals/<key>.* when given, else the manifest's `video` path."""
    if originals is None:
        return Path(ds.manifest["video"].iloc[i])
    found = sorted(originals.glob(f"{ds.keys[i]}.*"))
    if not found:
        raise SystemExit(f"no original for {ds.keys[i]} under {originals}")
    return found[0]


class NaiveClips:
    """Decode-on-demand from the originals: full-resolution decord reader (kept open per video, one thread),
    get_batch of the T + T' sampled frames, bilinear resize of whole frames to S x S."""

    def __init__(self, paths: list[Path], cfg: Config):
        import decord

        self.readers = [decord.VideoReader(str(p), ctx=decord.cpu(0), num_threads=1) for p in paths]
        self.cfg = cfg

    def clip(self, j: int, seed: int) -> torch.Tensor:
        from csvr.data.dataset import sample_indices

        d, vr = self.cfg.data, self.readers[j]
        idx, _, _ = sample_indices(len(vr), d.clip_len, d.future_len, d.stride, np.random.default_rng(seed))
        frames = torch.from_numpy(vr.get_batch(idx.tolist()).asnumpy())  # (T+T', H, W, 3) uint8
        vr.seek(0)
        x = frames.permute(0, 3, 1, 2).float().div_(255)
        return F.interpolate(x, size=(d.size, d.size), mode="bilinear", align_corners=False)  # (T+T', 3, S, S)


def _interleaved(videos: int, clips: int, sources: dict[str, Callable[[int, int], object]]) -> dict[str, float]:
    """Seconds per source for `clips` clips, one clip of each source in turn (noise on a shared machine hits
    all alike). A source is fn(video j, seed); every reader is opened once first, untimed."""
    for j in range(videos):
        for fn in sources.values():
            fn(j, 0)
    seconds = dict.fromkeys(sources, 0.0)
    for k in range(clips):
        for name, fn in sources.items():
            t0 = time.perf_counter()
            fn(k % videos, 1 + k // videos)
            seconds[name] += time.perf_counter() - t0
    return seconds


def _default_cache(tmp: Path, cfg: Config, frames: int) -> Path:
    from csvr.data.layouts import read_dataset
    from csvr.prepare import prepare

    root = folder_tree(tmp / "originals", [sample_video(n) for n in SAMPLES], copies=1, frames=frames)
    cache = tmp / "cache"
    prepare(read_dataset(f"folder:{root}"), cache, size=cfg.data.cache_size, workers=0)
    return cache


def bench_loader(args: argparse.Namespace) -> Report:
    cfg = preset(args.preset or "paper")
    with tempfile.TemporaryDirectory(prefix="csvr-bench-") as tmp:
        cache = Path(args.cache) if args.cache else _default_cache(Path(tmp), cfg, args.frames or 0)
        originals = Path(args.originals) if args.originals else None
        items = [(ds, i) for ds in _split_datasets(cache, cfg) for i in range(len(ds))]
        if not items:
            raise SystemExit(f"{cache}: no prepared videos with status ok")
        naive = NaiveClips([_original(ds, i, originals) for ds, i in items], cfg)
        sources = {"cache": lambda j, epoch: _cache_sample(items[j], epoch),
                   "cache_decode": lambda j, seed: _cache_decode(items[j], cfg, seed), "naive": naive.clip}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a DataLoader worker runs torch on one thread
        try:
            seconds = _interleaved(len(items), args.clips or 40, sources)
        finally:
            torch.set_num_threads(threads)
    return _loader_report(args, cfg, len(items), args.clips or 40, seconds)


def _cache_sample(item: tuple, epoch: int) -> dict:
    """The full training sample; the epoch changes the clip (its randomness is (seed, epoch, index))."""
    ds, i = item
    ds.set_epoch(epoch)
    return ds[i]


def _cache_decode(item: tuple, cfg: Config, seed: int) -> np.ndarray:
    """Only the decode of the same T + T' frames from the cached mp4 (no I-frames, poses or augmentation)."""
    from csvr.data.dataset import decode, sample_indices, video_count

    (ds, i), d = item, cfg.data
    path = ds.video_path(i)
    idx, _, _ = sample_indices(video_count(path), d.clip_len, d.future_len, d.stride, np.random.default_rng(seed))
    return decode(path, idx)[0]


LOADER_SOURCES = {"cache": "clip+future+iframes+poses, train aug (ClipDataset)",
                  "cache_decode": "clip+future decode from the cache only",
                  "naive": "clip+future, full-res decode of the original + resize"}


def _loader_report(args, cfg: Config, videos: int, clips: int, seconds: dict[str, float]) -> Report:
    rate, d = args.step_rate, cfg.data
    rows = []
    for name, s in seconds.items():
        per_worker = clips / s
        rows.append({"source": name, "sample": LOADER_SOURCES[name], "clips": clips, "seconds": s,
                     "clips_per_s_per_worker": per_worker, "workers_for_step_rate": math.ceil(rate / per_worker)})
    by = {r["source"]: r for r in rows}
    ratio = by["cache"]["clips_per_s_per_worker"] / by["naive"]["clips_per_s_per_worker"]
    return Report("loader", ["source", "sample", "clips", "clips_per_s_per_worker", "workers_for_step_rate"], rows,
                  f"cache loader / naive decoding, clips/s per worker: {ratio:.2f}  (workers for {rate:g} clips/s: "
                  f"{by['cache']['workers_for_step_rate']} vs {by['naive']['workers_for_step_rate']})",
                  {"loader_over_naive": ratio},
                  {"videos": videos, "step_rate": rate, "clip_len": d.clip_len, "future_len": d.future_len,
                   "stride": d.stride, "size": d.size, "cache_size": d.cache_size,
                   "cache": args.cache or "sample videos", "frames": args.frames or 0})
