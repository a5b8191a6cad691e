"""Process-level defaults: CPU thread settings and a memory guard for materialising models."""

from __future__ import annotations

import os

import torch


def configure_threads() -> None:
    """Use every core for intra-op work unless the user set OMP_NUM_THREADS / torch threads themselves.
    (Measured in benchmarks/: see README "Threads".)"""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)


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
