"""ActiveLearner: the loop, its contract, scikit-learn plumbing and bad input."""

import copy
import pickle

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from skorch.callbacks import Callback

from skal import ActiveLearner, ActiveNet
from skal._samples import labeled_data
from skal.models import MLP
from skal.selectors import DISAL, LL4AL, Entropy, LeastConfidence, Margin, Random, TiDAL

SELECTORS = [DISAL(), DISAL(mode="literal"), Entropy(), Margin(), LeastConfidence(), Random()]


def _net(**kwargs):
    params = dict(module__hidden_sizes=(16,), max_epochs=3, batch_size=16, lr=0.1, verbose=0)
    params.update(kwargs)
    return ActiveNet(MLP, **params)


def _data(n=120, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X[:, :k].argmax(1)).astype(np.int64)
    return X, y


def _n_trained(net):
    """How many samples the net's last epoch trained on (skorch records each batch's size)."""
    return sum(batch["train_batch_size"] for batch in net.history[-1]["batches"])


@pytest.fixture(scope="module")
def fitted():
    X, y = _data()
    learner = ActiveLearner(_net(), selector=Entropy(), random_state=0).fit(X[:30], y[:30])
    return learner, X[30:], y[30:]


def _snapshot(learner):
    """Everything that must not change after a refused call."""
    return {
        "X": learner.X_labeled_.copy(),
        "y": learner.y_labeled_.copy(),
        "cycle": learner.labeled_cycle_.copy(),
        "weights": {k: v.clone() for k, v in learner.estimator_.module_.state_dict().items()},
        "net": learner.estimator_,
    }


def _assert_unchanged(learner, before):
    np.testing.assert_array_equal(learner.X_labeled_, before["X"])
    np.testing.assert_array_equal(learner.y_labeled_, before["y"])
    np.testing.assert_array_equal(learner.labeled_cycle_, before["cycle"])
    assert learner.estimator_ is before["net"]
    for key, value in learner.estimator_.module_.state_dict().items():
        assert torch.equal(value, before["weights"][key])


# --- the loop -----------------------------------------------------------------


@pytest.mark.parametrize("selector", SELECTORS, ids=repr)
def test_query_returns_n_distinct_in_range_indices_reproducibly(selector):
    X, y = _data()
    runs = []
    for _ in range(2):
        learner = ActiveLearner(_net(), selector=selector, random_state=3).fit(X[:30], y[:30])
        idx, scores = learner.query(X[30:], 17, return_scores=True)
        runs.append((idx, scores))
        assert idx.dtype == np.int64 and idx.shape == (17,)
        assert len(set(idx.tolist())) == 17
        assert idx.min() >= 0 and idx.max() < 90
        assert scores.shape == (17,) and np.all(np.diff(scores) <= 0)
        np.testing.assert_array_equal(learner.query(X[30:], 17), idx)
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_query_of_whole_pool_is_a_permutation(fitted):
    learner, X_pool, _ = fitted
    idx = learner.query(X_pool, len(X_pool))
    np.testing.assert_array_equal(np.sort(idx), np.arange(len(X_pool)))


def test_different_random_state_gives_different_random_queries():
    X, y = _data()
    picks = [set(ActiveLearner(_net(), selector=Random(), random_state=s).fit(X[:30], y[:30])
                 .query(X[30:], 10).tolist()) for s in range(3)]
    assert picks[0] != picks[1] or picks[1] != picks[2]


def test_teach_appends_labels_and_records_cycles():
    X, y = _data()
    learner = ActiveLearner(_net(), selector=Entropy(), random_state=0).fit(X[:20], y[:20])
    first_net = learner.estimator_
    learner.teach(X[20:25], y[20:25])
    learner.teach(X[25:28], y[25:28])
    np.testing.assert_array_equal(learner.X_labeled_, X[:28])
    np.testing.assert_array_equal(learner.y_labeled_, y[:28])
    np.testing.assert_array_equal(learner.labeled_cycle_, [0] * 20 + [1] * 5 + [2] * 3)
    assert learner.estimator_ is not first_net
    assert _n_trained(learner.estimator_) == 28
    assert learner.estimator_.module_(torch.as_tensor(X[:1])).shape == (1, 3)


