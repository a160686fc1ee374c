"""Tests for csvr.data.dataset on a tiny cache written by tests/cachefixture.py.

    python -m pytest tests/test_dataset.py -q
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from torch.utils.data import default_collate

from csvr.config import DataConfig
from csvr.data import augment as A
from csvr.data import dataset as D
from tests.cachefixture import H, write_cache

T, TF, STRIDE, SIZE = 4, 4, 2, 32
SHORT = 2  # train index of the 10-frame video


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_cache(tmp_path_factory.mktemp("cache"))


def clips(cache, train=True, seed=0, clip_len=T, future_len=TF, stride=STRIDE, poses_only=False):
    return D.ClipDataset(cache, "train", clip_len, future_len, stride, H, train=train, seed=seed,
                         poses_only=poses_only)


def model_sample(ds: D.ClipDataset, i: int, step: int = 0, flip: bool = True) -> dict:
    """Sample i as the model sees it: the worker's sample augmented (on the CPU) as a batch of one."""
    data = DataConfig(clip_len=ds.clip_len, future_len=ds.future_len, stride=ds.stride, size=SIZE, flip=flip)
    g = A.step_generator(ds.seed, ds.epoch, step) if ds.train else None
    return {k: v[0] for k, v in A.augment(default_collate([ds[i]]), data, g).items()}


def test_manifest_filter_and_classes(cache):
    assert len(clips(cache)) == 4  # the error row and the unused split are dropped
    test = D.EvalClips(cache, "test", T, STRIDE, SIZE, clips_per_video=3)
    assert len(test) == 2 and test.classes == ["Jump", "Wave"] and test.groups == ["motion", None]
    assert len(D.ClipDataset(cache, "train", T, TF, STRIDE, H, train=True, max_videos=2)) == 2
    import decord
    reader = decord.VideoReader(clips(cache).video_path(0))
    assert reader.get_key_indices() == [0, 12, 24, 36, 48]  # the fixture's fixed GOP


@pytest.mark.parametrize("train", [True, False])
def test_sample_shapes(cache, train):
    """The worker's sample (uint8 frames of the window, poses in its frame) and the model's after augment."""
    ds = D.ClipDataset(cache, "train", 8, 4, 4, H, train=train)
    k = 8 * 4 // 12 + 1
    s = ds[1]
    poses = {"poses": ((8, 33, 2), torch.float32), "pose_mask": ((8, 33), torch.bool),
             "future_poses": ((4, 33, 2), torch.float32), "future_pose_mask": ((4, 33), torch.bool),
             "label": ((), torch.int64), "index": ((), torch.int64), "frame_indices": ((12,), torch.int64)}
    worker = {"frames": ((8 + 4 + k, H, H, 3), torch.uint8), "iframe_mask": ((k,), torch.bool),
              "iframe_indices": ((k,), torch.int64), **poses}
    assert {key: (tuple(v.shape), v.dtype) for key, v in s.items()} == worker
    assert int(s["label"]) == 1 and int(s["index"]) == 1 and s["iframe_mask"].any()
    assert (s["frames"][8 + 4 + int(s["iframe_mask"].sum()):] == 0).all()  # padded I-frame slots
    assert (s["poses"][~s["pose_mask"]] == 0).all()
    m = model_sample(ds, 1)
    model = {"clip": ((3, 8, SIZE, SIZE), torch.float32), "future": ((3, 4, SIZE, SIZE), torch.float32),
             "iframes": ((k, 3, SIZE, SIZE), torch.float32), "iframe_mask": ((k,), torch.bool),
             "iframe_indices": ((k,), torch.int64), **poses}
    assert {key: (tuple(v.shape), v.dtype) for key, v in m.items()} == model
    assert (m["iframes"][~m["iframe_mask"]] == 0).all()
    assert (m["poses"][~m["pose_mask"]] == 0).all()


def test_poses_only_mode_matches_full_samples(cache):
    """The pose stage's samples: no video opened, the same poses as the full sample of (seed, epoch, index)."""
    full, poses = clips(cache), clips(cache, poses_only=True)
    for epoch in range(2):
        full.set_epoch(epoch)
        poses.set_epoch(epoch)
        for i in range(len(full)):
            p, f = poses[i], full[i]
            assert "frames" not in p and set(p) < set(f)
            for key in p:
                assert torch.equal(p[key], f[key]), (key, i)
    D.READERS.readers.clear()
    clips(cache, poses_only=True)[0]
    assert not D.READERS.readers  # no video was opened


def test_window_is_the_largest_square():
    rng = np.random.default_rng(0)
    assert D.square_window(48, 64, None) == (8, 0, 48) and D.square_window(64, 48, None) == (0, 8, 48)
    offsets = {D.square_window(48, 64, rng)[0] for _ in range(200)}
    assert offsets == set(range(17))  # uniform over every position along the long side
    frames = np.arange(2 * 48 * 64 * 3, dtype=np.uint8).reshape(2, 48, 64, 3)
    assert torch.equal(D.window_frames(frames, (5, 0, 48), 48), torch.from_numpy(frames[:, :, 5:53]))
    assert D.window_frames(frames, (5, 0, 48), 32).shape == (2, 32, 32, 3)
    kp = np.array([[[4 / 64, 0.5, 0.9], [30 / 64, 0.25, 0.9]]], np.float32)
    xy, mask = D.window_poses(kp, np.array([True]), (5, 0, 48), 48, 64)
    assert mask.tolist() == [[False, True]] and xy[0, 0].tolist() == [0, 0]  # x = 4 px is left of the window
    torch.testing.assert_close(xy[0, 1], torch.tensor([25 / 48, 0.25]))


def test_iframes_inside_span_and_share_the_crop(cache):
    for clip_len, stride in [(8, 4), (4, 2)]:  # (4, 2): an 8-frame span, sometimes without a key frame
        ds = clips(cache, clip_len=clip_len, stride=stride)
        for epoch in range(3):
            ds.set_epoch(epoch)
            for i in range(len(ds)):
                check_iframes(model_sample(ds, i, step=i), clip_len)


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
    assert not torch.equal(a[0]["frames"], b[0]["frames"])
    assert not torch.equal(a[0]["frames"], clips(cache, seed=1)[0]["frames"])
    ev = clips(cache, train=False)
    first = model_sample(ev, 0)["clip"]
    ev.set_epoch(5)
    assert torch.equal(first, model_sample(ev, 0)["clip"])  # eval is deterministic


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
    assert torch.equal(s["frames"][8 + 1], s["frames"][8 + 7])  # future frames 1 and 7: both frame 9


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
        k = T * STRIDE // 12 + 1
        assert len(batches) == 2 and batches[0]["frames"].shape == (2, T + TF + k, H, H, 3)
        assert batches[1]["iframe_mask"].shape == (2, k)
        direct = ds[3]
        assert torch.equal(batches[1]["frames"][1], direct["frames"]), f"epoch {epoch}"
        assert int(batches[1]["index"][1]) == 3
