"""Benchmark `loader`: what one DataLoader worker delivers per second, side by side: the worker-side
augmentation path (the loader before issue 14: the worker crops, flips, blurs, jitters and normalises each
sample on one CPU thread), the decode-only path (today's ClipDataset: uint8 window frames + poses; the
augmentation runs batched on the device, csvr.data.augment), the pose-only samples of the pose stage, and naive
decoding of the originals. Also the device augmentation itself, run here on one CPU thread (on a GPU it is a
few batched kernels per step).

    python -m csvr.bench loader [--cache DIR [--originals DIR]] [--clips N] [--frames N] [--step-rate 433]

Headline: decode-only samples/s per worker / worker-side augmentation samples/s per worker, and the workers
one GPU needs at `--step-rate` clips/s (default: FACTS.md's measured H200 plain r2plus1d bf16 step, 433/s).
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

from csvr.bench.common import SAMPLES, STEP_RATE, Report, folder_tree, sample_video
from csvr.bench.common import bench_config
from csvr.config import Config
from csvr.data import augment as A

# ---------------------------------------------------------------------------------------------
# loader: cache samples vs naive decoding of the originals


def _split_datasets(cache: Path, cfg: Config, poses_only: bool = False) -> list:
    """Training ClipDatasets (frames at the cache's short side) over every split that has videos."""
    import pandas as pd

    from csvr.data.dataset import ClipDataset

    d = cfg.data
    splits = pd.read_parquet(cache / "manifest.parquet").query("status == 'ok'")["split"].unique()
    return [ClipDataset(cache, s, d.clip_len, d.future_len, d.stride, d.cache_size, train=True, seed=cfg.train.seed,
                        poses_only=poses_only) for s in ("train", "test") if s in splits]


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


def _data_cache(args: argparse.Namespace, cfg: Config, tmp: Path) -> Path:
    """--data KIND:PATH reads that dataset's prepared cache (prepared once, as training does); else sample videos."""
    if args.data:
        from csvr.data.loaders import prepared

        return prepared(args.data, cfg)
    return _default_cache(tmp, cfg, args.frames or 0)


def bench_loader(args: argparse.Namespace) -> Report:
    cfg = bench_config(args, "paper")
    clips = args.clips or 40
    with tempfile.TemporaryDirectory(prefix="csvr-bench-") as tmp:
        cache = Path(args.cache) if args.cache else _data_cache(args, cfg, Path(tmp))
        originals = Path(args.originals) if args.originals else None
        items = [(ds, i) for ds in _split_datasets(cache, cfg) for i in range(len(ds))]
        poses = [(ds, i) for ds in _split_datasets(cache, cfg, poses_only=True) for i in range(len(ds))]
        if not items:
            raise SystemExit(f"{cache}: no prepared videos with status ok")
        naive = NaiveClips([_original(ds, i, originals) for ds, i in items], cfg)
        sources = {"worker_aug": lambda j, epoch: worker_side_sample(items[j], cfg, epoch),
                   "decode_only": lambda j, epoch: _cache_sample(items[j], epoch),
                   "poses_only": lambda j, epoch: _cache_sample(poses[j], epoch), "naive": naive.clip}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a DataLoader worker runs torch on one thread
        # a Gaussian blur with sigma near 0.1 has denormal kernel weights, which stall the CPU's convolution
        # ~20x: a rare, random cost that would dominate 40 samples; flushed for every source alike
        torch.set_flush_denormal(True)
        try:
            seconds = _interleaved(len(items), clips, sources)
            seconds["device_aug_cpu"] = _device_aug_seconds(items, cfg, clips)
        finally:
            torch.set_num_threads(threads)
            torch.set_flush_denormal(False)
    return _loader_report(args, cfg, len(items), clips, seconds)


def _cache_sample(item: tuple, epoch: int) -> dict:
    """The worker's sample; the epoch changes the clip (its randomness is (seed, epoch, index))."""
    ds, i = item
    ds.set_epoch(epoch)
    return ds[i]


def worker_side_sample(item: tuple, cfg: Config, epoch: int) -> dict:
    """The loader before issue 14, re-created as the baseline: the decoded sample, then crop, flip, blur, colour
    jitter and normalisation of its frames in the worker, per sample, with torchvision.transforms.v2 on one
    thread (the same parameter distribution as csvr.data.augment)."""
    from torchvision.transforms.v2 import functional as TF

    (ds, i), d = item, cfg.data
    s = _cache_sample(item, epoch)
    p = A.sample_params(1, d.flip, A.step_generator(ds.seed, epoch, i))
    r = s["frames"].shape[1]
    u0, v0, w, h = (p.box[0] * r).round().int().tolist()
    first, rows = _decoded_rows(s)  # as before: each decoded frame augmented once, then gathered
    x = TF.resized_crop(s["frames"][first].permute(0, 3, 1, 2), v0, u0, max(h, 1), max(w, 1), [d.size, d.size],
                        antialias=True).float().div_(255)
    x = x.flip(-1) if bool(p.flip[0]) else x
    if p.blur[0] > 0:
        k = max(3, int(0.1 * d.size) // 2 * 2 + 1)
        x = TF.gaussian_blur(x, [k, k], [float(p.blur[0])] * 2)
    jitter = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    if bool((p.jitter[0] != torch.tensor(A.NO_JITTER)).any()):
        for k in p.order:
            x = jitter[k](x, float(p.jitter[0, k]))
    s["frames"] = TF.normalize(x, A.IMAGENET_MEAN, A.IMAGENET_STD)[rows]  # (T + T' + k, 3, S, S), k real I-frames
    one = {k: v[None] for k, v in s.items()}
    s["poses"], s["pose_mask"] = (v[0] for v in A.augment_poses(one["poses"], one["pose_mask"], p))
    return s


def _decoded_rows(s: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(a row of each distinct frame number, the distinct frame of each real row) of a worker sample."""
    index = torch.cat([s["frame_indices"], s["iframe_indices"][s["iframe_mask"]]])
    unique, rows = torch.unique(index, return_inverse=True)
    first = torch.empty(len(unique), dtype=torch.int64).scatter_(0, rows, torch.arange(len(index)))
    return first, rows


def _device_aug_seconds(items: list, cfg: Config, clips: int, batch: int = 16) -> float:
    """Seconds csvr.data.augment takes for `clips` samples, in batches of `batch`, on this CPU (one thread)."""
    from torch.utils.data import default_collate

    samples = [_cache_sample(items[j % len(items)], 0) for j in range(min(batch, clips))]
    stacked = default_collate(samples)
    seconds, done = 0.0, 0
    while done < clips:
        t0 = time.perf_counter()
        A.augment(stacked, cfg.data, A.step_generator(0, 0, done))
        seconds += time.perf_counter() - t0
        done += len(samples)
    return seconds / done * clips


LOADER_SOURCES = {"worker_aug": "before: decode + crop/flip/blur/jitter/normalise in the worker (per sample)",
                  "decode_only": "now: decode only (uint8 window frames + I-frames + poses)",
                  "poses_only": "now, pose stage: poses only (no video decode)",
                  "naive": "clip+future, full-res decode of the original + resize",
                  "device_aug_cpu": "now: csvr.data.augment, batches of 16, on this CPU (1 thread)"}


def _loader_report(args, cfg: Config, videos: int, clips: int, seconds: dict[str, float]) -> Report:
    rate, d = args.step_rate, cfg.data
    rows = []
    for name, s in seconds.items():
        per_worker = clips / s
        rows.append({"source": name, "sample": LOADER_SOURCES[name], "clips": clips, "seconds": s,
                     "clips_per_s_per_worker": per_worker, "workers_for_step_rate": math.ceil(rate / per_worker)})
    by = {r["source"]: r for r in rows}
    ratio = by["decode_only"]["clips_per_s_per_worker"] / by["worker_aug"]["clips_per_s_per_worker"]
    return Report("loader", ["source", "sample", "clips", "clips_per_s_per_worker", "workers_for_step_rate"], rows,
                  f"decode-only worker / worker-side augmentation, samples/s per worker: {ratio:.2f}  (workers for "
                  f"{rate:g} clips/s: {by['decode_only']['workers_for_step_rate']} vs "
                  f"{by['worker_aug']['workers_for_step_rate']}; step rate {rate:g}/s "
                  f"{'assumed: H200 plain r2plus1d bf16, FACTS.md' if rate == STEP_RATE else 'from --step-rate'})",
                  {"decode_only_over_worker_aug": ratio,
                   "naive_over_worker_aug": by["naive"]["clips_per_s_per_worker"]
                   / by["worker_aug"]["clips_per_s_per_worker"],
                   "workers_for_step_rate": by["decode_only"]["workers_for_step_rate"]},
                  {"videos": videos, "step_rate": rate, "step_rate_source": "FACTS.md H200 (assumed)"
                   if rate == STEP_RATE else "--step-rate", "clip_len": d.clip_len, "future_len": d.future_len,
                   "stride": d.stride, "size": d.size, "cache_size": d.cache_size,
                   "cache": args.cache or "sample videos", "frames": args.frames or 0})


