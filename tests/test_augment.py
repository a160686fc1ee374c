"""Tests for csvr.data.augment: the batched device augmentation of ClipDataset batches (run here on the CPU).

    python -m pytest tests/test_augment.py -q
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from csvr.config import DataConfig
from csvr.data import augment as A
from csvr.data import dataset as D
from tests.cachefixture import H, write_cache

T, TF, STRIDE, SIZE, R = 4, 4, 2, 32, 48
DATA = DataConfig(clip_len=T, future_len=TF, stride=STRIDE, size=SIZE, flip=True)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_cache(tmp_path_factory.mktemp("cache"))


def worker_batch(b: int = 16, n: int = T + TF + 2, seed: int = 0) -> dict:
    """A synthetic worker batch: every frame of a sample is the same random image, poses uniform in the window."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (b, 1, R, R, 3), dtype=torch.uint8, generator=g)
    xy = torch.rand(b, T + TF, 33, 2, generator=g)
    mask = torch.rand(b, T + TF, 33, generator=g) > 0.2
    xy = torch.where(mask[..., None], xy, 0.0)
    return {"frames": image.repeat(1, n, 1, 1, 1), "iframe_mask": torch.tensor([True, False]).repeat(b, 1),
            "poses": xy[:, :T], "pose_mask": mask[:, :T], "future_poses": xy[:, T:], "future_pose_mask": mask[:, T:],
            "label": torch.zeros(b, dtype=torch.int64)}


def test_one_parameter_set_per_sample_across_frames_and_iframes():
    out = A.augment(worker_batch(), DATA, A.step_generator(0, 0, 0))
    frames = torch.cat([out["clip"], out["future"], out["iframes"][:, :1].transpose(1, 2)], 2)  # (B, 3, N, S, S)
    assert torch.equal(frames, frames[:, :, :1].expand_as(frames))  # every frame of a sample alike
    assert (out["iframes"][:, 1] == 0).all()  # the padded slot stays zero
    distinct = {tuple(out["clip"][b, :, 0].flatten()[:8].tolist()) for b in range(16)}
    assert len(distinct) == 16  # the samples of the batch are augmented differently


def test_crop_boxes_follow_random_resized_crop():
    box = A.random_boxes(4000, torch.Generator().manual_seed(0))
    u0, v0, w, h = box.unbind(1)
    assert (u0 >= 0).all() and (v0 >= 0).all() and (u0 + w <= 1 + 1e-6).all() and (v0 + h <= 1 + 1e-6).all()
    area, aspect = w * h, w / h
    assert (area >= 0.5 - 1e-5).all() and (area <= 1 + 1e-5).all()
    assert (aspect >= 3 / 4 - 1e-4).all() and (aspect <= 4 / 3 + 1e-4).all()
    assert area.min() < 0.52 and area.max() > 0.95 and u0.max() > 0.25  # the whole range is drawn


