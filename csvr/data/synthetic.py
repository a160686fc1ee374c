"""The embedded synthetic dataset: a real person moving over generated scenes, in the UCF101 layout.

It is the default dataset (`data.source = "synthetic"`), so everything runs without downloading UCF101.
Each video composites a sprite cut from a real portrait (matplotlib's `grace_hopper.jpg`; MediaPipe Pose
finds her) onto a generated background and moves it along a trajectory. The six classes come in the three
groups of the paper's Fig. 4:

    group    class             scene                 motion
    motion   Bobbing           studio (shared)       bobs up and down
    motion   Swaying           studio (shared)       sways left and right
    context  Park              park                  one of SHARED_MOTIONS, drawn per video
    context  BrickWall         brick wall            one of SHARED_MOTIONS, drawn per video
    both     BobbingAtSea      sea                   bobs up and down
    both     CirclingInDesert  desert                circles counter-clockwise

Motion classes share the scene distribution and their centres are drawn so that the person's position
covers about the same range in both: a single frame hardly tells them apart, the motion does (vertical
vs horizontal). No class is defined by a direction, so a horizontal flip (data.flip) keeps every class
(a flipped counter-clockwise circle is still a circle in the desert). Context classes draw their motion
from one shared set with the same parameters, so the pose track cannot tell them apart, only the scene
can. `tests/test_synthetic.py` checks these claims with classifiers on many fresh draws.

Layout (what `ensure_synthetic` writes; 20 clips per class, 160x120, 48 frames at 25 fps, mpeg4 in .avi;
split 1 holds out 9 clips per class, 54 test videos, so one video is 1.9 points of top-1):

    ROOT/UCF-101/<Class>/v_<Class>_gXX_c01.avi     groups g01..g20, one clip per group
    ROOT/ucfTrainTestlist/classInd.txt             "1 DriftLeft"
    ROOT/ucfTrainTestlist/trainlist0{1,2,3}.txt    "DriftLeft/v_DriftLeft_g01_c01.avi 1"
    ROOT/ucfTrainTestlist/testlist0{1,2,3}.txt     split 1 tests on g12..g20 (disjoint groups)
    ROOT/classGroups.json                          {"DriftLeft": "motion", ...}
    ROOT/poses_gt/<Class>/<name>.npy               float32 (F, 33, 3): ground-truth x, y in [0, 1], visibility
    ROOT/videos.json                               per video: scene, motion, sprite height
    ROOT/.complete                                 "VERSION layout-digest" (`marker()`); written last

A folder whose marker differs (another VERSION, or the same VERSION with other classes, groups, splits or frame
sizes: the layout digest) is regenerated on first use. Regenerate by hand: delete ROOT (default
`$CSVR_HOME/datasets/synthetic`) or bump VERSION, then
    python -m csvr.data.synthetic [ROOT]
Generation is deterministic (fixed seeds) and takes a few seconds.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Literal

import matplotlib
import numpy as np
from filelock import FileLock
from PIL import Image, ImageDraw, ImageFilter

from csvr.data.video import write_video
from csvr.paths import datasets_dir

VERSION = "synthetic-v2"
SEED = 2025
WIDTH, HEIGHT, FRAMES, FPS = 160, 120, 48, 25
SPRITE_HEIGHT = 120  # pixels at scale 1.0 of the sprite box (512 x 850: the photo plus _EXTENSION rows)
GROUPS = range(1, 21)  # g01..g20, one clip each
PROGRESS = logging.getLogger("csvr.progress")  # a study shows these lines on its console
TEST_GROUPS = {1: tuple(range(12, 21)), 2: tuple(range(1, 10)), 3: tuple(range(6, 15))}  # split -> held out

Group = Literal["motion", "context", "both"]
SHARED_MOTIONS = ("bob", "sway", "circle_cw", "circle_ccw")


@dataclass(frozen=True)
class SynthClass:
    name: str
    group: Group
    scene: str  # key of SCENES
    motions: tuple[str, ...]  # key of MOTIONS, drawn uniformly per video


CLASSES = (
    SynthClass("Bobbing", "motion", "studio", ("bob",)),
    SynthClass("Swaying", "motion", "studio", ("sway",)),
    SynthClass("Park", "context", "park", SHARED_MOTIONS),
    SynthClass("BrickWall", "context", "brick", SHARED_MOTIONS),
    SynthClass("BobbingAtSea", "both", "sea", ("bob",)),
    SynthClass("CirclingInDesert", "both", "desert", ("circle_ccw",)),
)

# ---------------------------------------------------------------------------------------------
# the sprite

# Outline of the person in grace_hopper.jpg (512x600 pixels), drawn by hand.
_OUTLINE = [(265, 20), (320, 30), (352, 60), (372, 110), (375, 160), (365, 230), (350, 285), (332, 318),
            (338, 338), (385, 355), (450, 374), (490, 405), (508, 460), (512, 600), (22, 600), (26, 500),
            (40, 430), (62, 388), (110, 363), (160, 348), (200, 335), (190, 316), (172, 288), (158, 250),
            (152, 180), (152, 120), (175, 60), (215, 30)]

_EXTENSION = 250  # rows of jacket added below the photo

# MediaPipe Pose (model_complexity=1) on the sprite, as fractions of the sprite box: x, y, visibility
# (33 x 3; y > 1 lies below the cut-out). Measured once by `measure_sprite_landmarks()`; a test checks it.
SPRITE_LANDMARKS = np.array([
    [0.5311, 0.2605, 0.9990], [0.5776, 0.2204, 0.9990], [0.6037, 0.2203, 0.9989], [0.6299, 0.2210, 0.9989],
    [0.4788, 0.2232, 0.9988], [0.4436, 0.2251, 0.9986], [0.4095, 0.2274, 0.9988], [0.6749, 0.2430, 0.9990],
    [0.3709, 0.2517, 0.9986], [0.5873, 0.3089, 0.9994], [0.4665, 0.3151, 0.9994], [0.8825, 0.5053, 0.9769],
    [0.1885, 0.5012, 0.9665], [0.9715, 0.8284, 0.1732], [0.1114, 0.8277, 0.2499], [0.8642, 0.9467, 0.0871],
    [0.3070, 0.8799, 0.0904], [0.8669, 1.0014, 0.0870], [0.3566, 0.9186, 0.1015], [0.8167, 0.9730, 0.1285],
    [0.3984, 0.8725, 0.1466], [0.8049, 0.9494, 0.1380], [0.3911, 0.8596, 0.1320], [0.7608, 1.0710, 0.0052],
    [0.3101, 1.0685, 0.0039], [0.7530, 1.4934, 0.0078], [0.3339, 1.4772, 0.0037], [0.7601, 1.8584, 0.0004],
    [0.3637, 1.8465, 0.0001], [0.7727, 1.9223, 0.0002], [0.3602, 1.9116, 0.0002], [0.6899, 1.9822, 0.0004],
    [0.4246, 1.9669, 0.0012]], dtype=np.float32)


def portrait_path() -> Path:
    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@lru_cache(maxsize=1)
def base_sprite() -> Image.Image:
    """RGBA cut-out of the person: the photo box with a soft-edged alpha from the hand-drawn outline,
    extended downwards (each column's median jacket colour) so the body runs off the bottom of the frame."""
    photo = np.asarray(Image.open(portrait_path()).convert("RGB"))  # (600, 512, 3)
    mask = Image.new("L", (photo.shape[1], photo.shape[0]), 0)
    ImageDraw.Draw(mask).polygon(_OUTLINE, fill=255)
    alpha = np.asarray(mask.filter(ImageFilter.GaussianBlur(3)))
    jacket = np.median(photo[-60:], axis=0, keepdims=True).astype(np.uint8)  # (1, 512, 3)
    rgb = np.concatenate([photo, np.repeat(jacket, _EXTENSION, axis=0)])
    alpha = np.concatenate([alpha, np.repeat(alpha[-1:], _EXTENSION, axis=0)])
    return Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA")


@lru_cache(maxsize=64)
def scaled_sprite(height: int) -> tuple[np.ndarray, np.ndarray]:
    """(rgb float32 (h, w, 3) in [0, 1], alpha float32 (h, w, 1)) at the given pixel height."""
    base = base_sprite()
    width = round(height * base.width / base.height)
    arr = np.asarray(base.resize((width, height), Image.LANCZOS), dtype=np.float32) / 255.0
    return arr[..., :3], arr[..., 3:]


def measure_sprite_landmarks() -> np.ndarray:
    """MediaPipe Pose on the sprite over grey canvases (3 sizes x 3 positions); median (33, 3) in
    sprite-box fractions."""
    import mediapipe as mp

    runs = []
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1) as pose:
        for height in (SPRITE_HEIGHT, SPRITE_HEIGHT * 3 // 2, SPRITE_HEIGHT * 2):
            for left_frac in (0.06, 0.25, 0.45):
                runs.append(_landmarks_on_canvas(pose, height, left_frac))
    return np.median(np.stack(runs), axis=0).astype(np.float32)


def _landmarks_on_canvas(pose, height: int, left_frac: float) -> np.ndarray:
    rgb, alpha = scaled_sprite(height)
    scale = height / SPRITE_HEIGHT
    canvas = np.full((int(HEIGHT * scale), int(WIDTH * scale), 3), 0.5, np.float32)
    left, top = int(left_frac * canvas.shape[1]), int(0.1 * height)
    _paste(canvas, rgb, alpha, left, top)
    res = pose.process((canvas * 255).astype(np.uint8))
    if res.pose_landmarks is None:
        raise RuntimeError(f"MediaPipe found no person on the sprite (height {height})")
    lm = np.array([[p.x, p.y, p.visibility] for p in res.pose_landmarks.landmark], np.float32)
    lm[:, 0] = (lm[:, 0] * canvas.shape[1] - left) / rgb.shape[1]
    lm[:, 1] = (lm[:, 1] * canvas.shape[0] - top) / rgb.shape[0]
    return lm


def _paste(frame: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, left: int, top: int) -> None:
    """Alpha-composite the sprite into frame (H, W, 3) in place, clipped to the frame."""
    h, w = rgb.shape[:2]
    y0, y1 = max(top, 0), min(top + h, frame.shape[0])
    x0, x1 = max(left, 0), min(left + w, frame.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    sy, sx = slice(y0 - top, y1 - top), slice(x0 - left, x1 - left)
    a = alpha[sy, sx]
    frame[y0:y1, x0:x1] = a * rgb[sy, sx] + (1 - a) * frame[y0:y1, x0:x1]


# ---------------------------------------------------------------------------------------------
# scenes: rng -> float32 (HEIGHT, WIDTH, 3) in [0, 1]


def _smooth_noise(rng: np.random.Generator, cells: int, amp: float) -> np.ndarray:
    """Low-frequency noise (HEIGHT, WIDTH, 1): a coarse random grid upsampled bilinearly."""
    grid = rng.normal(0, 1, (cells, cells)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((WIDTH, HEIGHT), Image.BILINEAR)
    return amp * np.asarray(img)[..., None]


def _vertical_blend(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    t = np.linspace(0, 1, HEIGHT, dtype=np.float32)[:, None, None]
    return np.broadcast_to((1 - t) * top + t * bottom, (HEIGHT, WIDTH, 3)).copy()


def _scene_studio(rng: np.random.Generator) -> np.ndarray:
    """Neutral grey-beige wall with a few soft panels: the one scene distribution of the motion group."""
    base = rng.uniform(0.45, 0.75) * np.array([1.0, rng.uniform(0.9, 1.0), rng.uniform(0.8, 1.0)])
    img = Image.fromarray((np.clip(base, 0, 1) * 255 * np.ones((HEIGHT, WIDTH, 3))).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x, y = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT)
        w, h = rng.uniform(15, 50), rng.uniform(15, 50)
        shade = tuple(int(c) for c in np.clip(base * rng.uniform(0.75, 1.25) * 255, 0, 255))
        draw.rectangle([x - w, y - h, x + w, y + h], fill=shade)
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(2)), np.float32) / 255
    return arr + _smooth_noise(rng, 6, 0.04)


def _scene_park(rng: np.random.Generator) -> np.ndarray:
    """Blue sky, green grass below a random horizon, tree trunks with round crowns."""
    sky = _vertical_blend(np.array([0.35, 0.6, 0.95]), np.array([0.7, 0.85, 1.0]))
    img = Image.fromarray((np.clip(sky, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    horizon = rng.uniform(60, 85)
    draw.rectangle([0, horizon, WIDTH, HEIGHT], fill=(60, int(rng.uniform(130, 170)), 50))
    for _ in range(rng.integers(2, 5)):
        x, r = rng.uniform(0, WIDTH), rng.uniform(10, 18)
        draw.rectangle([x - 3, horizon - 2 * r, x + 3, horizon + 4], fill=(100, 70, 40))
        draw.ellipse([x - r, horizon - 3 * r, x + r, horizon - r], fill=(40, int(rng.uniform(110, 150)), 40))
    return np.asarray(img, np.float32) / 255 + _smooth_noise(rng, 8, 0.04)


def _scene_brick(rng: np.random.Generator) -> np.ndarray:
    """Red-orange brick wall with light mortar, random brick size and offset."""
    img = Image.new("RGB", (WIDTH, HEIGHT), (200, 195, 185))
    draw = ImageDraw.Draw(img)
    bh, bw = int(rng.integers(9, 13)), int(rng.integers(20, 28))
    offset = rng.uniform(0, bw)
    for row, y in enumerate(range(-bh, HEIGHT, bh)):
        shift = offset + (bw / 2 if row % 2 else 0)
        for x in np.arange(-bw, WIDTH + bw, bw) + shift % bw:
            red = rng.uniform(0.55, 0.8)
            draw.rectangle([x, y, x + bw - 2, y + bh - 2], fill=(int(255 * red), int(255 * red * 0.45), 40))
    return np.asarray(img, np.float32) / 255 + _smooth_noise(rng, 5, 0.05)


def _scene_sea(rng: np.random.Generator) -> np.ndarray:
    """Pale sky over a dark-blue sea with horizontal wave stripes."""
    img = _vertical_blend(np.array([0.8, 0.9, 1.0]), np.array([0.6, 0.8, 0.95]))
    horizon = int(rng.uniform(35, 55))
    y = np.arange(HEIGHT - horizon, dtype=np.float32)[:, None]
    x = np.arange(WIDTH, dtype=np.float32)[None, :]
    waves = 0.5 + 0.5 * np.sin(y * rng.uniform(0.7, 1.0) + 0.3 * np.sin(x / 9 + rng.uniform(0, 6)))
    sea = np.array([0.05, 0.25, 0.5]) + waves[..., None] * np.array([0.05, 0.15, 0.2])
    img[horizon:] = sea
    return img + _smooth_noise(rng, 6, 0.03)


def _scene_desert(rng: np.random.Generator) -> np.ndarray:
    """Orange sky over sand dunes with a sinusoidal ridge."""
    img = _vertical_blend(np.array([0.95, 0.6, 0.3]), np.array([1.0, 0.85, 0.55]))
    x = np.arange(WIDTH)
    ridge = rng.uniform(55, 75) + 8 * np.sin(x / rng.uniform(15, 25) + rng.uniform(0, 6))
    below = np.arange(HEIGHT)[:, None] > ridge[None, :]
    img[below] = np.array([0.85, 0.7, 0.4]) * rng.uniform(0.9, 1.05)
    return img + _smooth_noise(rng, 6, 0.04)


SCENES: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "studio": _scene_studio, "park": _scene_park, "brick": _scene_brick,
    "sea": _scene_sea, "desert": _scene_desert,
}

# ---------------------------------------------------------------------------------------------
# motions: (rng, t float (F,)) -> centre x, y in pixels, each (F,)


def _oscillate(rng: np.random.Generator, t: np.ndarray, amp: float) -> np.ndarray:
    period = rng.uniform(20, 32)
    return amp * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))


# Bob and sway draw their centres so that the positions they visit cover about the same box: the sway's wide
# horizontal swing is matched by a wider range of bob centres, the bob's vertical swing by sway heights.
def _bob(rng: np.random.Generator, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cx = rng.uniform(42, WIDTH - 42)
    return np.full_like(t, cx), rng.uniform(70, 84) + _oscillate(rng, t, rng.uniform(8, 12))


def _sway(rng: np.random.Generator, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(62, WIDTH - 62) + _oscillate(rng, t, rng.uniform(18, 26))
    return x, np.full_like(t, rng.uniform(63, 91))


def _circle(rng: np.random.Generator, t: np.ndarray, sign: int) -> tuple[np.ndarray, np.ndarray]:
    # Image y points down: sign=+1 turns clockwise on screen.
    theta = rng.uniform(0, 2 * np.pi) + sign * 2 * np.pi * t / rng.uniform(28, 40)
    cx, cy = rng.uniform(60, WIDTH - 60), rng.uniform(75, 80)
    return cx + rng.uniform(18, 26) * np.cos(theta), cy + rng.uniform(6, 9) * np.sin(theta)


MOTIONS: dict[str, Callable[[np.random.Generator, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "bob": _bob,
    "sway": _sway,
    "circle_cw": lambda rng, t: _circle(rng, t, +1),
    "circle_ccw": lambda rng, t: _circle(rng, t, -1),
}

# ---------------------------------------------------------------------------------------------
# one video


@dataclass(frozen=True)
class VideoSpec:
    """Everything random about one video; frames are rendered from it on demand."""
    scene: str
    motion: str
    background: np.ndarray  # float32 (H, W, 3)
    sprite_height: int
    left: np.ndarray  # int (F,): sprite box top-left corner per frame
    top: np.ndarray
    brightness: float
    noise_seed: int


def sample_video(cls: SynthClass, rng: np.random.Generator) -> VideoSpec:
    motion = cls.motions[rng.integers(len(cls.motions))]
    background = SCENES[cls.scene](rng).astype(np.float32)
    height = int(round(SPRITE_HEIGHT * rng.uniform(0.9, 1.1)))
    width = scaled_sprite(height)[0].shape[1]
    cx, cy = MOTIONS[motion](rng, np.arange(FRAMES, dtype=np.float64))
    left, top = np.round(cx - width / 2).astype(int), np.round(cy - height / 2).astype(int)
    return VideoSpec(cls.scene, motion, background, height, left, top,
                     float(rng.uniform(0.9, 1.1)), int(rng.integers(2**31)))


def render_frame(spec: VideoSpec, t: int) -> np.ndarray:
    """uint8 (H, W, 3): background, sprite at its frame-t position, brightness and sensor noise."""
    frame = spec.background.copy()
    rgb, alpha = scaled_sprite(spec.sprite_height)
    _paste(frame, rgb, alpha, int(spec.left[t]), int(spec.top[t]))
    noise = np.random.default_rng([spec.noise_seed, t]).normal(0, 0.015, frame.shape)
    return (np.clip(frame * spec.brightness + noise, 0, 1) * 255).astype(np.uint8)


def render_video(spec: VideoSpec) -> np.ndarray:
    return np.stack([render_frame(spec, t) for t in range(FRAMES)])  # (F, H, W, 3) uint8


def pose_track(spec: VideoSpec) -> np.ndarray:
    """Ground-truth (F, 33, 3): sprite landmarks moved with the sprite box; x, y in [0, 1] of the frame."""
    rgb, _ = scaled_sprite(spec.sprite_height)
    h, w = rgb.shape[:2]
    x = (spec.left[:, None] + SPRITE_LANDMARKS[None, :, 0] * w) / WIDTH  # (F, 33)
    y = (spec.top[:, None] + SPRITE_LANDMARKS[None, :, 1] * h) / HEIGHT
    inside = (x >= 0) & (x <= 1) & (y >= 0) & (y <= 1)
    vis = np.where(inside, SPRITE_LANDMARKS[None, :, 2], 0.0)
    return np.stack([x, y, vis], axis=-1).astype(np.float32)


def video_rng(class_index: int, group: int, clip: int = 1) -> np.random.Generator:
    return np.random.default_rng([SEED, class_index, group, clip])


def write_avi(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    """Encode uint8 (F, H, W, 3) frames as MPEG-4 Part 2 in an AVI container (like UCF101's xvid files);
    1.5 Mbit/s is enough that the encoder sits at its finest quantiser."""
    write_video(path, [frames], frames.shape[2], frames.shape[1], fps, codec="mpeg4", bit_rate=1_500_000)


# ---------------------------------------------------------------------------------------------
# the dataset tree


def video_name(cls: SynthClass, group: int, clip: int = 1) -> str:
    return f"v_{cls.name}_g{group:02d}_c{clip:02d}"


def _write_split_files(root: Path) -> None:
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c.name}\n" for i, c in enumerate(CLASSES)))
    for split, test_groups in TEST_GROUPS.items():
        train, test = [], []
        for i, cls in enumerate(CLASSES):
            for g in GROUPS:
                rel = f"{cls.name}/{video_name(cls, g)}.avi"
                if g in test_groups:
                    test.append(f"{rel}\n")
                else:
                    train.append(f"{rel} {i + 1}\n")
        (lists / f"trainlist0{split}.txt").write_text("".join(train))
        (lists / f"testlist0{split}.txt").write_text("".join(test))
    (root / "classGroups.json").write_text(json.dumps({c.name: c.group for c in CLASSES}, indent=1))


def _write_videos(root: Path) -> None:
    meta = {}
    for i, cls in enumerate(CLASSES):
        PROGRESS.info("generating the embedded dataset: class %d/%d (%s, %d videos)", i + 1, len(CLASSES), cls.name,
                      len(GROUPS))
        (root / "UCF-101" / cls.name).mkdir(parents=True)
        (root / "poses_gt" / cls.name).mkdir(parents=True)
        for g in GROUPS:
            spec, name = sample_video(cls, video_rng(i, g)), video_name(cls, g)
            write_avi(root / "UCF-101" / cls.name / f"{name}.avi", render_video(spec))
            np.save(root / "poses_gt" / cls.name / f"{name}.npy", pose_track(spec))
            meta[f"{cls.name}/{name}"] = {"scene": spec.scene, "motion": spec.motion,
                                          "sprite_height": spec.sprite_height}
    (root / "videos.json").write_text(json.dumps(meta, indent=1))


def marker() -> str:
    """What `.complete` holds: VERSION and a digest of the layout constants (classes, groups, test groups, frame
    size and count, seed). A layout change that forgot to bump VERSION (as once happened: 11 and then 20 clips per
    class were both "synthetic-v2") still makes an existing folder stale instead of silently reusing it."""
    import hashlib

    layout = [[vars(c) for c in CLASSES], list(GROUPS), TEST_GROUPS, [WIDTH, HEIGHT, FRAMES, FPS, SEED, SPRITE_HEIGHT]]
    digest = hashlib.sha1(json.dumps(layout, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{VERSION} {digest}"


def is_complete(root: Path) -> bool:
    done = root / ".complete"
    return done.is_file() and done.read_text().strip() == marker()


def ensure_synthetic(root: Path | None = None) -> Path:
    """Generate the dataset into root (default `$CSVR_HOME/datasets/synthetic`) unless it is complete."""
    root = Path(root) if root is not None else datasets_dir() / "synthetic"
    if is_complete(root):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.parent / f".{root.name}.lock")):
        if is_complete(root):  # another process finished it while we waited
            return root
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
        tmp.chmod(0o755)
        try:
            _write_split_files(tmp)
            _write_videos(tmp)
            (tmp / ".complete").write_text(marker() + "\n")
            if root.exists():  # stale or partial: replace it
                shutil.rmtree(root)
            os.rename(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


if __name__ == "__main__":
    print(ensure_synthetic(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
