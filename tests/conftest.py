import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_and_seed():
    """Every test starts on one thread (fastest for small tensors, and immune to a busy
    machine; a CLI test that changes the count cannot leak it) with a fixed seed."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(1)