def test_labeled_set_is_a_copy_of_the_callers_data():
    X, y = _data()
    X_seed = X[:20].copy()
    learner = ActiveLearner(_net(), selector=Random(), random_state=0).fit(X_seed, y[:20])
    X_seed[:] = 0
    np.testing.assert_array_equal(learner.X_labeled_, X[:20])


def test_cold_start_teach_retrains_from_a_fresh_initialisation():
    from skal._training import TRAIN as _TRAIN, derive_seed as _derive_seed, torch_seeded as _torch_seeded

    X, y = _data()
    learner = ActiveLearner(_net(), selector=Random(), random_state=0).fit(X[:20], y[:20])
    learner.teach(X[20:40], y[20:40])
    # the same net trained from scratch on all 40 labels with the cycle-1 seed
    fresh = clone(_net()).set_params(classes=np.arange(3))
    with _torch_seeded(_derive_seed(learner._state().seed, 1, _TRAIN), "cpu"):
        fresh.fit(X[:40], y[:40])
    for key, value in fresh.module_.state_dict().items():
        assert torch.equal(learner.estimator_.module_.state_dict()[key], value), key
    assert len(learner.estimator_.history) == 3


@pytest.mark.parametrize("warm_start, epochs", [(True, 3), ("continue", 6)])
def test_warm_start_continues_from_current_weights(warm_start, epochs):
    X, y = _data()
    learner = ActiveLearner(_net(), selector=Entropy(), warm_start=warm_start, random_state=0)
    learner.fit(X[:20], y[:20])
    before = learner.estimator_
    learner.teach(X[20:30], y[20:30])
    # True: a new history of 3 epochs; "continue": 3 more on the same history
    assert len(learner.estimator_.history) == epochs
    assert len(before.history) == 3  # the previous net was not modified
    assert _n_trained(learner.estimator_) == 30


def test_warm_start_teaches_a_net_built_from_a_module_instance():
    # parameters without equality (a module instance, a callable) are unchanged when
    # set_params did not replace them; only the replaced one is set on the warm net
    X, y = _data()
    net = ActiveNet(MLP(num_classes=3, in_features=5, hidden_sizes=(16,)), max_epochs=3,
                    batch_size=16, lr=0.1, verbose=0)
    learner = ActiveLearner(net, selector=Entropy(), warm_start=True, random_state=0).fit(X[:20], y[:20])
    learner.teach(X[20:25], y[20:25])
    assert len(learner.estimator_.history) == 3 and not learner.stale_
    learner.set_params(estimator__lr=0.02)
    learner.teach(X[25:30], y[25:30])
    assert len(learner.estimator_.history) == 3 and learner.estimator_.lr == 0.02
    assert learner.estimator_.optimizer_.param_groups[0]["lr"] == 0.02
    assert _n_trained(learner.estimator_) == 30


def test_fit_is_reproducible_and_leaves_global_torch_rng_alone():
    X, y = _data()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = ActiveLearner(_net(), random_state=5).fit(X[:40], y[:40])
    np.testing.assert_array_equal(torch.rand(3), expected_next)
    b = ActiveLearner(_net(), random_state=5).fit(X[:40], y[:40])
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    np.testing.assert_array_equal(a.query(X[40:], 10), b.query(X[40:], 10))


def test_string_labels_and_declared_classes():
    X, y = _data()
    names = np.array(["cat", "dog", "emu", "yak"])
    labels = names[y]
    learner = ActiveLearner(_net(), selector=Margin(), classes=names, random_state=0)
    learner.fit(X[:20], labels[:20])
    np.testing.assert_array_equal(learner.classes_, names)
    assert learner.predict_proba(X).shape == (120, 4)  # "yak" has an output before it is seen
    learner.teach(X[20:22], ["yak", "yak"])
    assert set(learner.predict(X)) <= set(names)
    assert learner.y_labeled_[-1] == "yak"


def test_predict_proba_rows_sum_to_one_and_predict_is_argmax(fitted):
    learner, X_pool, y_pool = fitted
    proba = learner.predict_proba(X_pool)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(learner.predict(X_pool), learner.classes_[proba.argmax(1)])
    assert learner.score(X_pool, y_pool) == pytest.approx(np.mean(learner.predict(X_pool) == y_pool))


