"""Tests of skal.stopping: kappa by hand, scripted stop decisions, clone, pickle, a real campaign."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError
from torch.utils.data import TensorDataset

from skal.stopping import StabilizingPredictions, StoppingCriterion

STOP_SET = np.zeros((10, 2))


class Scripted:
    """A learner whose predictions on the stop set are given in advance."""

    def __init__(self, predictions, X_stop=STOP_SET):
        self.predictions = np.asarray(predictions)
        self.X_stop = X_stop

    def predict(self, X):
        assert X is self.X_stop  # passed unchanged
        return self.predictions


def run(criterion, sequence, X_stop=STOP_SET):
    return [criterion.update(Scripted(p, X_stop)) for p in sequence]


def ref_kappa(a, b):
    """Cohen's kappa from the contingency table: (p_o - p_e) / (1 - p_e)."""
    labels = np.union1d(a, b)
    table = np.array([[np.sum((a == r) & (b == c)) for c in labels] for r in labels], dtype=float)
    table /= table.sum()
    p_o = np.trace(table)
    p_e = table.sum(axis=1) @ table.sum(axis=0)
    return (p_o - p_e) / (1 - p_e)


def ref_decisions(agreements, threshold, window):
    """Stop at update t iff the mean of the last `window` agreements before it exceeds threshold."""
    decisions = [False]  # the first model has nothing to agree with
    for t in range(1, len(agreements) + 1):
        recent = agreements[max(0, t - window):t]
        decisions.append(t >= window and np.mean(recent) > threshold)
    return decisions


# --- kappa ---------------------------------------------------------------------------


def test_kappa_against_a_hand_computation():
    previous = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    current = [0, 0, 1, 1, 1, 1, 2, 2, 2, 0]
    # observed agreement 8/10; marginals (3, 3, 4) and (3, 4, 3): chance 33/100;
    # kappa = (0.8 - 0.33) / (1 - 0.33) = 47/67
    criterion = StabilizingPredictions(STOP_SET)
    run(criterion, [previous, current])
    assert criterion.agreements_ == [pytest.approx(47 / 67, rel=1e-14)]
    assert criterion.agreements_[0] == pytest.approx(ref_kappa(np.array(previous), np.array(current)),
                                                     rel=1e-14)


def test_kappa_with_string_labels_and_a_class_appearing():
    previous = np.array(["cat"] * 5 + ["dog"] * 5)
    current = np.array(["cat"] * 4 + ["bird"] + ["dog"] * 5)
    criterion = StabilizingPredictions(STOP_SET)
    run(criterion, [previous, current])
    assert criterion.agreements_ == [pytest.approx(ref_kappa(previous, current), rel=1e-14)]


def test_undefined_kappa_is_nan_and_blocks_stopping():
    ones, zeros = np.ones(10, dtype=int), np.zeros(10, dtype=int)
    criterion = StabilizingPredictions(STOP_SET, window=1, threshold=0.5)
    with np.errstate(all="raise"):
        decisions = run(criterion, [ones, ones, zeros, zeros, np.r_[zeros[:5], ones[:5]],
                                    np.r_[zeros[:5], ones[:5]]])
    nan = criterion.agreements_
    # one class, the same: NaN; one class each, different: observed = chance = 0, kappa 0
    assert np.isnan(nan[0]) and nan[1] == 0.0 and np.isnan(nan[2])
    assert nan[3] == 0.0 and nan[4] == 1.0
    assert decisions == [False, False, False, False, False, True]
    # a NaN anywhere in the window keeps the mean undefined: no stop
    criterion = StabilizingPredictions(STOP_SET, window=2, threshold=0.5)
    half = np.r_[zeros[:5], ones[:5]]
    assert run(criterion, [ones, ones, half, half, half]) == [False, False, False, False, True]
    assert np.isnan(criterion.agreements_[0])


# --- the stop decision ---------------------------------------------------------------------


