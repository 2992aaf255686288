"""Campaigns with a cold-start initial set and a stopping criterion (issue 16, deliverables 2 and 4)."""

import json

import numpy as np
import pytest

from skal import ActiveLearner, ActiveNet
from skal.cli import main
from skal.initial import initial_batch
from skal.model_selection import ActiveLearningCurve, active_learning_curve
from skal.models import MLP
from skal.selectors import Margin, Random
from skal.stopping import StabilizingPredictions

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n=240, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    return X, (X[:, 0] - X[:, 2] > 0).astype(np.int64)


def _learners():
    net = ActiveNet(MLP, module__hidden_sizes=(8,), max_epochs=5, lr=0.3, verbose=0)
    return {"margin": ActiveLearner(net, Margin(), warm_start=True),
            "random": ActiveLearner(net, Random(), warm_start=True)}


def _curve(**kwargs):
    X, y = _data()
    X_test, y_test = _data(80, seed=1)
    options = dict(X_test=X_test, y_test=y_test, initial_size=12, query_size=10, n_cycles=4,
                   n_repeats=2, random_state=0)
    return active_learning_curve(_learners(), X, y, **{**options, **kwargs}), X, y


@pytest.mark.parametrize("strategy", ["kmeans", "kcenter", "typiclust"])
def test_initial_sets_come_from_initial_batch_seeded_per_repeat(strategy):
    result, X, y = _curve(initial_strategy=strategy)
    provenance = result.meta["provenance"]["seeds"]
    for (seed, _), initial in zip(provenance["repeats"], provenance["initial_sets"]):
        np.testing.assert_array_equal(initial, initial_batch(X, 12, strategy=strategy, random_state=seed))
    for r, initial in enumerate(provenance["initial_sets"]):  # the set every learner started from
        counts = np.bincount(y[initial], minlength=2)
        assert (result.class_counts[:, r, 0] == counts).all()
    assert result.meta["initial_strategy"] == strategy


def test_the_random_initial_sets_are_the_draws_they_always_were():
    result, X, _ = _curve()
    for (seed, _), initial in zip(result.meta["provenance"]["seeds"]["repeats"],
                                  result.meta["provenance"]["seeds"]["initial_sets"]):
        np.testing.assert_array_equal(initial, np.random.default_rng(seed).choice(len(X), 12, replace=False))
        np.testing.assert_array_equal(initial, initial_batch(X, 12, strategy="random", random_state=seed))


def test_the_curve_records_when_the_criterion_would_have_stopped(tmp_path):
    X_stop = _data(60, seed=3)[0]
    # 5 trainings give 4 comparisons: a window of 10 can never fill
    never, _, _ = _curve(stopping=StabilizingPredictions(X_stop, threshold=0.5, window=10))
    assert never.stopped_at.tolist() == [[-1, -1], [-1, -1]]
    assert np.isnan(never.stop_labeled).all()
    always, _, _ = _curve(stopping=StabilizingPredictions(X_stop, threshold=-1.0, window=2))
    # kappa >= -1, so each stops at the first update with `window` defined kappas: update 2 at the
    # earliest (kappa is undefined while a model predicts one class, and a window holding it waits)
    assert ((always.stopped_at >= 2) & (always.stopped_at <= 4)).all()
    np.testing.assert_array_equal(always.stop_labeled, 12 + 10 * always.stopped_at)
    cells = [f"2/2 stopped, at {int(np.median(12 + 10 * at))} labels (median)" for at in always.stopped_at]
    assert always.table().splitlines()[-1] == f"| stopping criterion | | {cells[0]} | {cells[1]} |"
    # the campaigns ran on all the same: the criterion does not change them
    plain, _, _ = _curve()
    np.testing.assert_array_equal(always.scores, plain.scores)
    always.to_json(tmp_path / "r.json")
    np.testing.assert_array_equal(ActiveLearningCurve.from_json(tmp_path / "r.json").stopped_at,
                                  always.stopped_at)
    assert plain.stopped_at is None and plain.stop_labeled is None


def test_the_stopping_decisions_are_those_of_the_criterion_run_by_hand():
    X_stop = _data(60, seed=3)[0]
    criterion = StabilizingPredictions(X_stop, threshold=0.95, window=2)
    result, X, y = _curve(stopping=criterion, n_repeats=1)
    assert not hasattr(criterion, "n_updates_")  # each campaign had a clone
    # replay the margin campaign: the same seeds give the same models
    from skal._campaign import configured, run_campaign

    seeds = result.meta["provenance"]["seeds"]
    learner = configured(_learners()["margin"], seeds["repeats"][0][1], np.unique(y))
    replay = StabilizingPredictions(X_stop, threshold=0.95, window=2)
    stops = []
    run_campaign(learner, X, y, initial_idx=np.array(seeds["initial_sets"][0]), query_size=10, n_cycles=4,
                 on_model=lambda record, fitted: stops.append(replay.update(fitted)))
    expected = stops.index(True) if True in stops else -1
    assert result.stopped_at[0, 0] == expected


@pytest.mark.parametrize("kwargs, error, match", [
    ({"initial_strategy": "first"}, ValueError, r"initial_strategy must be 'random', 'kmeans', 'kcenter' or 'typiclust'"),
    ({"stopping": 0.99}, TypeError, r"stopping must be a stopping criterion \(skal.stopping\) or None, got float"),
])
def test_bad_campaign_options_are_refused_before_training(kwargs, error, match):
    with pytest.raises(error, match=match):
        _curve(**kwargs)


def test_the_command_takes_an_initial_strategy(tmp_path):
    out = tmp_path / "out"
    main(["simulate", "--initial-strategy", "kcenter", "--initial", "30", "--query", "20", "--cycles", "1",
          "--repeats", "1", "--epochs", "2", "--selectors", "random", "--quiet", "--out", str(out)])
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["config"]["initial_strategy"] == "kcenter"
    assert data["meta"]["initial_strategy"] == "kcenter"
    assert len(data["meta"]["provenance"]["seeds"]["initial_sets"][0]) == 30
