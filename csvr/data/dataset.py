"""Training and evaluation samples read from a prepared cache (DESIGN.md: "Prepared cache", "A training sample").

    ds = ClipDataset(cache, "train", clip_len=16, future_len=16, stride=4, frame_size=128, train=True, seed=0)
    loader = make_loader(ds, batch_size=16, shuffle=True, workers=4, seed=0, drop_last=True)
    for epoch in range(epochs):
        ds.set_epoch(epoch)          # before iter(loader): persistent workers read it from shared memory
        for batch in DeviceBatches(loader, cfg.data, device, seed=0, epoch=epoch):  # csvr.data.augment
            ...                      # batch["clip"]: (B, 3, T, S, S), augmented on `device`

    test = EvalClips(cache, "test", clip_len=16, stride=4, size=112, clips_per_video=10)

Decoding: one decord `get_batch` per sample for every frame it needs (clip + future + I-frames, deduplicated
and sorted). Readers are opened lazily in the process that decodes (never in `__init__`) and kept in a small
per-process LRU; a process that finds readers inherited through fork drops them unused (a decord reader
used across fork deadlocks, FACTS.md).

The worker only decodes: a training sample is uint8 frames of a square window of the video (the largest
square, placed uniformly along the long side in training, centred otherwise; resized to `frame_size` only if
its side differs, which a cache prepared at that short side avoids) and poses in that window's frame. Crop,
flip, blur, colour jitter and normalisation run batched on the training device (`csvr.data.augment`).

Temporal sampling (`sample_indices`): the sample spans (clip_len + future_len) * stride frames; training
draws the start uniformly, evaluation takes the centred start. Finetuning samples (`finetune_clips`) have no
future: they span clip_len * stride frames, like `EvalClips`' clips (same stride and span rule). Randomness comes only from
`np.random.default_rng([seed, epoch, index])` (temporal start, window position), so a sample is a function of
(seed, epoch, index).
Short-video rule: if a video has fewer frames than the span, the stride drops to the largest value that
fits (>= 1); if even stride 1 does not fit, the indices are clamped to the last frame (it repeats).
I-frame rule (`select_iframes`): the key frames inside [start, start + clip_len * stride) fill the K =
clip_len * data.stride // 12 + 1 slots (-1 / zero padded, masked); if none lies there, the last key frame
before the start is used, so every sample has at least one positive.
"""
from __future__ import annotations

import json
import os
import random
from collections import OrderedDict
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as F

from csvr.data.augment import FLIP_PERM, IMAGENET_MEAN, IMAGENET_STD, JOINTS, normalise, to_float  # noqa: F401

GOP = 12  # the cache's fixed key-frame interval (DESIGN.md)

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
# the worker's spatial part: a square window of the frame (a slice), resized only if its side is not R


def square_window(h: int, w: int, rng: np.random.Generator | None) -> tuple[int, int, int]:
    """(x0, y0, side) of the largest square: uniformly placed along the long side in training, else centred."""
    side, room = min(h, w), abs(w - h)
    offset = room // 2 if rng is None else int(rng.integers(0, room + 1))
    return (offset, 0, side) if w >= h else (0, offset, side)


def window_frames(frames: np.ndarray, window: tuple[int, int, int], size: int) -> torch.Tensor:
    """uint8 (U, H, W, 3) -> uint8 (U, size, size, 3); a view when the window's side is already `size`."""
    x0, y0, side = window
    x = torch.from_numpy(frames[:, y0:y0 + side, x0:x0 + side])
    if side == size:
        return x
    return F.resize(x.permute(0, 3, 1, 2), [size, size], antialias=True).permute(0, 2, 3, 1)


