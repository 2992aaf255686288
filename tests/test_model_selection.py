"""active_learning_curve, its result and plot, and scale-out on joblib's Dask backend and Accelerate."""

import io

import joblib
import matplotlib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV

from skal import ActiveLearner, ActiveNet
from skal.model_selection import ActiveLearningCurve, active_learning_curve
from skal.models import MLP, SmallCNN
from skal.plotting import plot_active_learning_curve
from skal.selectors import DISAL, Entropy, Random, TiDAL

matplotlib.use("Agg")


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    return X, y


def _learners():
    net = ActiveNet(MLP, module__hidden_sizes=(8,), max_epochs=2, lr=0.1, verbose=0)
    return {"entropy": ActiveLearner(net, Entropy()), "random": ActiveLearner(net, Random()),
            "disal": ActiveLearner(net, DISAL())}


def test_curve_shapes_shared_initial_sets_and_exact_bookkeeping():
    X, y = _data()
    result = active_learning_curve(_learners(), X[:150], y[:150], X_test=X[150:], y_test=y[150:],
                                   initial_size=10, query_size=5, n_cycles=3, n_repeats=2, random_state=0)
    assert result.names == ["entropy", "random", "disal"]
    assert result.n_labeled.tolist() == [10, 15, 20, 25]
    assert result.scores.shape == result.fit_times.shape == (3, 2, 4)
    # every learner starts a repeat from the same initial set and seed: the same first model
    for r in range(2):
        assert len(set(result.scores[:, r, 0])) == 1
    np.testing.assert_array_equal(result.query_times[..., 0], 0)
    assert np.all(result.query_times[..., 1:] > 0)
    # the AUC is the trapezoid under each repeat's curve over the labeled range
    expected = ((result.scores[..., 1:] + result.scores[..., :-1]) / 2 * 5).sum(-1) / 15
    np.testing.assert_allclose(result.auc, expected)
    np.testing.assert_allclose(result.mean, result.scores.mean(1))


def test_curve_is_reproducible_and_parallel_equals_sequential():
    X, y = _data()
    kwargs = dict(initial_size=10, query_size=5, n_cycles=2, n_repeats=2, random_state=3)
    sequential = active_learning_curve(_learners(), X, y, **kwargs)
    parallel = active_learning_curve(_learners(), X, y, n_jobs=2, **kwargs)
    np.testing.assert_array_equal(sequential.scores, parallel.scores)


def test_curve_on_joblibs_dask_backend_equals_sequential():
    distributed = pytest.importorskip("distributed")
    X, y = _data()
    kwargs = dict(initial_size=10, query_size=5, n_cycles=1, n_repeats=2, random_state=3)
    expected = active_learning_curve(_learners(), X, y, **kwargs)
    # process workers on the loopback interface: bit-reproducible like loky (threads sharing
    # one torch can differ in the last bits, which reorders near-tied scores)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster):
        with joblib.parallel_backend("dask"):
            result = active_learning_curve(_learners(), X, y, n_jobs=-1, **kwargs)
            grid = GridSearchCV(_learners()["disal"], {"selector__weight": [0.0, 1.0]},
                                cv=2, n_jobs=-1).fit(X, y)
    np.testing.assert_array_equal(result.scores, expected.scores)
    assert len(grid.cv_results_["params"]) == 2


def test_table_csv_and_json(tmp_path):
    X, y = _data()
    result = active_learning_curve(_learners(), X, y, initial_size=10, query_size=10, n_cycles=1,
                                   n_repeats=2, random_state=0)
    table = result.table().splitlines()
    assert table[0] == "| cycle | labeled | entropy | random | disal |"
    assert table[2].startswith("| 0 | 10 | ")
    assert f"{result.mean[0, 1]:.4f} ± {result.std[0, 1]:.4f}" in table[3]
    assert table[4].startswith("| AUC |")
    result.to_csv(tmp_path / "r.csv")
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0] == "selector,repeat,cycle,n_labeled,accuracy,fit_time,query_time,pick_entropy"
    assert len(lines) == 1 + 3 * 2 * 2


