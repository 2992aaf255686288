"""CampaignEstimator: a strategy as an estimator that scikit-learn's model selection scores by its campaign."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import (GridSearchCV, RandomizedSearchCV, StratifiedKFold, cross_validate,
                                     train_test_split)
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from skal import ActiveLearner, ActiveNet
from skal.datasets import load_digits_images
from skal.model_selection import CampaignEstimator, active_learning_curve
from skal.models import MLP
from skal.selectors import Entropy, Margin, Random


def _net(**kwargs):
    params = dict(module__hidden_sizes=(16,), max_epochs=3, batch_size=16, lr=0.1, verbose=0)
    params.update(kwargs)
    return ActiveNet(MLP, **params)


def _data(n=160, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    return X, y


def _campaign(selector=None, **kwargs):
    params = dict(initial_size=10, query_size=10, n_cycles=2, random_state=0)
    params.update(kwargs)
    return CampaignEstimator(ActiveLearner(_net(), selector or Margin()), **params)


@pytest.mark.parametrize("warm_start", [False, True])
def test_fit_runs_the_same_campaign_as_active_learning_curve(warm_start):
    X, y = _data()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=60, random_state=0)
    learner = ActiveLearner(_net(), Margin(), warm_start=warm_start)
    campaign = CampaignEstimator(learner, initial_size=10, query_size=10, n_cycles=3, scoring="auc",
                                 random_state=5).fit(X_train, y_train)
    curve = active_learning_curve({"margin": learner}, X_train, y_train, X_test=X_test, y_test=y_test,
                                  initial_size=10, query_size=10, n_cycles=3, n_repeats=1, random_state=5)
    cycles = campaign.score_cycles(X_test, y_test)
    # every kept model is the one the curve scored at that cycle: none was changed by later cycles
    np.testing.assert_array_equal(cycles, curve.scores[0, 0])
    assert campaign.score(X_test, y_test) == curve.auc[0, 0]
    assert campaign.set_params(scoring="final").score(X_test, y_test) == curve.scores[0, 0, -1]
    np.testing.assert_array_equal(campaign.n_labeled_, [10, 20, 30, 40])
    assert len({id(model) for model in campaign.cycle_estimators_}) == 4
    assert campaign.cycle_estimators_[-1] is campaign.learner_.estimator_
    # the labeled rows: the initial set the curve recorded, then the queried ones, all distinct
    initial = curve.meta["provenance"]["seeds"]["initial_sets"][0]
    np.testing.assert_array_equal(campaign.labeled_indices_[:10], initial)
    assert len(set(campaign.labeled_indices_.tolist())) == 40
    np.testing.assert_array_equal(campaign.learner_.y_labeled_, y_train[campaign.labeled_indices_])
    np.testing.assert_array_equal(campaign.predict(X_test), campaign.learner_.predict(X_test))
    np.testing.assert_array_equal(campaign.predict_proba(X_test), campaign.learner_.predict_proba(X_test))
    assert campaign.fit_times_.shape == campaign.query_times_.shape == (4,) and campaign.query_times_[0] == 0
    assert not hasattr(learner, "learner_") and not hasattr(learner, "estimator_")


def test_final_scoring_keeps_only_the_final_learner_and_weights_accuracies():
    X, y = _data()
    campaign = _campaign().fit(X[:100], y[:100])
    assert not hasattr(campaign, "cycle_estimators_")
    pred = campaign.predict(X[100:])
    assert campaign.score(X[100:], y[100:]) == np.mean(pred == y[100:])
    weights = np.linspace(0.1, 1.0, 60)
    assert campaign.score(X[100:], y[100:], sample_weight=weights) == pytest.approx(
        np.sum(weights * (pred == y[100:])) / weights.sum(), rel=1e-12)
    with pytest.raises(ValueError, match=r"^score_cycles needs every cycle's model, which fit keeps only "
                                         r"with scoring='auc'; set scoring='auc' and fit again\.$"):
        campaign.score_cycles(X[100:], y[100:])
    with pytest.raises(ValueError, match=r"^score_cycles needs every cycle's model"):
        campaign.set_params(scoring="auc").score(X[100:], y[100:])
    # refitting with "final" drops the per-cycle models an earlier "auc" fit kept
    campaign.fit(X[:100], y[:100])
    assert len(campaign.cycle_estimators_) == 3
    campaign.set_params(scoring="final").fit(X[:100], y[:100])
    assert not hasattr(campaign, "cycle_estimators_")


def test_auc_is_the_normalised_trapezoid_of_the_cycle_accuracies():
    X, y = _data()
    campaign = _campaign(scoring="auc", query_size=5, n_cycles=3).fit(X[:100], y[:100])
    acc = campaign.score_cycles(X[100:], y[100:])
    # by hand: labeled counts 10, 15, 20, 25
    expected = sum((acc[c] + acc[c + 1]) / 2 * 5 for c in range(3)) / 15
    assert campaign.score(X[100:], y[100:]) == pytest.approx(expected, abs=1e-15)
    for c, model in enumerate(campaign.cycle_estimators_):
        proba = model.predict_proba(X[100:])
        assert acc[c] == np.mean(campaign.classes_[proba.argmax(1)] == y[100:])


def test_same_seed_same_campaign_and_another_seed_another():
    X, y = _data()
    a, b = _campaign().fit(X, y), _campaign().fit(X, y)
    np.testing.assert_array_equal(a.labeled_indices_, b.labeled_indices_)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    c = _campaign(random_state=1).fit(X, y)
    assert set(c.labeled_indices_[:10].tolist()) != set(a.labeled_indices_[:10].tolist())


def test_nested_parameters_clone_and_set_params():
    campaign = _campaign()
    params = campaign.get_params()
    assert {"learner__selector", "learner__selector__batch", "learner__estimator__lr",
            "learner__warm_start", "initial_size", "query_size", "n_cycles", "scoring",
            "random_state"} <= set(params)
    campaign.set_params(learner__selector__batch="stochastic", learner__estimator__lr=0.05)
    assert campaign.learner.selector.batch == "stochastic" and campaign.learner.estimator.lr == 0.05
    copy = clone(campaign)
    assert copy.learner is not campaign.learner
    assert copy.get_params()["learner__selector__batch"] == "stochastic"


@pytest.mark.parametrize("params, error, message", [
    (dict(initial_size=0), InvalidParameterError, r"The 'initial_size' parameter of CampaignEstimator must be"),
    (dict(query_size=2.5), InvalidParameterError, r"The 'query_size' parameter of CampaignEstimator must be"),
    (dict(n_cycles=-1), InvalidParameterError, r"The 'n_cycles' parameter of CampaignEstimator must be"),
    (dict(n_cycles=True), TypeError, r"^n_cycles must be an integer, got bool\.$"),
    (dict(scoring="accuracy"), InvalidParameterError,
     r"The 'scoring' parameter of CampaignEstimator must be a str among \{.*'auc'.*\}"),
    (dict(random_state="x"), InvalidParameterError, r"The 'random_state' parameter of CampaignEstimator"),
    (dict(learner=Margin()), InvalidParameterError,
     r"The 'learner' parameter of CampaignEstimator must be an instance of 'skal.learner.ActiveLearner'"),
    (dict(initial_size=100, query_size=50), ValueError,
     r"^initial_size \+ n_cycles \* query_size = 100 \+ 2 \* 50 = 200 exceeds the 160 samples available\.$"),
])
def test_bad_parameters_are_refused_before_training_and_change_nothing(params, error, message):
    X, y = _data()
    fitted = _campaign().fit(X[:60], y[:60])
    learner, n_features = fitted.learner_, fitted.n_features_in_
    with pytest.raises(error, match=message):
        fitted.set_params(**params).fit(X, y)
    assert fitted.learner_ is learner and fitted.n_features_in_ == n_features


def test_bad_data_is_named():
    X, y = _data()
    with pytest.raises(ValueError, match=r"^X and y have inconsistent numbers of samples: \[160, 159\]\.$"):
        _campaign().fit(X, y[:-1])
    with pytest.raises(ValueError, match=r"^y: Unknown label type: continuous"):
        _campaign().fit(X, y + 0.5)
    with pytest.raises(TypeError, match=r"^X must be an array-like"):
        _campaign().fit(None, y)
    fitted = _campaign().fit(X, y)
    with pytest.raises(ValueError, match=r"X has 3 features, but CampaignEstimator is expecting 4 features"):
        fitted.predict(X[:, :3])
    with pytest.raises(ValueError, match=r"^X and y have inconsistent numbers of samples: \[160, 10\]\.$"):
        fitted.score(X, y[:10])


def test_dataframes_keep_their_column_names():
    X, y = _data()
    frame = pd.DataFrame(X, columns=list("abcd"))
    campaign = _campaign().fit(frame, pd.Series(y))
    assert campaign.feature_names_in_.tolist() == list("abcd")
    np.testing.assert_array_equal(campaign.predict(frame), _campaign().fit(X, y).predict(X))
    with pytest.raises(ValueError, match="Feature names unseen at fit time"):
        campaign.predict(frame.rename(columns={"a": "z"}))


def test_a_torch_dataset_runs_the_same_campaign_as_its_array():
    X, y = _data()
    by_array = _campaign(scoring="auc").fit(X[:100], y[:100])
    by_dataset = _campaign(scoring="auc").fit(torch.utils.data.TensorDataset(torch.from_numpy(X[:100])), y[:100])
    np.testing.assert_array_equal(by_dataset.labeled_indices_, by_array.labeled_indices_)
    test = torch.utils.data.TensorDataset(torch.from_numpy(X[100:]))
    np.testing.assert_array_equal(by_dataset.score_cycles(test, y[100:]), by_array.score_cycles(X[100:], y[100:]))
    assert not hasattr(by_dataset, "n_features_in_")


def test_cross_validate_scores_each_fold_by_its_campaign():
    X, y = _data()
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    campaign = _campaign(scoring="auc")
    result = cross_validate(campaign, X, y, cv=cv, return_estimator=True)
    for (train, test), score, fitted in zip(cv.split(X, y), result["test_score"], result["estimator"]):
        by_hand = clone(campaign).fit(X[train], y[train])
        assert score == by_hand.score(X[test], y[test])
        np.testing.assert_array_equal(fitted.labeled_indices_, by_hand.labeled_indices_)


def test_randomized_search_over_net_and_selector_settings():
    X, y = _data()
    search = RandomizedSearchCV(_campaign(), {"learner__estimator__lr": [0.01, 0.1, 0.3],
                                              "learner__selector__batch": ["topk", "stochastic"]},
                                n_iter=3, cv=2, random_state=0, error_score="raise").fit(X, y)
    assert len(search.cv_results_["params"]) == 3
    best = search.best_estimator_
    assert best.learner_.estimator_.lr == search.best_params_["learner__estimator__lr"]
    assert best.learner_.selector_.batch == search.best_params_["learner__selector__batch"]


def _digits_grid():
    X, y = load_digits_images(return_X_y=True)
    net = ActiveNet(MLP, module__hidden_sizes=(64,), max_epochs=10, batch_size=32, lr=1e-2,
                    optimizer=torch.optim.Adam, verbose=0)
    campaign = CampaignEstimator(ActiveLearner(net, Random()), initial_size=30, query_size=30, n_cycles=2,
                                 scoring="auc", random_state=0)
    grid = [{"learner__selector": [Random(), Entropy()]},
            {"learner__selector": [Margin()], "learner__selector__batch": ["topk", "stochastic"]}]
    return X, y, GridSearchCV(campaign, grid, cv=StratifiedKFold(2, shuffle=True, random_state=0),
                              refit=False, error_score="raise")


def test_a_grid_over_selectors_on_digits_scores_each_selector_reproducibly():
    X, y, search = _digits_grid()
    first = search.fit(X, y).cv_results_
    second = clone(search).fit(X, y).cv_results_
    names = [repr(p["learner__selector"]) + str(p.get("learner__selector__batch", "")) for p in first["params"]]
    assert len(names) == 4
    for split in ("split0_test_score", "split1_test_score"):
        np.testing.assert_array_equal(first[split], second[split])  # the same numbers, run again
        # each strategy's campaign scores differently on the same folds
        assert len(set(first[split].tolist())) == 4, dict(zip(names, first[split]))


def test_on_digits_only_the_selection_differs_between_candidates():
    X, y, search = _digits_grid()
    train, test = next(search.cv.split(X, y))
    curves, initial = {}, []
    for selector in (Random(), Entropy(), Margin()):
        campaign = clone(search.estimator).set_params(learner__selector=selector).fit(X[train], y[train])
        curves[type(selector).__name__] = campaign.score_cycles(X[test], y[test])
        initial.append(campaign.labeled_indices_[:30])
    np.testing.assert_array_equal(initial[0], initial[1])
    np.testing.assert_array_equal(initial[0], initial[2])
    # one initial set and seed: the same first model for every selector, then the curves part
    assert len({c[0] for c in curves.values()}) == 1
    assert len({c[-1] for c in curves.values()}) == 3
    assert curves["Random"][0] > 0.5  # a real model, not chance (10 classes)


# scikit-learn's estimator checks: all pass (the tiny data sets of the checks fit the small budget).
# One estimator: scoring="auc" runs every path "final" does, plus the per-cycle models.
@parametrize_with_checks([
    CampaignEstimator(ActiveLearner(ActiveNet(MLP, module__hidden_sizes=(32,), max_epochs=20, batch_size=32,
                                              optimizer=torch.optim.Adam, lr=0.01, verbose=0), Entropy()),
                      initial_size=5, query_size=2, n_cycles=2, scoring="auc", random_state=0)
])
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_campaign_on_cuda_keeps_its_cycle_nets_on_the_device_and_records_the_gpu():
    X, y = _data()
    learner = ActiveLearner(_net(device="cuda"), Margin())
    campaign = CampaignEstimator(learner, initial_size=10, query_size=10, n_cycles=2, scoring="auc",
                                 random_state=0).fit(X[:100], y[:100])
    for net in campaign.cycle_estimators_:
        assert next(net.module_.parameters()).device.type == "cuda"
    acc = campaign.score_cycles(X[100:], y[100:])
    assert campaign.score(X[100:], y[100:]) == pytest.approx((acc[0] + 2 * acc[1] + acc[2]) / 4, abs=1e-15)
    curve = active_learning_curve({"margin": learner}, X[:100], y[:100], X_test=X[100:], y_test=y[100:],
                                  initial_size=10, query_size=10, n_cycles=1, n_repeats=1, random_state=0)
    prov = curve.meta["provenance"]
    assert prov["devices"] == {"margin": "cuda"}
    assert prov["machine"]["gpus"] == [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
