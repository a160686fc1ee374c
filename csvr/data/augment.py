"""Training augmentation on the device, batched: one parameter set per sample, applied to all of that sample's
frames (clip, future, I-frames) and to its poses.

    batches = DeviceBatches(loader, cfg.data, device, seed=cfg.train.seed, epoch=epoch)
    for batch in batches: ...    # batch["clip"]: float32 (B, 3, T, S, S), normalised, on `device`

    batch = augment(batch, cfg.data, step_generator(seed, epoch, step))  # the same, one batch at a time
    batch = augment(batch, cfg.data, None)                                  # held-out: no random part

Input: a batch of `csvr.data.dataset.ClipDataset` samples on the device (DESIGN.md, "A sample from the
worker"): uint8 `frames` (B, N, R, R, 3), N = T + T' + K, the square window of each video the worker cut out;
poses in that window's [0, 1] frame. Output: the model's batch (DESIGN.md, "A training batch").

Per sample (SimCLR-style, as the worker did before): a random resized crop of the window (area 0.5-1, aspect
3/4-4/3; torchvision.ops.roi_align, which averages ceil(crop / S) samples per output pixel, i.e. antialiased),
a horizontal flip with p = 0.5 when `data.flip`, a Gaussian blur with p = 0.5 (sigma 0.1-2 output pixels),
colour jitter with p = 0.8 (brightness / contrast / saturation 0.6-1.4, hue +-0.1 turn; kornia.enhance, the
torchvision-compatible functions of kornia's ColorJitter; one random order per batch, as kornia does), then
ImageNet normalisation. Poses follow the crop (x, y rescaled into the crop, joints outside it masked) and the
flip (x -> 1 - x, and MediaPipe's left/right landmarks swap: `FLIP_PERM`).

Parameters are drawn on the CPU from `generator`; `step_generator(seed, epoch, step)` makes a batch a function
of (seed, epoch, step), so a run resumed at an epoch boundary is bit-equal, and CPU and GPU draw the same.
A batch whose clips are already float (made in memory by tests or benchmarks) passes through unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
from kornia.enhance import (adjust_brightness_accumulative, adjust_contrast_with_mean_subtraction, adjust_hue,
                            adjust_saturation_with_gray_subtraction)
from kornia.filters import gaussian_blur2d
from torch import Tensor
from torchvision.ops import roi_align

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
JOINTS = 33
# MediaPipe Pose left <-> right landmark pairs; FLIP_PERM[j] = the joint that j becomes under a horizontal flip
_PAIRS = [(1, 4), (2, 5), (3, 6), (7, 8)] + [(j, j + 1) for j in range(9, 33, 2)]
FLIP_PERM = np.arange(JOINTS)
for _a, _b in _PAIRS:
    FLIP_PERM[_a], FLIP_PERM[_b] = _b, _a
JITTER = (lambda x, f: adjust_brightness_accumulative(x, f), adjust_contrast_with_mean_subtraction,
          adjust_saturation_with_gray_subtraction, lambda x, f: adjust_hue(x, f * 2 * math.pi))
NO_JITTER = (1.0, 1.0, 1.0, 0.0)  # brightness, contrast, saturation, hue factors that change nothing


@dataclass(frozen=True)
class Params:
    """One batch's augmentation: row b belongs to sample b (all of its frames and poses)."""

    box: Tensor  # (B, 4) float: u0, v0, width, height of the crop, as fractions of the window side
    flip: Tensor  # (B,) bool
    blur: Tensor  # (B,) float: Gaussian sigma in output pixels, 0 = no blur
    jitter: Tensor  # (B, 4) float: brightness, contrast, saturation, hue (NO_JITTER = none)
    order: tuple[int, ...]  # the order of the four jitter operations (one per batch)