def test_budget_and_input_errors_come_before_any_training():
    X, y = _data(n=50)
    with pytest.raises(ValueError, match=r"initial_size \+ n_cycles \* query_size = 10 \+ 5 \* 10 = 60 "
                                         r"exceeds the 40 samples available"):
        active_learning_curve(_learners(), X, y, initial_size=10, query_size=10, n_cycles=5)
    with pytest.raises(ValueError, match="query_size must be a positive integer, got 0"):
        active_learning_curve(_learners(), X, y, initial_size=10, query_size=0, n_cycles=1)
    with pytest.raises(ValueError, match="X and y have inconsistent lengths: 50 and 49"):
        active_learning_curve(_learners(), X, y[:-1], initial_size=10, query_size=1, n_cycles=1)
    with pytest.raises(ValueError, match="y_test given without X_test"):
        active_learning_curve(_learners(), X, y, y_test=y, initial_size=10, query_size=1, n_cycles=1)


def test_verbose_prints_a_line_per_trained_model_and_a_progress_bar(capsys):
    X, y = _data()
    active_learning_curve({"random": _learners()["random"]}, X, y, initial_size=10, query_size=5,
                          n_cycles=2, n_repeats=2, random_state=0, verbose=1)
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("[random")]
    assert [line.split(":")[0] for line in lines] == [f"[random repeat {r}] cycle {c}"
                                                      for r in range(2) for c in range(3)]
    assert "campaigns" in captured.err and "2/2" in captured.err


def test_plot_draws_a_line_and_a_band_per_learner():
    zeros = np.zeros((2, 3, 3))
    scores = np.array([[[0.5, 0.6, 0.7]] * 3, [[0.4, 0.5, 0.9], [0.5, 0.6, 0.7], [0.6, 0.7, 0.8]]])
    result = ActiveLearningCurve(["a", "b"], np.array([10, 20, 30]), scores, zeros, zeros)
    ax = plot_active_learning_curve(result)
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["a", "b"]
    np.testing.assert_allclose(lines[1].get_ydata(), [0.5, 0.6, 0.8])
    assert len(ax.collections) == 2  # one band each
    band = ax.collections[1].get_paths()[0].vertices[:, 1]
    expected_low = scores[1].mean(0) - scores[1].std(0)
    assert band.min() == pytest.approx(expected_low.min())
    buffer = io.BytesIO()
    ax.figure.savefig(buffer, format="png")
    assert buffer.getvalue()[:4] == b"\x89PNG"


def test_training_through_skorchs_accelerate_mixin_trains_the_heads():
    accelerate = pytest.importorskip("accelerate")
    from skorch.hf import AccelerateMixin

    class AcceleratedActiveNet(AccelerateMixin, ActiveNet):
        """The recipe in the docs: skorch's Accelerate support on an ActiveNet."""

    rng = np.random.default_rng(0)
    X = rng.random((40, 1, 8, 8), dtype=np.float32)
    y = np.arange(40) % 3
    net = AcceleratedActiveNet(SmallCNN, accelerator=accelerate.Accelerator(cpu=True), module__width=4,
                               max_epochs=2, verbose=0, callbacks__print_log__sink=lambda *a, **k: None)
    learner = ActiveLearner(net, selector=TiDAL(subset=None), classes=np.arange(3), random_state=0)
    learner.fit(X, y)
    trained = learner.estimator_
    assert isinstance(trained, AcceleratedActiveNet)
    # the TD head's loss reached it through Accelerate's own train step
    assert trained.parts_["dynamics"].mean_.shape == (40, 3)
    assert trained.dynamics_predictor_.out.weight.grad.abs().sum() > 0
    idx = learner.query(X, 5)
    assert len(set(idx.tolist())) == 5


