"""The stages of CSVR pretraining and what each depends on (Section III-E / IV-B).

Branch pretraining ("pose", "context", then "video" on the frozen branches), joint pretraining ("joint",
Eq. 9), finetuning per downstream dataset. A stage's output is keyed by a hash of exactly the config fields
it depends on (`STAGE_KEYS`), so trials that agree on them compute it once.
"""
from __future__ import annotations

import hashlib
import json
from typing import Callable

import torch

from csvr.config import Config, flatten
from csvr.models.csvr import CSVR
from csvr.training.finetune import IntegratedFeature, PooledMotionFeature, VideoFeature

STORE_VERSION = "1"
_DATA = ("data.source", "data.cache_size", "data.split", "data.clip_len", "data.future_len", "data.stride",
         "data.size", "data.batch_size", "data.max_videos")
_OPTIM = ("train.seed", "train.lr_per_sample", "train.momentum", "train.weight_decay", "train.steps_per_epoch",
          "train.amp", "train.gan_update", "train.optimizer")
_POSE = _DATA + _OPTIM + ("model.joints", "model.pose_channels", "model.pose_noise_dim", "loss.pose_l2",
                          "loss.gp_weight", "loss.adversarial", "train.pose_epochs")
_CONTEXT = _DATA + _OPTIM + ("model.backbone", "model.width", "model.feature_dim", "model.head_hidden",
                             "loss.context", "loss.temperature", "loss.context_negatives", "train.context_epochs")
_VIDEO = tuple(dict.fromkeys(_POSE + _CONTEXT + (
    "model.integration", "model.pose_encoder_layer", "model.video_noise_dim", "model.gen_channels",
    "model.disc_channels", "model.video_gan", "model.video_levels", "loss.video_l2", "loss.generation_target",
    "train.video_epochs")))
_JOINT = _VIDEO + ("loss.sigma_p", "loss.sigma_c", "loss.sigma_scales_discriminator", "train.joint_epochs",
                   "train.checkpoint_epochs")
_FINETUNE = tuple(k for k in flatten(Config()) if k.startswith("finetune."))
# The inception-score classifier (a scratch classifier on the pretraining data, Table II): no pretrained part,
# so no loss weight, branch or epoch count of pretraining enters it; a sigma grid trains it once.
_IS_CLASSIFIER = tuple(k for k in _DATA if k != "data.batch_size") + (
    "train.seed", "model.backbone", "model.width") + _FINETUNE
# The config fields each stage's output depends on: the sharing rule, in one place.
STAGE_KEYS: dict[str, tuple[str, ...]] = {"pose": _POSE, "context": _CONTEXT, "video": _VIDEO, "joint": _JOINT,
                                          "is_classifier": _IS_CLASSIFIER}
# The pretraining stages each feature source needs (see csvr.training.finetune for what they initialise).
NEEDS: dict[str, tuple[str, ...]] = {
    "scratch": (), "f_d": ("pose",), "f_s": ("context",), "f_i_adain": ("pose", "context"),
    "f_i_concat": ("pose", "context"), "f_i_full": ("pose", "context", "video", "joint")}

# What the per-epoch k-NN probe of each pretraining stage reads from the model being trained.
PROBE_FEATURE: dict[str, Callable[[CSVR, int], torch.nn.Module]] = {
    "pose": lambda m, c: PooledMotionFeature(m.pose_generator),
    "context": lambda m, c: VideoFeature(m.context.video_net, m.context.video_head, c),
    "video": lambda m, c: IntegratedFeature(m.context, m.pose_generator, m.integration, c),
    "joint": lambda m, c: IntegratedFeature(m.context, m.pose_generator, m.integration, c)}

# The parameters each pretraining stage saves (prefixes of CSVR.state_dict keys); video/joint save all.
SAVES = {"pose": ("pose_generator.encoder.", "pose_generator.decoder.", "pose_discriminator."),
         "context": ("context.",), "video": ("",), "joint": ("",)}
UPSTREAM = {"pose": (), "context": (), "video": ("pose", "context"), "joint": ("video",)}


def needed_stages(cfg: Config) -> tuple[str, ...]:
    """The pretraining stages a trial runs: those its feature source reads, none for random features."""
    return NEEDS[cfg.eval.feature_source] if cfg.eval.pretrained else ()


def stage_key(stage: str, cfg: Config, extra: dict | None = None) -> str:
    flat = flatten(cfg)
    fields = {k: flat[k] for k in STAGE_KEYS.get(stage, ())} | (extra or {})
    blob = json.dumps({"v": STORE_VERSION, "stage": stage, **fields}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]
