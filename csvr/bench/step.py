"""Benchmark `step`: the full CSVR training step against a plain supervised step of the same V-network.

    python -m csvr.bench step [--device cpu|cuda] [--preset tiny|paper] [--backbones r3d ...] [--batch N]
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from csvr.bench.common import Report, peak_mib, reset_peak
from csvr.bench.common import bench_config
from csvr.config import Config, apply_overrides

BACKBONES = ("r2plus1d", "r3d", "s3d", "c3d")
CLASSES = 101  # classifier width of the plain step (UCF101)

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
    from csvr.models.build import build_model
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

    baseline = reset_peak(device)
    torch.manual_seed(cfg.train.seed)
    step = STEPS[kind](cfg, device)
    batch = to_device(random_batch(cfg), device, cfg)  # channels_last_3d clips on CUDA, as in training
    flops = count_flops(step, batch)
    times = time_steps(step, batch, steps, warmup, device)
    median, b = float(np.median(times)), cfg.data.batch_size
    return {"backbone": cfg.model.backbone, "step": kind, "batch": b, "steps": steps, "median_s": median,
            "mean_s": float(np.mean(times)), "clips_per_s": b / median, "gflop_per_step": flops / 1e9,
            "tflops": flops / median / 1e12, "peak_mem_mib": max(0.0, peak_mib(device, baseline))}


def _step_config(args: argparse.Namespace, device: torch.device) -> tuple[Config, dict]:
    """The preset at --batch, and the run's settings (defaults differ on the CPU and on CUDA)."""
    cuda = device.type == "cuda"
    settings = {"device": str(device), "preset": args.preset or ("paper" if cuda else "tiny"),
                "batch": args.batch or (16 if cuda else 4), "steps": args.steps or (20 if cuda else 3),
                "warmup": args.warmup if args.warmup is not None else (5 if cuda else 2)}
    cfg = apply_overrides(bench_config(args, settings["preset"]), {"data.batch_size": settings["batch"]})
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
