"""Video I/O for prepare: probe, re-encode with a fixed GOP, key-frame indices, frame reads.

I-frames. The paper extracts I-frames "following [5]" (CoViAR, Wu et al. 2018), which re-encodes every
video with a fixed GOP of 12 frames. `reencode` does the same (libx264, g=12, keyint_min=12,
sc_threshold=0 so no scene-cut key frames, bf=0 so no B-frames), therefore the I-frames of a cached video
are frames 0, 12, 24, ... ; prepare reads the key-frame indices back with `keyframe_indices` (decord's
`get_key_indices`) and stores them, so the claim is checked per video instead of assumed.

    from csvr.data import video
    video.probe("a.avi")                       # {"frames": 120, "fps": 29.97, "width": 176, "height": 144}
    video.reencode("a.avi", "a.mp4", short_side=128)
    video.keyframe_indices("a.mp4")            # array([0, 12, 24, ...])

Readers are opened inside the calling process (decord deadlocks when a reader crosses a fork).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

GOP = 12  # CoViAR's fixed GOP: I-frames at 0, 12, 24, ...
CHUNK = 64  # frames decoded per get_batch call (bounded memory on long videos)


class VideoError(RuntimeError):
    """A file that cannot be decoded; the message carries the decoder's own words."""

    def __init__(self, path: str | Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = str(path)
        self.message = message


def _decoder_message(path: Path, err: Exception) -> str:
    """decord only says "Error reading X..." (the reason goes to its log): ask FFmpeg via PyAV for it."""
    import av
    import av.logging

    if not path.exists():
        return "file does not exist"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)  # makes PyAV append FFmpeg's last log line to its errors
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return "no video stream in the file"
            for _ in container.decode(video=0):
                pass
    except av.FFmpegError as av_err:
        return f"{type(av_err).__name__}: {av_err}"
    finally:
        av.logging.set_level(level)
    return f"{type(err).__name__}: {err}"


def open_reader(path: str | Path, width: int = -1, height: int = -1):
    """A decord VideoReader (resized while decoding when width/height are given), or VideoError."""
    import decord

    path = Path(path)
    try:
        return decord.VideoReader(str(path), width=width, height=height, num_threads=1)
    except Exception as err:  # decord raises a bare RuntimeError / DECORDError
        raise VideoError(path, _decoder_message(path, err)) from None


def probe(path: str | Path) -> dict:
    """{"frames", "fps", "width", "height"} of a video; VideoError for truncated, empty or non-video files."""
    vr = open_reader(path)
    frames = len(vr)
    if frames == 0:
        raise VideoError(path, "the decoder found no frames")
    try:
        height, width = vr[0].shape[:2]
    except Exception as err:
        raise VideoError(path, _decoder_message(Path(path), err)) from None
    return {"frames": frames, "fps": float(vr.get_avg_fps()), "width": int(width), "height": int(height)}


def scaled_size(width: int, height: int, short_side: int, even: bool = True) -> tuple[int, int]:
    """(w, h) with the short side = `short_side`, aspect kept; even values when `even` (yuv420p needs it)."""
    scale = short_side / min(width, height)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    if even:
        w, h = max(2, w - w % 2), max(2, h - h % 2)
    return w, h


def iter_frames(path: str | Path, width: int = -1, height: int = -1, chunk: int = CHUNK):
    """Yield uint8 (n, H, W, 3) chunks of every frame in order; VideoError when decoding stops early."""
    vr = open_reader(path, width, height)
    total = len(vr)
    for start in range(0, total, chunk):
        try:
            batch = vr.get_batch(list(range(start, min(start + chunk, total)))).asnumpy()
        except Exception as err:
            raise VideoError(path, f"decoding stopped near frame {start} of {total}: "
                                   f"{_decoder_message(Path(path), err)}") from None
        yield batch


def fixed_gop(gop: int = GOP, crf: int = 18) -> dict[str, str]:
    """libx264 options for CoViAR-style I-frames: a key frame every `gop` frames, never elsewhere, no B-frames."""
    return {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bf": "0", "preset": "veryfast",
            "crf": str(crf)}


def write_video(dst: str | Path, chunks, width: int, height: int, rate, codec: str = "libx264",
                options: dict[str, str] | None = None, bit_rate: int = 0) -> int:
    """Encode uint8 RGB frames (an iterable of (N, H, W, 3) chunks) into `dst` (container from its suffix);
    return the frame count. The one place this project writes video."""
    import av

    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with av.open(str(dst), mode="w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = options or {}
        if bit_rate:
            stream.bit_rate = bit_rate
        for chunk in chunks:
            for rgb in chunk:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                frame.pts = count
                out.mux(stream.encode(frame))
                count += 1
        out.mux(stream.encode())
    return count


def reencode(src: str | Path, dst: str | Path, short_side: int, gop: int = GOP, crf: int = 18) -> int:
    """Write every frame of `src` to `dst` as H.264 (yuv420p, fixed GOP, no B-frames); return the frame count."""
    info = probe(src)
    width, height = scaled_size(info["width"], info["height"], short_side)
    rate = Fraction(info["fps"]).limit_denominator(1001) if info["fps"] > 0 else Fraction(25)
    return write_video(dst, iter_frames(src, width, height), width, height, rate, options=fixed_gop(gop, crf))


def keyframe_indices(path: str | Path) -> np.ndarray:
    """Key-frame (I-frame) indices from the container index, via decord: int64 (K,)."""
    return np.asarray(open_reader(path).get_key_indices(), dtype=np.int64)


def keyframe_indices_pyav(path: str | Path) -> np.ndarray:
    """The same indices from PyAV's decoded `frame.key_frame` flags (a second opinion for tests)."""
    import av

    with av.open(str(path)) as container:
        flags = [bool(f.key_frame) for f in container.decode(video=0)]
    return np.flatnonzero(flags).astype(np.int64)


def read_frames(path: str | Path, indices, size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 (N, H, W, 3) frames at `indices`; `size` = (width, height) resizes while decoding."""
    width, height = size if size is not None else (-1, -1)
    vr = open_reader(path, width, height)
    try:
        return vr.get_batch([int(i) for i in indices]).asnumpy()
    except Exception as err:
        raise VideoError(path, _decoder_message(Path(path), err)) from None