def test_selector_needs_configure_the_cloned_net_only():
    X, y = _data()
    net = _net()
    learner = ActiveLearner(net, selector=DISAL(), random_state=0).fit(X[:20], y[:20])
    trained = learner.estimator_
    assert [name for name, _ in trained.callbacks] == ["divergence_check", "dynamics", "dynamic_loss", "snapshot"]
    assert set(trained.parts_) == {"dynamic_loss", "dynamics", "snapshot"}
    assert trained.parts_["dynamic_loss"].weight == 1.0
    assert trained.parts_["snapshot"].state_ is not None
    assert trained.parts_["dynamics"].mean_.shape == (20, 3)
    assert net.callbacks is None and not hasattr(net, "module_")
    learner = ActiveLearner(net, selector=Entropy(), random_state=0).fit(X[:20], y[:20])
    # Entropy declares no training part: only the learner's divergence check is added
    assert [name for name, _ in learner.estimator_.callbacks] == ["divergence_check"]
    assert learner.estimator_.parts_ == {}


# --- scikit-learn plumbing ----------------------------------------------------------


def test_nested_params_and_clone():
    learner = ActiveLearner(_net(), selector=DISAL(), random_state=0)
    params = learner.get_params()
    assert params["estimator__lr"] == 0.1 and params["selector__mode"] == "kl"
    learner.set_params(estimator__lr=0.5, selector__mode="literal", selector__weight=0.0)
    assert learner.estimator.lr == 0.5 and learner.selector.mode == "literal"
    assert learner.selector.weight == 0.0
    cloned = clone(learner)
    assert cloned.estimator is not learner.estimator and cloned.selector is not learner.selector
    assert cloned.get_params()["estimator__lr"] == 0.5
    assert cloned.get_params()["selector__mode"] == "literal"


@pytest.mark.parametrize("dump", ["pickle", "joblib"])
def test_pickle_round_trip_of_fitted_learner(fitted, tmp_path, dump):
    learner, X_pool, _ = fitted
    if dump == "pickle":
        loaded = pickle.loads(pickle.dumps(learner))
    else:
        joblib.dump(learner, tmp_path / "learner.joblib")
        loaded = joblib.load(tmp_path / "learner.joblib")
    np.testing.assert_array_equal(loaded.predict_proba(X_pool), learner.predict_proba(X_pool))
    np.testing.assert_array_equal(loaded.query(X_pool, 7), learner.query(X_pool, 7))
    np.testing.assert_array_equal(loaded.X_labeled_, learner.X_labeled_)
    np.testing.assert_array_equal(loaded.labeled_cycle_, learner.labeled_cycle_)


def test_cross_val_score_and_grid_search_over_nested_params():
    X, y = _data(n=90)
    learner = ActiveLearner(_net(), selector=DISAL(), random_state=0)
    scores = cross_val_score(learner, X, y, cv=3)
    assert scores.shape == (3,) and np.all((0 <= scores) & (scores <= 1))
    grid = GridSearchCV(learner, {"selector__weight": [0.0, 1.0], "selector__mode": ["kl", "literal"]}, cv=2)
    grid.fit(X, y)
    assert len(grid.cv_results_["params"]) == 4
    best = grid.best_estimator_
    assert best.selector_.weight in (0.0, 1.0)
    # the dynamic loss is trained exactly when the searched weight asks for it
    assert ("dynamic_loss" in best.estimator_.parts_) == (best.selector_.weight > 0)


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize("n, error, match", [
    (0, ValueError, r"n must be in \[1, len\(X_pool\)\] = \[1, 90\], got 0"),
    (-3, ValueError, r"n must be in \[1, len\(X_pool\)\]"),
    (91, ValueError, r"got 91"),
    (2.0, TypeError, r"n must be an integer, got float"),
    (True, TypeError, r"n must be an integer, got bool"),
    ("5", TypeError, r"n must be an integer, got str"),
])
def test_query_rejects_bad_n(fitted, n, error, match):
    learner, X_pool, _ = fitted
    before = _snapshot(learner)
    with pytest.raises(error, match=match):
        learner.query(X_pool, n)
    _assert_unchanged(learner, before)


def test_query_accepts_numpy_integer_n(fitted):
    learner, X_pool, _ = fitted
    assert learner.query(X_pool, np.int64(4)).shape == (4,)


def _with(X, row, col, value):
    X = X.copy()
    X[row, col] = value
    return X


