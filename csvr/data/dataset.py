"""Training and evaluation samples read from a prepared cache (DESIGN.md: "Prepared cache", "A training sample").

    ds = ClipDataset(cache, "train", clip_len=16, future_len=16, stride=4, size=112, train=True, seed=0)
    loader = make_loader(ds, batch_size=16, shuffle=True, workers=4, seed=0, drop_last=True)
    for epoch in range(epochs):
        ds.set_epoch(epoch)          # before iter(loader): persistent workers read it from shared memory
        for batch in loader: ...     # batch["clip"]: (B, 3, T, S, S)

    test = EvalClips(cache, "test", clip_len=16, stride=4, size=112, clips_per_video=10)

Decoding: one decord `get_batch` per sample for every frame it needs (clip + future + I-frames, deduplicated
and sorted). Readers are opened lazily in the process that decodes (never in `__init__`) and kept in a small
per-process LRU; a process that finds readers inherited through fork drops them unused (a decord reader
used across fork deadlocks, FACTS.md).

Temporal sampling (`sample_indices`): the sample spans (clip_len + future_len) * stride frames; training
draws the start uniformly, evaluation takes the centred start. Randomness comes only from
`np.random.default_rng([seed, epoch, index])`, so a sample is a function of (seed, epoch, index).
Short-video rule: if a video has fewer frames than the span, the stride drops to the largest value that
fits (>= 1); if even stride 1 does not fit, the indices are clamped to the last frame (it repeats).
I-frame rule (`select_iframes`): the key frames inside [start, start + clip_len * stride) fill the K =
clip_len * data.stride // 12 + 1 slots (-1 / zero padded, masked); if none lies there, the last key frame
before the start is used, so every sample has at least one positive.
"""
from __future__ import annotations

import json
import math
import os
import random
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
GOP = 12  # the cache's fixed key-frame interval (DESIGN.md)
JOINTS = 33
# MediaPipe Pose left <-> right landmark pairs; FLIP_PERM[j] = the joint that j becomes under a horizontal flip
_PAIRS = [(1, 4), (2, 5), (3, 6), (7, 8)] + [(j, j + 1) for j in range(9, 33, 2)]
FLIP_PERM = np.arange(JOINTS)
for _a, _b in _PAIRS:
    FLIP_PERM[_a], FLIP_PERM[_b] = _b, _a
JITTER = {"brightness": F.adjust_brightness, "contrast": F.adjust_contrast,
          "saturation": F.adjust_saturation, "hue": F.adjust_hue}

Split = Literal["train", "test"]


# ---------------------------------------------------------------------------------------------
# temporal sampling


