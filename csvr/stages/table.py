"""The stages of a CSVR trial, one row each: the only place that says what a stage is (Section III-E / IV-B).

    stage = STAGES["video"]
    g, d = stage.parameters(model)          # what its two optimisers train
    stage.set_train_mode(model)             # frozen parts in eval mode
    terms = stage.terms(model, batch, cfg.loss, mode)
    key = stage_key("video", cfg)           # hash of exactly the config fields in stage.key

Branch pretraining ("pose", "context", then "video" on the frozen branches) and joint pretraining ("joint",
Eq. 9) are `Stage` rows, in the spirit of StyleGAN2-ADA's list of phases. A stage's output is stored under a
hash of exactly the config fields it depends on (`Stage.key`: its own fields plus its upstream stages'), so
trials that agree on them compute it once. The classifiers trained after pretraining (finetuning per
downstream dataset, the inception-score classifier of Table II) are `ClassifierStage` rows. Every config key
is in some stage's key or in `NOT_IN_ANY_STAGE` with the reason (tests/test_pipeline.py checks both ways).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Callable

from torch import nn

from csvr.config import Config, LossConfig, flatten, keys
from csvr.models.csvr import CSVR
from csvr.training import steps
from csvr.training.finetune import IntegratedFeature, PooledMotionFeature, VideoFeature

STORE_VERSION = "1"


def _union(*keys_: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(k for ks in keys_ for k in ks))


@dataclass(frozen=True)
class Stage:
    """One pretraining stage. Module paths are `CSVR.get_submodule` names ("" = the whole model)."""

    name: str
    terms: Callable[[CSVR, dict, LossConfig, str], steps.Terms]  # its loss for one batch (csvr.training.steps)
    trains: tuple[str, ...]  # generator/encoder side: these modules' parameters, minus the discriminators'
    discriminators: tuple[str, ...]  # discriminator side (empty: no GAN game, one optimiser)
    frozen: tuple[str, ...]  # run in eval mode and not trained (BatchNorm keeps its running statistics)
    upstream: tuple[str, ...]  # stages whose model.pt is loaded before training
    saves: tuple[str, ...]  # state_dict prefixes written to model.pt
    key: tuple[str, ...]  # the config fields its output depends on (upstream stages' included)
    epochs: str  # the config field of its epoch count
    probe: Callable[[CSVR, int], nn.Module]  # what the per-epoch k-NN probe reads (model, feature_dim)
    poses_only: bool = False  # its batches need no clip decode
    keeps_epochs: str = ""  # config field listing epochs whose weights are kept (epoch_N.pt, Table II)
    unfreezes: str = ""  # a bool config field: when true the stage trains its `frozen` parts too

    def for_config(self, cfg: Config) -> "Stage":
        """The row as `cfg` runs it: with `unfreezes` true nothing is frozen, the frozen parts train."""
        if self.unfreezes and flatten(cfg)[self.unfreezes]:
            return replace(self, trains=self.trains + self.frozen, frozen=())
        return self

    @property
    def has_discriminator(self) -> bool:
        return bool(self.discriminators)

    def parameters(self, model: CSVR) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(generator/encoder side, discriminator side) parameters, each in module order."""
        d = [p for path in self.discriminators for p in model.get_submodule(path).parameters()]
        d_ids = {id(p) for p in d}
        g = [p for path in self.trains for p in model.get_submodule(path).parameters() if id(p) not in d_ids]
        return g, d

    def set_train_mode(self, model: CSVR) -> None:
        """Train what the stage trains; frozen parts run in eval mode."""
        model.train()
        for path in self.frozen:
            model.get_submodule(path).eval()

    def saved_state(self, model: CSVR) -> dict:
        return {k: v for k, v in model.state_dict().items() if k.startswith(self.saves)}

    def epochs_of(self, cfg: Config) -> int:
        return flatten(cfg)[self.epochs]

    def kept_epochs(self, cfg: Config) -> tuple[int, ...]:
        return tuple(flatten(cfg)[self.keeps_epochs]) if self.keeps_epochs else ()


