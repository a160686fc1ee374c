"""The one training loop of CSVR pretraining, with the GAN phases written out.

    for metrics in train_stage(model, "joint", cfg, batches, state, device):
        print(metrics)           # the CLI prints JSON, the Ray trainable reports, tests assert

`batches(epoch)` returns that epoch's iterable of batches (deterministic per epoch, so a resumed run sees
the same data as an uninterrupted one). The loop yields a metrics dict every `train.log_every` steps
(`kind="log"`) and at the end of every epoch (`kind="epoch"`, after `state.epoch` has advanced, which
is when the caller checkpoints). Host synchronisation happens only there: per-step values stay on the
device, and a non-finite term is remembered on the device with the step that produced it.
"""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from csvr.config import Config
from csvr.models.csvr import CSVR
from csvr.stages.table import stage_named
from csvr.training.steps import Terms, stage_terms


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the term and the step."""


@dataclass
class StageState:
    epoch: int = 0  # epochs finished
    step: int = 0  # optimiser steps taken in this stage


@dataclass
class Optimizers:
    g: torch.optim.Optimizer
    d: torch.optim.Optimizer | None

    def state_dict(self) -> dict:
        return {"g": self.g.state_dict(), "d": self.d.state_dict() if self.d else None}

    def load_state_dict(self, state: dict) -> None:
        self.g.load_state_dict(state["g"])
        if self.d is not None:
            self.d.load_state_dict(state["d"])


def stage_parameters(model: CSVR, stage: str, cfg: Config | None = None
                     ) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(generator/encoder side, discriminator side) parameters that `stage` trains (csvr.stages.table), as `cfg`
    runs it."""
    return stage_named(stage, cfg).parameters(model)


def make_optimizers(model: CSVR, stage: str, cfg: Config) -> Optimizers:
    """SGD, lr = lr_per_sample x B, momentum 0.9, weight decay 0.005 (Section IV-B), one per side;
    `train.optimizer=adam` swaps in Adam (betas 0.5, 0.999, the usual GAN setting) at the same lr rule."""
    t, lr = cfg.train, cfg.train.lr_per_sample * cfg.data.batch_size
    fused = {"fused": True} if next(model.parameters()).is_cuda else {}
    if t.optimizer == "adam":
        make = lambda ps: torch.optim.Adam(ps, lr=lr, betas=(0.5, 0.999), weight_decay=t.weight_decay, **fused)  # noqa
    else:
        make = lambda ps: torch.optim.SGD(ps, lr=lr, momentum=t.momentum, weight_decay=t.weight_decay, **fused)  # noqa
    g, d = stage_parameters(model, stage, cfg)
    return Optimizers(make(g), make(d) if d else None)


def set_train_mode(model: CSVR, stage: str, cfg: Config | None = None) -> None:
    """Train what the stage trains (as `cfg` runs it); frozen parts run in eval mode (BatchNorm uses running
    statistics)."""
    stage_named(stage, cfg).set_train_mode(model)


def train_step(model: CSVR, batch: dict, stage: str, cfg: Config, opt: Optimizers) -> Terms:
    """One update. OSGAN: one backward serves both players. Alternating: D phase, then G phase."""
    autocast = _autocast(cfg, batch["poses"].device)  # every stage has poses; the pose stage no clip
    if cfg.train.gan_update == "osgan" or not stage_named(stage).has_discriminator:
        with autocast:
            terms = stage_terms(model, batch, stage, cfg, mode="one_stage")
        _zero(opt)
        (terms.d + terms.g).backward()
        _step(opt)
        return terms
    # 1. discriminator phase: fakes detached
    with autocast:
        d_terms = stage_terms(model, batch, stage, cfg, mode="d")
    _zero(opt)
    d_terms.d.backward()
    opt.d.step()
    # 2. generator/encoder phase: discriminators frozen
    with _frozen(model.discriminators()), autocast:
        g_terms = stage_terms(model, batch, stage, cfg, mode="g")
    opt.g.zero_grad(set_to_none=True)
    g_terms.g.backward()
    opt.g.step()
    return Terms(d_terms.d.detach(), g_terms.g.detach(), {**d_terms.logs, **g_terms.logs})


