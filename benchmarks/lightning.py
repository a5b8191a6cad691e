"""Benchmark: hybridlm's lightning attention block form vs transformers' MiniMax lightning path, on CPU.

Shape: one MiniMax-M1 lightning layer's attention, B=1, 64 heads x 128 (--heads to reduce), T = 1024 / 2048 / 4096,
fp32. Only the attention itself is timed: transformers' MiniMaxLightningAttention runs with its projections, norm
and gate replaced by identities (its block loop over 256-token blocks, its decay buffers), and hybridlm's
`lightning_attention_chunked` gets the same q, k, v (checked equal before timing). The projections, the same
matmuls on both sides, would otherwise dominate (5 x 6144 x 8192 multiply-adds per token against 64 x (2 x 128 x 256
+ 2 x 128^2) for the attention).

    python3 benchmarks/lightning.py             # T = 1024, 2048, 4096 at 64 heads (~1-2 min on 2 cores)
    python3 benchmarks/lightning.py --quick     # 16 heads, T = 1024, 2048

hybridlm runs at MiniMax's block of 256 (the same algorithm and FLOPs as transformers) and at --block (64 by
default: the result does not depend on the block; a smaller one halves the intra-block work, 4 d C per head and
token, while the inter-block work, 4 d^2, stays). Every figure is a best-of-N with the two sides alternated in one
process; the ratio per T, and the time per token across T (linear in T means a constant time per token).
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common import alternate, setup  # noqa: E402 (benchmarks/common.py, beside this script)

from hybridlm.layers.mixers.lightning import lightning_slopes  # noqa: E402
from hybridlm.ops.lightning_attention import lightning_attention_chunked  # noqa: E402


class _Const(nn.Module):
    """Stands in for the output gate: sigmoid(40) = 1 in float32, so the gate passes the attention through."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_full((), 40.0)


def transformers_core(heads: int, head_dim: int, layer: int, layers: int):
    """transformers' MiniMaxLightningAttention with identities around its block loop: qkv [B, T, H*3d] -> [B, T, H*d]."""
    from transformers import MiniMaxConfig
    from transformers.models.minimax.modeling_minimax import MiniMaxLightningAttention
    cfg = MiniMaxConfig(hidden_size=8, num_attention_heads=heads, head_dim=head_dim, num_hidden_layers=layers,
                        block_size=256, layer_types=["linear_attention"] * layers)
    mod = MiniMaxLightningAttention(cfg, layer_idx=layer).eval()
    mod.qkv_proj, mod.act_fn, mod.norm, mod.out_proj, mod.output_gate = (nn.Identity(), nn.Identity(), nn.Identity(),
                                                                          nn.Identity(), _Const())
    return lambda qkv: mod(qkv, None, None)[0]


def ours_core(heads: int, head_dim: int, slope: torch.Tensor, block: int):
    def run(qkv: torch.Tensor) -> torch.Tensor:
        B, T, _ = qkv.shape
        q, k, v = qkv.view(B, T, heads, 3 * head_dim).split(head_dim, dim=-1)
        return lightning_attention_chunked(q, k, v, slope=slope, block_size=block)[0].reshape(B, T, heads * head_dim)
    return run


def main() -> None:
    extra = [a for a in sys.argv[1:] if a.startswith(("--heads=", "--block="))]
    sys.argv = [a for a in sys.argv if a not in extra]
    args, reps = setup(__doc__)
    opts = dict(a[2:].split("=") for a in extra)
    heads = int(opts.get("heads", 16 if args.quick else 64))
    block = int(opts.get("block", 64))
    head_dim, layer, layers = 128, 1, 80  # layer 1 of MiniMax-M1's 80: fast decay in the first heads
    lengths = (1024, 2048) if args.quick else (1024, 2048, 4096)
    slope = lightning_slopes(heads, layer, layers)
    theirs = transformers_core(heads, head_dim, layer, layers)
    ours256, ours_small = ours_core(heads, head_dim, slope, 256), ours_core(heads, head_dim, slope, block)
    print(f"lightning attention, B=1, {heads} heads x {head_dim}, fp32, {torch.get_num_threads()} threads, "
          f"best of {reps}")
    per_token = {}
    for T in lengths:
        qkv = torch.nn.functional.silu(torch.randn(1, T, heads * 3 * head_dim))
        with torch.no_grad():
            want = theirs(qkv)
            for name, fn in (("256", ours256), (str(block), ours_small)):
                err = (fn(qkv) - want).abs().max().item() / want.abs().max().item()
                assert err < 1e-4, f"block {name}: relative difference {err:.2e} from transformers"
        res = alternate({f"T={T} block 256": (lambda x=qkv: ours256(x), lambda x=qkv: theirs(x)),
                         f"T={T} block {block}": (lambda x=qkv: ours_small(x), lambda x=qkv: theirs(x))}, reps)
        for name, (a, b) in res.items():
            print(f"{name:18s} hybridlm {a * 1e3:8.1f} ms   transformers {b * 1e3:8.1f} ms   speed-up {b / a:.2f}x")
            per_token.setdefault(name.split(" ", 1)[1], []).append((T, a / T))
        per_token.setdefault("transformers", []).append((T, min(b for _, b in res.values()) / T))
    print("time per token (us) by T; a constant row is linear in T:")
    for name, rows in per_token.items():
        cells = "  ".join(f"T={T}: {s * 1e6:6.2f}" for T, s in rows)
        print(f"  {name:12s} {cells}   (last / first: {rows[-1][1] / rows[0][1]:.2f})")


if __name__ == "__main__":
    main()