def crop_only(xy: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    return (xy - box[:, None, None, :2]) / box[:, None, None, 2:]


def test_poses_follow_the_crop_and_flip_swaps_left_right():
    batch, g = worker_batch(64), A.step_generator(3, 1, 2)
    p = A.sample_params(64, True, g)
    xy, mask = A.augment_poses(batch["poses"], batch["pose_mask"], p)
    expected = crop_only(batch["poses"], p.box)
    flipped = p.flip.nonzero()[:, 0]
    plain = (~p.flip).nonzero()[:, 0]
    assert 16 < len(flipped) < 48
    inside = batch["pose_mask"] & ((expected >= 0) & (expected <= 1)).all(-1)
    torch.testing.assert_close(xy[plain][inside[plain]], expected[plain][inside[plain]])
    assert torch.equal(mask[plain], inside[plain])
    perm = torch.as_tensor(A.FLIP_PERM)
    for left, right in [(11, 12), (1, 4), (31, 32), (0, 0)]:  # shoulders, eyes, feet; the nose stays
        assert perm[left] == right and perm[right] == left
        m = inside[flipped][..., right]
        assert torch.equal(mask[flipped][..., left], m)
        torch.testing.assert_close(xy[flipped][..., left, 0][m], 1 - expected[flipped][..., right, 0][m])
        torch.testing.assert_close(xy[flipped][..., left, 1][m], expected[flipped][..., right, 1][m])
    assert (xy[~mask] == 0).all()


@pytest.mark.parametrize("flip", [False, True])
def test_data_flip_setting(flip):
    """flip off: no sample is mirrored, in 8 batches; on: about half are, and their frames are the mirror image."""
    data = replace(DATA, flip=flip)
    batch = worker_batch(32)
    flips = torch.cat([A.sample_params(32, flip, A.step_generator(0, 0, s)).flip for s in range(8)])
    assert (flips.float().mean().item() > 0.3) if flip else not flips.any()
    out = A.augment(batch, data, A.step_generator(0, 0, 0))
    p = A.sample_params(32, flip, A.step_generator(0, 0, 0))
    unflipped = replace(p, flip=torch.zeros_like(p.flip))
    mirrored = A.augment_frames(batch["frames"], unflipped, SIZE).flip(-1)  # (B, N, 3, S, S)
    for b in range(32):
        same = torch.allclose(out["clip"][b].transpose(0, 1), mirrored[b, :T], atol=1e-4)
        assert same == bool(p.flip[b]), b
        want = crop_only(batch["poses"][b:b + 1], p.box[b:b + 1])[0]
        m = out["pose_mask"][b]
        got = out["poses"][b]
        if p.flip[b]:
            got = torch.stack([1 - got[..., 0], got[..., 1]], -1)[:, A.FLIP_PERM]
            m = m[:, A.FLIP_PERM]
        torch.testing.assert_close(got[m], want[m])


def test_same_seed_epoch_step_same_batch():
    batch = worker_batch()
    a = A.augment(batch, DATA, A.step_generator(1, 2, 3))
    b = A.augment(batch, DATA, A.step_generator(1, 2, 3))
    assert all(torch.equal(a[k], b[k]) for k in a)
    for other in [(1, 2, 4), (1, 3, 3), (2, 2, 3)]:
        assert not torch.equal(a["clip"], A.augment(batch, DATA, A.step_generator(*other))["clip"])


def test_held_out_batches_are_the_resized_window():
    """No generator: the whole window; 48 -> 24 px is then exactly a 2 x 2 average (roi_align samples 2 x 2
    points per output pixel, here the pixel centres)."""
    batch = worker_batch(4)
    out = A.augment(batch, replace(DATA, size=24), None)
    torch.testing.assert_close(out["poses"], batch["poses"])
    window = A.normalise(torch.nn.functional.avg_pool2d(A.to_float(batch["frames"][:, 0]), 2))
    torch.testing.assert_close(out["clip"][:, :, 0], window, atol=1e-5, rtol=0)


def test_float_batches_pass_unchanged():
    batch = {"clip": torch.zeros(2, 3, T, SIZE, SIZE), "poses": torch.rand(2, T, 33, 2)}
    assert A.augment(batch, DATA, A.step_generator(0, 0, 0)) is batch


def brightness(video: torch.Tensor) -> torch.Tensor:
    """(3, N, S, S) normalised -> (N, S, S) mean intensity in [0, 1]."""
    mean, std = torch.tensor(A.IMAGENET_MEAN), torch.tensor(A.IMAGENET_STD)
    return (video * std[:, None, None, None] + mean[:, None, None, None]).mean(0)


def on_square(frame: torch.Tensor, xy: torch.Tensor) -> bool:
    """Is the crop-frame point xy on a bright pixel of frame (S, S)?"""
    col, row = (xy * SIZE).long().clamp(0, SIZE - 1).tolist()
    median = frame.median()
    return bool(frame[row, col] > median + 0.5 * (frame.max() - median))


@pytest.mark.parametrize("train", [True, False])
def test_real_poses_follow_crop_and_flip(cache, train):
    """End to end on real decoded video: joint 11 sits on the moving bright square, joint 12 on a dark spot;
    after a flip they swap. Through DeviceBatches (device = CPU), 4 epochs of the fixture's training split."""
    ds = D.ClipDataset(cache, "train", T, TF, STRIDE, H, train=train)
    hits = {11: 0, 12: 0}
    for epoch in range(4 if train else 1):
        ds.set_epoch(epoch)
        for batch in A.DeviceBatches(DataLoader(ds, batch_size=2), DATA, torch.device("cpu"),
                                     0 if train else None, epoch):
            for s in [{k: v[b] for k, v in batch.items()} for b in range(2)]:
                count_hits(s, hits)
    assert hits[11] > 10 and (hits[12] > 10 if train else hits[12] == 0)


def count_hits(s: dict, hits: dict) -> None:
    frames = brightness(torch.cat([s["clip"], s["future"]], 1))
    xy, mask = torch.cat([s["poses"], s["future_poses"]]), torch.cat([s["pose_mask"], s["future_pose_mask"]])
    for t in range(len(frames)):
        valid = {j: bool(mask[t, j] and ((xy[t, j] > 0.05) & (xy[t, j] < 0.95)).all()) for j in (11, 12)}
        bright = {j: valid[j] and on_square(frames[t], xy[t, j]) for j in (11, 12)}
        if valid[11] and valid[12]:  # one joint on the square, the other on the dark spot
            assert bright[11] != bright[12]
        hits[11], hits[12] = hits[11] + bright[11], hits[12] + bright[12]


def test_device_batches_reiterate_equal_and_poses_only(cache):
    ds = D.ClipDataset(cache, "train", T, TF, STRIDE, H, train=True)
    batches = A.DeviceBatches(DataLoader(ds, batch_size=2), DATA, torch.device("cpu"), seed=0, epoch=0)
    first, again = list(batches), list(batches)
    assert len(first) == len(batches) == 2 and first[0]["clip"].shape == (2, 3, T, SIZE, SIZE)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(first, again) for k in a)
    poses = D.ClipDataset(cache, "train", T, TF, STRIDE, H, train=True, poses_only=True)
    only = list(A.DeviceBatches(DataLoader(poses, batch_size=2), DATA, torch.device("cpu"), seed=0, epoch=0))
    assert "clip" not in only[0]
    for a, b in zip(first, only):  # the same crop and flip reach the poses without any frame
        for k in b:
            assert torch.equal(a[k], b[k]), k


