"""The loss of each training stage as named terms (Eqs. 1, 2, 6-9), for one batch.

Each branch function returns `Terms(d, g, logs)`: `d` is the discriminator-side loss, `g` the
generator/encoder-side loss and `logs` detached values named `<branch>/<term>`. `mode` says which update
they are for:
  "one_stage"  the OSGAN update: fakes reach the discriminators through `csvr.osgan.one_stage`, and
               d + g is backpropagated once;
  "d"          the discriminator phase of an alternating update (fakes detached, no generator graph);
  "g"          the generator phase (discriminators frozen by the caller).
Eq. 9 weights the whole min-max L_pose by sigma_p; with `loss.sigma_scales_discriminator` (the paper preset's
literal reading) D_p's loss and gradient penalty are scaled too, otherwise only the generator side is.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import Tensor

from csvr import losses as L
from csvr.config import Config, LossConfig
from csvr.models.csvr import CSVR
from csvr.models.integration import FiTensor, detached
from csvr.models.video_gan import VideoGAN, level_target
from csvr.osgan import generator_scale, one_stage

@dataclass
class Terms:
    d: Tensor | float = 0.0
    g: Tensor | float = 0.0
    logs: dict[str, Tensor] = field(default_factory=dict)

    def add(self, other: "Terms", weight: float = 1.0) -> "Terms":
        """Sum with `other`, whose generator side is scaled by `weight` (its logs are kept unweighted)."""
        return Terms(self.d + other.d, self.g + weight * other.g, {**self.logs, **other.logs})


def video_weights(target: str) -> dict[str, float]:
    """Eq. 8, L_video = (L_r + L_p) / 2, or one of them alone (Table V)."""
    return {"both": {"reconstruct": 0.5, "predict": 0.5}, "reconstruct": {"reconstruct": 1.0},
            "predict": {"predict": 1.0}}[target]


# ---------------------------------------------------------------------------------------------
# branches


def pose_terms(model: CSVR, batch: dict, cfg: LossConfig, mode: str, g_weight: float = 1.0,
               train_encoder: bool = True, d_weight: float = 1.0) -> Terms:
    """Eq. 1: adversarial + masked L2 + WGAN-GP on D_p(. | P_in); `d_weight` scales the discriminator's side."""
    poses, mask = batch["poses"], batch["pose_mask"]
    real, fmask = batch["future_poses"], batch["future_pose_mask"]
    with torch.no_grad() if mode == "d" or not train_encoder else nullcontext():
        pred, _ = model.pose_generator(poses, mask)  # P_gen (B, T', N, 2)
    critic = lambda p: model.pose_discriminator(p, poses, mask, fmask)  # noqa: E731
    return _adversarial(critic, real, pred, L.masked_pose_l2(pred, real, fmask), "pose", cfg.pose_adversarial, mode,
                        g_weight, cfg.pose_l2, cfg.gp_weight, d_weight)


