import os

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


@pytest.fixture
def device():
    """The device of the equivalence and gradcheck suites: ``RNNKIT_TEST_DEVICE`` (default
    ``cpu``; ``benchmarks/gpu_check.sh`` sets ``cuda``). A device asked for but absent fails
    the test, never skips it. On CUDA, TF32 is off so that float32 compares at 1e-5."""
    name = os.environ.get("RNNKIT_TEST_DEVICE", "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            pytest.fail(f"RNNKIT_TEST_DEVICE={name} but torch.cuda.is_available() is False", pytrace=False)
        matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        yield dev
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
        return
    yield dev


@pytest.fixture
def native_loops_built():
    """Skips where the native extension cannot be built (no compiler), with the reason; fails
    under CI. The native-loop test modules use it with ``pytestmark``."""
    from rnnkit.engine import native

    from . import needs

    if not native.available():
        needs.missing(f"the native extension could not be built here: {native.status().reason}")
