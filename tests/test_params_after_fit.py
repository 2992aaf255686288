"""set_params after fit takes effect, or is refused, never ignored (issue 13, deliverable 7)."""

import copy
import pickle

import numpy as np
import pytest
import torch

from skal import ActiveLearner, ActiveNet
from skal._training import derive_seed as _derive_seed, torch_seeded as _torch_seeded
from skal.models import MLP
from skal.selectors import DISAL, Entropy, Margin

pytestmark = pytest.mark.usefixtures("one_torch_thread")

rng = np.random.default_rng(0)
X = rng.normal(size=(60, 4)).astype(np.float32)
Y = X[:, :3].argmax(1).astype(np.int64)


def _learner(selector=None, warm_start=False, **net_params):
    params = dict(module__hidden_sizes=(8,), max_epochs=3, batch_size=16, lr=0.1, verbose=0)
    params.update(net_params)
    return ActiveLearner(ActiveNet(MLP, **params), selector or Entropy(), warm_start=warm_start,
                         random_state=0)


def _weights(learner):
    return {key: value.clone() for key, value in learner.estimator_.module_.state_dict().items()}


def _assert_same_weights(a, b):
    a, b = _weights(a), _weights(b)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _lr(learner):
    return [group["lr"] for group in learner.estimator_.optimizer_.param_groups]


def test_a_new_lr_is_used_by_the_next_cold_refit():
    learner = _learner().fit(X[:20], Y[:20])
    learner.set_params(estimator__lr=0.02).refit()
    assert _lr(learner) == [0.02] and learner.estimator_.lr == 0.02
    # a cold refit of cycle 0 trains a fresh net with fit's seed: exactly a fit with that lr
    _assert_same_weights(learner, _learner(lr=0.02).fit(X[:20], Y[:20]))


def test_a_new_lr_is_used_by_the_next_warm_refit():
    learner = _learner(warm_start=True).fit(X[:20], Y[:20])
    previous = copy.deepcopy(learner.estimator_)
    learner.set_params(estimator__lr=0.02).refit()
    assert _lr(learner) == [0.02]
    # the previous net continued with the new lr, seeded as the learner seeds cycle 0's training
    expected = previous.set_params(lr=0.02)
    with _torch_seeded(_derive_seed(learner._state().seed, 0, 0), "cpu"):
        expected.partial_fit(X[:20], Y[:20])
    for key, value in expected.module_.state_dict().items():
        assert torch.equal(learner.estimator_.module_.state_dict()[key], value), key
    # and not what the old lr would have given
    old = _learner(warm_start=True).fit(X[:20], Y[:20]).refit()
    assert not torch.equal(_weights(old)["layers.1.weight"], _weights(learner)["layers.1.weight"])


def test_a_module_change_under_warm_start_is_refused_naming_the_parameter():
    learner = _learner(warm_start=True).fit(X[:20], Y[:20])
    before = pickle.dumps(learner)
    learner.set_params(estimator__module__hidden_sizes=(16,))
    message = (r"^estimator__module__hidden_sizes changed after fit: with warm_start=True the trained "
               r"weights cannot carry over to a different module or head; call fit\(\) to start again\.$")
    with pytest.raises(ValueError, match=message):
        learner.refit()
    learner.set_params(estimator__module__hidden_sizes=(8,))
    assert pickle.dumps(learner) == before  # the refused refit changed nothing
    # teach stores the labels, then refuses to train, keeping the previous model
    learner.set_params(estimator__module__hidden_sizes=(16,))
    with pytest.raises(ValueError, match=message):
        learner.teach(X[20:24], Y[20:24])
    assert learner.stale_ and len(learner.y_labeled_) == 24
    _assert_same_weights(learner, pickle.loads(before))
    # put back, it trains again
    learner.set_params(estimator__module__hidden_sizes=(8,)).refit()
    assert not learner.stale_


def test_a_module_change_under_cold_start_trains_the_new_module():
    learner = _learner().fit(X[:20], Y[:20])
    learner.set_params(estimator__module__hidden_sizes=(16,)).refit()
    assert learner.estimator_.module_.layers[1].out_features == 16
    _assert_same_weights(learner, _learner(module__hidden_sizes=(16,)).fit(X[:20], Y[:20]))


