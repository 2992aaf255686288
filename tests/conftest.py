"""Fixtures and helpers shared by the test modules."""

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch at one intra-op thread for the module, restored afterwards.

    Tiny nets (and ResNet-18 on a few images) run several times slower with 2
    intra-op threads than with 1 when the 2 cores are shared (oversubscription).
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tabular(n=30, d=4, k=3, seed=0):
    """Gaussian features and uniformly random labels in ``0 .. k-1`` (float32 / int64)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, k, size=n).astype(np.int64)


def module_state(net):
    """A detached copy of the net's module state."""
    return {key: value.detach().clone() for key, value in net.module_.state_dict().items()}


def assert_states_equal(a, b):
    """Two state dicts with the same keys and bit-identical tensors."""
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(autouse=True)
def _grad_mode_kept():
    """A test (or the code it runs) must leave torch's grad mode as it found it."""
    yield
    assert torch.is_grad_enabled(), "this test left torch's grad mode disabled"


@pytest.fixture(autouse=True, scope="session")
def _python_ctrl_c_handler():
    """Python's Ctrl-C handler, as in an interactive session.

    A shell starts its background jobs with SIGINT ignored, and Python then installs no
    handler: the tests that deliver a real Ctrl-C (``signal.raise_signal``) would see nothing.
    """
    import signal

    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
