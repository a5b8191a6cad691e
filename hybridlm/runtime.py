"""Process-level defaults: CPU thread settings and a memory guard for materialising models."""

from __future__ import annotations

import os

import torch


def configure_threads() -> int:
    """Intra-op threads = cores / processes on this node, unless OMP_NUM_THREADS or HYBRIDLM_THREADS is set.

    Measured (benchmarks/gdn_chunked.py, benchmarks/moe.py, 2-core machine): 2 threads run the Gated DeltaNet
    op and the MoE 1.7-1.9x faster than 1 on an idle machine, but torch's OpenMP threads spin while they wait,
    so two multi-threaded torch processes on the same cores slow each other down several-fold. Hence one share
    of the cores per process (torchrun sets LOCAL_WORLD_SIZE); HYBRIDLM_THREADS=1 is the safe choice on a
    machine that is busy with other work."""
    if "HYBRIDLM_THREADS" in os.environ:
        value = os.environ["HYBRIDLM_THREADS"]
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"HYBRIDLM_THREADS={value!r}: must be a positive integer")
        n = int(value)
    elif "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    else:
        n = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(n)
    return n


def available_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def check_fits(cfg, bytes_per_param: int = 4) -> None:
    from .model import HybridLM
    n = HybridLM(cfg, device="meta").num_params()
    need, have = n * bytes_per_param, available_memory_bytes()
    if need > 0.8 * have:
        raise ValueError(f"{cfg.name}: {n:,} parameters need {need / 2**30:.1f} GiB in fp32, but only "
                         f"{have / 2**30:.1f} GiB is available; inspect it with `hybridlm info` (meta device) "
                         f"or use a tiny preset")