def test_scripted_sequence_stops_at_the_first_stable_window():
    a = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    b = [0, 0, 1, 1, 1, 1, 2, 2, 2, 0]
    c = [0, 1, 1, 1, 1, 1, 2, 2, 2, 0]
    criterion = StabilizingPredictions(STOP_SET)  # threshold 0.99, window 3
    decisions = run(criterion, [a, b, b, b, b, c])
    # agreements: 47/67, 1, 1, 1, then b -> c; windows: (47/67, 1, 1) mean 0.90 -> go on,
    # (1, 1, 1) -> stop at update 4; update 5 breaks the agreement but stopped_at_ stays
    assert decisions == [False, False, False, False, True, False]
    assert criterion.agreements_[:4] == [pytest.approx(47 / 67), 1.0, 1.0, 1.0]
    assert criterion.stopped_at_ == 4 and criterion.n_updates_ == 6 and not criterion.stop_
    np.testing.assert_array_equal(criterion.predictions_, c)


def test_threshold_is_strict_and_window_is_a_mean():
    half = [0, 0, 1, 1]
    three_quarters = [0, 1, 1, 1]  # kappa with `half`: exactly 0.5
    X_stop = np.zeros((4, 1))
    strict = StabilizingPredictions(X_stop, threshold=0.5, window=1)
    assert run(strict, [half, three_quarters], X_stop) == [False, False]
    assert strict.agreements_ == [0.5]
    below = StabilizingPredictions(X_stop, threshold=0.49, window=1)
    assert run(below, [half, three_quarters], X_stop) == [False, True]
    # window 2, agreements (0.5, 1.0): the mean 0.75 passes 0.7 though 0.5 alone does not
    mean = StabilizingPredictions(X_stop, threshold=0.7, window=2)
    assert run(mean, [half, three_quarters, three_quarters], X_stop) == [False, False, True]


@pytest.mark.parametrize("window, threshold", [(1, 0.9), (3, 0.99), (3, 0.6), (5, 0.8)])
def test_random_sequences_against_the_reference_rule(window, threshold):
    rng = np.random.default_rng(window)
    predictions = rng.integers(0, 3, size=100)
    sequence = []
    for _ in range(30):  # each model flips a random few of the previous predictions
        flips = rng.random(100) < rng.choice([0.0, 0.005, 0.02, 0.3])
        predictions = np.where(flips, rng.integers(0, 3, size=100), predictions)
        sequence.append(predictions.copy())
    X_stop = np.zeros((100, 1))
    criterion = StabilizingPredictions(X_stop, threshold=threshold, window=window)
    decisions = run(criterion, sequence, X_stop)
    expected = [ref_kappa(p, q) for p, q in zip(sequence, sequence[1:])]
    np.testing.assert_allclose(criterion.agreements_, expected, rtol=1e-12)
    assert decisions == ref_decisions(expected, threshold, window)
    assert any(decisions) and not all(decisions)  # the scripts exercise both answers
    assert criterion.stopped_at_ == decisions.index(True)


# --- errors change nothing -------------------------------------------------------------------


def test_bad_predictions_raise_and_change_nothing():
    criterion = StabilizingPredictions(STOP_SET)
    run(criterion, [np.arange(10) % 2, np.arange(10) % 3])
    before = (criterion.n_updates_, list(criterion.agreements_), criterion.predictions_.copy(),
              criterion.stop_, criterion.stopped_at_)
    for bad, shape in ((np.zeros(9), r"\(9,\)"), (np.zeros((10, 2)), r"\(10, 2\)")):
        with pytest.raises(ValueError, match=r"^learner.predict\(X_stop\) must return one label per "
                                             r"stop-set sample, shape \(10,\); got shape " + shape):
            criterion.update(Scripted(bad))
    after = (criterion.n_updates_, list(criterion.agreements_), criterion.predictions_,
             criterion.stop_, criterion.stopped_at_)
    assert after[:2] == before[:2] and after[3:] == before[3:]
    np.testing.assert_array_equal(after[2], before[2])

    criterion.set_params(X_stop=np.zeros((12, 2)))
    with pytest.raises(ValueError, match=r"^X_stop changed size since the last update \(10 -> 12 "):
        criterion.update(Scripted(np.zeros(12), criterion.X_stop))
    assert criterion.n_updates_ == 2