@pytest.mark.parametrize("make_pool, match", [
    (lambda X: X[:0], r"X_pool is empty"),
    # validate_data(reset=False), as in predict: scikit-learn's wording, prefixed with the name
    (lambda X: _with(X, 3, 1, np.nan), r"^X_pool contains NaN or infinity in row 3; to leave them out, pass "
                                       r"non_finite='leave_out'\.$"),
    (lambda X: _with(X, 0, 0, np.inf), r"^X_pool contains NaN or infinity in row 0; "),
    (lambda X: X[:, :4], r"^X_pool: X has 4 features, but ActiveLearner is expecting 5 features as input"),
    (lambda X: X[:, :, None], r"X_pool has samples of shape \(5, 1\)"),
])
def test_query_rejects_bad_pools(fitted, make_pool, match):
    learner, X_pool, _ = fitted
    before = _snapshot(learner)
    with pytest.raises(ValueError, match=match):
        learner.query(make_pool(X_pool), 1)
    _assert_unchanged(learner, before)


@pytest.mark.parametrize("make, match", [
    (lambda X, y: (X[:3], y[:4]), r"inconsistent numbers of samples: \[3, 4\]"),
    (lambda X, y: (_with(X[:3], 1, 2, np.nan), y[:3]), r"^X contains NaN or infinity in row 1\.$"),
    (lambda X, y: (X[:3, :2], y[:3]), r"X has 2 features, but ActiveLearner is expecting 5 features as input"),
    (lambda X, y: (X[:0], y[:0]), r"X is empty"),
    (lambda X, y: (X[:2], np.array([1, 7])), r"y contains labels not in classes_: \['7'\]"),
])
def test_teach_rejects_bad_input_and_changes_nothing(fitted, make, match):
    learner, X_pool, y_pool = fitted
    before = _snapshot(learner)
    with pytest.raises(ValueError, match=match):
        learner.teach(*make(X_pool, y_pool))
    _assert_unchanged(learner, before)


@pytest.mark.parametrize("method, args", [
    ("query", lambda X, y: (X, 3)),
    ("teach", lambda X, y: (X, y)),
    ("predict", lambda X, y: (X,)),
    ("predict_proba", lambda X, y: (X,)),
])
def test_methods_before_fit_raise_not_fitted(method, args):
    X, y = _data(n=10)
    with pytest.raises(NotFittedError):
        getattr(ActiveLearner(_net()), method)(*args(X, y))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(estimator=None), ValueError, r"'estimator' parameter of ActiveLearner must be"),
    (dict(selector="disal"), ValueError, r"'selector' parameter of ActiveLearner must be"),
    (dict(warm_start="yes"), ValueError, r"'warm_start' parameter"),
    (dict(classes=[0, 1, 1, 2]), ValueError, r"classes contains duplicate labels"),
    (dict(classes=[0, 1]), ValueError, r"y contains labels not in classes_: \['2'\]"),
    (dict(selector=DISAL(mode="typo")), ValueError, r"'mode' parameter of DISAL must be"),
    (dict(selector=DISAL(weight=-1.0)), ValueError, r"The 'weight' parameter of DISAL must be"),
    # the shared batch and subset parameters are checked at fit, not first at query
    (dict(selector=Entropy(batch="nope")), ValueError, r"The 'batch' parameter of Entropy must be"),
    (dict(selector=Margin(batch=3)), ValueError, r"The 'batch' parameter of Margin must be"),
    (dict(selector=LL4AL(subset=0)), ValueError, r"The 'subset' parameter of LL4AL must be"),
    (dict(selector=TiDAL(subset=2.5)), ValueError, r"The 'subset' parameter of TiDAL must be"),
])
def test_fit_rejects_bad_parameters(kwargs, error, match):
    X, y = _data(n=20)
    params = dict(estimator=_net(), selector=Entropy())
    params.update(kwargs)
    learner = ActiveLearner(**params)
    with pytest.raises(error, match=match):
        learner.fit(X, y)
    with pytest.raises(NotFittedError):  # nothing was fitted
        learner.predict(X)


def test_fit_rejects_a_plain_skorch_net():
    from skorch import NeuralNetClassifier

    X, y = _data(n=20)
    with pytest.raises(TypeError, match=r"estimator must be a skal.ActiveNet or a Pipeline ending in one, got NeuralNetClassifier"):
        ActiveLearner(NeuralNetClassifier(MLP)).fit(X, y)


