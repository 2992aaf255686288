"""ISAL through ActiveLearner: the held-out reference, the plumbing, the ranking."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skal import ActiveLearner, ActiveNet
from skal.influence import lissa, reference_gradient, select_params
from skal.learner import _QUERY, _derive_seed
from skal.models import MLP
from skal.selectors import ISAL


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    y = np.repeat(np.arange(3), n // 3)
    X[:, 0] += y  # learnable
    return X, y


def _net():
    return ActiveNet(MLP, module__hidden_sizes=(6,), max_epochs=3, batch_size=8, lr=0.1, verbose=0)


def _n_trained(net):
    """How many samples the net's last epoch trained on (skorch records each batch's size)."""
    return sum(batch["train_batch_size"] for batch in net.history[-1]["batches"])


def test_reference_is_a_stratified_held_out_split_not_trained_on():
    X, y = _data()
    learner = ActiveLearner(_net(), selector=ISAL(depth=3, repeats=2), random_state=0).fit(X, y)
    mask = learner._state().labeled.reference
    assert mask.sum() == 6
    np.testing.assert_array_equal(np.bincount(y[mask]), [2, 2, 2])
    assert _n_trained(learner.estimator_) == 54  # trained on the rest only
    learner.teach(X[:3], y[:3])
    assert learner._state().labeled.reference.sum() == 6 and not learner._state().labeled.reference[-3:].any()
    assert _n_trained(learner.estimator_) == 57


def test_scores_are_the_influence_of_each_pool_sample_on_the_reference_loss():
    X, y = _data()
    X_pool = _data(n=15, seed=1)[0]
    selector = ISAL(params="all weights", depth=4, repeats=2, damping=0.1, scale=10.0)
    learner = ActiveLearner(_net(), selector=selector, random_state=0).fit(X, y)
    idx, scores = learner.query(X_pool, 15, return_scores=True)

    # the same computation by hand: v on the reference rows, LiSSA over the
    # training rows drawn with the query seed, then a per-sample gradient loop
    module = learner.estimator_.module_.eval()
    params = select_params(module, "all weights")
    mask = learner._state().labeled.reference
    X_ref, y_ref = torch.from_numpy(X[mask]), torch.from_numpy(y[mask])
    X_tr, y_tr = torch.from_numpy(X[~mask]), torch.from_numpy(y[~mask])
    v = reference_gradient(module, params, [(X_ref, y_ref)])
    draws = np.random.default_rng(_derive_seed(learner._state().seed, 0, _QUERY)).integers(0, len(y_tr), 8)
    s = lissa(module, params, v, [(X_tr[i:i + 1], y_tr[i:i + 1]) for i in draws],
              damping=0.1, scale=10.0, depth=4, repeats=2)
    expected = []
    for x in torch.from_numpy(X_pool):
        logits = module(x[None])
        loss = F.cross_entropy(logits, logits.argmax(1))
        grads = torch.autograd.grad(loss, list(params.values()))
        expected.append(sum((g * s[name]).sum() for g, name in zip(grads, params)).item())
    expected = np.array(expected)  # = -I: higher is more informative
    np.testing.assert_allclose(scores, expected[idx], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(idx, np.argsort(-expected, kind="stable"))


def test_user_reference_holds_nothing_out():
    X, y = _data()
    X_ref, y_ref = _data(n=9, seed=2)
    learner = ActiveLearner(_net(), selector=ISAL(reference=(X_ref, y_ref), depth=3, repeats=1),
                            random_state=0).fit(X, y)
    assert not learner._state().labeled.reference.any()
    assert _n_trained(learner.estimator_) == 60
    idx = learner.query(_data(n=12, seed=3)[0], 5)
    assert len(set(idx.tolist())) == 5


def test_last_layer_parameter_set_runs_and_differs_from_all_weights():
    X, y = _data()
    X_pool = _data(n=12, seed=4)[0]
    results = {}
    for params in ["all weights", "last layer"]:
        learner = ActiveLearner(_net(), selector=ISAL(params=params, depth=3, repeats=1),
                                random_state=0).fit(X, y)
        results[params] = learner.query(X_pool, 12, return_scores=True)[1]
    assert not np.allclose(results["all weights"], results["last layer"])


def test_reference_split_with_a_single_label_class_keeps_that_label_for_training():
    # 20 labels over 10 classes, two with a single label: scikit-learn cannot stratify, so the
    # held-out set is drawn class by class, never a class's last label
    from skal._training import reference_mask

    y = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 8, 9])
    for seed in range(20):
        mask = reference_mask(y, 0.1, seed)
        assert mask.sum() == 2
        assert set(np.unique(y[~mask])) == set(range(10))  # every class still trains
        assert not mask[np.isin(y, [7, 8, 9])].any()
    # the same seed, the same split; the shares follow the counts (class 0 gives 1 of 4 at 25%)
    np.testing.assert_array_equal(reference_mask(y, 0.1, 3), reference_mask(y, 0.1, 3))
    held = reference_mask(y, 0.25, 0)
    assert held.sum() == 5 and held[y == 0].sum() >= 1
    assert set(np.unique(y[~held])) == set(range(10))
    # a learner fits with such labels
    X, y60 = _data()
    y60 = y60.copy()
    y60[0] = 5  # a class with a single sample
    learner = ActiveLearner(_net(), selector=ISAL(), random_state=0).fit(X, y60)
    held_out = learner.y_labeled_[learner._state().labeled.reference]
    assert len(held_out) == 6 and 5 not in held_out and 5 in learner.classes_


def test_reference_split_that_leaves_a_class_without_training_labels_is_a_clear_error():
    from skal._training import reference_mask

    y = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 8])
    with pytest.raises(ValueError, match=r"Cannot hold out a reference set of 2 of the 10 labeled "
                                          r"samples and keep a training label of each of the 9"):
        reference_mask(y, 0.2, 0)


def test_isal_without_labeled_data_is_a_clear_error():
    X, y = _data()
    net = _net().set_params(classes=np.arange(3)).fit(X, y)
    with pytest.raises(ValueError, match="ISAL needs the labeled set"):
        ISAL().select(net, X, 3, random_state=0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(reference=1.5), "'reference' parameter of ISAL"),
    (dict(params="some"), "'params' parameter of ISAL"),
    (dict(depth=0), "'depth' parameter of ISAL"),
    (dict(pseudo_label="soft"), "'pseudo_label' parameter of ISAL"),
])
def test_bad_parameters_fail_at_fit(kwargs, match):
    X, y = _data()
    with pytest.raises(ValueError, match=match):
        ActiveLearner(_net(), selector=ISAL(**kwargs)).fit(X, y)


def test_warnings_for_a_single_class_reference_and_reused_lissa_samples():
    X, y = _data()
    X_ref = _data(n=9, seed=2)[0]
    learner = ActiveLearner(_net(), selector=ISAL(reference=(X_ref, np.zeros(9, dtype=int)),
                                                  depth=40, repeats=2), random_state=0).fit(X, y)
    before = learner.X_labeled_.copy()
    with pytest.warns(UserWarning, match=r"reference set has a single class \(9 samples\)"):
        with pytest.warns(UserWarning, match=r"depth \* repeats = 80 labeled samples but only 60"):
            learner.query(X[:10], 3)
    np.testing.assert_array_equal(learner.X_labeled_, before)


def test_user_reference_with_unknown_labels_or_shape_is_refused_at_fit():
    X, y = _data()
    X_ref, _ = _data(n=9, seed=2)
    bad_labels = ActiveLearner(_net(), selector=ISAL(reference=(X_ref, np.full(9, 7)), depth=2,
                                                     repeats=1), random_state=0)
    with pytest.raises(ValueError, match=r"reference: y_ref has labels not in classes_: \['7'\]"):
        bad_labels.fit(X, y)
    assert not hasattr(bad_labels, "estimator_")
    bad_shape = ActiveLearner(_net(), selector=ISAL(reference=(X_ref[:, :2], np.zeros(9, int)), depth=2,
                                                    repeats=1), random_state=0)
    with pytest.raises(ValueError, match=r"reference: X_ref of shape \(9, 2\)"):
        bad_shape.fit(X, y)
    assert not hasattr(bad_shape, "estimator_")


def test_user_reference_labels_are_encoded_like_the_learners():
    # classes_ = [10, 20, 30]: the reference's label 30 must mean output 2
    X, y = _data()
    X_ref, y_ref = _data(n=9, seed=2)
    learners = [
        ActiveLearner(_net(), selector=ISAL(reference=(X_ref, labels), depth=3, repeats=1),
                      random_state=0).fit(X, (y + 1) * 10 if shifted else y)
        for labels, shifted in [((y_ref + 1) * 10, True), (y_ref, False)]
    ]
    pool = _data(n=12, seed=5)[0]
    np.testing.assert_allclose(learners[0].query(pool, 12, return_scores=True)[1],
                               learners[1].query(pool, 12, return_scores=True)[1], rtol=1e-5)

