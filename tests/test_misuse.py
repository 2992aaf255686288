"""No silent misuse (issue 21, point 5): bool markers, a forgotten marker, a device this machine lacks."""

import re
import warnings

import numpy as np
import pytest
import torch

from skal import UNLABELED, ActiveLearner, ActiveNet
from skal.models import MLP

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n=40):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64)


def _net(**kwargs):
    return ActiveNet(MLP, module__hidden_sizes=(4,), max_epochs=1, verbose=0, **kwargs)


@pytest.mark.parametrize("marker", [True, False])
def test_a_bool_marker_is_refused_naming_unlabeled(marker):
    X, y = _data()
    learner = ActiveLearner(_net(), unlabeled=marker, random_state=0)
    with pytest.raises(ValueError, match=r"The 'unlabeled' parameter of ActiveLearner .* not a bool"):
        learner.fit(X, y)
    assert "_fitted" not in learner.__dict__


def test_a_majority_of_minus_one_without_a_marker_warns_once():
    X, y = _data()
    y = y.copy()
    y[:25] = UNLABELED  # 25 of 40 rows
    with pytest.warns(UserWarning, match=re.escape("y: 62% of the rows are labeled -1 but unlabeled=None")):
        ActiveLearner(_net(), random_state=0).fit(X, y)
    # a minority of -1 (binary {-1, 1} labels, say) or a marker set: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ActiveLearner(_net(), random_state=0).fit(X, np.where(np.arange(40) < 15, -1, 1))
        ActiveLearner(_net(), random_state=0, unlabeled=UNLABELED).fit(X, y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_a_cuda_device_without_cuda_is_named_at_fit(device):
    X, y = _data()
    learner = ActiveLearner(_net(device=device), random_state=0)
    message = re.escape(f"device={device!r}, but CUDA is not available on this machine")
    with pytest.raises(ValueError, match=message):
        learner.fit(X, y)
    assert "_fitted" not in learner.__dict__
    with pytest.raises(ValueError, match=message):  # the net alone says the same
        _net(device=device).fit(X, y)


def test_a_device_that_is_no_device_is_named():
    X, y = _data()
    with pytest.raises(ValueError, match=re.escape("device='gpu' is not a torch device")):
        ActiveLearner(_net(device="gpu"), random_state=0).fit(X, y)
