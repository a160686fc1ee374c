"""CSVR's losses as pure functions of tensors (no modules, no state).

Equation numbers refer to the paper (Zhang et al., IEEE TIFS 2025, Section III):
  Eq. 1  pose CGAN: adversarial + L2 + WGAN-GP gradient penalty      -> d_loss, g_adv_loss, masked_pose_l2, gradient_penalty
  Eq. 2  MI-InfoNCE between video and I-frame embeddings             -> mi_infonce
  Eq. 10 InfoNCE with one I-frame per clip (Table IV)                -> infonce
  Eqs. 6-7 video GANs: adversarial + pixel L2                        -> d_loss, g_adv_loss, pixel_l2
  Eq. 9  L = sigma_p L_pose + sigma_c L_context + L_video             -> csvr.training.steps
The adversarial terms use the logit form of log D: log D(x) = -softplus(-d), log(1 - D(x)) = -softplus(d).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


# ---------------------------------------------------------------------------------------------
# context matching (Eq. 2, Eq. 10, L2 variant)


def mi_infonce(x: Tensor, z: Tensor, mask: Tensor, temperature: float, negatives: int = 0) -> Tensor:
    """Eq. 2: every I-frame of clip i is a positive; I-frames of the other clips are negatives (all of them, or
    `negatives` drawn at random per anchor: Section IV-B's "three negative frames from other video").

    x: (B, C) video embeddings x_i*; z: (B, K, C) I-frame embeddings z*; mask: (B, K) valid I-frames.
    """
    b, k, _ = z.shape
    sim = F.normalize(x, dim=-1) @ F.normalize(z, dim=-1).reshape(b * k, -1).T / temperature  # (B, B*K)
    valid = mask.reshape(1, b * k).expand(b, -1)  # (B, B*K)
    own_block = torch.eye(b, dtype=torch.bool, device=x.device).repeat_interleave(k, dim=1)
    own = own_block & valid  # positives
    others = valid & ~own_block
    used = own | (sample_negatives(others, negatives) if negatives else others)
    neg_inf = torch.finfo(sim.dtype).min
    log_pos = torch.logsumexp(sim.masked_fill(~own, neg_inf), dim=1)  # log sum_pos exp(cos/tau)
    log_all = torch.logsumexp(sim.masked_fill(~used, neg_inf), dim=1)  # + sum_neg
    return (log_all - log_pos).mean()


def sample_negatives(candidates: Tensor, n: int) -> Tensor:
    """n of each row's True entries, uniformly at random (all of them where a row has fewer). (R, M) bool."""
    score = torch.rand(candidates.shape, device=candidates.device).masked_fill(~candidates, -1.0)
    top = score.topk(min(n, candidates.shape[1]), dim=1).indices
    return torch.zeros_like(candidates).scatter(1, top, True) & candidates


def infonce(x: Tensor, z: Tensor, temperature: float, negatives: int = 0) -> Tensor:
    """Eq. 10: one I-frame z_i per clip; x: (B, C), z: (B, C); the other clips' I-frames are the negatives (all, or
    `negatives` of them at random per anchor)."""
    logits = F.normalize(x, dim=-1) @ F.normalize(z, dim=-1).T / temperature  # (B, B)
    if negatives:
        eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
        keep = eye | sample_negatives(~eye, negatives)
        logits = logits.masked_fill(~keep, torch.finfo(logits.dtype).min)
    return F.cross_entropy(logits, torch.arange(len(x), device=x.device))


def l2_context(x: Tensor, z: Tensor) -> Tensor:
    """Table IV's L2 objective: squared distance of the L2-normalised embeddings of a clip and one I-frame."""
    return (F.normalize(x, dim=-1) - F.normalize(z, dim=-1)).pow(2).sum(-1).mean()


def pick_one_iframe(z: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """For InfoNCE and L2 (Table IV): one random valid I-frame per clip. z: (B, K, C) -> (B, C)."""
    noise = torch.rand(mask.shape, generator=generator, device="cpu").to(mask.device)
    choice = (noise + mask.float() * 2).argmax(dim=1)  # a valid slot, uniformly among valid ones
    return z[torch.arange(len(z), device=z.device), choice]


def context_loss(kind: str, x: Tensor, z: Tensor, mask: Tensor, temperature: float, negatives: int = 0) -> Tensor:
    """Table IV's objectives; `negatives` (loss.context_negatives) per anchor, 0 = every other clip's I-frames."""
    if kind == "mi_infonce":
        return mi_infonce(x, z, mask, temperature, negatives)
    single = pick_one_iframe(z, mask)
    return infonce(x, single, temperature, negatives) if kind == "infonce" else l2_context(x, single)


@torch.no_grad()
def context_accuracy(x: Tensor, z: Tensor, mask: Tensor) -> Tensor:
    """Table II's context-matching accuracy: the I-frame most similar to clip i belongs to clip i."""
    b, k, _ = z.shape
    sim = F.normalize(x, dim=-1) @ F.normalize(z, dim=-1).reshape(b * k, -1).T  # (B, B*K)
    sim = sim.masked_fill(~mask.reshape(1, -1), -2.0)
    owner = sim.argmax(dim=1) // k
    return (owner == torch.arange(b, device=x.device)).float().mean()


@torch.no_grad()
def context_chance(mask: Tensor) -> Tensor:
    """The accuracy of `context_accuracy` when the most similar I-frame is drawn at random: for clip i, its
    own valid I-frames over all valid I-frames of the batch, averaged over clips. mask: (B, K)."""
    own = mask.sum(1).float()  # (B,)
    return (own / own.sum().clamp_min(1.0)).mean()


# ---------------------------------------------------------------------------------------------
# adversarial terms (Eqs. 1, 6, 7)


def d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator side of min_G max_D E[log D(real)] + E[log(1 - D(fake))], as a loss to minimise."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def d_fake_loss(fake_logits: Tensor) -> Tensor:
    return F.softplus(fake_logits).mean()


def g_adv_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss -log D(G(z))."""
    return F.softplus(-fake_logits).mean()


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP term E[(||grad_P D(P)||_2 - 1)^2] on random interpolates of real and (detached) fake samples."""
    alpha = torch.rand((len(real),) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
    mixed = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = critic(mixed)
    (grad,) = torch.autograd.grad(out.sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


# ---------------------------------------------------------------------------------------------
# reconstruction terms


def masked_pose_l2(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Eq. 1's (1/T') sum_t ||p_t - p'_t||^2, with undetected joints left out.

    pred, target: (B, T', N, 2); mask: (B, T', N). Averages the squared joint error over the valid
    joints and multiplies by N, so with every joint valid it equals the paper's per-frame squared norm
    averaged over frames.
    """
    err = (pred - target).pow(2).sum(-1)  # (B, T', N)
    m = mask.to(err.dtype)
    return (err * m).sum() / m.sum().clamp_min(1.0) * pred.shape[2]


def pose_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Table II's pose-prediction MSE: mean squared coordinate error over valid joints."""
    err = (pred - target).pow(2).mean(-1)
    m = mask.to(err.dtype)
    return (err * m).sum() / m.sum().clamp_min(1.0)


def last_seen_pose(poses: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Each joint's last observed position (B, N, 2) and the frame it was seen in (B, N; -1 = never).
    Joints never seen fall back to the centre of the frame."""
    t = torch.arange(poses.shape[1], device=poses.device).view(1, -1, 1)
    last = torch.where(mask, t, -1).amax(dim=1)  # (B, N)
    idx = last.clamp_min(0).view(len(poses), 1, -1, 1).expand(-1, 1, -1, 2)
    seen = poses.gather(1, idx).squeeze(1)
    return torch.where((last >= 0).unsqueeze(-1), seen, torch.full_like(seen, 0.5)), last


def copy_last_pose(poses: Tensor, mask: Tensor, future_len: int) -> Tensor:
    """Trivial pose predictor: every future frame repeats the last seen pose. (B, T, N, 2) -> (B, T', N, 2)."""
    last, _ = last_seen_pose(poses, mask)
    return last.unsqueeze(1).expand(-1, future_len, -1, -1)


def constant_velocity_pose(poses: Tensor, mask: Tensor, future_len: int) -> Tensor:
    """Trivial pose predictor: extrapolate each joint's last velocity (last two frames where it is seen in
    both; zero velocity otherwise). (B, T, N, 2) -> (B, T', N, 2)."""
    last, _ = last_seen_pose(poses, mask)
    both = mask[:, -1] & mask[:, -2]  # (B, N)
    velocity = torch.where(both.unsqueeze(-1), poses[:, -1] - poses[:, -2], torch.zeros_like(last))
    steps = torch.arange(1, future_len + 1, device=poses.device, dtype=poses.dtype).view(1, -1, 1, 1)
    return last.unsqueeze(1) + steps * velocity.unsqueeze(1)


def mean_frame(video: Tensor, frames: int | None = None) -> Tensor:
    """Trivial video generator: every frame is the clip's mean frame. (B, 3, T, H, W) -> (B, 3, frames, H, W)."""
    mean = video.mean(dim=2, keepdim=True)
    return mean.expand(-1, -1, frames or video.shape[2], -1, -1)


def pixel_l2(pred: Tensor, target: Tensor) -> Tensor:
    """Eqs. 6-7's (1/THW) sum ||v_t(h, w) - g_t(h, w)||_2^2 over (B, 3, T, H, W) videos."""
    return (pred - target).pow(2).sum(1).mean()


def person_region(poses: Tensor, mask: Tensor, size: int, margin: float = 0.1) -> Tensor:
    """Where the person is in a clip: the box around every visible joint of all its frames, widened by `margin`
    (a fraction of the frame) on each side. poses (B, T, J, 2) x, y in [0, 1], mask (B, T, J) -> (B, 1, 1, S, S)
    bool, all False for a clip without a visible joint."""
    inf = torch.tensor(float("inf"), device=poses.device)
    seen = mask[..., None].expand_as(poses)
    low = torch.where(seen, poses, inf).flatten(1, 2).amin(1) - margin  # (B, 2): x0, y0
    high = torch.where(seen, poses, -inf).flatten(1, 2).amax(1) + margin  # (B, 2): x1, y1
    centres = (torch.arange(size, device=poses.device) + 0.5) / size  # pixel centres in [0, 1]
    inside_x = (centres >= low[:, :1]) & (centres <= high[:, :1])  # (B, S) columns
    inside_y = (centres >= low[:, 1:]) & (centres <= high[:, 1:])  # (B, S) rows
    return (inside_y[:, :, None] & inside_x[:, None, :])[:, None, None]


def region_pixel_l2(pred: Tensor, target: Tensor, region: Tensor) -> Tensor | None:
    """pixel_l2 inside `region` (B, 1, 1, H, W) bool: the squared error summed over channels, averaged over the
    region's pixels of every frame of every clip; None when the region is empty."""
    weight = region.expand(-1, 1, pred.shape[2], -1, -1).float()
    total = weight.sum()
    return None if total == 0 else ((pred - target).pow(2).sum(1, keepdim=True) * weight).sum() / total


# ---------------------------------------------------------------------------------------------
# inception score (Table II's video-generation metric)


@torch.no_grad()
def inception_score(probs: Tensor, splits: int = 1) -> float:
    """IS = exp(E_x KL(p(y|x) || p(y))) from class probabilities (N, K) of generated samples."""
    scores = []
    for part in probs.chunk(splits):
        py = part.mean(0, keepdim=True)
        kl = (part * (part.clamp_min(1e-12).log() - py.clamp_min(1e-12).log())).sum(1).mean()
        scores.append(math.exp(kl.item()))
    return sum(scores) / len(scores)
