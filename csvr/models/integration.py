"""Feature integration layer (Section III-D, Eqs. 3-5, Fig. 2) and the concat variant of Table I.

Features are vectors (B, C); they are handled as (B, C, 1) maps so the paper's "convolution of f_d" is a
pointwise Conv1d, which keeps gamma_d, beta_d and M the same size as f_s.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class AdaINIntegration(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False)  # Eq. 3: batch statistics mu, sigma
        self.gamma = nn.Conv1d(dim, dim, 1)  # gamma_d from f_d
        self.beta = nn.Conv1d(dim, dim, 1)  # beta_d from f_d
        self.mask = nn.Conv1d(dim, dim, 1)  # attention mask logits from the normalised f_s

    def forward(self, f_d: Tensor, f_s: Tensor) -> Tensor:
        fd, fs = f_d.unsqueeze(-1), f_s.unsqueeze(-1)  # (B, C, 1)
        fs_bar = self.norm(fs)  # Eq. 3
        d = self.gamma(fd) * fs_bar + self.beta(fd)  # Eq. 4: D = gamma_d (x) fs_bar + beta_d
        m = torch.sigmoid(self.mask(fs_bar))  # M
        return ((1 - m) * d + m * fs).squeeze(-1)  # Eq. 5: f_i = (1 - M) (x) D + M (x) f_s


class ConcatIntegration(nn.Module):
    """Table I's f_i (Concat): concatenate f_d and f_s, then a convolution back to C channels."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv1d(2 * dim, dim, 1)

    def forward(self, f_d: Tensor, f_s: Tensor) -> Tensor:
        return self.conv(torch.cat([f_d, f_s], dim=1).unsqueeze(-1)).squeeze(-1)


INTEGRATIONS = {"adain": AdaINIntegration, "concat": ConcatIntegration}
