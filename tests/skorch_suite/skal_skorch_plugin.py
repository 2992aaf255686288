"""pytest plugin: run skorch's own tests with ``skorch.NeuralNetClassifier`` replaced by ActiveNet.

``SKAL_SKORCH_VARIANT`` chooses what replaces it:

* ``activenet``: :class:`skal.ActiveNet` as shipped;
* ``positions``: ActiveNet with skorch's own defaults restored (``NLLLoss``,
  ``ValidSplit(5)``, no shuffling by default) and a
  :class:`~skal.parts.TrainingDynamics` part among its callbacks, so that the
  sample-position channel runs under every training test without changing
  what is trained.
"""

import os

import pytest
import skorch
import torch
from skorch.dataset import ValidSplit

from skal import ActiveNet
from skal.parts import TrainingDynamics


class NeuralNetClassifier(ActiveNet):
    """ActiveNet with skorch's defaults and a TrainingDynamics part (the ``positions`` variant)."""

    def __init__(self, module, *args, criterion=torch.nn.NLLLoss, train_split=ValidSplit(5), **kwargs):
        kwargs.setdefault("iterator_train__shuffle", False)
        super().__init__(module, *args, criterion=criterion, train_split=train_split, **kwargs)

    def initialize_callbacks(self):
        super().initialize_callbacks()
        if not any(isinstance(cb, TrainingDynamics) for _, cb in self.callbacks_):
            self.callbacks_.append(("skal_dynamics", TrainingDynamics().initialize()))
        return self


VARIANTS = {"activenet": ActiveNet, "positions": NeuralNetClassifier,
            "skorch": skorch.NeuralNetClassifier}  # the baseline: skorch's own class


def pytest_configure(config):
    variant = os.environ.get("SKAL_SKORCH_VARIANT", "activenet")
    # skorch's tests import the classifier inside their fixtures and tests
    # (``from skorch import NeuralNetClassifier``), so the swap reaches all of them
    skorch.NeuralNetClassifier = VARIANTS[variant]
