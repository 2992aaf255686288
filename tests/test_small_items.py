"""The smaller items of issue 13 (deliverable 10), one test or two each.

* CoreSet and ClusterBatch with embeddings near 1e19: finite distances, the
  picks of the same embeddings at a normal scale (k-center and k-means do not
  change under a common scale);
* ``predict`` refuses NaN net outputs;
* tensors with ``requires_grad`` are accepted everywhere;
* an ISAL reference tuple is checked at ``fit``;
* ``active_learning_curve`` checks ``n_jobs``, and refuses a NaN score.
"""

import pickle
import re

import joblib
import numpy as np
import pytest
import torch

from skal import ActiveLearner, ActiveNet
from skal.kcenter import kcenter_greedy, min_distances
from skal.kmeans import kmeans
from skal.model_selection import active_learning_curve
from skal.models import MLP
from skal.selectors import ISAL, ClusterBatch, CoreSet, Entropy
from skal.selectors.base import embeddings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

rng = np.random.default_rng(0)
X = rng.normal(size=(120, 5)).astype(np.float32)
Y = X[:, :3].argmax(1).astype(np.int64)


def _learner(selector=None, **net_params):
    params = dict(module__hidden_sizes=(16,), max_epochs=3, batch_size=16, lr=0.1, verbose=0)
    params.update(net_params)
    return ActiveLearner(ActiveNet(MLP, **params), selector or Entropy(), random_state=0)


# --- k-center and k-means at 1e19 ---------------------------------------------------------------


def _greedy_reference(X, n, centers):
    """k-center greedy in float64 numpy, by brute force (the first maximum on ties)."""
    X, centers = np.asarray(X, np.float64), np.asarray(centers, np.float64)
    nearest = np.sqrt(((X[:, None] - centers[None]) ** 2).sum(-1)).min(1)
    picks, distances = [], []
    for _ in range(n):
        j = int(np.argmax(nearest))
        picks.append(j), distances.append(nearest[j])
        nearest = np.minimum(nearest, np.sqrt(((X - X[j]) ** 2).sum(-1)))
    return np.array(picks), np.array(distances)


@pytest.mark.parametrize("dtype, power", [(torch.float32, 64), (torch.float64, 540)])
def test_kcenter_gives_the_same_picks_at_a_huge_power_of_two_scale(dtype, power):
    points = torch.from_numpy(rng.normal(size=(300, 16))).to(dtype)
    centers = torch.from_numpy(rng.normal(size=(20, 16))).to(dtype)
    scale = 2.0 ** power  # 1.8e19 in float32, 3.6e162 in float64: squared norms overflow
    picks, distances = kcenter_greedy(points, 12, centers=centers, generator=torch.Generator().manual_seed(0))
    big_picks, big_distances = kcenter_greedy(points * scale, 12, centers=centers * scale,
                                              generator=torch.Generator().manual_seed(0))
    assert torch.equal(big_picks, picks)
    assert big_distances.dtype == dtype and torch.isfinite(big_distances).all()
    assert torch.equal(big_distances, distances * scale)  # exact: a power of two
    near = min_distances(points * scale, centers * scale)
    assert torch.equal(near, min_distances(points, centers) * scale)


def test_kcenter_at_1e19_matches_a_float64_brute_force():
    points = rng.normal(size=(200, 8)) * 1e19
    centers = rng.normal(size=(10, 8)) * 1e19
    picks, distances = kcenter_greedy(torch.tensor(points, dtype=torch.float32), 10,
                                      centers=torch.tensor(centers, dtype=torch.float32))
    f32 = lambda a: np.float32(a).astype(np.float64)  # noqa: E731 - the float32 inputs, exactly
    expected_picks, expected_distances = _greedy_reference(f32(points), 10, f32(centers))
    np.testing.assert_array_equal(picks.numpy(), expected_picks)
    assert distances.dtype == torch.float32
    np.testing.assert_allclose(distances.numpy(), expected_distances, rtol=1e-5)


