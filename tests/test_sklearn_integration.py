"""Pipelines both ways, pandas and tensors, and scikit-learn's model-selection tools."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (GridSearchCV, RandomizedSearchCV, cross_val_score,
                                     cross_validate)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skal import ActiveLearner, ActiveNet
from skal.models import MLP
from skal.selectors import DISAL, CoreSet, Entropy


def _net(**kwargs):
    params = dict(module__hidden_sizes=(16,), max_epochs=3, batch_size=16, lr=0.1, verbose=0)
    params.update(kwargs)
    return ActiveNet(MLP, **params)


def _data(n=90, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)) * [1, 10, 100, 1000] + [0, 5, -50, 500]
    y = (X[:, 0] + X[:, 1] / 10 > 0.5).astype(int)
    return X, y


def test_learner_inside_a_pipeline():
    X, y = _data()
    pipe = make_pipeline(StandardScaler(), ActiveLearner(_net(), selector=Entropy(), random_state=0))
    pipe.fit(X[:60], y[:60])
    proba = pipe.predict_proba(X[60:])
    assert proba.shape == (30, 2)
    np.testing.assert_array_equal(pipe.predict(X[60:]), proba.argmax(1))
    learner = pipe[-1]
    np.testing.assert_allclose(learner.X_labeled_, StandardScaler().fit_transform(X[:60]), rtol=1e-5, atol=1e-5)
    assert pipe.score(X[60:], y[60:]) == pytest.approx(np.mean(pipe.predict(X[60:]) == y[60:]))


@pytest.mark.parametrize("selector", [Entropy(), DISAL(), CoreSet()], ids=repr)
def test_pipeline_estimator_queries_through_its_transformers(selector):
    X, y = _data()
    pipe = make_pipeline(StandardScaler(), _net())
    learner = ActiveLearner(pipe, selector=selector, random_state=0).fit(X[:30], y[:30])
    idx, scores = learner.query(X[30:], 10, return_scores=True)
    # the same selection computed by hand on the transformed pool with the fitted net
    scaler, net = learner.estimator_[0], learner.estimator_[-1]
    # the learner hands the pipeline float32 samples, in training and in queries alike
    X32 = X.astype(np.float32)
    pool = scaler.transform(X32[30:]).astype(np.float32)
    from skal.learner import _QUERY, _derive_seed
    from skal.selectors.base import LabeledData
    labeled = LabeledData(scaler.transform(X32[:30]).astype(np.float32), y[:30], np.empty((0, 4)),
                          np.empty(0, int), learner.classes_)
    expected = learner.selector_.select(net, pool, 10, random_state=_derive_seed(learner._state().seed, 0, _QUERY),
                                        labeled=labeled)
    np.testing.assert_array_equal(idx, expected[0])
    np.testing.assert_allclose(scores, expected[1], rtol=1e-6)
    # the learner keeps the raw samples; the pipeline sees them at training time
    learner.teach(X[30:][idx], y[30:][idx])
    np.testing.assert_array_equal(learner.X_labeled_[30:], X[30:][idx].astype(np.float32))
    assert learner.estimator_[0].n_samples_seen_ == 40
    assert pipe[0] is not learner.estimator_[0] and not hasattr(pipe[0], "mean_")


@pytest.mark.parametrize("warm_start, epochs", [(True, 3), ("continue", 6)])
def test_pipeline_estimator_with_warm_start_continues_the_net(warm_start, epochs):
    X, y = _data()
    learner = ActiveLearner(make_pipeline(StandardScaler(), _net()), selector=Entropy(), warm_start=warm_start,
                            random_state=0).fit(X[:30], y[:30])
    learner.teach(X[30:40], y[30:40])
    assert len(learner.estimator_[-1].history) == epochs  # True: a new history; "continue": 3 more
    assert learner.estimator_[0].n_samples_seen_ == 30  # fitted transformers are kept


def test_pipeline_that_does_not_end_in_an_active_net_is_refused():
    X, y = _data()
    with pytest.raises(TypeError, match="estimator must be a skal.ActiveNet or a Pipeline ending in one"):
        ActiveLearner(make_pipeline(StandardScaler(), LogisticRegression())).fit(X, y)


def test_dataframes_and_tensors_are_accepted_like_arrays():
    X, y = _data()
    X = X.astype(np.float32)
    frame = pd.DataFrame(X, columns=list("abcd"))
    by_array = ActiveLearner(_net(), selector=Entropy(), random_state=0).fit(X[:30], y[:30])
    by_frame = ActiveLearner(_net(), selector=Entropy(), random_state=0).fit(frame.iloc[:30], pd.Series(y[:30]))
    by_tensor = ActiveLearner(_net(), selector=Entropy(), random_state=0).fit(torch.from_numpy(X[:30]),
                                                                               torch.from_numpy(y[:30]))
    expected = by_array.query(X[30:], 5)
    np.testing.assert_array_equal(by_frame.query(frame.iloc[30:], 5), expected)
    np.testing.assert_array_equal(by_tensor.query(torch.from_numpy(X[30:]), 5), expected)
    np.testing.assert_array_equal(by_frame.predict_proba(frame), by_array.predict_proba(X))
    by_frame.teach(frame.iloc[30:32], pd.Series(y[30:32]))
    np.testing.assert_array_equal(by_frame.X_labeled_[-2:], X[30:32])
    assert list(by_frame.feature_names_in_) == list("abcd")


def test_cross_validate_and_searches_over_nested_params_in_parallel():
    X, y = _data(n=120)
    learner = ActiveLearner(make_pipeline(StandardScaler(), _net()), selector=DISAL(), random_state=0)
    scores = cross_val_score(learner, X, y, cv=3, n_jobs=2)
    again = cross_val_score(clone(learner), X, y, cv=3, n_jobs=1)
    np.testing.assert_allclose(scores, again)  # seeded: parallel equals sequential
    result = cross_validate(learner, X, y, cv=2, scoring=["accuracy", "neg_log_loss"], n_jobs=2)
    assert set(result) >= {"test_accuracy", "test_neg_log_loss", "fit_time"}
    grid = GridSearchCV(learner, {"selector__weight": [0.0, 1.0],
                                  "selector__mode": ["kl", "literal"]}, cv=2, n_jobs=2).fit(X, y)
    assert len(grid.cv_results_["params"]) == 4
    best = grid.best_estimator_
    assert best.selector_.weight in (0.0, 1.0)
    # the pipeline's net trains the dynamic loss exactly when the searched weight asks for it
    assert ("dynamic_loss" in best.estimator_[-1].parts_) == (best.selector_.weight > 0)
    search = RandomizedSearchCV(ActiveLearner(_net(), selector=CoreSet(), random_state=0),
                                {"estimator__lr": [0.01, 0.1, 0.3], "selector__subset": [None, 20]},
                                n_iter=3, cv=2, random_state=0, n_jobs=2,
                                error_score="raise").fit(StandardScaler().fit_transform(X), y)
    assert len(search.cv_results_["params"]) == 3
