"""Warm starts between cycles: the papers' restart (True) and skorch's continuation ("continue")."""

import copy

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback, LRScheduler

from skal import ActiveLearner, ActiveNet
from skal.models import MLP
from skal.selectors import Random, TiDAL

EPOCHS, BATCH, LR = 4, 8, 0.1


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5)).astype(np.float32)
    return X, X[:, :3].argmax(1).astype(np.int64)


def _net(**kwargs):
    # no shuffling: the hand-written loop below takes the batches in order
    return ActiveNet(MLP, module__hidden_sizes=(16,), module__in_features=5, max_epochs=EPOCHS,
                     batch_size=BATCH, lr=LR, optimizer=torch.optim.SGD, optimizer__momentum=0.9,
                     optimizer__weight_decay=5e-4, iterator_train__shuffle=False, verbose=0,
                     callbacks=[("lr", LRScheduler(torch.optim.lr_scheduler.MultiStepLR,
                                                   milestones=[2], gamma=0.1))], **kwargs)


def _hand_loop(module, X, y, optimizer, scheduler=None):
    """The reference code's cycle: EPOCHS epochs of SGD over the batches in order."""
    module.train()
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    for _ in range(EPOCHS):
        for start in range(0, len(X), BATCH):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(module(X[start:start + BATCH]), y[start:start + BATCH])
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return module


def _assert_same_weights(module, expected):
    state = module.state_dict()
    assert state.keys() == expected.state_dict().keys()
    for key, value in expected.state_dict().items():
        assert torch.equal(state[key], value), key


def test_warm_start_true_is_a_new_optimizer_and_schedule_on_the_kept_weights():
    X, y = _data()
    learner = ActiveLearner(_net(), Random(), classes=[0, 1, 2], warm_start=True, random_state=0)
    learner.fit(X[:16], y[:16])
    cycle0 = copy.deepcopy(learner.estimator_.module_)
    learner.teach(X[16:24], y[16:24])

    module = copy.deepcopy(cycle0)
    optimizer = torch.optim.SGD(module.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2], gamma=0.1)
    _assert_same_weights(learner.estimator_.module_, _hand_loop(module, X[:24], y[:24], optimizer, scheduler))
    # a fresh epoch count and the schedule from its start: lr 0.1, 0.1, then 0.01
    history = learner.estimator_.history
    assert len(history) == EPOCHS
    assert optimizer.param_groups[0]["lr"] == pytest.approx(LR * 0.1)


def test_warm_start_continue_keeps_the_optimizer_state_and_the_schedule_position():
    X, y = _data()
    learner = ActiveLearner(_net(), Random(), classes=[0, 1, 2], warm_start="continue", random_state=0)
    learner.fit(X[:16], y[:16])
    cycle0 = copy.deepcopy(learner.estimator_)
    learner.teach(X[16:24], y[16:24])

    module = copy.deepcopy(cycle0.module_)
    optimizer = torch.optim.SGD(module.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
    optimizer.load_state_dict(cycle0.optimizer_.state_dict())  # momentum and the decayed lr 0.01
    assert optimizer.param_groups[0]["lr"] == pytest.approx(LR * 0.1)
    # the schedule resumes at epoch 4, past its milestone: every epoch at 0.01
    _assert_same_weights(learner.estimator_.module_, _hand_loop(module, X[:24], y[:24], optimizer))
    assert len(learner.estimator_.history) == 2 * EPOCHS


def test_warm_start_true_differs_from_continue():
    X, y = _data()
    weights = {}
    for warm in (True, "continue"):
        learner = ActiveLearner(_net(), Random(), classes=[0, 1, 2], warm_start=warm, random_state=0)
        learner.fit(X[:16], y[:16]).teach(X[16:24], y[16:24])
        weights[warm] = learner.estimator_.module_.state_dict()
    assert not all(torch.equal(weights[True][k], weights["continue"][k]) for k in weights[True])


_RECORDS = []


class _Net(torch.nn.Module):  # two feature levels for TiDAL's head
    def __init__(self, num_classes=3):
        super().__init__()
        self.layer1 = torch.nn.Linear(5, 8)
        self.layer2 = torch.nn.Linear(8, 8)
        self.fc = torch.nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.layer2(torch.relu(self.layer1(x)))))


class _Probe(Callback):
    """Records, at the start of each training, the optimizer's state and the heads' weights."""

    def on_train_begin(self, net, **kwargs):
        state = net.dynamics_predictor_.state_dict()
        lazy = any(torch.nn.parameter.is_lazy(v) for v in state.values())  # before the first batch
        _RECORDS.append((len(net.optimizer_.state), None if lazy else {k: v.clone() for k, v in state.items()},
                             net.optimizer_.param_groups[0]["lr"]))


def test_warm_start_true_keeps_the_heads_weights_with_a_fresh_optimizer():
    X, y = _data()
    probe = _Probe()
    _RECORDS.clear()

    net = ActiveNet(_Net, max_epochs=3, batch_size=8, lr=0.05, optimizer=torch.optim.SGD,
                    optimizer__momentum=0.9, verbose=0, callbacks=[("probe", probe)])
    learner = ActiveLearner(net, TiDAL(), classes=[0, 1, 2], warm_start=True, random_state=0)
    learner.fit(X[:16], y[:16])
    heads_after_cycle0 = {k: v.clone() for k, v in learner.estimator_.dynamics_predictor_.state_dict().items()}
    learner.teach(X[16:24], y[16:24])
    assert len(_RECORDS) == 2
    n_state, heads, lr = _RECORDS[-1]
    assert n_state == 0 and lr == 0.05  # no momentum carried over
    assert heads.keys() == heads_after_cycle0.keys()
    for key, value in heads_after_cycle0.items():
        assert torch.equal(heads[key], value), key
    assert len(learner.estimator_.history) == 3


@pytest.mark.parametrize("value", ["restart", 2, "True"])
def test_warm_start_refuses_other_values(value):
    X, y = _data()
    with pytest.raises(ValueError, match=r"The 'warm_start' parameter of ActiveLearner must be"):
        ActiveLearner(_net(), Random(), warm_start=value).fit(X[:16], y[:16])