def train_stage(model: CSVR, stage: str, cfg: Config, batches: Callable[[int], Iterable[dict]],
                state: StageState, epochs: int, opt: Optimizers, device: torch.device) -> Iterator[dict]:
    tracker = _Tracker(device)
    for epoch in range(state.epoch, epochs):
        set_train_mode(model, stage, cfg)
        for batch in _limit(batches(epoch), cfg.train.steps_per_epoch):
            terms = train_step(model, to_device(batch, device, cfg), stage, cfg, opt)
            state.step += 1
            tracker.add(_named(stage, terms), state.step)
            if state.step % cfg.train.log_every == 0:
                yield {"kind": "log", "stage": stage, "epoch": epoch, "step": state.step, **tracker.flush("interval")}
        state.epoch = epoch + 1
        tracker.flush("interval")
        yield {"kind": "epoch", "stage": stage, "epoch": state.epoch, "step": state.step, **tracker.flush("epoch")}


def to_device(batch: dict, device: torch.device, cfg: Config) -> dict:
    cuda = device.type == "cuda"
    out = {k: v.to(device, non_blocking=cuda) if torch.is_tensor(v) else v for k, v in batch.items()}
    if cuda and cfg.train.channels_last:
        for k in ("clip", "future"):
            if k in out:
                out[k] = out[k].contiguous(memory_format=torch.channels_last_3d)
    return out


def place_model(model: CSVR, cfg: Config, device: torch.device) -> CSVR:
    """Move to `device`; on CUDA also channels_last_3d weights, cuDNN autotuning and, when
    `train.compile`, a compiled V-network (the bulk of the FLOPs)."""
    model = model.to(device)
    if device.type != "cuda":
        return model
    torch.backends.cudnn.benchmark = True
    if cfg.train.channels_last:
        to_channels_last_3d(model)
    if cfg.train.compile:
        model.context.video_net.compile()  # in place: state_dict keys stay unchanged
    return model


def to_channels_last_3d(model: nn.Module) -> nn.Module:
    """channels_last_3d for the 5-D (Conv3d) weights only, in place. `Module.to(memory_format=channels_last_3d)`
    raises "required rank 5 tensor" on the Conv2d weights of the I-network and the image generators."""
    for param in model.parameters():
        if param.dim() == 5:
            param.data = param.data.contiguous(memory_format=torch.channels_last_3d)
    return model


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ---------------------------------------------------------------------------------------------
# helpers


class _Tracker:
    """Running sums of the logged terms on the device, per logging interval and per epoch, and the first
    step at which each term was non-finite."""

    def __init__(self, device: torch.device):
        self.device, self.bad = device, {}
        self.sums: dict[str, dict] = {"interval": {}, "epoch": {}}
        self.count = {"interval": 0, "epoch": 0}

    def add(self, logs: dict[str, torch.Tensor], step: int) -> None:
        step_t = torch.tensor(step, device=self.device)
        for scope in self.sums:
            self.count[scope] += 1
        for name, value in logs.items():
            v = torch.as_tensor(value, device=self.device).float().detach()
            for sums in self.sums.values():
                sums[name] = sums.get(name, 0.0) + v
            first = self.bad.get(name, torch.tensor(-1, device=self.device))
            self.bad[name] = torch.where((first < 0) & ~torch.isfinite(v), step_t, first)

    def flush(self, scope: str) -> dict[str, float]:
        """Means over the interval (or epoch) since the last flush of that scope; one host sync."""
        sums, count = self.sums[scope], self.count[scope]
        if not count:
            return {}
        names = list(sums)
        bad = torch.stack([self.bad[n] for n in names]).tolist()
        for name, step in zip(names, bad):
            if step >= 0:
                raise NonFiniteLossError(f"loss term {name} became non-finite at step {step}; lower the learning "
                                         "rate or check the input data")
        means = (torch.stack([sums[n] for n in names]) / count).tolist()
        self.sums[scope], self.count[scope] = {}, 0
        return dict(zip(names, means))


def _named(stage: str, terms: Terms) -> dict[str, torch.Tensor]:
    logs = {f"train/{stage}/{k}": v for k, v in terms.logs.items()}
    logs[f"train/{stage}/loss"] = torch.as_tensor(terms.d).detach() + torch.as_tensor(terms.g).detach()
    return logs


def _limit(batches: Iterable[dict], steps: int) -> Iterable[dict]:
    return itertools.islice(batches, steps) if steps > 0 else batches


def _zero(opt: Optimizers) -> None:
    opt.g.zero_grad(set_to_none=True)
    if opt.d is not None:
        opt.d.zero_grad(set_to_none=True)


def _step(opt: Optimizers) -> None:
    opt.g.step()
    if opt.d is not None:
        opt.d.step()


def _autocast(cfg: Config, device: torch.device):
    if device.type == "cuda" and cfg.train.amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _frozen(modules: list[nn.Module]):
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