def fit_stride(n: int, frames: int, stride: int) -> int:
    """Largest s <= stride with frames * s <= n, at least 1."""
    return max(1, min(stride, n // frames))


def sample_indices(n: int, clip_len: int, future_len: int, stride: int,
                   rng: np.random.Generator | None) -> tuple[np.ndarray, int, int]:
    """(indices (T+T',), start, stride used); rng=None gives the centred (eval) start."""
    total = clip_len + future_len
    s = fit_stride(n, total, stride)
    room = max(0, n - total * s)
    start = int(rng.integers(0, room + 1)) if rng is not None else room // 2
    return np.minimum(start + s * np.arange(total), n - 1).astype(np.int64), start, s


def window_starts(n: int, clip_len: int, stride: int, clips: int) -> tuple[np.ndarray, int]:
    """Sliding-window starts (clips,) evenly spaced from the first to the last frame, and the stride used."""
    s = fit_stride(n, clip_len, stride)
    room = max(0, n - clip_len * s)
    starts = np.linspace(0, room, clips) if clips > 1 else np.array([room / 2])  # one clip: centred
    return starts.round().astype(np.int64), s


def select_iframes(keys: np.ndarray, start: int, length: int, slots: int, n: int) -> np.ndarray:
    """Key frames in [start, start + length) -> (slots,) int64, -1 padded; never empty (see module doc)."""
    keys = np.sort(keys[keys < n])
    chosen = keys[(keys >= start) & (keys < start + length)][:slots]
    if chosen.size == 0:
        before = keys[keys < start]
        chosen = before[-1:] if before.size else np.zeros(1, np.int64)
    out = np.full(slots, -1, np.int64)
    out[:chosen.size] = chosen
    return out


# ---------------------------------------------------------------------------------------------
# spatial augmentation: one parameter set per sample, applied to every frame and pose of it


@dataclass(frozen=True)
class Aug:
    box: tuple[int, int, int, int]  # x0, y0, crop width, crop height in cached-frame pixels
    flip: bool = False
    blur_sigma: float = 0.0  # 0 = no blur
    jitter: tuple[tuple[str, float], ...] = ()  # (JITTER name, factor) in the order applied


def center_aug(h: int, w: int) -> Aug:
    side = min(h, w)
    return Aug(((w - side) // 2, (h - side) // 2, side, side))


def random_crop_box(rng: np.random.Generator, h: int, w: int, scale=(0.5, 1.0),
                    ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop sampling (10 tries, then the centre square)."""
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch
    return center_aug(h, w).box


def sample_aug(rng: np.random.Generator, h: int, w: int) -> Aug:
    """Crop (scale 0.5-1, aspect 3/4-4/3), flip p=0.5, blur p=0.5 (sigma 0.1-2), jitter p=0.8 (0.4/0.4/0.4/0.1)."""
    box = random_crop_box(rng, h, w)
    flip = bool(rng.random() < 0.5)
    blur = float(rng.uniform(0.1, 2.0)) if rng.random() < 0.5 else 0.0
    jitter: tuple[tuple[str, float], ...] = ()
    if rng.random() < 0.8:
        factors = {"brightness": rng.uniform(0.6, 1.4), "contrast": rng.uniform(0.6, 1.4),
                   "saturation": rng.uniform(0.6, 1.4), "hue": rng.uniform(-0.1, 0.1)}
        names = list(JITTER)
        jitter = tuple((names[k], float(factors[names[k]])) for k in rng.permutation(len(names)))
    return Aug(box, flip, blur, jitter)


def apply_aug(frames: np.ndarray, aug: Aug, size: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float32 (N, 3, size, size)."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8
    x0, y0, cw, ch = aug.box
    x = F.resized_crop(x, y0, x0, ch, cw, [size, size], antialias=True).float().div_(255)
    if aug.flip:
        x = x.flip(-1)
    if aug.blur_sigma > 0:
        k = max(3, int(0.1 * size) // 2 * 2 + 1)  # SimCLR: kernel ~10% of the image
        x = F.gaussian_blur(x, [k, k], [aug.blur_sigma, aug.blur_sigma])
    for name, factor in aug.jitter:
        x = JITTER[name](x, factor)
    return F.normalize(x, IMAGENET_MEAN, IMAGENET_STD)


def transform_poses(keypoints: np.ndarray, detected: np.ndarray, aug: Aug, h: int, w: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """keypoints (N, 33, 3) = x, y, visibility normalised to the full frame -> xy (N, 33, 2) in the crop's
    [0, 1] frame and mask (N, 33) = detected & visibility > 0.5 & inside the crop; masked xy = 0."""
    x0, y0, cw, ch = aug.box
    xy = np.stack([(keypoints[..., 0] * w - x0) / cw, (keypoints[..., 1] * h - y0) / ch], -1)
    inside = ((xy >= 0) & (xy <= 1)).all(-1)
    mask = detected[:, None] & (keypoints[..., 2] > 0.5) & inside
    if aug.flip:
        xy[..., 0] = 1 - xy[..., 0]
        xy, mask = xy[:, FLIP_PERM], mask[:, FLIP_PERM]  # a left joint is now on the right
    xy = np.where(mask[..., None], xy, 0.0).astype(np.float32)
    return torch.from_numpy(xy), torch.from_numpy(mask)


# ---------------------------------------------------------------------------------------------
# decoding


class ReaderCache:
    """Per-process LRU of decord readers. Readers seen under another pid (inherited by fork) are kept
    referenced but never used or destroyed in this process."""

    def __init__(self, capacity: int = 8):
        self.capacity, self.pid = capacity, os.getpid()
        self.readers: OrderedDict[str, object] = OrderedDict()
        self._inherited: list[object] = []

    def get(self, path: str):
        import decord  # imported where it decodes

        if os.getpid() != self.pid:
            self._inherited += list(self.readers.values())
            self.readers, self.pid = OrderedDict(), os.getpid()
        if path in self.readers:
            self.readers.move_to_end(path)
            return self.readers[path]
        while len(self.readers) >= self.capacity:
            self.readers.popitem(last=False)  # dropping the last reference closes the file
        self.readers[path] = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        return self.readers[path]

    def open_here(self) -> bool:
        return bool(self.readers) and os.getpid() == self.pid


READERS = ReaderCache()


def decode(path: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One get_batch for the unique sorted indices: frames uint8 (U, H, W, 3) and, for each requested
    index, its row in frames (len(indices),)."""
    unique, inverse = np.unique(indices, return_inverse=True)
    reader = READERS.get(path)
    frames = reader.get_batch(unique.tolist()).asnumpy()
    reader.seek(0)  # decord memory growth with get_batch on large videos (FACTS.md)
    return frames, inverse.reshape(-1)


def load_poses(path: Path, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """keypoints (N, 33, 3) and detected (N,) at `indices` (clamped to the pose track), all iframes (K,)."""
    with np.load(path) as z:
        keypoints, detected, iframes = z["keypoints"], z["detected"], z["iframes"]
    at = np.minimum(indices, len(keypoints) - 1)
    return keypoints[at], detected[at].astype(bool), iframes.astype(np.int64)


def video_count(path: str) -> int:
    return len(READERS.get(path))


# ---------------------------------------------------------------------------------------------
# datasets


class _CacheSplit(Dataset):
    """The manifest rows of one split with status ok (first `max_videos` if > 0), and classes.json."""

    def __init__(self, cache: Path, split: Split, max_videos: int = 0):
        self.cache = Path(cache)
        table = pd.read_parquet(self.cache / "manifest.parquet")
        table = table[(table["status"] == "ok") & (table["split"] == split)].reset_index(drop=True)
        self.manifest = table.head(max_videos) if max_videos > 0 else table
        self.keys: list[str] = self.manifest["key"].tolist()
        self.labels: list[int] = self.manifest["label"].astype(int).tolist()
        classes = sorted(json.loads((self.cache / "classes.json").read_text()), key=lambda c: c["index"])
        self.classes: list[str] = [c["name"] for c in classes]
        self.groups: list[str | None] = [c.get("group") for c in classes]

    def __len__(self) -> int:
        return len(self.keys)

    def video_path(self, i: int) -> str:
        return str(self.cache / "videos" / f"{self.keys[i]}.mp4")

    def pose_path(self, i: int) -> Path:
        return self.cache / "poses" / f"{self.keys[i]}.npz"


class ClipDataset(_CacheSplit):
    """Training samples: current clip, future clip, I-frames and poses (DESIGN.md table), plus
    `frame_indices` (T+T',) and `iframe_indices` (K,) (-1 padded) for inspection."""

    def __init__(self, cache: Path, split: Split, clip_len: int, future_len: int, stride: int, size: int,
                 train: bool, seed: int = 0, max_videos: int = 0):
        super().__init__(cache, split, max_videos)
        self.clip_len, self.future_len, self.stride, self.size = clip_len, future_len, stride, size
        self.train, self.seed = train, seed
        self.slots = clip_len * stride // GOP + 1  # K
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # seen by persistent workers

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        path = self.video_path(i)
        n = video_count(path)
        indices, start, s = sample_indices(n, self.clip_len, self.future_len, self.stride,
                                           rng if self.train else None)
        keypoints, detected, keys = load_poses(self.pose_path(i), indices)
        key_idx = select_iframes(keys, start, self.clip_len * s, self.slots, n)
        frames, rows = decode(path, np.concatenate([indices, key_idx[key_idx >= 0]]))
        h, w = frames.shape[1:3]
        aug = sample_aug(rng, h, w) if self.train else center_aug(h, w)
        video = apply_aug(frames, aug, self.size)[rows]  # (T + T' + k, 3, S, S)
        poses, pose_mask = transform_poses(keypoints, detected, aug, h, w)
        return self._pack(i, video, poses, pose_mask, indices, key_idx)

    def _pack(self, i, video, poses, pose_mask, indices, key_idx) -> dict[str, torch.Tensor]:
        t, tf = self.clip_len, self.future_len
        k = int((key_idx >= 0).sum())
        iframes = video.new_zeros(self.slots, *video.shape[1:])  # (K, 3, S, S)
        iframes[:k] = video[t + tf:]
        return {
            "clip": video[:t].permute(1, 0, 2, 3).contiguous(),  # (3, T, S, S)
            "future": video[t:t + tf].permute(1, 0, 2, 3).contiguous(),  # (3, T', S, S)
            "iframes": iframes, "iframe_mask": torch.from_numpy(key_idx >= 0),
            "poses": poses[:t], "pose_mask": pose_mask[:t],  # (T, 33, 2), (T, 33)
            "future_poses": poses[t:], "future_pose_mask": pose_mask[t:],
            "label": torch.tensor(self.labels[i], dtype=torch.int64),
            "index": torch.tensor(i, dtype=torch.int64),
            "frame_indices": torch.from_numpy(indices), "iframe_indices": torch.from_numpy(key_idx),
        }


class EvalClips(_CacheSplit):
    """Per video, `clips_per_video` evenly spaced clips, centre crop, no augmentation: clip (N, 3, T, S, S),
    poses (N, T, 33, 2), pose_mask (N, T, 33), frame_indices (N, T), label, index. Same short-video rule."""

    def __init__(self, cache: Path, split: Split, clip_len: int, stride: int, size: int,
                 clips_per_video: int, max_videos: int = 0):
        super().__init__(cache, split, max_videos)
        self.clip_len, self.stride, self.size, self.clips = clip_len, stride, size, clips_per_video

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        path = self.video_path(i)
        n = video_count(path)
        starts, s = window_starts(n, self.clip_len, self.stride, self.clips)
        indices = np.minimum(starts[:, None] + s * np.arange(self.clip_len), n - 1)  # (N, T)
        frames, rows = decode(path, indices.reshape(-1))
        h, w = frames.shape[1:3]
        aug = center_aug(h, w)
        video = apply_aug(frames, aug, self.size)[rows]  # (N*T, 3, S, S)
        keypoints, detected, _ = load_poses(self.pose_path(i), indices.reshape(-1))
        poses, mask = transform_poses(keypoints, detected, aug, h, w)
        shape = (self.clips, self.clip_len)
        return {
            "clip": video.reshape(*shape, *video.shape[1:]).permute(0, 2, 1, 3, 4).contiguous(),
            "poses": poses.reshape(*shape, JOINTS, 2), "pose_mask": mask.reshape(*shape, JOINTS),
            "frame_indices": torch.from_numpy(indices.astype(np.int64)),
            "label": torch.tensor(self.labels[i], dtype=torch.int64),
            "index": torch.tensor(i, dtype=torch.int64),
        }


# ---------------------------------------------------------------------------------------------
# loader


def seed_worker(worker_id: int) -> None:
    """numpy / random follow torch's per-worker seed (itself drawn from the loader's generator)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def default_context() -> str:
    """fork is fast and safe while this process holds no decord reader; otherwise spawn."""
    return "spawn" if READERS.open_here() else "fork"


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, workers: int, seed: int,
                drop_last: bool, context: str | None = None) -> DataLoader:
    """Seeded loader; persistent workers (call `set_epoch` before each `iter`), pinned memory on CUDA.
    `context` = multiprocessing start method (None: `default_context()`)."""
    extra = {}
    if workers > 0:
        extra = dict(persistent_workers=True, worker_init_fn=seed_worker,
                     multiprocessing_context=context or default_context())
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      generator=torch.Generator().manual_seed(seed), drop_last=drop_last,
                      pin_memory=torch.cuda.is_available(), **extra)