@pytest.mark.parametrize("warm_start", [False, True], ids=["cold", "warm"])
def test_a_selector_with_the_same_training_is_used_by_the_next_query(warm_start):
    learner = _learner(Entropy(), warm_start).fit(X[:20], Y[:20])
    entropy = learner.query(X[20:], 6)
    learner.set_params(selector=Margin())
    idx, scores = learner.query(X[20:], 6, return_scores=True)
    expected_idx, expected_scores = _learner(Margin(), warm_start).fit(X[:20], Y[:20]).query(
        X[20:], 6, return_scores=True)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_array_equal(scores, expected_scores)
    assert idx.tolist() != entropy.tolist()  # Margin's picks, not Entropy's
    # the margin scores, computed by hand from the probabilities: top-1 minus top-2, negated
    proba = np.sort(learner.predict_proba(X[20:]), axis=1)
    np.testing.assert_allclose(scores, -(proba[:, -1] - proba[:, -2])[idx], rtol=1e-5, atol=1e-6)


def test_a_selector_that_needs_other_training_is_refused_by_query_until_refit():
    learner = _learner(Entropy()).fit(X[:20], Y[:20])
    learner.set_params(selector=DISAL())
    message = (r"^selector was changed after the net was trained, to DISAL\(\), which needs other "
               r"training than Entropy\(\) \(its training parts or reference set\); call refit\(\) "
               r"\(or teach\) to train for it, or fit\(\) to start again\.$")
    with pytest.raises(ValueError, match=message):
        learner.query(X[20:], 4)
    learner.refit()
    assert sorted(learner.estimator_.parts_) == ["dynamic_loss", "dynamics", "snapshot"]
    assert type(learner.selector_) is DISAL
    # trained for DISAL from fit's seed: exactly a learner fitted with DISAL
    disal = _learner(DISAL()).fit(X[:20], Y[:20])
    _assert_same_weights(learner, disal)
    idx, scores = learner.query(X[20:], 4, return_scores=True)
    expected_idx, expected_scores = disal.query(X[20:], 4, return_scores=True)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_array_equal(scores, expected_scores)


def test_a_selector_that_needs_other_parts_is_refused_under_warm_start():
    learner = _learner(Entropy(), warm_start=True).fit(X[:20], Y[:20])
    before = _weights(learner)
    learner.set_params(selector=DISAL())
    message = (r"^selector: DISAL\(\) needs the training parts \['dynamics', 'dynamic_loss', 'snapshot'\], the net "
               r"was trained with \[\]; with warm_start=True")
    with pytest.raises(ValueError, match=message):
        learner.refit()
    assert not learner.stale_ and type(learner.selector_) is Entropy
    for key, value in before.items():
        assert torch.equal(_weights(learner)[key], value)


@pytest.mark.parametrize("warm_start", [False, True], ids=["cold", "warm"])
def test_a_diverged_teach_recovers_with_a_lower_lr(warm_start):
    learner = _learner(warm_start=warm_start).fit(X[:20], Y[:20])
    learner.set_params(estimator__lr=float("inf"))
    with pytest.raises(FloatingPointError, match=r"^Training diverged: the training loss is nan in epoch"):
        learner.teach(X[20:28], Y[20:28])
    assert learner.stale_
    with pytest.raises(RuntimeError, match="The model is stale"):
        learner.query(X[28:], 3)
    learner.set_params(estimator__lr=0.01).refit()
    assert not learner.stale_ and _lr(learner) == [0.01]
    assert all(torch.isfinite(value).all() for value in _weights(learner).values())
    # exactly what the teach would have trained, had the lr been 0.01 then
    expected = _learner(warm_start=warm_start).fit(X[:20], Y[:20]).set_params(estimator__lr=0.01)
    expected.teach(X[20:28], Y[20:28])
    _assert_same_weights(learner, expected)
    np.testing.assert_array_equal(learner.query(X[28:], 5), expected.query(X[28:], 5))


def test_nan_data_is_refused_before_anything_changes():
    learner = _learner().fit(X[:20], Y[:20])
    before = pickle.dumps(learner)
    bad = X[20:24].copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"^X contains NaN or infinity in row 1\.$"):
        learner.teach(bad, Y[20:24])
    assert pickle.dumps(learner) == before and not learner.stale_
