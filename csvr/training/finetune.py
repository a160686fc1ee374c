"""Finetuning for action recognition from a chosen feature source (Table I).

What each `eval.feature_source` initialises (the classifier is always dropout + a fresh linear layer):
  scratch     V-network, randomly initialised (Table I's "training from scratch"); feature = pooled V-net output
  f_d         pose encoder of G_p from pose-branch pretraining + a fresh conv + MLP head; input = pose sequence
              (frozen protocols: the encoder layer's features averaged over time, no head)
  f_s         V-network + g^V from context-branch pretraining; input = clip
  f_i_adain   pose encoder and V-network + g^V from branch pretraining, a fresh AdaIN integration layer
              ("without optimization from video generating branch")
  f_i_concat  the same with a fresh concat integration layer
  f_i_full    everything (pose encoder + head, V-network + g^V, integration layer) from joint pretraining (Eq. 9)

Retrieval (Section IV-B: the "global features" of the "pretrained video network") reads `retrieval_model`: with
`eval.retrieval_feature=video_net` the pooled V-network the source pretrained (context pretraining for f_s,
f_i_adain and f_i_concat, joint pretraining for f_i_full, random for scratch; f_d has no V-network: the pooled G_p
encoder), never a freshly initialised integration layer; `source` reads `feature_model` as recognition does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from csvr.config import Config, FinetuneConfig
from csvr.models.backbones import build_video_net
from csvr.models.context import ContextBranch
from csvr.models.csvr import build_integration_for
from csvr.models.integration import pooled
from csvr.models.pose_gan import PoseGenerator


class VideoFeature(nn.Module):
    """clip -> V-network (+ g^V when given): the scratch and f_s features."""

    def __init__(self, video_net: nn.Module, head: nn.Module | None = None, out_dim: int | None = None):
        super().__init__()
        self.video_net, self.head = video_net, head
        self.out_dim = out_dim or video_net.out_dim

    def forward(self, batch: dict) -> Tensor:
        h = self.video_net(batch["clip"])
        return self.head(h) if self.head is not None else h


class PooledMotionFeature(nn.Module):
    """poses -> the G_p encoder's layer-l features averaged over time (B, c_l): the frozen-feature reading of f_d
    (eval.protocol linear / knn). The conv + MLP head after the encoder is trained only by video generation, so
    after pose pretraining it is still random; a frozen protocol reads the encoder itself, as `scratch` reads the
    pooled V-network."""

    def __init__(self, pose_generator: PoseGenerator):
        super().__init__()
        self.pose_generator = pose_generator
        self.out_dim = pose_generator.encoder.widths[pose_generator.feature_layer - 1]

    def forward(self, batch: dict) -> Tensor:
        feats = self.pose_generator.encoder(batch["poses"], batch["pose_mask"])
        return feats[self.pose_generator.feature_layer - 1].mean(dim=2)


class MotionFeature(nn.Module):
    """poses -> f_d."""

    def __init__(self, pose_generator: PoseGenerator, out_dim: int):
        super().__init__()
        self.pose_generator, self.out_dim = pose_generator, out_dim

    def forward(self, batch: dict) -> Tensor:
        return self.pose_generator.motion_feature(batch["poses"], batch["pose_mask"])


class IntegratedFeature(nn.Module):
    """clip + poses -> f_i = pooled(integration(f_d, f_s, V map)) (B, C)."""

    def __init__(self, context: ContextBranch, pose_generator: PoseGenerator, integration: nn.Module, out_dim: int):
        super().__init__()
        self.context, self.pose_generator, self.integration = context, pose_generator, integration
        self.out_dim = out_dim

    def forward(self, batch: dict) -> Tensor:
        f_d = self.pose_generator.motion_feature(batch["poses"], batch["pose_mask"])
        v_map, f_s = self.context.video_features(batch["clip"])
        return pooled(self.integration(f_d, f_s, v_map))


class Classifier(nn.Module):
    """feature -> dropout (the paper's 0.3 in the second-to-last layer) -> linear."""

    def __init__(self, feature: nn.Module, classes: int, dropout: float):
        super().__init__()
        self.feature, self.dropout = feature, nn.Dropout(dropout)
        self.fc = nn.Linear(feature.out_dim, classes)

    def forward(self, batch: dict) -> Tensor:
        return self.fc(self.dropout(self.feature(batch)))


def feature_model(source: str, cfg: Config, pretrained: "Pretrained") -> nn.Module:
    """Build the feature extractor for `source` from pretrained parts (see the module docstring)."""
    c = cfg.model.feature_dim
    if source == "scratch":
        return VideoFeature(build_video_net(cfg.model.backbone, cfg.model.width))
    if source == "f_d":
        if cfg.eval.protocol != "finetune":
            return PooledMotionFeature(pretrained.pose_generator())
        return MotionFeature(pretrained.pose_generator(), c)
    if source == "f_s":
        ctx = pretrained.context()
        return VideoFeature(ctx.video_net, ctx.video_head, c)
    if source in ("f_i_adain", "f_i_concat"):
        context = pretrained.context()
        fresh = build_integration_for(cfg, context, source.removeprefix("f_i_"))
        return IntegratedFeature(context, pretrained.pose_generator(), fresh, c)
    if source == "f_i_full":
        m = pretrained.joint()
        return IntegratedFeature(m.context, m.pose_generator, m.integration, c)
    raise ValueError(f"unknown feature source {source!r}")


# The pretrained video network each feature source provides, pooled (B, C'): what retrieval queries with.
VIDEO_NETWORK: dict[str, Callable[[Config, "Pretrained"], nn.Module]] = {
    "scratch": lambda cfg, p: VideoFeature(build_video_net(cfg.model.backbone, cfg.model.width)),
    "f_d": lambda cfg, p: PooledMotionFeature(p.pose_generator()),
    "f_s": lambda cfg, p: VideoFeature(p.context().video_net),
    "f_i_adain": lambda cfg, p: VideoFeature(p.context().video_net),
    "f_i_concat": lambda cfg, p: VideoFeature(p.context().video_net),
    "f_i_full": lambda cfg, p: VideoFeature(p.joint().context.video_net),
}


def retrieval_model(cfg: Config, pretrained: "Pretrained") -> nn.Module:
    """The feature retrieval ranks videos by (`eval.retrieval_feature`, module docstring)."""
    if cfg.eval.retrieval_feature == "source":
        return feature_model(cfg.eval.feature_source, cfg, pretrained)
    return VIDEO_NETWORK[cfg.eval.feature_source](cfg, pretrained)


@dataclass
class Pretrained:
    """Lazily loaded pretrained parts; the pipeline fills the loaders from its stage outputs."""
    pose_generator: Callable[[], PoseGenerator]
    context: Callable[[], ContextBranch]
    joint: Callable[[], nn.Module]


# ---------------------------------------------------------------------------------------------
# training


def make_finetune_optim(model: nn.Module, ft: FinetuneConfig, dataset_kind: str, total_epochs: int):
    """SGD lr = lr_per_sample x B and the weight decay of the dataset's recipe (`FinetuneConfig.recipe`: UCF101
    0.0001 / 0.003, HMDB51 0.0002 / 0.002 in the paper preset), cosine annealing over the epochs (Section IV-B,
    Finetuning)."""
    lr_per_sample, weight_decay = ft.recipe(dataset_kind)
    opt = torch.optim.SGD(model.parameters(), lr=lr_per_sample * ft.batch_size, momentum=ft.momentum,
                          weight_decay=weight_decay)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_epochs, 1))