def step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """A CPU generator that is a function of (seed, epoch, step) only."""
    state = np.random.SeedSequence([seed, epoch, step]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _uniform(g: torch.Generator, low: float, high: float, *shape: int) -> Tensor:
    return low + (high - low) * torch.rand(*shape, generator=g, dtype=torch.float64)


def random_boxes(b: int, g: torch.Generator, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), tries: int = 10) -> Tensor:
    """torchvision's RandomResizedCrop sampling on a unit square, vectorised: the first of `tries` candidates
    that fits, else the whole square. (B, 4) = u0, v0, width, height."""
    area = _uniform(g, *scale, b, tries)
    aspect = torch.exp(_uniform(g, math.log(ratio[0]), math.log(ratio[1]), b, tries))
    w, h = (area * aspect).sqrt(), (area / aspect).sqrt()  # (B, tries)
    fits = (w <= 1) & (h <= 1)
    first = fits.float().argmax(1, keepdim=True)  # first fitting try (0 when none fits)
    w = torch.where(fits.any(1), w.gather(1, first)[:, 0], 1.0)
    h = torch.where(fits.any(1), h.gather(1, first)[:, 0], 1.0)
    u0, v0 = (1 - w) * _uniform(g, 0, 1, b), (1 - h) * _uniform(g, 0, 1, b)
    return torch.stack([u0, v0, w, h], 1).float()


def sample_params(b: int, flip: bool, g: torch.Generator) -> Params:
    """Crop, flip p=0.5 (only when `flip`), blur p=0.5 (sigma 0.1-2), jitter p=0.8 (0.4 / 0.4 / 0.4 / 0.1)."""
    box = random_boxes(b, g)
    flips = (torch.rand(b, generator=g) < 0.5) & flip
    sigma = _uniform(g, 0.1, 2.0, b).float()
    blur = torch.where(torch.rand(b, generator=g) < 0.5, sigma, 0.0)
    factors = torch.stack([_uniform(g, 0.6, 1.4, b), _uniform(g, 0.6, 1.4, b), _uniform(g, 0.6, 1.4, b),
                           _uniform(g, -0.1, 0.1, b)], 1).float()
    jitter = torch.where((torch.rand(b, generator=g) < 0.8)[:, None], factors, torch.tensor(NO_JITTER))
    order = tuple(torch.randperm(4, generator=g).tolist())
    return Params(box, flips, blur, jitter, order)


def identity_params(b: int) -> Params:
    """The whole window, nothing else: what held-out batches get."""
    return Params(torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(b, 1), torch.zeros(b, dtype=torch.bool),
                  torch.zeros(b), torch.tensor(NO_JITTER).repeat(b, 1), (0, 1, 2, 3))


# ---------------------------------------------------------------------------------------------
# frames


def crop_resize(x: Tensor, box: Tensor, size: int) -> Tensor:
    """x float (B, N, 3, R, R), box (B, 4) window fractions -> (B, N, 3, size, size); one box per sample."""
    b, n, c, r = x.shape[:4]
    u0, v0, w, h = (box.to(x.device, x.dtype) * r).unbind(1)
    boxes = torch.stack([u0, v0, u0 + w, v0 + h], 1).repeat_interleave(n, 0)  # (B*N, 4) in pixels
    out = roi_align(x.reshape(b * n, c, r, r), [row[None] for row in boxes], size, aligned=True)
    return out.reshape(b, n, c, size, size)


def flip_frames(x: Tensor, flip: Tensor) -> Tensor:
    return torch.where(flip.to(x.device)[:, None, None, None, None], x.flip(-1), x)