def test_fit_rejects_nan_and_length_mismatch():
    X, y = _data(n=20)
    with pytest.raises(ValueError, match=r"^X contains NaN or infinity in row 0\.$"):
        ActiveLearner(_net()).fit(_with(X, 0, 0, np.nan), y)
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples"):
        ActiveLearner(_net()).fit(X, y[:-1])


class _Boom(Callback):
    def on_batch_end(self, net, **kwargs):
        raise RuntimeError("boom")


def test_labels_survive_a_failing_retrain_and_the_old_model_is_kept():
    X, y = _data()
    learner = ActiveLearner(_net(), selector=Entropy(), random_state=0).fit(X[:20], y[:20])
    old_net = learner.estimator_
    old_proba = learner.predict_proba(X)
    learner.set_params(estimator__callbacks=[("boom", _Boom())])
    with pytest.raises(RuntimeError, match="boom"):
        learner.teach(X[20:25], y[20:25])
    np.testing.assert_array_equal(learner.y_labeled_, y[:25])
    np.testing.assert_array_equal(learner.labeled_cycle_[-5:], 1)
    assert learner.estimator_ is old_net
    np.testing.assert_array_equal(learner.predict_proba(X), old_proba)


def test_fit_does_not_modify_the_estimator_or_selector():
    X, y = _data(n=30)
    net, selector = _net(), DISAL()
    net_params, selector_params = copy.deepcopy(net.get_params()), selector.get_params()
    ActiveLearner(net, selector=selector).fit(X, y)
    assert selector.get_params() == selector_params
    assert set(net.get_params()) == set(net_params)
    assert not hasattr(net, "module_")


def test_a_failed_teach_marks_the_model_stale_until_refit_recovers_it():
    X, y = _data()
    learner = ActiveLearner(_net(), selector=Entropy(), random_state=0).fit(X[:20], y[:20])
    old_proba = learner.predict_proba(X)
    good_params = learner.get_params()["estimator__callbacks"]
    learner.set_params(estimator__callbacks=[("boom", _Boom())])
    with pytest.raises(RuntimeError, match="boom"):
        learner.teach(X[20:25], y[20:25])
    with pytest.raises(RuntimeError, match=r"The model is stale: .* call refit\(\) before querying"):
        learner.query(X[30:], 3)
    np.testing.assert_array_equal(learner.predict_proba(X), old_proba)  # previous model kept
    np.testing.assert_array_equal(learner.y_labeled_, y[:25])  # labels kept
    learner.set_params(estimator__callbacks=good_params)
    learner.refit()
    assert learner.query(X[30:], 3).shape == (3,)
    # the recovered model is the one an uninterrupted teach would have trained
    reference = ActiveLearner(_net(), selector=Entropy(), random_state=0).fit(X[:20], y[:20])
    reference.teach(X[20:25], y[20:25])
    np.testing.assert_array_equal(learner.predict_proba(X), reference.predict_proba(X))


def test_a_diverging_loss_stops_training_with_an_error_that_says_so():
    X, y = _data()
    with pytest.raises(FloatingPointError, match=r"Training diverged: the training loss is nan in "
                                                 r"epoch 1\. Lower the learning rate"):
        ActiveLearner(_net(lr=float("inf")), selector=Entropy(), random_state=0).fit(X[:40], y[:40])
    learner = ActiveLearner(_net(), selector=Entropy(), random_state=0).fit(X[:20], y[:20])
    learner.set_params(estimator__lr=float("inf"))
    with pytest.raises(FloatingPointError, match="Training diverged"):
        learner.teach(X[20:25], y[20:25])
    with pytest.raises(RuntimeError, match="The model is stale"):
        learner.query(X[30:], 3)
    learner.set_params(estimator__lr=0.1).refit()
    assert np.isfinite(learner.predict_proba(X)).all()


# --- set_params after fit ---------------------------------------------------------------


def test_a_selector_changed_after_fit_is_used_by_query_when_it_needs_the_same_training():
    from skal.learner import _QUERY, _derive_seed

    X, y = _data()
    learner = ActiveLearner(_net(), selector=Entropy(), random_state=0).fit(X[:30], y[:30])
    for selector in (Margin(), Entropy(batch="stochastic")):
        learner.set_params(selector=selector)
        idx, scores = learner.query(X[30:], 7, return_scores=True)
        expected = clone(selector).select(learner.estimator_, X[30:], 7,
                                          random_state=_derive_seed(learner._state().seed, 0, _QUERY),
                                          labeled=labeled_data(learner._state()))
        np.testing.assert_array_equal(idx, expected[0])
        np.testing.assert_array_equal(scores, expected[1])
    assert type(learner.selector_) is Entropy  # the selector the net was trained for, until refit