# ---------------------------------------------------------------------------------------------
# the config fields of each stage's key


_DATA = ("data.source", "data.cache_size", "data.split", "data.clip_len", "data.future_len", "data.stride",
         "data.size", "data.flip", "data.batch_size", "data.max_videos")
_OPTIM = ("train.seed", "train.lr_per_sample", "train.momentum", "train.weight_decay", "train.steps_per_epoch",
          "train.amp", "train.gan_update", "train.optimizer")
_POSE = _DATA + _OPTIM + ("model.joints", "model.pose_channels", "model.pose_noise_dim", "loss.pose_l2",
                          "loss.gp_weight", "loss.pose_adversarial", "train.pose_epochs")
_CONTEXT = _DATA + _OPTIM + ("model.backbone", "model.width", "model.feature_dim", "model.head_hidden",
                             "loss.context", "loss.temperature", "loss.context_negatives", "train.context_epochs")
_VIDEO = _union(_POSE, _CONTEXT, (
    "model.integration", "model.fi_shape", "model.fi_levels", "model.pose_encoder_layer", "model.video_noise_dim",
    "model.gen_channels", "model.disc_channels", "model.video_gan", "model.video_levels", "loss.video_l2",
    "loss.video_adversarial", "loss.video_trains_encoders",
    "loss.generation_target", "train.video_epochs"))
_JOINT = _union(_VIDEO, ("loss.sigma_p", "loss.sigma_c", "loss.sigma_scales_discriminator", "train.joint_epochs",
                         "train.checkpoint_epochs"))
# Fields added to a key after stores existed, with the value every older store was computed with: left out of
# the hash at that value, so those stores stay valid (data.flip: training always flipped before the switch;
# model.fi_shape: f_i was a vector before the switch; finetune.labels_per_class: every label was used, and the IS
# classifier always uses every label; model.fi_levels: one integration layer on the last map;
# loss.video_trains_encoders: the video stage always trained on frozen encoders).
ADDED_LATER = {"data.flip": True, "model.fi_shape": "vector", "finetune.labels_per_class": 0, "model.fi_levels": 1,
               "loss.video_trains_encoders": False}

_INTEGRATED = lambda m, c: IntegratedFeature(m.context, m.pose_generator, m.integration, c)  # noqa: E731
_DISCRIMINATORS = ("pose_discriminator", "reconstructor.discriminator", "predictor.discriminator")

STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("pose", steps.pose_stage, trains=("pose_generator.encoder", "pose_generator.decoder"),
          discriminators=("pose_discriminator",), frozen=(), upstream=(),
          saves=("pose_generator.encoder.", "pose_generator.decoder.", "pose_discriminator."), key=_POSE,
          epochs="train.pose_epochs", probe=lambda m, c: PooledMotionFeature(m.pose_generator), poses_only=True),
    Stage("context", steps.context_stage, trains=("context",), discriminators=(), frozen=(), upstream=(),
          saves=("context.",), key=_CONTEXT, epochs="train.context_epochs",
          probe=lambda m, c: VideoFeature(m.context.video_net, m.context.video_head, c)),
    Stage("video", steps.video_stage, trains=("pose_generator.head", "integration", "reconstructor.generator",
                                              "predictor.generator"),
          discriminators=("reconstructor.discriminator", "predictor.discriminator"),
          frozen=("pose_generator.encoder", "context"), upstream=("pose", "context"), saves=("",), key=_VIDEO,
          epochs="train.video_epochs", probe=_INTEGRATED, unfreezes="loss.video_trains_encoders"),
    Stage("joint", steps.joint_stage, trains=("",), discriminators=_DISCRIMINATORS, frozen=(), upstream=("video",),
          saves=("",), key=_JOINT, epochs="train.joint_epochs", probe=_INTEGRATED,
          keeps_epochs="train.checkpoint_epochs"),
)}