def test_parameters_are_checked_at_update_and_named():
    cases = {
        "threshold": dict(threshold=1.0),
        "window": dict(window=0),
        "X_stop": dict(X_stop=None),
    }
    for name, kwargs in cases.items():
        criterion = StabilizingPredictions(**{"X_stop": STOP_SET, **kwargs})
        with pytest.raises(InvalidParameterError, match=f"The '{name}' parameter of "
                                                        "StabilizingPredictions"):
            criterion.update(Scripted(np.zeros(10)))
        assert not hasattr(criterion, "n_updates_")
    one = StabilizingPredictions(np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"^X_stop must hold at least 2 samples; got 1\.$"):
        one.update(Scripted(np.zeros(1), one.X_stop))
    with pytest.raises(TypeError, match=r"^X_stop must be an array-like"):
        StabilizingPredictions({"a": STOP_SET}).update(Scripted(np.zeros(10)))


def test_the_base_class_needs_an_update_hook():
    class NoHook(StoppingCriterion):
        pass

    criterion = NoHook()
    with pytest.raises(NotImplementedError, match=r"^NoHook must implement _update"):
        criterion.update(Scripted(np.zeros(10)))
    assert not hasattr(criterion, "n_updates_")


# --- clone and pickle ----------------------------------------------------------------------------


def test_clone_is_fresh_and_shares_the_stop_set():
    X_stop = TensorDataset(torch.zeros(10, 2))
    criterion = StabilizingPredictions(X_stop, threshold=0.9, window=2)
    run(criterion, [np.arange(10) % 2] * 3, X_stop)
    fresh = clone(criterion)
    assert fresh.X_stop is X_stop
    assert fresh.get_params() == {"X_stop": X_stop, "threshold": 0.9, "window": 2}
    assert not [name for name in vars(fresh) if name.endswith("_")]
    assert run(fresh, [np.arange(10) % 2] * 3, X_stop) == [False, False, True]
    assert criterion.n_updates_ == 3  # the original is untouched


def test_pickled_criterion_continues_identically():
    rng = np.random.default_rng(0)
    sequence = [rng.integers(0, 2, size=10) for _ in range(3)] + [np.arange(10) % 2] * 4
    whole = StabilizingPredictions(STOP_SET, threshold=0.9)
    expected = run(whole, sequence)
    first = StabilizingPredictions(STOP_SET, threshold=0.9)
    decisions = run(first, sequence[:4])
    restored = pickle.loads(pickle.dumps(first))
    decisions += run(restored, sequence[4:], restored.X_stop)
    assert decisions == expected and expected[-1]
    np.testing.assert_array_equal(restored.agreements_, whole.agreements_)
    assert restored.stopped_at_ == whole.stopped_at_ == 6


# --- a real campaign ---------------------------------------------------------------------------


def _campaign(X_stop, seed=0):
    from skal import ActiveLearner, ActiveNet
    from skal.models import MLP
    from skal.selectors import Random

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 2)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    net = ActiveNet(MLP, max_epochs=3, lr=0.1, batch_size=32, verbose=0)
    learner = ActiveLearner(net, selector=Random(), random_state=seed).fit(X[:20], y[:20])
    criterion = StabilizingPredictions(X_stop, threshold=0.8, window=2)
    decisions = [criterion.update(learner)]
    for _ in range(4):
        idx = learner.query(X[200:], n=20)
        learner.teach(X[200:][idx], y[200:][idx])
        decisions.append(criterion.update(learner))
    return criterion, decisions, learner


def test_seeded_campaigns_record_the_same_agreements():
    X_stop = np.random.default_rng(1).normal(size=(300, 2)).astype(np.float32)
    first, decisions, learner = _campaign(X_stop)
    second, again, _ = _campaign(X_stop)
    assert len(first.agreements_) == 4
    np.testing.assert_array_equal(first.agreements_, second.agreements_)
    assert decisions == again == ref_decisions(first.agreements_, 0.8, 2)
    np.testing.assert_array_equal(first.predictions_, learner.predict(X_stop))
    # a Dataset stop set is predicted the same way
    dataset, _, _ = _campaign(TensorDataset(torch.from_numpy(X_stop)))
    np.testing.assert_array_equal(dataset.agreements_, first.agreements_)


def test_the_labeling_page_stopping_snippets_run():
    from docs_snippets import run_section

    namespace = run_section("user_guide/labeling.md", "Stopping")
    criterion, learner = namespace["criterion"], namespace["learner"]
    labeled = learner.labeled_rows_
    assert criterion.stop_ and criterion.stopped_at_ == criterion.n_updates_ - 1
    assert len(labeled) == 20 * criterion.n_updates_ == len(learner.y_labeled_)
