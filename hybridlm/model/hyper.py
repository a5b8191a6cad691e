"""Manifold-constrained hyper-connections (mHC, DeepSeek-V4): a residual stream of n copies X [n, D].

Around each sublayer F (attention or FFN), from the n copies themselves:
    m = W_fn flatten(X) / rms(flatten(X))                          (2 + n) n logits per token
    pre  = sigmoid(a0 m[:n] + b) + eps                             how the copies collapse into F's input
    post = 2 sigmoid(a1 m[n:2n] + b)                               how F's output spreads over the copies
    comb = Sinkhorn(softmax_rows(a2 m[2n:] + b) + eps)             an n x n doubly stochastic mixing matrix
           (column-normalise, then iters-1 times row- and column-normalise, every denominator + eps)
    u = sum_i pre_i X_i  ->  y = F(RMSNorm(u))  ->  X'_j = post_j y + sum_i comb[i, j] X_i
The final head collapses the copies the same way with its own weights (`HyperHead`: pre only, no Sinkhorn).
Everything in float32 whatever the model dtype. With n = 1 the model uses the plain residual instead.

This is DeepSeek's kernel (hc_split_sinkhorn: 2 sigmoid for post, softmax then Sinkhorn for comb) and transformers
5.23's `DeepseekV4HyperConnection`, which agree; an earlier transformers port used sigmoid for both.
Shapes: B batch, T tokens, n copies, D model dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.norms import rms_normalize


class HyperConnection(nn.Module):
    def __init__(self, n: int, d_model: int, sinkhorn_iters: int, eps: float, norm_eps: float):
        super().__init__()
        self.n, self.iters, self.eps, self.norm_eps = n, sinkhorn_iters, eps, norm_eps
        self.fn = nn.Parameter(torch.empty((2 + n) * n, n * d_model))
        self.base = nn.Parameter(torch.empty((2 + n) * n))
        self.scale = nn.Parameter(torch.empty(3))

    @torch.no_grad()
    def init_weights(self, std: float) -> None:
        nn.init.normal_(self.fn, std=std)
        nn.init.zeros_(self.base)
        nn.init.ones_(self.scale)

    def forward(self, x_BTnD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (sublayer input u [B, T, D], post [B, T, n], comb [B, T, n, n]), post and comb in float32."""
        n = self.n
        mix = F.linear(rms_normalize(x_BTnD.flatten(2), self.norm_eps), self.fn.float())
        a, b = self.scale.float(), self.base.float()
        pre = torch.sigmoid(mix[..., :n] * a[0] + b[:n]) + self.eps
        post = 2 * torch.sigmoid(mix[..., n:2 * n] * a[1] + b[n:2 * n])
        comb = (mix[..., 2 * n:] * a[2] + b[2 * n:]).unflatten(-1, (n, n)).softmax(-1) + self.eps
        comb = comb / (comb.sum(-2, keepdim=True) + self.eps)
        for _ in range(self.iters - 1):
            comb = comb / (comb.sum(-1, keepdim=True) + self.eps)
            comb = comb / (comb.sum(-2, keepdim=True) + self.eps)
        u = (pre.unsqueeze(-1) * x_BTnD).sum(dim=2).to(x_BTnD.dtype)
        return u, post, comb

    @staticmethod
    def expand(y_BTD: torch.Tensor, x_BTnD: torch.Tensor, post: torch.Tensor, comb: torch.Tensor) -> torch.Tensor:
        """X'_j = post_j y + sum_i comb[i, j] X_i."""
        dtype = x_BTnD.dtype
        return post.to(dtype).unsqueeze(-1) * y_BTD.unsqueeze(-2) + torch.matmul(comb.to(dtype).transpose(-1, -2),
                                                                                  x_BTnD)

    def num_params(self) -> int:
        return self.fn.numel() + self.base.numel() + 3

    def flops_per_token(self) -> int:
        """The logits projection and the comb-mixing matmul (n x n by n x D); the weighted sums are elementwise."""
        return 2 * self.fn.numel() + 2 * self.n * self.n * self.fn.shape[1] // self.n


class HyperHead(nn.Module):
    """The final collapse of the n copies: sum_i (sigmoid(a m_i + b_i) + eps) X_i, m = W_fn flatten(X) / rms."""

    def __init__(self, n: int, d_model: int, eps: float, norm_eps: float):
        super().__init__()
        self.n, self.eps, self.norm_eps = n, eps, norm_eps
        self.fn = nn.Parameter(torch.empty(n, n * d_model))
        self.base = nn.Parameter(torch.empty(n))
        self.scale = nn.Parameter(torch.empty(1))

    @torch.no_grad()
    def init_weights(self, std: float) -> None:
        nn.init.normal_(self.fn, std=std)
        nn.init.zeros_(self.base)
        nn.init.ones_(self.scale)

    def forward(self, x_BTnD: torch.Tensor) -> torch.Tensor:
        mix = F.linear(rms_normalize(x_BTnD.flatten(2), self.norm_eps), self.fn.float())
        pre = torch.sigmoid(mix * self.scale.float() + self.base.float()) + self.eps
        return (pre.unsqueeze(-1) * x_BTnD).sum(dim=2).to(x_BTnD.dtype)

    def num_params(self) -> int:
        return self.fn.numel() + self.base.numel() + 1

    def flops_per_token(self) -> int:
        return 2 * self.fn.numel()
