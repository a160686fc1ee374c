"""One-stage GAN updates (OSGAN, Shen et al., CVPR 2021), ref. [50] of the paper.

In a one-stage update the fake sample goes through the discriminator once, and one backward pass of the
discriminator's loss serves both players. A gradient-scaling layer between generator and discriminator
turns the discriminator's gradient into the generator's:

    fake_in, scale = one_stage(fake)      # identity forward; backward multiplies by `scale` per sample
    logits = D(fake_in)
    scale.copy_(generator_scale(logits, g_weight, d_weight))
    loss = d_weight * d_loss(real_logits, logits) + (everything else)
    loss.backward()                        # D gets its own gradient, G gets g_weight * grad of -log D(G(z))

For the non-saturating loss the per-sample ratio of the two loss gradients w.r.t. the logit d is
    (dL_G/dd) / (dL_D/dd) = (-g * sigmoid(-d)) / (w * sigmoid(d)) = -(g / w) * exp(-d),
and because d_i depends only on sample i (no batch norm in our discriminators), scaling sample i's
gradient by that ratio gives the generator exactly the gradient of its own loss.
"""
from __future__ import annotations

import torch
from torch import Tensor


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor) -> Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        scale = ctx.scale.to(grad.dtype).view((-1,) + (1,) * (grad.dim() - 1))
        return grad * scale, None


def one_stage(fake: Tensor) -> tuple[Tensor, Tensor]:
    """Wrap `fake` (B, ...) for a one-stage update; fill the returned (B,) scale before backward."""
    scale = torch.zeros(fake.shape[0], device=fake.device, dtype=torch.float32)
    return _ScaleGrad.apply(fake, scale), scale


def generator_scale(fake_logits: Tensor, g_weight: float, d_weight: float = 1.0) -> Tensor:
    """Per-sample factor -(g/w) * exp(-d) (see module docstring); d clamped so exp stays finite."""
    d = fake_logits.detach().float().reshape(len(fake_logits), -1).mean(1)
    return -(g_weight / d_weight) * torch.exp(-d.clamp(-20.0, 20.0))