class _FirstRows(Random):
    """Picks the first ``n`` pool rows (the unlabeled rows in their original order)."""

    def select(self, net, X_pool, n, *, random_state=None, labeled=None):
        return np.arange(n, dtype=np.int64), np.zeros(n)


def test_class_counts_record_each_cycles_picks_and_their_spread():
    X, y = _data(n=150)
    order = np.argsort(y, kind="stable")  # class 0 rows first: _FirstRows picks only class 0
    X, y = X[order], y[order]
    assert (y == 0).sum() > 40
    net = ActiveNet(MLP, module__hidden_sizes=(8,), max_epochs=1, lr=0.1, verbose=0)
    learners = {"first": ActiveLearner(net, _FirstRows()), "random": ActiveLearner(net, Random())}
    result = active_learning_curve(learners, X, y, X_test=X, y_test=y, initial_size=10,
                                   query_size=5, n_cycles=3, n_repeats=2, random_state=0)
    assert result.classes.tolist() == [0, 1]
    assert result.class_counts.shape == (2, 2, 4, 2)
    np.testing.assert_array_equal(result.class_counts.sum(-1)[..., 0], 10)
    np.testing.assert_array_equal(result.class_counts.sum(-1)[..., 1:], 5)
    # the initial set is shared by both learners of a repeat
    np.testing.assert_array_equal(result.class_counts[0, :, 0], result.class_counts[1, :, 0])
    np.testing.assert_array_equal(result.class_counts[0, :, 1:], [[[5, 0]] * 3] * 2)
    np.testing.assert_array_equal(result.pick_entropy[0, :, 1:], 0.0)
    counts = result.class_counts.astype(np.float64)
    p = counts / counts.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = -np.nansum(p * np.log(p), axis=-1) / np.log(2)
    np.testing.assert_allclose(result.pick_entropy, expected, rtol=1e-12)
    records = result.to_records()
    assert [r["pick_entropy"] for r in records[:4]] == result.pick_entropy[0, 0].tolist()
    table = result.table().splitlines()
    assert table[-1].startswith("| pick spread | | 0.0000 ± 0.0000 | ")


def test_pick_entropy_hand_values():
    result = ActiveLearningCurve(["a"], np.array([0, 6]), np.zeros((1, 1, 2)), np.zeros((1, 1, 2)),
                                 np.zeros((1, 1, 2)), class_counts=np.array([[[[2, 2, 2], [3, 3, 0]]]]),
                                 classes=np.arange(3))
    np.testing.assert_allclose(result.pick_entropy[0, 0], [1.0, np.log(2) / np.log(3)], rtol=1e-12)


def _silent(*args, **kwargs):
    """A sink for EarlyStopping's message (importable, so provenance can record it)."""


def test_a_campaign_with_early_stopping_runs_and_equals_one_with_the_epochs_it_stopped_at():
    from skorch.callbacks import EarlyStopping

    X, y = _data()
    # train_loss rarely drops by 90% in an epoch: patience 1 stops every training after epoch 2
    stopper = EarlyStopping(monitor="train_loss", patience=1, threshold=0.9, sink=_silent)
    stopped = ActiveNet(MLP, module__hidden_sizes=(8,), max_epochs=20, lr=0.1, verbose=0,
                        callbacks=[("stop", stopper)])
    two_epochs = ActiveNet(MLP, module__hidden_sizes=(8,), max_epochs=2, lr=0.1, verbose=0)
    kwargs = dict(initial_size=10, query_size=5, n_cycles=2, n_repeats=2, random_state=0)
    for selector in (Entropy(), DISAL()):
        result = active_learning_curve({"stopped": ActiveLearner(stopped, selector),
                                        "two epochs": ActiveLearner(two_epochs, selector)}, X, y, **kwargs)
        assert np.isfinite(result.scores).all()
        np.testing.assert_array_equal(result.scores[0], result.scores[1])