def window_poses(keypoints: np.ndarray, detected: np.ndarray, window: tuple[int, int, int], h: int, w: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """keypoints (N, 33, 3) = x, y, visibility normalised to the full frame -> xy (N, 33, 2) in the window's
    [0, 1] frame and mask (N, 33) = detected & visibility > 0.5 & inside the window; masked xy = 0."""
    x0, y0, side = window
    xy = np.stack([(keypoints[..., 0] * w - x0) / side, (keypoints[..., 1] * h - y0) / side], -1)
    inside = ((xy >= 0) & (xy <= 1)).all(-1)
    mask = detected[:, None] & (keypoints[..., 2] > 0.5) & inside
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


def read_poses(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole track: keypoints (F, 33, 3), detected bool (F,), iframes int64 (K,)."""
    with np.load(path) as z:
        return z["keypoints"], z["detected"].astype(bool), z["iframes"].astype(np.int64)


def load_poses(path: Path, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """keypoints (N, 33, 3) and detected (N,) at `indices` (clamped to the pose track), all iframes (K,)."""
    keypoints, detected, iframes = read_poses(path)
    at = np.minimum(indices, len(keypoints) - 1)
    return keypoints[at], detected[at], iframes


def video_count(path: str) -> int:
    return len(READERS.get(path))


# ---------------------------------------------------------------------------------------------
# datasets


def first_per_class(labels, per_class: int) -> list[int]:
    """Row indices of the first `per_class` rows of each label, in order (all rows when per_class <= 0): the
    labelled subset of `finetune.labels_per_class`."""
    seen: dict[int, int] = {}
    keep = []
    for i, label in enumerate(int(v) for v in labels):
        if per_class <= 0 or seen.get(label, 0) < per_class:
            seen[label] = seen.get(label, 0) + 1
            keep.append(i)
    return keep


class _CacheSplit(Dataset):
    """The manifest rows of one split with status ok (first `max_videos` if > 0; then the first `per_class` of
    each class if > 0), and classes.json."""

    def __init__(self, cache: Path, split: Split, max_videos: int = 0, per_class: int = 0):
        self.cache = Path(cache)
        try:
            table = pd.read_parquet(self.cache / "manifest.parquet")
        except Exception as err:  # truncated/foreign file: pyarrow raises several types, with long messages
            raise ValueError(f"{self.cache / 'manifest.parquet'} is unreadable ({type(err).__name__}); rerun "
                             f"python -m csvr.prepare with --cache {self.cache} to rebuild it") from None
        table = table[(table["status"] == "ok") & (table["split"] == split)].reset_index(drop=True)
        table = table.head(max_videos) if max_videos > 0 else table
        self.manifest = table.iloc[first_per_class(table["label"], per_class)].reset_index(drop=True)
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
    """Training samples as a worker makes them (DESIGN.md, "A sample from the worker"): decoded uint8 frames of
    a square window of the video (clip, future, I-frames) and the poses in that window's frame, plus
    `frame_indices` (T+T',) and `iframe_indices` (K,) (-1 padded) for inspection. `csvr.data.augment` turns a
    batch of them into the model's inputs on the device. `frame_size` = R, the side of the delivered frames (the
    cache's short side avoids any resize here). `poses_only`: no video is opened (the pose pretraining stage):
    poses, masks, label, index and frame_indices, from the pose track and the manifest's frame size.
    `iframes=False`: no I-frame slots (K = 0, nothing decoded for them); see `finetune_clips`."""

    def __init__(self, cache: Path, split: Split, clip_len: int, future_len: int, stride: int, frame_size: int,
                 train: bool, seed: int = 0, max_videos: int = 0, poses_only: bool = False, iframes: bool = True,
                 per_class: int = 0):
        super().__init__(cache, split, max_videos, per_class)
        self.clip_len, self.future_len, self.stride, self.frame_size = clip_len, future_len, stride, frame_size
        self.train, self.seed, self.poses_only = train, seed, poses_only
        self.slots = clip_len * stride // GOP + 1 if iframes else 0  # K
        self.shapes = list(zip(self.manifest["height"].astype(int), self.manifest["width"].astype(int)))
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # seen by persistent workers

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i]) if self.train else None
        if self.poses_only:
            return self._poses_sample(i, rng)
        path = self.video_path(i)
        n = video_count(path)
        indices, start, s = sample_indices(n, self.clip_len, self.future_len, self.stride, rng)
        keypoints, detected, keys = load_poses(self.pose_path(i), indices)
        key_idx = select_iframes(keys, start, self.clip_len * s, self.slots, n) if self.slots else keys[:0]
        frames, rows = decode(path, np.concatenate([indices, key_idx[key_idx >= 0]]))
        h, w = frames.shape[1:3]
        window = square_window(h, w, rng)
        video = torch.zeros(len(indices) + self.slots, self.frame_size, self.frame_size, 3, dtype=torch.uint8)
        video[:len(rows)] = window_frames(frames, window, self.frame_size)[rows]  # (T + T' + K, R, R, 3)
        return {"frames": video, "iframe_mask": torch.from_numpy(key_idx >= 0),
                "iframe_indices": torch.from_numpy(key_idx),
                **self._poses(i, *window_poses(keypoints, detected, window, h, w), indices)}

    def _poses_sample(self, i: int, rng: np.random.Generator | None) -> dict[str, torch.Tensor]:
        keypoints, detected, _ = read_poses(self.pose_path(i))
        indices, _, _ = sample_indices(len(keypoints), self.clip_len, self.future_len, self.stride, rng)
        h, w = self.shapes[i]
        window = square_window(h, w, rng)
        return self._poses(i, *window_poses(keypoints[indices], detected[indices], window, h, w), indices)

    def _poses(self, i: int, poses: torch.Tensor, mask: torch.Tensor, indices: np.ndarray) -> dict[str, torch.Tensor]:
        t = self.clip_len
        return {"poses": poses[:t], "pose_mask": mask[:t],  # (T, 33, 2), (T, 33)
                "future_poses": poses[t:], "future_pose_mask": mask[t:],
                "label": torch.tensor(self.labels[i], dtype=torch.int64),
                "index": torch.tensor(i, dtype=torch.int64), "frame_indices": torch.from_numpy(indices)}


def finetune_clips(cache: Path, split: Split, clip_len: int, stride: int, frame_size: int, train: bool,
                   seed: int = 0, max_videos: int = 0, per_class: int = 0) -> ClipDataset:
    """Finetuning samples (Section IV-B, Finetuning): one clip of `clip_len` frames at `stride`, no future and no
    I-frames, under the span rule `EvalClips` uses (`window_starts`: the stride drops only when clip_len frames do
    not fit); a random start in training, the centred one otherwise. Evaluation then sees clips at the stride
    finetuning trained on, which the pretraining span (clip_len + future_len frames) would not give short videos."""
    return ClipDataset(cache, split, clip_len, 0, stride, frame_size, train, seed=seed, max_videos=max_videos,
                       iframes=False, per_class=per_class)


class EvalClips(_CacheSplit):
    """Per video, `clips_per_video` evenly spaced clips of the centred square window, no augmentation, ready for
    the model (normalised here, in the worker): clip (N, 3, T, S, S), poses (N, T, 33, 2), pose_mask (N, T, 33),
    frame_indices (N, T), label, index. Same short-video rule."""

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
        window = square_window(h, w, None)
        video = normalise(to_float(window_frames(frames, window, self.size)[rows]))  # (N*T, 3, S, S)
        keypoints, detected, _ = load_poses(self.pose_path(i), indices.reshape(-1))
        poses, mask = window_poses(keypoints, detected, window, h, w)
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
