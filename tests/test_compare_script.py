"""The Fashion-MNIST comparison script's recipe: the learning-rate decay and the table."""

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from skal import ActiveLearner
from skal.model_selection import ActiveLearningCurve

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "compare_fashion_mnist.py"


@pytest.fixture(scope="module")
def compare():
    # the script imports its neighbour compare_pairs, as it does when run from benchmarks/
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("compare_fashion_mnist", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_learning_rate_drops_tenfold_at_80_percent_of_training(compare):
    args = types.SimpleNamespace(epochs=5, lr=0.05, model="smallcnn", device="cpu")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 1, 14, 14)).astype(np.float32)
    y = np.arange(32) % 10
    net = compare.make_net(args).fit(X, y)
    np.testing.assert_allclose(net.history[:, "event_lr"], [0.05] * 4 + [0.005])


def test_every_variant_trains_as_documented(compare):
    # the dynamic loss comes from DISAL's selector, or from the parts added by hand ("w/o S")
    dynamic = {name for name, (selector, parts) in compare.VARIANTS.items()
               if parts or any(n == "dynamic_loss" for n, _ in selector.training_needs().parts)}
    assert dynamic == {"disal", "disal drift removed", "disal w/o S", "disal + stochastic", "disal + cluster",
                       "disal balanced"}
    # the papers' warm starts (a new optimizer and schedule each cycle)
    assert compare.WARM == {"tidal warm": True, "ll4al warm": True}
    assert compare.VARIANTS["disal"][0].drift == "keep"  # the paper's score
    assert compare.VARIANTS["disal drift removed"][0].drift == "remove"
    assert type(compare.VARIANTS["disal w/o S"][0]).__name__ == "Random"
    assert [n for n, _ in compare.VARIANTS["disal w/o S"][1]] == ["dynamic_loss"]
    # ... and reach the trained net: "w/o S" trains with the dynamic loss, "random" without it
    args = types.SimpleNamespace(epochs=2, lr=0.05, model="smallcnn", device="cpu")
    X = np.random.default_rng(0).normal(size=(20, 1, 14, 14)).astype(np.float32)
    y = np.arange(20) % 10
    for name, expected in (("disal w/o S", {"dynamics", "dynamic_loss"}), ("random", set())):
        selector, parts = compare.VARIANTS[name]
        learner = ActiveLearner(compare._with_parts(compare.make_net(args), parts), selector,
                                classes=np.arange(10), random_state=0).fit(X, y)
        assert set(learner.estimator_.parts_) == expected, name
    assert type(compare.VARIANTS["disal w/o D"][0]).__name__ == "DISAL"
    assert compare.VARIANTS["disal w/o D"][0].weight == 0
    assert {type(s).__name__ for s, _ in compare.VARIANTS.values()} >= {
        "Random", "Entropy", "Margin", "LeastConfidence", "CoreSet", "LL4AL", "TiDAL", "ISAL", "DISAL",
        "BALD", "BADGE"}
    # only BALD's net gets a dropout layer, which its MC dropout samples
    assert compare.NET_PARAMS == {"bald": {"module__dropout": 0.5}}
    assert type(compare.VARIANTS["bald"][0]).__name__ == "BALD"


def test_table_rows_are_percentages_with_spread_and_ceiling(compare):
    scores = np.array([[[0.5, 0.6], [0.7, 0.8]]])
    result = ActiveLearningCurve(["a"], np.array([10, 20]), scores, np.ones((1, 2, 2)),
                                 np.full((1, 2, 2), 0.5), class_counts=np.array([[[[5, 5], [10, 0]],
                                                                                 [[5, 5], [5, 5]]]]),
                                 classes=np.arange(2))
    lines = compare.table(result, [0.9, 0.92], 12.0).splitlines()
    assert lines[0] == "| method | 10 | 20 | AUC | pick spread | s / cycle |"
    # accuracy 60 ± 10 at 10 labels; AUC = mean of (0.55, 0.75); spread = mean of (0, 1); 1.5 s
    assert lines[2] == "| a | 60.0 ± 10.0 | 70.0 ± 10.0 | 65.0 ± 10.0 | 0.500 | 1.5 |"
    assert lines[3] == "| full data (2 runs, 60,000 labels) | 91.0 ± 1.0 | | | | 12 (training) |"


def test_the_table_gives_paired_differences_to_random_with_intervals(compare):
    # repeats share their initial sets: method b - random per repeat is (+0.1, +0.2, +0.3) at the end
    random = np.array([[0.5, 0.6], [0.5, 0.6], [0.5, 0.6]])
    b = random + np.array([[0.0, 0.1], [0.0, 0.2], [0.0, 0.3]])
    result = ActiveLearningCurve(["random", "b"], np.array([10, 20]), np.stack([random, b]),
                                 np.ones((2, 3, 2)), np.zeros((2, 3, 2)),
                                 class_counts=np.ones((2, 3, 2, 2), dtype=int), classes=np.arange(2))
    lines = compare.table(result, [float("nan")], float("nan")).splitlines()
    assert lines[0] == ("| method | 10 | 20 | AUC | Δ AUC vs random | Δ final vs random | pick spread | "
                        "s / cycle |")
    # final: mean 0.2, sd 0.1, t(0.975, 2) = 4.3027 -> 0.2 +- 0.2484; AUC differences are half of it
    assert lines[3].split(" | ")[5] == "+20.0 [-4.8, +44.8]"
    assert lines[3].split(" | ")[4] == "+10.0 [-2.4, +22.4]"
    assert lines[2].split(" | ")[4:6] == ["(reference)", "(reference)"]


def test_compare_pairs_prints_the_paired_t_interval_of_committed_results(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("compare_pairs", SCRIPT.parent / "compare_pairs.py")
    pairs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pairs)
    # 3 repeats, 2 cycles; margin's AUC (mean of the two cycles here) beats random's by .19, .20, .21
    scores = np.array([[[0.69, 0.89], [0.7, 0.9], [0.71, 0.91]],
                       [[0.5, 0.7], [0.5, 0.7], [0.5, 0.7]]])
    zeros = np.zeros_like(scores)
    ActiveLearningCurve(["margin", "random"], np.array([10, 20]), scores, zeros, zeros).to_json(
        tmp_path / "compare_digits-low.json")
    pairs.main(["--results", str(tmp_path), "--reference", "random"])  # [+17.5, +22.5] *
    out = capsys.readouterr().out.splitlines()
    assert out[2] == "| method | digits-low |"
    # differences in points 19, 20, 21: mean 20, sd 1, t_{0.975, 2} = 4.302653
    half = 4.302652729911275 * 1 / np.sqrt(3)
    assert out[4] == f"| margin | +20.0 [{20 - half:+.1f}, {20 + half:+.1f}] * |"