def video_terms(gan: VideoGAN, f_i: FiTensor, target: Tensor, name: str, cfg: LossConfig, mode: str,
                g_weight: float) -> Terms:
    """Eq. 6 (reconstructor, target = current clip) or Eq. 7 (predictor, target = future clip).

    The generator renders L levels (L = 1 for `model.video_gan=single`); level k's discriminator plays its own
    game against the real clip at that level's frames and resolution (`level_target`). The adversarial term is
    the mean over the L games (each weighs loss.video_adversarial / L on both sides, so the one-stage scaling stays
    exact per level); the pixel L2 compares the full-resolution level with the target at the same frames
    (DESIGN.md, "TGAN-v2 as published (Section III-D)"). With L = 1 this is exactly the single-level loss."""
    with torch.no_grad() if mode == "d" else nullcontext():
        levels = gan.generator.levels(detached(f_i) if mode == "d" else f_i)  # [(B, 3, T_k, S_k, S_k), (T_k,)]
    n, size = len(levels), target.shape[-1]
    per_level = cfg.video_adversarial / n
    total = Terms()
    for k, ((fake, frames), critic) in enumerate(zip(levels, gan.discriminator.critics(), strict=True)):
        real = level_target(target, frames, size // fake.shape[-1])
        finest = k == n - 1
        level_name = name if n == 1 else f"{name}/level{k}"
        total = total.add(_adversarial(critic, real, fake, L.pixel_l2(fake, real), level_name, per_level, mode,
                                       g_weight, cfg.video_l2 if finest else 0.0, 0.0))
    if n > 1:  # Eq. 6/7's L2 is the full-resolution level's
        total.logs[f"{name}/l2"] = total.logs[f"{name}/level{n - 1}/l2"]
    return total


def context_terms(model: CSVR, batch: dict, cfg: LossConfig) -> tuple[Terms, tuple[Tensor, Tensor]]:
    """Eq. 2 (or Eq. 10 / L2 for Table IV). Returns the terms and (the V-network's map, f_s)."""
    v_map, f_s = model.context.video_features(batch["clip"])  # map (B, C', T', H', W'), x* (B, C)
    z = model.context.iframe_embedding(batch["iframes"])  # z* (B, K, C)
    loss = L.context_loss(cfg.context, f_s, z, batch["iframe_mask"], cfg.temperature, cfg.context_negatives)
    logs = {"context/loss": loss.detach(), "context/acc": L.context_accuracy(f_s.detach(), z.detach(),
                                                                            batch["iframe_mask"])}
    return Terms(0.0, loss, logs), (v_map, f_s)


def _adversarial(critic, real: Tensor, fake: Tensor, l2: Tensor, name: str, adv: float, mode: str,
                 g_weight: float, l2_weight: float, gp_weight: float, d_weight: float = 1.0) -> Terms:
    """The shared GAN pattern of Eqs. 1, 6, 7 for one generator/discriminator pair: `adv` weighs the adversarial
    terms against the L2 term (weighed `l2_weight`). The generator's loss is scaled by g_weight, the
    discriminator's (with its gradient penalty) by d_weight."""
    logs = {f"{name}/l2": l2.detach()}
    if adv == 0:  # no adversarial game: the generator side is the L2 term alone, the discriminator idles
        return Terms(0.0, 0.0 if mode == "d" else g_weight * l2_weight * l2, logs)
    if mode == "g":
        fake_logits = critic(fake)
        g_adv = L.g_adv_loss(fake_logits)
        logs[f"{name}/g_adv"] = g_adv.detach()
        return Terms(0.0, g_weight * (adv * g_adv + l2_weight * l2), logs)
    real_logits = critic(real)
    if mode == "one_stage" and d_weight > 0:
        fake_in, scale = one_stage(fake)
        fake_logits = critic(fake_in)
        scale.copy_(generator_scale(fake_logits, g_weight * adv, d_weight * adv))
        g = g_weight * l2_weight * l2
    else:  # "d", or a one-stage update whose discriminator side weighs 0 (sigma_p = 0 scaling D_p): no game
        fake_logits = critic(fake.detach())
        g = g_weight * l2_weight * l2 if mode == "one_stage" else 0.0
    d = d_weight * adv * L.d_loss(real_logits, fake_logits)
    logs.update({f"{name}/d_real": L.F.softplus(-real_logits).mean().detach(),
                 f"{name}/d_fake": L.d_fake_loss(fake_logits).detach(),
                 f"{name}/g_adv": L.g_adv_loss(fake_logits).detach()})
    if gp_weight > 0:
        gp = L.gradient_penalty(critic, real, fake)
        d = d + d_weight * gp_weight * gp
        logs[f"{name}/gp"] = gp.detach()
    return Terms(d, g, logs)


# ---------------------------------------------------------------------------------------------
# stages


def stage_terms(model: CSVR, batch: dict, stage: str, cfg: Config, mode: str) -> Terms:
    """The loss of one stage: branch pretraining ("pose", "context", "video") or Eq. 9 ("joint"), the function
    the stage table (`csvr.stages.table`) names for it."""
    from csvr.stages.table import stage_named  # the table names the functions below: imported here, not above

    return stage_named(stage).terms(model, batch, cfg.loss, mode)


def pose_stage(model: CSVR, batch: dict, lc: LossConfig, mode: str) -> Terms:
    """Pose-branch pretraining: Eq. 1 alone."""
    return pose_terms(model, batch, lc, mode)


def context_stage(model: CSVR, batch: dict, lc: LossConfig, mode: str) -> Terms:
    """Context-branch pretraining: Eq. 2 (or Eq. 10 / L2) alone; no discriminator, so `mode` does not matter."""
    return context_terms(model, batch, lc)[0]


def video_stage(model: CSVR, batch: dict, lc: LossConfig, mode: str) -> Terms:
    """Video GAN pretraining on the frozen, branch-pretrained encoders: trains the motion head (conv + MLP
    after the pose encoder), the integration layer and both video GANs; with `loss.video_trains_encoders` the
    gradients reach the pose encoder and the V-network too (the stage row then trains them)."""
    with nullcontext() if lc.video_trains_encoders else torch.no_grad():
        feats = model.pose_generator.encoder(batch["poses"], batch["pose_mask"])
        v_map, f_s = model.context.video_features(batch["clip"])
    f_d = model.pose_generator.head(feats[model.pose_generator.feature_layer - 1])
    return _video_terms(model, model.integration(f_d, f_s, v_map), batch, lc, mode)


def joint_stage(model: CSVR, batch: dict, lc: LossConfig, mode: str) -> Terms:
    """Eq. 9: L = sigma_p L_pose + sigma_c L_context + L_video, end to end."""
    pose = pose_terms(model, batch, lc, mode, g_weight=lc.sigma_p,
                      d_weight=lc.sigma_p if lc.sigma_scales_discriminator else 1.0)
    context, (v_map, f_s) = context_terms(model, batch, lc)
    f_d = model.pose_generator.motion_feature(batch["poses"], batch["pose_mask"])
    video = _video_terms(model, model.integration(f_d, f_s, v_map), batch, lc, mode)
    terms = pose.add(video).add(context, weight=lc.sigma_c if mode != "d" else 0.0)
    return terms


def _video_terms(model: CSVR, f_i: FiTensor, batch: dict, lc: LossConfig, mode: str) -> Terms:
    gans = {"reconstruct": (model.reconstructor, batch["clip"]), "predict": (model.predictor, batch["future"])}
    total = Terms()
    for name, weight in video_weights(lc.generation_target).items():
        gan, target = gans[name]
        total = total.add(video_terms(gan, f_i, target, name, lc, mode, g_weight=weight))
    return total
