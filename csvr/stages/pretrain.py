"""Computing one pretraining stage into its store folder (Section III-E / IV-B), resumable per epoch.

    for event in pretrain_stage("pose", cfg, cache, upstream, out, key, device): ...

The stage starts from a model built from the config with its upstream stages' outputs loaded, checkpoints
`out/progress.pt` every epoch (model, optimisers, loop state, RNG), and ends with `model.pt` (the parts it
saved) and `done.json`. Each part is seeded from (train.seed, part), so the result depends only on the key.
"""
from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import Iterator

import torch

from csvr.config import Config
from csvr.data.loaders import train_batches
from csvr.evaluate_trial import probe_metrics
from csvr.models.build import build_model, load_parts
from csvr.stages.store import finish
from csvr.stages.table import stage_named
from csvr.training import checkpoint as ckpt
from csvr.training.loop import StageState, make_optimizers, place_model, train_stage


def pretrain_stage(stage: str, cfg: Config, cache: Path, upstream: dict[str, Path], out: Path, key: str,
                   device: torch.device) -> Iterator[dict]:
    """Train one pretraining stage (its row of csvr.stages.table) into `out`, resuming from `out/progress.pt`."""
    row = stage_named(stage)
    model = build_model(cfg)
    for name in row.upstream:
        load_parts(model, upstream[name] / "model.pt")
    model = place_model(model, cfg, device)
    opt = make_optimizers(model, stage, cfg)
    state, seconds = StageState(), 0.0
    torch.manual_seed(cfg.train.seed * 1000 + zlib.crc32(stage.encode()) % 1000)
    if (out / "progress.pt").exists():
        saved = ckpt.load(out / "progress.pt", device)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optim"])
        state, seconds = StageState(**saved["state"]), float(saved["seconds"])
        ckpt.set_rng_state(saved["rng"])
    epochs = row.epochs_of(cfg)
    batches = train_batches(cache, cfg, cfg.data.batch_size, poses_only=row.poses_only)
    t0 = time.perf_counter()
    for event in train_stage(model, stage, cfg, batches, state, epochs, opt, device):
        every = cfg.eval.probe_every
        if event["kind"] == "epoch" and every and (state.epoch % every == 0 or state.epoch == epochs):
            event.update(probe_metrics(cfg, model, stage, device))
        if event["kind"] == "epoch":
            elapsed = seconds + time.perf_counter() - t0
            ckpt.save(out / "progress.pt", model=model.state_dict(), optim=opt.state_dict(),
                      state=vars(state).copy(), seconds=torch.tensor(elapsed), rng=ckpt.rng_state())
            if state.epoch in row.kept_epochs(cfg):
                ckpt.save(out / f"epoch_{state.epoch}.pt", model=row.saved_state(model))
        yield event
    ckpt.save(out / "model.pt", model=row.saved_state(model))
    total = seconds + time.perf_counter() - t0
    (out / "progress.pt").unlink(missing_ok=True)
    yield finish(out, stage, key, total)