def test_model_batch_collates_like_the_design_table(cache):
    ds = D.ClipDataset(cache, "train", 8, 4, 4, H, train=True)
    out = A.augment(default_collate([ds[0], ds[1]]), replace(DATA, clip_len=8, future_len=4), A.step_generator(0, 0, 0))
    k = 8 * 4 // 12 + 1
    assert out["clip"].shape == (2, 3, 8, SIZE, SIZE) and out["future"].shape == (2, 3, 4, SIZE, SIZE)
    assert out["iframes"].shape == (2, k, 3, SIZE, SIZE) and out["clip"].dtype == torch.float32


def test_train_batches_are_a_function_of_seed_and_epoch(cache):
    """What a resumed stage relies on: a fresh `train_batches` gives epoch e's batches bit-equal, augmentation
    included, whatever ran before; the pose stage's poses-only batches too."""
    from csvr.config import apply_overrides, tiny
    from csvr.data.loaders import train_batches

    cfg = apply_overrides(tiny(), {"data.batch_size": 2, "data.workers": 0, "train.device": "cpu"})
    first = train_batches(cache, cfg, 2)
    list(first(0))
    epoch1 = list(first(1))
    fresh = list(train_batches(cache, cfg, 2)(1))
    assert len(epoch1) == 2 and epoch1[0]["clip"].shape == (2, 3, 8, 32, 32)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(epoch1, fresh) for k in a)
    poses = list(train_batches(cache, cfg, 2, poses_only=True)(1))
    assert all(torch.equal(a[k], b[k]) for a, b in zip(epoch1, poses) for k in b)


def test_held_out_batches_hold_every_video_once_in_one_order_for_every_seed(cache):
    """Held-out batches (the pretext metrics') are not the split's class-sorted order, where a batch of one class
    would give context matching only same-scene negatives; the order is fixed, whatever train.seed."""
    from csvr.config import apply_overrides, tiny
    from csvr.data.loaders import train_batches

    def order(seed: int) -> list[int]:
        cfg = apply_overrides(tiny(), {"data.batch_size": 2, "data.workers": 0, "train.device": "cpu",
                                       "train.seed": seed})
        return [i for b in train_batches(cache, cfg, 2, train=False)(0) for i in b["index"].tolist()]

    assert sorted(order(0)) == [0, 1, 2, 3]  # every train video once
    assert order(0) == order(7) != [0, 1, 2, 3]


def test_flip_is_a_logged_config_key():
    from csvr.config import Config, apply_overrides, flatten

    assert flatten(Config())["data.flip"] is True
    assert flatten(apply_overrides(Config(), {"data.flip": "false"}))["data.flip"] is False
