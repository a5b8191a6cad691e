import sys
from pathlib import Path

import pytest
import torch

# tests/harness is imported as `harness` by tests/families/* and tests/test_*.py; pytest's default (prepend) import
# mode puts this directory on sys.path already, this keeps it so under --import-mode=importlib too.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))


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