def stage_named(name: str, cfg: Config | None = None) -> Stage:
    """The row of stage `name`; with `cfg`, as that config runs it (`Stage.for_config`)."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; valid stages: {', '.join(STAGES)}")
    return STAGES[name].for_config(cfg) if cfg is not None else STAGES[name]


# ---------------------------------------------------------------------------------------------
# the classifiers trained after pretraining


@dataclass(frozen=True)
class ClassifierStage:
    """A classifier trained per dataset, stored as `<name>/<dataset kind>`."""

    name: str
    key: tuple[str, ...] | None  # None: every config field (hashed with the joint stage's name, as always)
    epochs: str = "finetune.epochs"

    def store_name(self, kind: str) -> str:
        return f"{self.name}/{kind}"

    def key_of(self, cfg: Config, spec: str) -> str:
        if self.key is None:
            return stage_key("joint", cfg, {"finetune": flatten(cfg), "dataset": spec})
        return stage_key(self.name, cfg, {"dataset": spec})


_FINETUNE = tuple(k for k in keys() if k.startswith("finetune."))
# Finetuning (Section IV-B) from eval.feature_source, per downstream dataset: keyed by the whole config.
FINETUNE = ClassifierStage("finetune", None)
# The inception-score classifier (a scratch classifier on the pretraining data, Table II): no pretrained part,
# so no loss weight, branch or epoch count of pretraining enters it; a sigma grid trains it once.
IS_CLASSIFIER = ClassifierStage("is_classifier", _union(tuple(k for k in _DATA if k not in (  # finetuning reads
    "data.batch_size", "data.future_len")), (  # finetune.batch_size and no future clip
    "train.seed", "model.backbone", "model.width"), _FINETUNE))

# The config fields each keyed stage's output depends on (read from the rows above).
STAGE_KEYS: dict[str, tuple[str, ...]] = {**{s.name: s.key for s in STAGES.values()},
                                          IS_CLASSIFIER.name: IS_CLASSIFIER.key}

# Config fields in no stage's key, and why none of them changes what a stage computes. "section.*" covers a
# section. (Finetuning is keyed by the whole config, so they still separate finetuned classifiers.)
NOT_IN_ANY_STAGE: dict[str, str] = {
    "data.finetune_sources": "which downstream datasets are finetuned: each is its own finetune/<kind> stage",
    "data.cache_root": "where the prepared cache lives, not what is in it",
    "data.cache": "where the prepared cache lives, not what is in it",
    "data.workers": "loader processes; every sample is a function of (seed, epoch, index)",
    "train.device": "where, not what",
    "train.log_every": "how often metrics are reported",
    "train.channels_last": "memory layout on CUDA, not what is computed",
    "train.compile": "torch.compile of the V-network, not what is computed",
    "eval.*": "evaluation only: reads the stages, and eval.feature_source picks which stages run (NEEDS)",
}

# The pretraining stages each feature source needs (see csvr.training.finetune for what they initialise).
NEEDS: dict[str, tuple[str, ...]] = {
    "scratch": (), "f_d": ("pose",), "f_s": ("context",), "f_i_adain": ("pose", "context"),
    "f_i_concat": ("pose", "context"), "f_i_full": ("pose", "context", "video", "joint")}


def needed_stages(cfg: Config) -> tuple[str, ...]:
    """The pretraining stages a trial runs: those its feature source reads, none for random features."""
    return NEEDS[cfg.eval.feature_source] if cfg.eval.pretrained else ()


def stage_key(stage: str, cfg: Config, extra: dict | None = None) -> str:
    """16 hex digits of a hash of the stage's key fields (and `extra`): equal keys, one computation."""
    flat = flatten(cfg)
    fields = {k: flat[k] for k in STAGE_KEYS.get(stage, ())
              if not (k in ADDED_LATER and flat[k] == ADDED_LATER[k])} | (extra or {})
    blob = json.dumps({"v": STORE_VERSION, "stage": stage, **fields}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]
