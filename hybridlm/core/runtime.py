"""Process-level defaults: CPU threads that survive a shared machine, and a memory guard for materialising models.

Measured with benchmarks/contention.py (2 cores, tiny-hybrid training, fp32): torch's OpenMP workers spin while
they wait, so two 2-thread processes on 2 cores each kept about 20% of their solo speed. The wait-policy knobs trade
that against speed alone: OMP_WAIT_POLICY=PASSIVE (or GOMP_SPINCOUNT=0) shared well but ran a lone process 35%
slower, GOMP_SPINCOUNT=1000 kept 40% shared and cost 12% alone, and 10k-100k spins shared as badly as the default.
One thread shares well (87%) but gives up the second core when the machine is idle. So hybridlm keeps torch's
OpenMP defaults and a LoadGovernor follows the machine instead: each second it measures the cores other processes
used and lowers this process's intra-op threads to what is left (75-79% shared), raising them again when they go.
"""

from __future__ import annotations

import os
import time

import torch


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask: a container or taskset may give fewer than cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def configure_threads() -> int:
    """Intra-op threads = usable cores / processes on this node, unless OMP_NUM_THREADS or HYBRIDLM_THREADS is set.

    torchrun sets LOCAL_WORLD_SIZE; HYBRIDLM_THREADS=1 pins one thread (and switches the LoadGovernor off)."""
    if "HYBRIDLM_THREADS" in os.environ:
        value = os.environ["HYBRIDLM_THREADS"]
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"HYBRIDLM_THREADS={value!r}: must be a positive integer")
        n = int(value)
    elif "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    else:
        n = max(1, usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(n)
    return n


def _busy_seconds() -> float | None:
    """CPU seconds every process has spent busy on the cores this process may run on (/proc/stat: user, nice,
    system, irq, softirq, steal; guest time is inside user), or None where there is no /proc/stat."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    mine = {f"cpu{i}" for i in os.sched_getaffinity(0)} if hasattr(os, "sched_getaffinity") else None
    busy = 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu" and (mine is None or name in mine):
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
            busy += user + nice + system + irq + softirq + steal
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()  # this process, all its threads (children count as other processes)
    return t.user + t.system


class LoadSampler:
    """How many cores other processes used since the last sample (or since creation): busy time of this process's
    cores minus this process's own CPU time, over the wall time. The LoadGovernor and compare's measure_load use it."""

    def __init__(self):
        self.t, self.busy, self.own = time.monotonic(), _busy_seconds(), _own_seconds()

    def sample(self) -> float | None:
        t, busy, own = time.monotonic(), _busy_seconds(), _own_seconds()
        if busy is None or self.busy is None or t - self.t <= 0:
            return None
        others = max(0.0, ((busy - self.busy) - (own - self.own)) / (t - self.t))
        self.t, self.busy, self.own = t, busy, own
        return others


class LoadGovernor:
    """Call tick() once per training step or decode step: every `interval` seconds (0.5) it measures the cores other
    processes used and sets torch's intra-op threads to what is left (at least 1, at most the configured count).
    Two hybridlm processes started together each fall to their share instead of spinning against each other.
    Off when the user fixed the count (HYBRIDLM_THREADS / OMP_NUM_THREADS) or only one thread is configured."""

    def __init__(self, interval: float = 0.5):
        self.max = torch.get_num_threads()
        self.interval = interval
        self.enabled = (self.max > 1 and "HYBRIDLM_THREADS" not in os.environ and "OMP_NUM_THREADS" not in os.environ
                        and _busy_seconds() is not None)
        self.sampler = LoadSampler()
        self.next = time.monotonic() + interval
        self.changes = 0

    def tick(self) -> None:
        if not self.enabled or time.monotonic() < self.next:
            return
        others = self.sampler.sample()
        self.next = time.monotonic() + self.interval
        if others is None:
            return
        n = max(1, min(self.max, round(usable_cores() - others)))
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
            self.changes += 1

    def close(self) -> None:
        """Give back the configured thread count (the governor may have lowered it)."""
        if self.enabled and torch.get_num_threads() != self.max:
            torch.set_num_threads(self.max)


def available_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62
