"""YOCO prefill (SambaY): tiny-sambay's prefill, which runs the cacheless cross-decoder for the last position only,
against the same model and weights with every layer run on every position (keep=None), alternated in one process,
best of N; plus the analytic FLOP ratio and the cache bytes (analytic = measured: one growing KV cache).

    python benchmarks/yoco_prefill.py [--quick] [--reps N] [--threads N]
"""

from __future__ import annotations

import torch
from common import alternate, setup

from hybridlm.model.model import HybridLM
from hybridlm.presets import get_config


def main() -> None:
    args, reps = setup(__doc__)
    torch.manual_seed(0)
    model = HybridLM(get_config("tiny-sambay")).eval()
    print(f"tiny-sambay: {model.num_params():,} parameters; cross-decoder = layers {model.stateless_from}.."
          f"{len(model.layers) - 1} (no cache), fp32, {torch.get_num_threads()} threads")
    for T in ((512, 2048) if args.quick else (512, 2048, 8192)):
        ids = torch.randint(0, 256, (1, T))

        def skipping(ids=ids):
            model.prefill(ids, model.new_cache(), chunk=T)

        def every_position(ids=ids):
            model.logits(model.hidden_states(ids, model.new_cache())[:, -1])
        (ours, ref), = alternate({"prefill": (skipping, every_position)}, reps).values()
        every = T * model.flops_per_token(T, head=False) + model.head_flops()
        cache = model.new_cache()
        model.prefill(ids, cache, chunk=T)
        assert cache.memory_by_kind() == model.cache_bytes_by_kind(T, dtype_bytes=4)
        print(f"T={T:5d}  YOCO prefill {ours * 1e3:8.1f} ms   every position {ref * 1e3:8.1f} ms   "
              f"speed-up {ref / ours:.2f}x   FLOPs {model.prefill_flops(T) / every:.2f} of every-position   "
              f"cache {cache.memory_by_kind()} (analytic = measured)")
    big = HybridLM(get_config("phi-4-mini-flash"), device="meta")
    for T in (4096, 32768, 65536):
        every = T * big.flops_per_token(T, head=False) + big.head_flops()
        print(f"phi-4-mini-flash T={T}: prefill FLOPs {big.prefill_flops(T) / every:.2f} of every-position; "
              f"cache at T: {big.cache_bytes_by_kind(T)} bytes (bf16 KV, fp32 state)")


if __name__ == "__main__":
    main()
