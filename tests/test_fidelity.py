"""Issue 11, item 1: each fidelity switch changes what it should and nothing else.

    loss.gp_weight                   scales D_p's gradient penalty (Eq. 1), never the generator side
    finetune.<dataset>_* recipes     what the optimiser runs is the explicit field, and what is logged
    finetune clips                   one clip of clip_len frames at the stride and span rule of EvalClips
    eval.retrieval_feature           video_net: the pretrained V-network, never a fresh integration layer

Run: python -m pytest tests/test_fidelity.py -q
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from csvr.config import DataConfig
from csvr.data import augment as A
from csvr.data import dataset as D
from tests.cachefixture import H, VIDEOS, write_cache

TRAIN_FRAMES = [n for _, _, split, n in VIDEOS if split == "train"]  # 60, 60, 10, 48


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_cache(tmp_path_factory.mktemp("cache"))


# ---------------------------------------------------------------------------------------------
# finetune clips are sampled like evaluation clips


@pytest.mark.parametrize("clip_len, stride", [(8, 4), (4, 6)])
def test_finetune_clips_have_the_eval_stride_and_span(cache, clip_len, stride):
    """For every video the finetune clip's stride equals EvalClips', and its frames lie in the span EvalClips'
    windows cover; the pretraining span (clip_len + future_len) would lower the stride of the 48-frame video."""
    evals = D.EvalClips(cache, "train", clip_len, stride, 32, clips_per_video=2)
    for train in (True, False):
        ds = D.finetune_clips(cache, "train", clip_len, stride, H, train=train, seed=3)
        for i, n in enumerate(TRAIN_FRAMES):
            got = ds[i]["frame_indices"].numpy()
            want = evals[i]["frame_indices"].numpy()  # (2, clip_len): the first and the last window
            assert got.shape == (clip_len,)
            assert set(np.diff(got)) == set(np.diff(want[0])), (n, got, want)  # same stride
            assert want[0, 0] <= got[0] and got[-1] <= want[-1, -1]  # inside the eval windows' span
    pretraining = D.ClipDataset(cache, "train", 8, 8, 4, H, train=True)
    assert set(np.diff(pretraining[3]["frame_indices"].numpy())) == {3}  # 48 frames: 16 x 4 does not fit
    assert set(np.diff(D.finetune_clips(cache, "train", 8, 4, H, train=True)[3]["frame_indices"].numpy())) == {4}


def test_finetune_clips_start_at_random_in_training_centred_otherwise(cache):
    starts = {int(D.finetune_clips(cache, "train", 4, 2, H, train=True, seed=s)[0]["frame_indices"][0])
              for s in range(8)}
    assert len(starts) > 1  # 60 frames, span 8: the start is drawn
    centred = D.finetune_clips(cache, "train", 4, 2, H, train=False)[0]["frame_indices"]
    assert int(centred[0]) == (60 - 8) // 2


def test_finetune_batch_has_the_clip_and_no_future_or_iframes(cache):
    ds = D.finetune_clips(cache, "train", 4, 2, H, train=True)
    sample = ds[0]
    assert sample["frames"].shape == (4, H, H, 3) and sample["iframe_mask"].numel() == 0
    data = DataConfig(clip_len=4, future_len=0, stride=2, size=32)
    batch = A.augment(default_collate([ds[0], ds[1]]), data, A.step_generator(0, 0, 0))
    assert batch["clip"].shape == (2, 3, 4, 32, 32) and batch["poses"].shape == (2, 4, 33, 2)
    assert batch["future"].shape[2] == 0 and batch["iframes"].shape[1] == 0
    assert torch.isfinite(batch["clip"]).all()
