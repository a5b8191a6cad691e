"""Benchmark: Titans' chunked memory forward + update (hybridlm/ops/titans_memory.py) against its per-token
reference (chunk size 1, one autograd call per token), on CPU, fp32, both in this process, alternated, best-of-N.

    python3 benchmarks/titans_memory.py            # T = 512, 1024, 2048
    python3 benchmarks/titans_memory.py --quick    # T = 256, 512

One memory layer at a tiny model's size: B=1, H=2 heads, d_k = d_v = 32, L_M = 2 (hidden 64), chunk 64.
Prints the speed-up at each T and the chunked form's time per token (flat when the time is linear in T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from common import alternate, setup

from hybridlm.ops.titans_memory import memory_params, titans_memory_chunked, titans_memory_recurrent

B, H, D, DIMS, CHUNK = 1, 2, 32, (32, 64, 32), 64


def inputs(T: int):
    q, k = F.normalize(torch.randn(B, T, H, D), dim=-1), F.normalize(torch.randn(B, T, H, D), dim=-1)
    v = torch.randn(B, T, H, D)
    gates = (torch.rand(B, T, H), 0.1 * torch.rand(B, T, H), 0.05 * torch.rand(B, T, H))
    w = 0.1 * torch.randn(B, H, memory_params(DIMS))
    return (q, k, v, *gates), torch.stack((w, w, torch.zeros_like(w)), 2)


def main() -> None:
    args, reps = setup(__doc__)
    lengths = (256, 512) if args.quick else (512, 1024, 2048)
    for T in lengths:
        seqs, state = inputs(T)
        res = alternate({"memory": (lambda: titans_memory_chunked(*seqs, state, DIMS, chunk_size=CHUNK),
                                    lambda: titans_memory_recurrent(*seqs, state, DIMS, chunk_size=1))},
                        min(reps, 2))["memory"]
        chunked, ref = res
        print(f"T={T:5d}  chunked {chunked * 1e3:8.1f} ms ({chunked / T * 1e6:6.1f} us/token)   "
              f"per-token {ref * 1e3:9.1f} ms   speed-up {ref / chunked:6.1f}x")


if __name__ == "__main__":
    main()