def test_distances_beyond_float32_come_back_in_float64_never_inf():
    points = rng.normal(size=(100, 4)) * 1e38  # distances up to ~6e38 > float32's 3.4e38
    centers = rng.normal(size=(5, 4)) * 1e38
    f32 = np.float32(points), np.float32(centers)
    assert np.isfinite(f32[0]).all() and np.isfinite(f32[1]).all()
    picks, distances = kcenter_greedy(torch.from_numpy(f32[0]), 8, centers=torch.from_numpy(f32[1]))
    expected_picks, expected_distances = _greedy_reference(f32[0], 8, f32[1])
    assert distances.dtype == torch.float64 and torch.isfinite(distances).all()
    assert distances.max() > np.finfo(np.float32).max
    np.testing.assert_array_equal(picks.numpy(), expected_picks)
    np.testing.assert_allclose(distances.numpy(), expected_distances, rtol=1e-5)
    near = min_distances(torch.from_numpy(f32[0]), torch.from_numpy(f32[1]))
    expected = np.sqrt(((f32[0][:, None].astype(np.float64) - f32[1][None]) ** 2).sum(-1)).min(1)
    assert near.dtype == torch.float64
    np.testing.assert_allclose(near.numpy(), expected, rtol=1e-5)


def test_kmeans_gives_the_same_clusters_at_a_huge_power_of_two_scale():
    points = torch.from_numpy(rng.normal(size=(200, 16)).astype(np.float32))
    labels, centers = kmeans(points, 8, generator=torch.Generator().manual_seed(0))
    big_labels, big_centers = kmeans(points * 2.0 ** 64, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(big_labels, labels)
    assert torch.isfinite(big_centers).all() and torch.equal(big_centers, centers * 2.0 ** 64)
    with pytest.raises(ValueError, match=r"^X contains NaN or infinity\.$"):
        kmeans(torch.full((4, 2), float("nan")), 2)


def _huge_embedding_twin(learner, power=64):
    """The learner with its net's embeddings multiplied by ``2**power`` and the same logits.

    The first layer's weights and bias are multiplied by ``2**power`` (ReLU
    commutes with a positive scale) and the last layer's weights divided by
    it: every product is scaled exactly, so the logits are bit for bit the
    same and the embeddings exactly ``2**power`` times larger.
    """
    twin = pickle.loads(pickle.dumps(learner))
    first, last = twin.estimator_.module_.layers[1], twin.estimator_.module_.layers[3]
    with torch.no_grad():
        first.weight.mul_(2.0 ** power), first.bias.mul_(2.0 ** power), last.weight.mul_(2.0 ** -power)
    return twin


def test_coreset_reports_finite_scores_when_embeddings_reach_1e19():
    learner = _learner(CoreSet()).fit(X[:20], Y[:20])
    huge = _huge_embedding_twin(learner)
    pool = X[20:]
    assert embeddings(huge.estimator_, pool).abs().max() > 1e19
    np.testing.assert_array_equal(huge.predict_proba(pool), learner.predict_proba(pool))
    idx, scores = huge.query(pool, 10, return_scores=True)
    expected_idx, expected_scores = learner.query(pool, 10, return_scores=True)
    assert np.isfinite(scores).all()
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_array_equal(scores, expected_scores * 2.0 ** 64)


def test_cluster_batches_work_when_embeddings_reach_1e19():
    learner = _learner(Entropy(batch=ClusterBatch(factor=4))).fit(X[:20], Y[:20])
    huge = _huge_embedding_twin(learner)
    assert embeddings(huge.estimator_, X[20:]).abs().max() > 1e19
    idx, scores = huge.query(X[20:], 6, return_scores=True)
    expected_idx, expected_scores = learner.query(X[20:], 6, return_scores=True)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_array_equal(scores, expected_scores)
    assert len(set(idx.tolist())) == 6


# --- predict and NaN outputs ------------------------------------------------------------------------


def test_predict_refuses_nan_net_outputs():
    learner = _learner().fit(X[:20], Y[:20])
    message = ("The net's outputs are NaN or infinite for some samples of X, so there is no "
               "prediction; did training diverge?")
    # one sample that overflows a hidden unit whose weights are all 1: only its outputs are NaN
    with torch.no_grad():
        learner.estimator_.module_.layers[1].weight[0] = 1.0
    overflowing = X[20:30].copy()
    overflowing[4] = np.finfo(np.float32).max
    with torch.inference_mode():
        logits = learner.estimator_.module_(torch.from_numpy(overflowing))
    assert not torch.isfinite(logits[4]).any() and torch.isfinite(logits[[0, 1, 2, 3, 5]]).all()
    for call in (lambda: learner.predict(overflowing), lambda: learner.predict_proba(overflowing),
                 lambda: learner.score(overflowing, Y[20:30])):
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            call()
    with torch.no_grad():
        learner.estimator_.module_.layers[3].bias[0] = float("nan")  # every output NaN
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        learner.predict(X[20:])


# --- tensors that require grad ------------------------------------------------------------------


def test_tensors_requiring_grad_are_accepted_and_left_alone():
    tensor = torch.tensor(X, requires_grad=True)
    from_tensor = _learner().fit(tensor[:20], Y[:20])
    from_array = _learner().fit(X[:20], Y[:20])
    np.testing.assert_array_equal(from_tensor.query(tensor[20:], 5), from_array.query(X[20:], 5))
    from_tensor.teach(tensor[20:26], Y[20:26])
    from_array.teach(X[20:26], Y[20:26])
    np.testing.assert_array_equal(from_tensor.X_labeled_, from_array.X_labeled_)
    for key, value in from_array.estimator_.module_.state_dict().items():
        assert torch.equal(from_tensor.estimator_.module_.state_dict()[key], value), key
    np.testing.assert_array_equal(from_tensor.predict_proba(tensor[26:]), from_array.predict_proba(X[26:]))
    np.testing.assert_array_equal(from_tensor.predict(tensor[26:]), from_array.predict(X[26:]))
    assert from_tensor.score(tensor[26:], Y[26:]) == from_array.score(X[26:], Y[26:])
    assert tensor.grad is None and torch.equal(tensor.detach(), torch.from_numpy(X))


# --- ISAL's reference tuple, checked at fit ---------------------------------------------------------


_BAD_REFERENCES = {
    "labels outside classes": ((X[:9], np.full(9, 7)),
                               r"reference: y_ref has labels not in classes_: \['7'\]\."),
    "another sample shape": ((X[:9, :2], np.zeros(9, int)),
                             r"reference: X_ref of shape \(9, 2\) and y_ref of length 9 do not match each "
                             r"other or the samples' shape \(5,\)\."),
    "lengths that differ": ((X[:9], np.zeros(8, int)),
                            r"reference: X_ref of shape \(9, 5\) and y_ref of length 8 do not match"),
    "empty": ((X[:0], np.zeros(0, int)), r"reference: X_ref of shape \(0, 5\) and y_ref of length 0"),
    "not a pair": ((X[:9], Y[:9], Y[:9]), r"reference must be a fraction or a tuple \(X_ref, y_ref\)\."),
}


@pytest.mark.parametrize("bad", list(_BAD_REFERENCES))
def test_an_isal_reference_tuple_is_checked_at_fit(bad):
    reference, message = _BAD_REFERENCES[bad]
    learner = _learner(ISAL(reference=reference, depth=2, repeats=1))
    with pytest.raises(ValueError, match=f"^{message}"):
        learner.fit(X[:20], Y[:20])
    assert "_fitted" not in learner.__dict__  # nothing was trained or stored
    # set after fit, it is refused by query and refit before anything runs
    fitted = _learner(ISAL(depth=2, repeats=1)).fit(X[:30], Y[:30])
    before = pickle.dumps(fitted.__dict__["_fitted"])
    fitted.set_params(selector=ISAL(reference=reference, depth=2, repeats=1))
    for call in (lambda: fitted.query(X[30:], 2), fitted.refit):
        with pytest.raises(ValueError, match=f"^{message}"):
            call()
    assert pickle.dumps(fitted.__dict__["_fitted"]) == before
    # teach keeps the labels it was given, as when its training fails, and refuses to train
    with pytest.raises(ValueError, match=f"^{message}"):
        fitted.teach(X[30:34], Y[30:34])
    assert fitted.stale_ and len(fitted.y_labeled_) == 34


def test_a_good_isal_reference_tuple_passes_and_is_used():
    reference = (X[100:], Y[100:])
    ISAL(reference=reference).check_labeled((5,), np.arange(3))
    ISAL().check_labeled((999,), np.arange(1))  # a fraction: nothing to check
    learner = _learner(ISAL(reference=reference, depth=2, repeats=1)).fit(X[:20], Y[:20])
    assert not learner._state().labeled.reference.any()  # nothing held out
    idx, scores = learner.query(X[20:100], 3, return_scores=True)
    assert idx.shape == (3,) and np.isfinite(scores).all()
    # the same net (nothing held out either way) scores by the reference it is given
    other_reference = (X[100:][::-1][:7], Y[100:][::-1][:7])
    other = _learner(ISAL(reference=other_reference, depth=2, repeats=1)).fit(X[:20], Y[:20])
    _, other_scores = other.query(X[20:100], 80, return_scores=True)
    _, all_scores = learner.query(X[20:100], 80, return_scores=True)
    assert not np.allclose(np.sort(other_scores), np.sort(all_scores))


# --- active_learning_curve: n_jobs and the scores ------------------------------------------------


def _curve(**kwargs):
    params = dict(initial_size=10, query_size=5, n_cycles=2, n_repeats=2, random_state=0)
    params.update(kwargs)
    return active_learning_curve({"entropy": _learner(max_epochs=2)}, X, Y, **params)


@pytest.mark.parametrize("n_jobs, error, message", [
    ("2", TypeError, "n_jobs must be None or an integer, got str: '2'."),
    (1.5, TypeError, "n_jobs must be None or an integer, got float: 1.5."),
    (True, TypeError, "n_jobs must be None or an integer, got bool: True."),
    (0, ValueError, "n_jobs must be None, a positive integer or in [-{cpus}, -1] (-1: all {cpus} CPUs, "
                    "-2: all but one, ...), got 0."),
    (-1000, ValueError, "n_jobs must be None, a positive integer or in [-{cpus}, -1] (-1: all {cpus} CPUs, "
                        "-2: all but one, ...), got -1000."),
])
def test_active_learning_curve_refuses_a_bad_n_jobs(n_jobs, error, message, monkeypatch):
    trained = []
    monkeypatch.setattr(ActiveNet, "fit", lambda *args, **kwargs: trained.append(1))
    with pytest.raises(error, match=f"^{re.escape(message.format(cpus=joblib.cpu_count()))}$"):
        _curve(n_jobs=n_jobs)
    assert not trained  # refused before anything trained


def test_every_valid_n_jobs_gives_the_same_curve():
    expected = _curve(n_jobs=None).scores
    with joblib.parallel_config(backend="threading"):  # threads: no worker processes to start
        for n_jobs in (1, 2, -1, -joblib.cpu_count(), np.int64(2)):
            np.testing.assert_array_equal(_curve(n_jobs=n_jobs).scores, expected)


def test_a_scorer_that_returns_nan_is_refused_naming_scoring():
    calls = []

    def nan_at_cycle_two(estimator, X_test, y_test):
        calls.append(1)
        return float("nan") if len(calls) == 3 else estimator.score(X_test, y_test)

    with pytest.raises(ValueError, match=r"^scoring returned nan for the model of cycle 2; a scorer must "
                                         r"return a finite number\.$"):
        _curve(scoring=nan_at_cycle_two, n_repeats=1)
    with pytest.raises(ValueError, match=r"^scoring returned inf for the model of cycle 0"):
        _curve(scoring=lambda estimator, X_test, y_test: float("inf"))
    with pytest.raises(ValueError, match=r"^scoring returned 'good' for the model of cycle 0; a scorer "
                                         r"must return a number\.$"):
        _curve(scoring=lambda estimator, X_test, y_test: "good")
