"""Process defaults: the LoadGovernor that gives other processes
their share of the cores (benchmarks/contention.py measures what that buys)."""

import subprocess
import sys
import time

import pytest
import torch

from hybridlm.core import runtime


def test_sampler_sees_another_process_but_not_itself():
    sampler = runtime.LoadSampler()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.5:  # this process busy: not "others"
        pass
    assert sampler.sample() < 0.4
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<3: pass"])
    try:
        time.sleep(0.5)
        sampler.sample()
        time.sleep(1.0)
        assert sampler.sample() > 0.6  # the spinning child used most of a core
    finally:
        busy.kill()
        busy.wait()


@pytest.fixture
def two_threads(monkeypatch):
    for k in ("HYBRIDLM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def test_governor_yields_cores_and_takes_them_back(two_threads, monkeypatch):
    gov = runtime.LoadGovernor(interval=0.0)
    loads = iter([1.1, 0.9, 0.1, 2.5])
    monkeypatch.setattr(gov.sampler, "sample", lambda: next(loads))
    seen = []
    for _ in range(4):
        gov.tick()
        seen.append(torch.get_num_threads())
    assert seen == [1, 1, 2, 1]  # one other busy core -> 1 thread; quiet -> 2; never below 1
    gov.close()
    assert torch.get_num_threads() == 2


def test_governor_off_when_the_user_pins_threads(two_threads, monkeypatch):
    monkeypatch.setenv("HYBRIDLM_THREADS", "2")
    gov = runtime.LoadGovernor(interval=0.0)
    monkeypatch.setattr(gov.sampler, "sample", lambda: 2.0)
    gov.tick()
    assert not gov.enabled and torch.get_num_threads() == 2
