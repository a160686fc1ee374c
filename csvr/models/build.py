"""Building the CSVR model of a config, each part from its own seed, and loading stage outputs into it.

    model = build_model(cfg)                       # every part seeded from (train.seed, part)
    load_parts(model, stage_dir / "model.pt")      # the parts a stage saved; the rest stays as built
    parts = pretrained_parts(cfg, stages, device)  # lazy loaders of the pretrained parts (finetuning)
"""
from __future__ import annotations

import contextlib
import zlib
from pathlib import Path

import torch

from csvr.config import Config
from csvr.models.csvr import CSVR, build_context, build_pose, build_video_branch
from csvr.training import checkpoint as ckpt
from csvr.training.finetune import Pretrained


@contextlib.contextmanager
def seeded(seed: int, part: str):
    """Initialise `part` from its own seed so it does not depend on what was built before it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1000 + zlib.crc32(part.encode()) % 1000)
        yield


def build_model(cfg: Config) -> CSVR:
    seed = cfg.train.seed
    with seeded(seed, "pose"):
        pose_g, pose_d = build_pose(cfg)
    with seeded(seed, "context"):
        context = build_context(cfg)
    with seeded(seed, "video"):
        video_branch = build_video_branch(cfg, context)
    return CSVR(context, pose_g, pose_d, *video_branch)


def load_parts(model: CSVR, path: Path) -> None:
    """Load the parts saved in `path` into `model` (a stage saves only what it trained)."""
    state = ckpt.load(path)["model"]
    missing = set(state) - set(model.state_dict())
    if missing:
        raise RuntimeError(f"{path} does not fit this model: unexpected keys {sorted(missing)[:5]}")
    model.load_state_dict(state, strict=False)


def pretrained_parts(cfg: Config, stages: dict[str, Path], device: torch.device) -> Pretrained:
    """The pretrained parts finetuning may read, from the stage folders in `stages` (random when not
    `eval.pretrained`); the joint model from `epoch_<eval.pretrain_epoch>.pt` when that is set."""
    def part(stage: str, file: str = "model.pt") -> CSVR:
        model = build_model(cfg)
        if cfg.eval.pretrained:
            load_parts(model, stages[stage] / file)
        return model.to(device)
    joint_file = f"epoch_{cfg.eval.pretrain_epoch}.pt" if cfg.eval.pretrain_epoch else "model.pt"
    return Pretrained(pose_generator=lambda: part("pose").pose_generator, context=lambda: part("context").context,
                      joint=lambda: part("joint", joint_file))
