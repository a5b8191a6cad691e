import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One intra-op thread: identical numerics on any machine, and no OpenMP spin-wait stalls when the
    cores are shared (2 threads on a loaded 2-core box ran the training tests' small matmuls ~100x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
