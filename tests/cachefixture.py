"""Write a small valid prepared cache (DESIGN.md format) into a temporary folder, for data tests.

    root = write_cache(tmp_path)     # videos/*.mp4, poses/*.npz, manifest.parquet, classes.json

Each video is 64x48 gray with a bright 12x12 square moving in the upper part of the frame, encoded with
libx264 at a fixed GOP of 12 and no B-frames (key frames 0, 12, 24, ...). In poses/<key>.npz joint 11
(left shoulder) sits on the square's centre, joint 12 (right shoulder) on a dark spot near the bottom
(the square never goes there), joints 0-10 have visibility 0.2 (masked) and the rest random positions;
every 7th frame is not detected.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from csvr.data.video import fixed_gop, write_video

W, H, SQUARE, GOP = 64, 48, 12, 12
CLASSES = [{"index": 0, "name": "Jump", "group": "motion"}, {"index": 1, "name": "Wave", "group": None}]
RIGHT_SPOT = (0.5, 43 / 48)  # joint 12: a fixed dark place below the square's path

# (key, label, split, frames); the 10-frame video is shorter than most test spans
VIDEOS = [
    ("Jump/v_Jump_g01_c01", 0, "train", 60),
    ("Wave/v_Wave_g01_c01", 1, "train", 60),
    ("Jump/v_Jump_g02_c01", 0, "train", 10),
    ("Wave/v_Wave_g02_c01", 1, "train", 48),
    ("Jump/v_Jump_g03_c01", 0, "test", 40),
    ("Wave/v_Wave_g03_c01", 1, "test", 36),
    ("Wave/v_Wave_g04_c01", 1, "unused", 24),
]


def square_centre(t: int, phase: float) -> tuple[int, int]:
    """Integer pixel centre (cx, cy) of the square in frame t; it covers [cx-6, cx+6) x [cy-6, cy+6)."""
    cx = 32 + round(24 * np.sin(2 * np.pi * t / 30 + phase))
    cy = 17 + round(9 * np.cos(2 * np.pi * t / 23 + phase))
    return cx, cy


def render(frames: int, phase: float) -> np.ndarray:
    """(F, H, W, 3) uint8: a dark static gradient plus the moving bright square."""
    yy, xx = np.mgrid[0:H, 0:W]
    background = (20 + 20 * xx / W + 10 * yy / H).astype(np.uint8)
    out = np.repeat(background[None], frames, 0)
    for t in range(frames):
        cx, cy = square_centre(t, phase)
        out[t, cy - SQUARE // 2:cy + SQUARE // 2, cx - SQUARE // 2:cx + SQUARE // 2] = 235
    return np.repeat(out[..., None], 3, -1)


def write_mp4(path: Path, frames: np.ndarray, fps: int = 25) -> None:
    write_video(path, [frames], W, H, fps, options={**fixed_gop(GOP), "crf": "4"})


def make_poses(frames: int, phase: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    keypoints = np.concatenate([rng.uniform(0, 1, (frames, 33, 2)), np.full((frames, 33, 1), 0.9)], -1)
    keypoints[:, :11, 2] = 0.2
    for t in range(frames):
        cx, cy = square_centre(t, phase)
        keypoints[t, 11, :2] = (cx / W, cy / H)
    keypoints[:, 12, :2] = RIGHT_SPOT
    detected = np.arange(frames) % 7 != 3
    return {"keypoints": keypoints.astype(np.float32), "detected": detected,
            "iframes": np.arange(0, frames, GOP, dtype=np.int64)}


def write_cache(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for i, (key, label, split, frames) in enumerate(VIDEOS):
        phase = 0.7 * i
        write_mp4(root / "videos" / f"{key}.mp4", render(frames, phase))
        poses = make_poses(frames, phase, rng)
        (root / "poses" / key).parent.mkdir(parents=True, exist_ok=True)
        np.savez(root / "poses" / f"{key}.npz", **poses)
        rows.append(dict(video=f"{key}.avi", label=label, class_name=CLASSES[label]["name"], split=split,
                         status="ok", error="", frames=frames, fps=25.0, width=W, height=H,
                         iframes=poses["iframes"].tolist(), pose_detect_rate=float(poses["detected"].mean()),
                         key=key))
    rows.append(dict(rows[0], video="Jump/broken.avi", key="Jump/broken", status="error", error="decode failed",
                     frames=0, iframes=[], pose_detect_rate=0.0))
    pd.DataFrame(rows).to_parquet(root / "manifest.parquet")
    (root / "classes.json").write_text(json.dumps(CLASSES))
    return root