def finetune_epochs(model: Classifier, batches: Callable[[int], Iterable[dict]], opt, sched, start: int,
                    epochs: int, steps_per_epoch: int, device: torch.device) -> Iterator[dict]:
    """Cross-entropy finetuning; yields {"epoch", "loss", "acc", "lr"} after each epoch (one host sync per epoch;
    lr = the scheduled learning rate the epoch ran at)."""
    for epoch in range(start, epochs):
        model.train()
        lr = opt.param_groups[0]["lr"]
        total, correct, count = torch.zeros((), device=device), torch.zeros((), device=device), 0
        for i, batch in enumerate(batches(epoch)):
            if steps_per_epoch and i >= steps_per_epoch:
                break
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items() if torch.is_tensor(v)}
            logits = model(batch)
            loss = F.cross_entropy(logits, batch["label"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(logits)
            correct += (logits.argmax(1) == batch["label"]).sum()
            count += len(logits)
        sched.step()
        loss_v, acc_v = (total / max(count, 1)).item(), (correct / max(count, 1)).item()
        if not math.isfinite(loss_v):
            raise FloatingPointError(f"finetuning loss became non-finite in epoch {epoch + 1}")
        yield {"epoch": epoch + 1, "loss": loss_v, "acc": acc_v, "lr": lr}
