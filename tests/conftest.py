"""Shared test helpers. `random_batch` is the documented in-memory stand-in for tests of the method only;
users always get real prepared video data."""
from __future__ import annotations

import pytest
import torch

from csvr.config import Config, apply_overrides, tiny


def random_batch(cfg: Config, seed: int = 0) -> dict:
    d, g = cfg.data, torch.Generator().manual_seed(seed)
    b, t, tf, s, n = d.batch_size, d.clip_len, d.future_len, d.size, cfg.model.joints
    k = d.clip_len * d.stride // 12 + 1
    iframe_mask = torch.ones(b, k, dtype=torch.bool)
    iframe_mask[::2, 1:] = False
    return {
        "clip": torch.randn(b, 3, t, s, s, generator=g),
        "future": torch.randn(b, 3, tf, s, s, generator=g),
        "iframes": torch.randn(b, k, 3, s, s, generator=g),
        "iframe_mask": iframe_mask,
        "poses": torch.rand(b, t, n, 2, generator=g),
        "pose_mask": torch.rand(b, t, n, generator=g) > 0.2,
        "future_poses": torch.rand(b, tf, n, 2, generator=g),
        "future_pose_mask": torch.rand(b, tf, n, generator=g) > 0.2,
        "label": torch.randint(0, 3, (b,), generator=g),
        "index": torch.arange(b),
    }


@pytest.fixture
def tiny_cfg() -> Config:
    torch.set_num_threads(1)
    return apply_overrides(tiny(), {"data.batch_size": 4})


def backward_for(terms, mode: str) -> None:
    """Backpropagate what one update of `mode` backpropagates: d + g (one-stage), d, or g."""
    {"one_stage": terms.d + terms.g, "d": terms.d, "g": terms.g}[mode].backward()


def assert_one_stage_equals_phases(run) -> None:
    """`run(mode)` -> (discriminator grads, generator grads) after one backward of that mode: the one-stage (OSGAN)
    update must give both players exactly the gradients of a discriminator phase and a generator phase."""
    d_one, g_one = run("one_stage")
    d_sep, _ = run("d")
    _, g_sep = run("g")
    for got, want in zip(d_one + g_one, d_sep + g_sep, strict=True):
        assert torch.allclose(got, want, atol=1e-9, rtol=1e-6)
    assert sum(g.abs().sum() for g in g_sep) > 0 and sum(g.abs().sum() for g in d_sep) > 0