def blur_frames(x: Tensor, sigma: Tensor) -> Tensor:
    """Blur the samples with sigma > 0 (kernel ~10% of the image, as SimCLR); x (B, N, 3, S, S)."""
    chosen = torch.nonzero(sigma > 0)[:, 0]
    if chosen.numel() == 0:
        return x
    n, size = x.shape[1], x.shape[-1]
    k = max(3, int(0.1 * size) // 2 * 2 + 1)
    s = sigma[chosen].repeat_interleave(n).to(x.device, x.dtype)[:, None].repeat(1, 2)  # (b*N, 2)
    blurred = gaussian_blur2d(x[chosen.to(x.device)].flatten(0, 1), k, s).reshape(-1, *x.shape[1:])
    return x.index_copy(0, chosen.to(x.device), blurred)


def jitter_frames(x: Tensor, factors: Tensor, order: tuple[int, ...]) -> Tensor:
    """Colour jitter of the samples whose factors are not NO_JITTER; x (B, N, 3, S, S) in [0, 1]."""
    chosen = torch.nonzero((factors != torch.tensor(NO_JITTER)).any(1))[:, 0]
    if chosen.numel() == 0:
        return x
    n, where = x.shape[1], chosen.to(x.device)
    f = factors[chosen].repeat_interleave(n, 0).to(x.device, x.dtype)  # (b*N, 4)
    y = x[where].flatten(0, 1)
    for k in order:
        y = JITTER[k](y, f[:, k])
    return x.index_copy(0, where, y.reshape(-1, *x.shape[1:]))


def normalise(x: Tensor) -> Tensor:
    """float (..., 3, H, W) in [0, 1] -> ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype)[:, None, None]
    return (x - mean) / std


def to_float(frames: Tensor) -> Tensor:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) in [0, 1]."""
    return frames.movedim(-1, -3).float().div_(255)


def augment_frames(frames: Tensor, p: Params, size: int) -> Tensor:
    """uint8 (B, N, R, R, 3) -> normalised float32 (B, N, 3, size, size): crop, flip, blur, jitter."""
    x = crop_resize(to_float(frames), p.box, size)
    x = flip_frames(x, p.flip)
    x = blur_frames(x, p.blur)
    x = jitter_frames(x, p.jitter, p.order)
    return normalise(x)


# ---------------------------------------------------------------------------------------------
# poses


def augment_poses(xy: Tensor, mask: Tensor, p: Params) -> tuple[Tensor, Tensor]:
    """xy (B, L, 33, 2) in the window's [0, 1] frame, mask (B, L, 33) -> the same in the crop's frame, joints
    outside the crop masked; flipped samples mirror x and swap left/right joints. Masked xy = 0."""
    box = p.box.to(xy.device, xy.dtype)[:, None, None]  # (B, 1, 1, 4)
    xy = (xy - box[..., :2]) / box[..., 2:]
    mask = mask & ((xy >= 0) & (xy <= 1)).all(-1)
    flip = p.flip.to(xy.device)
    perm = torch.as_tensor(FLIP_PERM, device=xy.device)
    mirrored = torch.stack([1 - xy[..., 0], xy[..., 1]], -1)[:, :, perm]  # joint j <- joint FLIP_PERM[j]
    xy = torch.where(flip[:, None, None, None], mirrored, xy)
    mask = torch.where(flip[:, None, None], mask[:, :, perm], mask)
    return torch.where(mask[..., None], xy, 0.0), mask


# ---------------------------------------------------------------------------------------------
# batches


def augment(batch: dict, data, generator: torch.Generator | None) -> dict:
    """A ClipDataset batch (on its device) -> the model's batch. `data` is the DataConfig (clip_len, future_len,
    size, flip); `generator` None: no random part (the whole window, resized)."""
    if "clip" in batch:  # already float clips: made in memory, nothing to do
        return batch
    b = len(batch["label"])
    p = identity_params(b) if generator is None else sample_params(b, data.flip, generator)
    out = {k: v for k, v in batch.items() if k != "frames"}
    t = data.clip_len
    out["poses"], out["pose_mask"] = augment_poses(batch["poses"], batch["pose_mask"], p)
    out["future_poses"], out["future_pose_mask"] = augment_poses(batch["future_poses"], batch["future_pose_mask"], p)
    if "frames" in batch:
        video = augment_frames(batch["frames"], p, data.size)  # (B, T + T' + K, 3, S, S)
        out["clip"] = video[:, :t].transpose(1, 2).contiguous()  # (B, 3, T, S, S)
        out["future"] = video[:, t:t + data.future_len].transpose(1, 2).contiguous()  # (B, 3, T', S, S)
        mask = batch["iframe_mask"]
        out["iframes"] = video[:, t + data.future_len:] * mask[:, :, None, None, None]  # (B, K, 3, S, S), 0 padded
    return out


class DeviceBatches:
    """Re-iterable view of a loader: each batch moved to `device` and augmented there; batch i of the epoch uses
    step_generator(seed, epoch, i) (seed None: held-out batches, no random part)."""

    def __init__(self, loader: Iterable[dict], data, device: torch.device, seed: int | None, epoch: int):
        self.loader, self.data, self.device, self.seed, self.epoch = loader, data, device, seed, epoch

    def __iter__(self) -> Iterator[dict]:
        cuda = self.device.type == "cuda"
        for step, batch in enumerate(self.loader):
            batch = {k: v.to(self.device, non_blocking=cuda) if torch.is_tensor(v) else v for k, v in batch.items()}
            g = None if self.seed is None else step_generator(self.seed, self.epoch, step)
            yield augment(batch, self.data, g)

    def __len__(self) -> int:
        return len(self.loader)
