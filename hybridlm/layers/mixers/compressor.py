"""DeepSeek-V4 KV compression and the lightning indexer that picks compressed entries for sparse attention.

Compressor (ratio m, entry width d), per token: C = W_kv x, Z = W_gate x, plus a learned position bias B [m, c*d].
    disjoint (HCA, c = 1):     entry_i = RMSNorm( sum_{j in window i} softmax_j(Z_j + B_j) * C_j )
    overlapping (CSA, c = 2):  C, Z are 2d wide; entry_i pools 2m slots: the low half [:d] of window i-1's tokens and
                               the high half [d:] of window i's (window 0 has no predecessor: those slots weigh 0)
The softmax runs over the slots separately per channel, in float32. Entry i covers tokens [i m, (i+1) m); RoPE
(interleaved, last rope dims) at position i m. Query t may see entry i only if i < floor((t + 1) / m).

The state (`CompressorState`, here) keeps the open window's projected tokens and, when overlapping, the closed
window's low half, so feeding tokens one at a time emits exactly the entries of a whole-sequence pass.

Lightning indexer (CSA): q^I = W^I c_Q [T, Hi, Di] with RoPE; keys = a second, Di-wide overlapping compressor;
    I(t, s) = sum_h w(t, h) ReLU(q^I(t, h) . K^I(s)) Di^-1/2,   w = W_w x Hi^-1/2     (float32)
and each query keeps its top-min(k, N) causal entries (ties to the earliest). Training (index_loss_coef > 0): the
indexer sees a detached input and learns from ops/index_loss.py (V3.2's sparse stage) only; the main model never
gets its gradient, and the top-k choice gives the main model none either. DeepSeek's own code also Hadamard-rotates q^I and K^I and
simulates FP4 on them; the rotation preserves dot products and transformers skips both, as this does.
Reference: transformers 5.23 `DeepseekV4CSACompressor`, `DeepseekV4HCACompressor`, `DeepseekV4Indexer`
(parity through the whole model in tests/families/test_deepseek_v4.py).

Shapes: B batch, T new tokens, W closed windows, m ratio, d entry width, N entries, Hi/Di indexer heads/dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...core.norms import RMSNorm
from ...core.rope import rope_tail_interleaved
from ..cache import nbytes


@dataclass
class CompressorState:
    """Running state of a DeepSeek-V4 KV compressor: the projected tokens of the still-open window (kv and gate
    logits [B, p, c*d], p < ratio), for overlapping (CSA) compression the low half of the last closed window
    (kv and gate + position bias [B, ratio, d]), and the emitted entries [B, N, d] (entry i pools tokens
    [i*ratio, (i+1)*ratio))."""

    pending_kv: torch.Tensor | None = None
    pending_gate: torch.Tensor | None = None
    prev_kv: torch.Tensor | None = None
    prev_gate: torch.Tensor | None = None
    entries: torch.Tensor | None = None
    count: int = 0  # entries emitted so far

    def memory_bytes(self) -> int:
        return nbytes(self.pending_kv, self.pending_gate, self.prev_kv, self.prev_gate, self.entries)


class Compressor(nn.Module):
    def __init__(self, d_model: int, dim: int, ratio: int, overlap: bool, norm_eps: float):
        super().__init__()
        self.dim, self.ratio, self.overlap = dim, ratio, overlap
        width = (2 if overlap else 1) * dim
        self.wkv = nn.Linear(d_model, width, bias=False)
        self.wgate = nn.Linear(d_model, width, bias=False)
        self.ape = nn.Parameter(torch.empty(ratio, width))
        self.norm = RMSNorm(dim, norm_eps)

    @torch.no_grad()
    def init_weights(self, std: float) -> None:
        for lin in (self.wkv, self.wgate):
            nn.init.normal_(lin.weight, std=std)
        nn.init.zeros_(self.ape)
        self.norm.init_weights()

    def forward(self, x_BTD: torch.Tensor, state: CompressorState, inv_freq: torch.Tensor) -> torch.Tensor:
        """Advance `state` by the tokens x_BTD; -> every entry emitted so far [B, N, d]."""
        B, d, m = x_BTD.shape[0], self.dim, self.ratio
        kv, gate = self.wkv(x_BTD), self.wgate(x_BTD)
        if state.pending_kv is not None:
            kv, gate = torch.cat((state.pending_kv, kv), dim=1), torch.cat((state.pending_gate, gate), dim=1)
        W = kv.shape[1] // m
        state.pending_kv, state.pending_gate = kv[:, W * m:], gate[:, W * m:]
        if W:
            kv_BWmC = kv[:, :W * m].view(B, W, m, -1)
            gate_BWmC = gate[:, :W * m].view(B, W, m, -1) + self.ape
            if self.overlap:  # slots [0, m): low half of the previous window; [m, 2m): high half of this one
                first_kv = state.prev_kv if state.prev_kv is not None else kv_BWmC.new_zeros(B, m, d)
                first_gate = (state.prev_gate if state.prev_gate is not None
                              else gate_BWmC.new_full((B, m, d), float("-inf")))
                lo_kv = torch.cat((first_kv[:, None], kv_BWmC[:, :-1, :, :d]), dim=1)
                lo_gate = torch.cat((first_gate[:, None], gate_BWmC[:, :-1, :, :d]), dim=1)
                state.prev_kv, state.prev_gate = kv_BWmC[:, -1, :, :d], gate_BWmC[:, -1, :, :d]
                kv_BWmC = torch.cat((lo_kv, kv_BWmC[..., d:]), dim=2)  # [B, W, 2m, d]
                gate_BWmC = torch.cat((lo_gate, gate_BWmC[..., d:]), dim=2)
            weights = gate_BWmC.float().softmax(dim=2).to(kv_BWmC.dtype)
            new_BWd = self.norm((kv_BWmC * weights).sum(dim=2))
            positions = torch.arange(state.count, state.count + W, device=x_BTD.device) * m
            new_BWd = rope_tail_interleaved(new_BWd, inv_freq, positions)
            state.entries = new_BWd if state.entries is None else torch.cat((state.entries, new_BWd), dim=1)
            state.count += W
        if state.entries is None:
            return x_BTD.new_zeros(B, 0, d)
        return state.entries

    def num_params(self) -> int:
        width = self.wkv.out_features
        return 2 * self.wkv.in_features * width + self.ratio * width + self.dim

    def matmul_params(self) -> int:
        return 2 * self.wkv.in_features * self.wkv.out_features


def visible_entries(positions_T: torch.Tensor, num_entries: int, ratio: int) -> torch.Tensor:
    """bool [T, N]: entry i is complete (causal) for the query at absolute position t iff i < (t + 1) // ratio."""
    idx = torch.arange(num_entries, device=positions_T.device)
    return idx[None, :] < ((positions_T + 1) // ratio)[:, None]


class Indexer(nn.Module):
    """Lightning indexer of a CSA layer (transformers' `DeepseekV4Indexer`; DeepSeek's names)."""

    def __init__(self, d_model: int, q_lora_rank: int, n_heads: int, head_dim: int, ratio: int, topk: int,
                 norm_eps: float):
        super().__init__()
        self.n_heads, self.head_dim, self.ratio, self.topk = n_heads, head_dim, ratio, topk
        self.wq_b = nn.Linear(q_lora_rank, n_heads * head_dim, bias=False)
        self.weights_proj = nn.Linear(d_model, n_heads, bias=False)
        self.compressor = Compressor(d_model, head_dim, ratio, overlap=True, norm_eps=norm_eps)

    @torch.no_grad()
    def init_weights(self, std: float) -> None:
        for lin in (self.wq_b, self.weights_proj):
            nn.init.normal_(lin.weight, std=std)
        self.compressor.init_weights(std)

    def scores(self, x_BTD: torch.Tensor, c_q_BTQ: torch.Tensor, positions_T: torch.Tensor,
               state: CompressorState, inv_freq: torch.Tensor) -> torch.Tensor:
        """Advance the indexer's compressor by x_BTD; -> I [B, T, N] (float32) against every entry so far."""
        B, T, _ = x_BTD.shape
        keys_BNd = self.compressor(x_BTD, state, inv_freq)
        q_BTHd = self.wq_b(c_q_BTQ).view(B, T, self.n_heads, self.head_dim)
        q_BTHd = rope_tail_interleaved(q_BTHd, inv_freq, positions_T)
        scores_BTHN = torch.matmul(q_BTHd.float(), keys_BNd.float().transpose(-1, -2)[:, None]).relu_()
        w_BTH = self.weights_proj(x_BTD).float() * self.n_heads ** -0.5
        return torch.matmul(w_BTH[..., None, :], scores_BTHN).squeeze(-2) * self.head_dim ** -0.5

    @torch.no_grad()  # the top-k choice passes no gradient (the indexer learns from ops.index_loss)
    def select(self, index_BTN: torch.Tensor, positions_T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (entry ids [B, T, K], valid [B, T, K]), K = min(topk, N): each query's top-K entries by index score
        among its causal ones; valid is False where fewer than K are causal (early queries)."""
        N = index_BTN.shape[-1]
        limit_T1 = ((positions_T + 1) // self.ratio)[:, None]
        index_BTN = index_BTN.masked_fill(torch.arange(N, device=index_BTN.device) >= limit_T1, float("-inf"))
        K = min(self.topk, N)
        if K == N:  # every entry: the causal ones are the valid ones
            top_BTK = torch.arange(N, device=index_BTN.device).expand(*index_BTN.shape[:-1], N)
            return top_BTK, top_BTK < limit_T1
        vals_BTk, top_BTk = index_BTN.topk(K + 1, dim=-1)
        top_BTK = top_BTk[..., :K]
        # An exact tie at the cut-off (every head's ReLU at 0 is common) is broken by topk in a shape-dependent way;
        # those rows take a stable sort instead, so ties go to the earliest entries whatever N is and a cached step
        # picks what the whole-sequence pass picks. (Ties inside the top-K, or among -inf, change nothing.)
        tied_BT = (vals_BTk[..., K - 1] == vals_BTk[..., K]) & torch.isfinite(vals_BTk[..., K - 1])
        if torch.compiler.is_compiling():  # a compiled decode step branches on no data: the stable picks where tied
            stable_BTK = index_BTN.sort(dim=-1, descending=True, stable=True).indices[..., :K]
            top_BTK = torch.where(tied_BT[..., None], stable_BTK, top_BTK)
        elif tied_BT.any():
            top_BTK = top_BTK.clone()
            top_BTK[tied_BT] = index_BTN[tied_BT].sort(dim=-1, descending=True, stable=True).indices[..., :K]
        return top_BTK, top_BTK < limit_T1

    def num_params(self) -> int:
        return self.wq_b.weight.numel() + self.weights_proj.weight.numel() + self.compressor.num_params()
