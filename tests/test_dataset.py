"""Tests for csvr.data.dataset on a tiny cache written by tests/cachefixture.py.

    python -m pytest tests/test_dataset.py -q
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from csvr.data import dataset as D
from tests.cachefixture import write_cache

T, TF, STRIDE, SIZE = 4, 4, 2, 32
SHORT = 2  # train index of the 10-frame video


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_cache(tmp_path_factory.mktemp("cache"))


def clips(cache, train=True, seed=0, clip_len=T, future_len=TF, stride=STRIDE):
    return D.ClipDataset(cache, "train", clip_len, future_len, stride, SIZE, train=train, seed=seed)


def test_manifest_filter_and_classes(cache):
    assert len(clips(cache)) == 4  # the error row and the unused split are dropped
    test = D.EvalClips(cache, "test", T, STRIDE, SIZE, clips_per_video=3)
    assert len(test) == 2 and test.classes == ["Jump", "Wave"] and test.groups == ["motion", None]
    assert len(D.ClipDataset(cache, "train", T, TF, STRIDE, SIZE, train=True, max_videos=2)) == 2
    import decord
    reader = decord.VideoReader(clips(cache).video_path(0))
    assert reader.get_key_indices() == [0, 12, 24, 36, 48]  # the fixture's fixed GOP


@pytest.mark.parametrize("train", [True, False])
def test_sample_shapes(cache, train):
    ds = D.ClipDataset(cache, "train", 8, 4, 4, SIZE, train=train)
    k = 8 * 4 // 12 + 1
    s = ds[1]
    expected = {
        "clip": ((3, 8, SIZE, SIZE), torch.float32), "future": ((3, 4, SIZE, SIZE), torch.float32),
        "iframes": ((k, 3, SIZE, SIZE), torch.float32), "iframe_mask": ((k,), torch.bool),
        "poses": ((8, 33, 2), torch.float32), "pose_mask": ((8, 33), torch.bool),
        "future_poses": ((4, 33, 2), torch.float32), "future_pose_mask": ((4, 33), torch.bool),
        "label": ((), torch.int64), "index": ((), torch.int64),
        "frame_indices": ((12,), torch.int64), "iframe_indices": ((k,), torch.int64),
    }
    assert {key: (tuple(v.shape), v.dtype) for key, v in s.items()} == expected
    assert int(s["label"]) == 1 and int(s["index"]) == 1 and s["iframe_mask"].any()
    assert (s["iframes"][~s["iframe_mask"]] == 0).all()
    assert (s["poses"][~s["pose_mask"]] == 0).all()


def test_iframes_inside_span_and_share_the_crop(cache):
    for clip_len, stride in [(8, 4), (4, 2)]:  # (4, 2): an 8-frame span, sometimes without a key frame
        ds = clips(cache, clip_len=clip_len, stride=stride)
        for epoch in range(3):
            ds.set_epoch(epoch)
            for i in range(len(ds)):
                check_iframes(ds[i], clip_len)


def check_iframes(s, clip_len):
    frames = s["frame_indices"].numpy()
    start, step = frames[0], max(1, frames[1] - frames[0])
    keys = s["iframe_indices"][s["iframe_mask"]].numpy()
    assert keys.size >= 1 and (s["iframe_indices"][~s["iframe_mask"]] == -1).all()
    inside = (keys >= start) & (keys < start + clip_len * step)
    if not inside.all():  # fallback: the last key frame (multiple of 12) before the start
        assert keys.tolist() == [(start - 1) // 12 * 12]
    for slot, key in enumerate(keys):  # an I-frame that is also a clip frame has the same pixels
        for t in np.flatnonzero(frames[:clip_len] == key):
            torch.testing.assert_close(s["iframes"][slot], s["clip"][:, t])


def test_same_seed_epoch_same_sample(cache):
    a, b = clips(cache), clips(cache)
    for key, value in a[0].items():
        assert torch.equal(value, b[0][key]), key
    b.set_epoch(1)
    assert not torch.equal(a[0]["clip"], b[0]["clip"])
    assert not torch.equal(a[0]["clip"], clips(cache, seed=1)[0]["clip"])
    ev = clips(cache, train=False)
    first = ev[0]["clip"]
    ev.set_epoch(5)
    assert torch.equal(first, ev[0]["clip"])  # eval is deterministic


def test_sample_indices_rule():
    rng = np.random.default_rng(0)
    idx, start, s = D.sample_indices(100, 4, 4, 3, rng)
    assert s == 3 and 0 <= start <= 100 - 24 and (np.diff(idx) == 3).all()
    assert D.sample_indices(20, 4, 4, 4, None)[2] == 2  # 8 * 4 > 20: the stride drops to 2
    assert D.sample_indices(100, 4, 4, 3, None)[1] == (100 - 24) // 2  # eval: centred
    idx, start, s = D.sample_indices(5, 4, 4, 3, rng)
    assert s == 1 and start == 0 and idx.tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    assert D.select_iframes(np.array([0, 12, 24]), 14, 8, 1, 30).tolist() == [12]  # fallback
    assert D.select_iframes(np.array([0, 12, 24]), 10, 16, 3, 30).tolist() == [12, 24, -1]


def test_short_video(cache):
    idx = clips(cache)[SHORT]["frame_indices"].tolist()  # 10 frames < 8 * 2: stride 1
    assert np.diff(idx).tolist() == [1] * 7 and 0 <= idx[0] <= 2
    s = clips(cache, clip_len=8, future_len=8)[SHORT]  # 10 < 16 even at stride 1: the last frame repeats
    assert s["frame_indices"].tolist() == list(range(10)) + [9] * 6
    assert torch.equal(s["future"][:, 1], s["future"][:, -1])


def brightness(video: torch.Tensor) -> torch.Tensor:
    """(3, N, S, S) normalised -> (N, S, S) mean intensity in [0, 1]."""
    mean, std = torch.tensor(D.IMAGENET_MEAN), torch.tensor(D.IMAGENET_STD)
    return (video * std[:, None, None, None] + mean[:, None, None, None]).mean(0)


def on_square(frame: torch.Tensor, xy: torch.Tensor) -> bool:
    """Is the crop-frame point xy on a bright pixel of frame (S, S)?"""
    col, row = (xy * SIZE).long().clamp(0, SIZE - 1).tolist()
    median = frame.median()
    return bool(frame[row, col] > median + 0.5 * (frame.max() - median))


@pytest.mark.parametrize("train", [True, False])
def test_poses_follow_crop_and_flip(cache, train):
    """Joint 11 sits on the moving bright square, joint 12 on a dark spot; after a flip they swap."""
    ds, hits = clips(cache, train=train), {11: 0, 12: 0}
    for epoch in range(4 if train else 1):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            frames = brightness(torch.cat([s["clip"], s["future"]], 1))
            xy, mask = torch.cat([s["poses"], s["future_poses"]]), torch.cat([s["pose_mask"], s["future_pose_mask"]])
            for t in range(len(frames)):
                valid = {j: bool(mask[t, j] and ((xy[t, j] > 0.05) & (xy[t, j] < 0.95)).all()) for j in (11, 12)}
                bright = {j: valid[j] and on_square(frames[t], xy[t, j]) for j in (11, 12)}
                if valid[11] and valid[12]:  # one joint on the square, the other on the dark spot
                    assert bright[11] != bright[12]
                hits[11], hits[12] = hits[11] + bright[11], hits[12] + bright[12]
    assert hits[11] > 10 and (hits[12] > 10 if train else hits[12] == 0)


def test_flip_swaps_left_right():
    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(0.2, 0.8, (3, 33, 2)), np.full((3, 33, 1), 0.9)], -1).astype(np.float32)
    kp[1, 13, 2] = 0.1  # a hidden left elbow becomes a hidden right elbow
    detected = np.array([True, True, False])
    box = (4, 2, 56, 44)
    plain, m = D.transform_poses(kp, detected, D.Aug(box), 48, 64)
    flipped, mf = D.transform_poses(kp, detected, D.Aug(box, flip=True), 48, 64)
    for a, b in [(11, 12), (1, 4), (31, 32), (0, 0)]:
        torch.testing.assert_close(flipped[:, a, 0][mf[:, a]], 1 - plain[:, b, 0][m[:, b]])
        torch.testing.assert_close(flipped[:, a, 1], plain[:, b, 1])
    assert not mf[1, 14] and m[1, 14] and not mf[2].any()
    expected = torch.tensor([(kp[0, 0, 0] * 64 - 4) / 56, (kp[0, 0, 1] * 48 - 2) / 44])  # x' = (x W - x0) / cw
    torch.testing.assert_close(plain[0, 0], expected.float())


def test_eval_clips(cache):
    ds = D.EvalClips(cache, "test", T, STRIDE, SIZE, clips_per_video=3)
    s = ds[1]  # 36 frames: windows start at 0, 14, 28
    assert s["clip"].shape == (3, 3, T, SIZE, SIZE) and s["poses"].shape == (3, T, 33, 2)
    assert s["pose_mask"].shape == (3, T, 33) and int(s["label"]) == 1
    assert s["frame_indices"][:, 0].tolist() == [0, 14, 28]
    short = D.EvalClips(cache, "train", 8, 4, SIZE, clips_per_video=2)[SHORT]["frame_indices"]
    assert short.tolist() == [[0, 1, 2, 3, 4, 5, 6, 7], [2, 3, 4, 5, 6, 7, 8, 9]]  # stride 10 // 8 = 1


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_loader_two_workers(cache, context):
    ds = clips(cache)
    ds[0]  # a reader is now open in this process: fork workers must not touch it (FACTS.md deadlock)
    assert D.default_context() == "spawn"
    loader = D.make_loader(ds, batch_size=2, shuffle=False, workers=2, seed=0, drop_last=True, context=context)
    for epoch in range(2):
        ds.set_epoch(epoch)  # persistent workers see it through shared memory
        batches = list(loader)
        assert len(batches) == 2 and batches[0]["clip"].shape == (2, 3, T, SIZE, SIZE)
        assert batches[1]["iframes"].shape == (2, T * STRIDE // 12 + 1, 3, SIZE, SIZE)
        direct = ds[3]
        assert torch.equal(batches[1]["clip"][1], direct["clip"]), f"epoch {epoch}"
        assert int(batches[1]["index"][1]) == 3