def test_a_selector_needing_other_training_is_refused_by_query_until_refit():
    X, y = _data()
    learner = ActiveLearner(_net(), selector=Entropy(), random_state=0).fit(X[:30], y[:30])
    trained = learner.estimator_
    learner.set_params(selector=DISAL())
    with pytest.raises(ValueError, match=r"selector was changed after the net was trained, to DISAL\(\), "
                                         r"which needs other training than Entropy\(\).*call refit\(\)"):
        learner.query(X[30:], 3)
    assert learner.estimator_ is trained
    learner.refit()
    assert set(learner.estimator_.parts_) == {"dynamic_loss", "dynamics", "snapshot"}
    assert type(learner.selector_) is DISAL
    # the refit net is the one a fit with DISAL trains
    reference = ActiveLearner(_net(), selector=DISAL(), random_state=0).fit(X[:30], y[:30])
    np.testing.assert_array_equal(learner.query(X[30:], 5), reference.query(X[30:], 5))


def test_an_estimator_parameter_changed_after_fit_takes_effect_at_the_next_teach():
    X, y = _data()
    for warm_start in (False, True, "continue"):
        learner = ActiveLearner(_net(), selector=Entropy(), warm_start=warm_start,
                                random_state=0).fit(X[:20], y[:20])
        learner.set_params(estimator__lr=0.02, estimator__max_epochs=2)
        learner.teach(X[20:25], y[20:25])
        net = learner.estimator_
        assert net.lr == 0.02 and net.optimizer_.param_groups[0]["lr"] == 0.02
        assert len(net.history) == (3 + 2 if warm_start == "continue" else 2)


def test_a_warm_start_refuses_a_changed_module_or_incompatible_parts_and_keeps_the_labels():
    X, y = _data()
    learner = ActiveLearner(_net(), selector=Entropy(), warm_start=True, random_state=0).fit(X[:20], y[:20])
    trained = learner.estimator_
    learner.set_params(estimator__module__hidden_sizes=(8,))
    with pytest.raises(ValueError, match=r"^estimator__module__hidden_sizes changed after fit: with "
                                         r"warm_start=True the trained weights cannot carry over"):
        learner.teach(X[20:25], y[20:25])
    assert learner.estimator_ is trained and learner.stale_
    np.testing.assert_array_equal(learner.y_labeled_, y[:25])  # the labels stay
    learner.set_params(estimator__module__hidden_sizes=(16,), selector=DISAL())
    with pytest.raises(ValueError, match=r"selector: DISAL\(\) needs the training parts "
                                         r"\['dynamics', 'dynamic_loss', 'snapshot'\], the net was trained with \[\]"):
        learner.refit()
    assert learner.estimator_ is trained and learner.stale_
    learner.set_params(selector=Entropy()).refit()
    assert not learner.stale_ and len(learner.estimator_.history) == 3


def test_a_warm_start_takes_a_changed_part_parameter():
    X, y = _data()
    learner = ActiveLearner(_net(), selector=DISAL(weight=1.0), warm_start=True,
                            random_state=0).fit(X[:20], y[:20])
    learner.set_params(selector__weight=0.25)
    learner.teach(X[20:25], y[20:25])
    assert learner.estimator_.parts_["dynamic_loss"].weight == 0.25
    assert learner.selector_.weight == 0.25 and len(learner.estimator_.history) == 3


def test_a_warm_start_takes_a_callback_added_after_fit():
    from skorch.callbacks import EarlyStopping

    X, y = _data()
    learner = ActiveLearner(_net(), selector=Entropy(), warm_start=True, random_state=0).fit(X[:20], y[:20])
    assert len(learner.estimator_.history) == 3
    # train_loss rarely drops by 90% in an epoch: patience 1 stops after the second epoch
    stop = EarlyStopping(monitor="train_loss", patience=1, threshold=0.9, sink=lambda *args: None)
    learner.set_params(estimator__callbacks=[("stop", stop)])
    learner.teach(X[20:25], y[20:25])
    assert len(learner.estimator_.history) == 2 and not learner.stale_
    assert "stop" in dict(learner.estimator_.callbacks_)
