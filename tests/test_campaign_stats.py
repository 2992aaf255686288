"""Paired differences to a reference, provenance, the JSON round trip and the differences plot."""

import csv
import hashlib
import json
import math
import re

import matplotlib
import numpy as np
import pytest
import scipy
import sklearn
import skorch
import torch
from scipy import stats
from sklearn.model_selection import train_test_split

import skal
from skal import ActiveLearner, ActiveNet
from skal._persistence import encode
from skal._provenance import _cpuinfo
from skal.model_selection import ActiveLearningCurve, PairedDifferences, active_learning_curve
from skal.models import MLP
from skal.plotting import plot_active_learning_curve
from skal.selectors import Entropy, Margin, Random

matplotlib.use("Agg")

# t_{0.975, 3}, the two-sided 95% Student t quantile with 3 degrees of freedom (statistics tables)
T_975_DF3 = 3.182446305284263
N_LABELED = np.array([10, 20, 40])  # uneven steps: the AUC's trapezoid weights differ
# 3 methods x 4 repeats x 3 cycles; "Random" (any case counts) is the reference
SCORES = np.array([
    [[0.50, 0.62, 0.80], [0.40, 0.58, 0.77], [0.45, 0.60, 0.70], [0.52, 0.66, 0.81]],  # margin
    [[0.50, 0.55, 0.70], [0.40, 0.50, 0.65], [0.45, 0.52, 0.62], [0.52, 0.60, 0.70]],  # Random
    [[0.50, 0.57, 0.75], [0.40, 0.47, 0.61], [0.45, 0.55, 0.64], [0.52, 0.58, 0.69]],  # entropy
])
NAMES = ["margin", "Random", "entropy"]


def _made_up(scores=SCORES, **kwargs):
    zeros = np.zeros_like(scores)
    return ActiveLearningCurve(list(NAMES), N_LABELED, scores, zeros + 1.0, zeros, **kwargs)


def _hand_auc(curve):
    area = (curve[0] + curve[1]) / 2 * 10 + (curve[1] + curve[2]) / 2 * 20
    return area / 30


def _hand_interval(d):
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1))
    half = T_975_DF3 * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def test_the_t_quantile_is_the_tables():
    assert stats.t.ppf(0.975, 3) == pytest.approx(T_975_DF3, abs=1e-12)


@pytest.mark.parametrize("metric", ["auc", "final"])
def test_paired_differences_equal_hand_computations(metric):
    diff = _made_up().paired_differences(metric)
    assert isinstance(diff, PairedDifferences)
    assert diff.names == ["margin", "entropy"] and diff.reference == "Random"
    assert diff.n == 4 and diff.confidence == 0.95 and diff.metric == metric
    for j, i in enumerate([0, 2]):
        if metric == "auc":
            d = [_hand_auc(SCORES[i, r]) - _hand_auc(SCORES[1, r]) for r in range(4)]
        else:
            d = [SCORES[i, r, 2] - SCORES[1, r, 2] for r in range(4)]
        np.testing.assert_allclose(diff.values[j], d, rtol=0, atol=1e-15)
        mean, low, high = _hand_interval(d)
        assert diff.mean[j] == pytest.approx(mean, abs=1e-14)
        assert diff.low[j] == pytest.approx(low, abs=1e-13)
        assert diff.high[j] == pytest.approx(high, abs=1e-13)
        # an independent implementation of the same interval: scipy's paired t-test
        a = _hand_auc_all(SCORES[i]) if metric == "auc" else SCORES[i, :, 2]
        b = _hand_auc_all(SCORES[1]) if metric == "auc" else SCORES[1, :, 2]
        ci = stats.ttest_rel(a, b).confidence_interval(0.95)
        assert (diff.low[j], diff.high[j]) == pytest.approx((ci.low, ci.high), abs=1e-13)
    # margin beats Random in every repeat by a steady margin; entropy's final scores do not
    expected_marks = {"auc": [True, False], "final": [True, False]}[metric]
    assert diff.excludes_zero.tolist() == expected_marks


def _hand_auc_all(curves):
    return np.array([_hand_auc(curve) for curve in curves])


def test_per_cycle_differences_and_another_confidence():
    diff = _made_up().paired_differences("cycles", confidence=0.9)
    assert diff.values.shape == (2, 4, 3)
    np.testing.assert_allclose(diff.values[0], SCORES[0] - SCORES[1], atol=1e-15)
    np.testing.assert_array_equal(diff.mean[:, 0], 0.0)  # cycle 0: the shared initial model
    np.testing.assert_array_equal(diff.low[:, 0], 0.0)
    d = SCORES[2, :, 1] - SCORES[1, :, 1]
    half = stats.t.ppf(0.95, 3) * d.std(ddof=1) / 2
    assert (diff.low[1, 1], diff.high[1, 1]) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-14)
    assert not diff.excludes_zero[:, 0].any()


def test_one_repeat_has_no_interval():
    result = _made_up(SCORES[:, :1])
    diff = result.paired_differences("final")
    assert diff.n == 1
    np.testing.assert_allclose(diff.mean, [0.10, 0.05], atol=1e-15)
    assert np.isnan(diff.low).all() and np.isnan(diff.high).all()
    assert not diff.excludes_zero.any()
    rows = result.table().splitlines()
    assert rows[7] == "| Δ final vs Random (95% CI) | | +0.1000 (1 repeat: no CI) | (reference) | +0.0500 (1 repeat: no CI) |"
    assert diff.to_dict()["low"] == [None, None]


def test_identical_differences_are_no_spread_and_not_marked():
    scores = SCORES[:, :2].copy()
    scores[1, :, 2] = [0.85, 0.65]
    scores[0, :, 2] = [0.90, 0.70]  # +0.05 in both repeats, but for the last bits of the floats
    diff = _made_up(scores).paired_differences("final")
    assert diff.values[0, 0] != diff.values[0, 1]  # 0.9 - 0.85 != 0.7 - 0.65 in binary
    assert 0 < diff.low[0] < diff.high[0] and diff.high[0] - diff.low[0] < 1e-12
    assert diff.no_spread.tolist() == [True, False]
    assert not diff.excludes_zero[0]
    assert "| +0.0500 (no spread: no CI) | (reference) |" in _made_up(scores).table().splitlines()[7]
    assert diff.to_dict()["no_spread"] == [True, False]


def test_table_rows_give_the_intervals_and_mark_those_excluding_zero():
    result = _made_up()
    rows = result.table().splitlines()
    assert rows[5].startswith("| AUC |")
    for row, metric, label in ((rows[6], "auc", "AUC"), (rows[7], "final", "final")):
        cells = []
        for i in (0, 2):
            d = ([_hand_auc(SCORES[i, r]) - _hand_auc(SCORES[1, r]) for r in range(4)] if metric == "auc"
                 else [SCORES[i, r, 2] - SCORES[1, r, 2] for r in range(4)])
            mean, low, high = _hand_interval(d)
            mark = " *" if low > 0 or high < 0 else ""
            cells.append(f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]{mark}")
        assert row == f"| Δ {label} vs Random (95% CI) | | {cells[0]} | (reference) | {cells[1]} |"
    # exactly one cell (margin's) is marked; entropy's interval contains zero
    cells = [cell.strip() for cell in rows[6].strip("|").split("|")]
    assert [cell.endswith(" *") for cell in cells] == [False, False, True, False, False]
    assert rows[8].startswith("| time / repeat |")


def test_reference_resolution_and_errors():
    assert _made_up().reference_name() == "Random"
    assert _made_up(reference="entropy").paired_differences().names == ["margin", "Random"]
    assert _made_up().paired_differences(reference="margin").reference == "margin"
    with pytest.raises(ValueError, match=r"^reference: 'bald' is not one of the methods compared: "
                                         r"\['margin', 'Random', 'entropy'\]\.$"):
        _made_up().paired_differences(reference="bald")
    with pytest.raises(TypeError, match=r"^reference must be a method's name \(str\) or None, got int\.$"):
        _made_up().paired_differences(reference=1)
    with pytest.raises(ValueError, match=r"^metric must be one of \['auc', 'final', 'cycles'\], got 'mean'\.$"):
        _made_up().paired_differences("mean")
    with pytest.raises(ValueError, match=r"^confidence must be a float in \(0, 1\), got 1\.5\.$"):
        _made_up().paired_differences(confidence=1.5)
    no_random = ActiveLearningCurve(["a", "b"], N_LABELED, SCORES[:2], SCORES[:2], SCORES[:2])
    assert no_random.reference_name() is None
    with pytest.raises(ValueError, match=r"^reference: no method is named 'random'; pass reference= one of"):
        no_random.paired_differences()
    assert not any("Δ" in row for row in no_random.table().splitlines())
    assert no_random.paired_records() == []
    alone = ActiveLearningCurve(["random"], N_LABELED, SCORES[:1], SCORES[:1], SCORES[:1])
    with pytest.raises(ValueError, match=r"^reference: 'random' is the only method"):
        alone.paired_differences()
    assert not any("Δ" in row for row in alone.table().splitlines())


def test_paired_csv(tmp_path):
    result = _made_up()
    result.to_csv(tmp_path / "r.csv", paired_path=tmp_path / "paired.csv")
    with open(tmp_path / "paired.csv") as f:
        rows = list(csv.DictReader(f))
    # (auc, final) x 2 methods, then 2 methods x 3 cycles
    assert [(r["selector"], r["metric"], r["cycle"]) for r in rows] == [
        ("margin", "auc", ""), ("entropy", "auc", ""), ("margin", "final", ""), ("entropy", "final", ""),
        *[(m, "cycle", str(c)) for m in ("margin", "entropy") for c in range(3)]]
    final = result.paired_differences("final")
    assert float(rows[2]["mean"]) == final.mean[0] and float(rows[2]["low"]) == final.low[0]
    assert rows[2]["excludes_zero"] == "True" and rows[3]["excludes_zero"] == "False"
    assert rows[5]["n_labeled"] == "20" and rows[0]["reference"] == "Random" and rows[0]["n"] == "4"
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 1 + 3 * 4 * 3


# --- campaigns: reference, provenance, JSON -----------------------------------------------------


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    return X, y


def _learners():
    net = ActiveNet(MLP, module__hidden_sizes=(8,), max_epochs=2, lr=0.1, verbose=0)
    return {"entropy": ActiveLearner(net, Entropy()), "random": ActiveLearner(net, Random())}


@pytest.fixture(scope="module")
def run():
    X, y = _data()
    result = active_learning_curve(_learners(), X, y, initial_size=10, query_size=5, n_cycles=2,
                                   n_repeats=3, random_state=7, data_name="made-up blobs")
    return X, y, result


def test_the_reference_is_random_by_name_or_by_selector_or_given():
    X, y = _data(n=60)
    net = ActiveNet(MLP, module__hidden_sizes=(4,), max_epochs=1, verbose=0)
    kwargs = dict(X_test=X, y_test=y, initial_size=10, query_size=5, n_cycles=1, n_repeats=2, random_state=0)
    by_selector = active_learning_curve({"m": ActiveLearner(net, Margin()), "baseline": ActiveLearner(net, Random())},
                                        X, y, **kwargs)
    assert by_selector.reference == "baseline"
    assert by_selector.table().splitlines()[5].startswith("| Δ AUC vs baseline (95% CI) | | ")
    given = active_learning_curve({"m": ActiveLearner(net, Margin()), "e": ActiveLearner(net, Entropy())},
                                  X, y, reference="e", **kwargs)
    assert given.reference == "e" and given.paired_differences().names == ["m"]
    none = active_learning_curve({"m": ActiveLearner(net, Margin())}, X, y, **kwargs)
    assert none.reference is None


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(reference="bald"), ValueError,
     r"^reference: 'bald' is not one of the learners compared: \['entropy', 'random'\]\.$"),
    (dict(reference=0), TypeError, r"^reference must be a learner's name \(str\) or None, got int\.$"),
    (dict(data_name=3), TypeError, r"^data_name must be a str, a path or None, got int\.$"),
])
def test_bad_reference_or_data_name_is_refused_before_training(kwargs, error, message):
    X, y = _data(n=60)
    learners = _learners()
    with pytest.raises(error, match=message):
        active_learning_curve(learners, X, y, initial_size=10, query_size=5, n_cycles=1, **kwargs)
    assert not any(hasattr(learner, "estimator_") for learner in learners.values())


def test_provenance_records_data_split_learners_seeds_versions_and_machine(run):
    X, y, result = run
    meta = result.meta
    assert {k: meta[k] for k in ("initial_size", "query_size", "n_cycles", "n_repeats")} == {
        "initial_size": 10, "query_size": 5, "n_cycles": 2, "n_repeats": 3}
    prov = meta["provenance"]
    data = prov["data"]
    assert data["name"] == "made-up blobs"
    assert data["X"] == {"shape": [200, 4], "dtype": "<f4", "sha256": hashlib.sha256(X.tobytes()).hexdigest()}
    assert data["y"] == {"shape": [200], "dtype": y.dtype.str, "sha256": hashlib.sha256(y.tobytes()).hexdigest()}
    assert data["X_test"] is None and data["n_pool"] == 160 and data["n_test"] == 40
    # the recorded split seed and initial sets reproduce the campaigns' initial labels exactly
    train, test = train_test_split(np.arange(200), test_size=0.2, stratify=y, random_state=data["test_split"]["seed"])
    assert data["test_split"]["test_indices_sha256"] == hashlib.sha256(np.sort(test).astype(np.int64).tobytes()).hexdigest()
    seeds = prov["seeds"]
    assert seeds["random_state"] == 7 and np.array(seeds["repeats"]).shape == (3, 2)
    for r, initial in enumerate(seeds["initial_sets"]):
        assert len(set(initial)) == 10
        counts = np.bincount(y[train][initial], minlength=2)
        np.testing.assert_array_equal(result.class_counts[:, r, 0], [counts, counts])
        assert initial == np.random.default_rng(seeds["repeats"][r][0]).choice(160, 10, replace=False).tolist()
    learners = _learners()
    for name, learner in learners.items():
        assert prov["learners"][name] == encode(learner, name)
    assert prov["learners"]["entropy"]["params"]["selector"]["__object__"].endswith(":Entropy")
    assert prov["learners"]["entropy"]["params"]["estimator"]["params"]["lr"] == 0.1
    assert prov["devices"] == {"entropy": "cpu", "random": "cpu"}
    assert prov["versions"]["skal"] == skal.__version__ and prov["versions"]["torch"] == torch.__version__
    assert prov["versions"]["scikit-learn"] == sklearn.__version__
    assert prov["versions"]["skorch"] == skorch.__version__ and prov["versions"]["numpy"] == np.__version__
    assert prov["versions"]["scipy"] == scipy.__version__
    machine = prov["machine"]
    assert machine["logical_cores"] >= 1 and machine["torch_threads"] == torch.get_num_threads()
    assert machine["gpus"] == ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                               if torch.cuda.is_available() else [])
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        pytest.skip("no /proc/cpuinfo here: the CPU model and flags are not checked")
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    if model:
        assert machine["cpu"] == model.group(1).strip()
    flags = set(re.search(r"^flags\s*:\s*(.+)$", text, re.M).group(1).split()) if "flags" in text else set()
    assert ("avx2" in machine["cpu_flags"]) == ("avx2" in flags)
    assert ("avx512f" in machine["cpu_flags"]) == ("avx512f" in flags)
    assert set(machine["cpu_flags"]) <= flags | {"asimd", "sve", "sve2"}


def test_cpuinfo_is_parsed_for_x86_and_arm(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Some CPU @ 2GHz\nflags\t\t: fpu sse4_2 avx avx2 fma\n\n"
                   "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n")
    assert _cpuinfo(x86) == ("Some CPU @ 2GHz", {"fpu", "sse4_2", "avx", "avx2", "fma"})
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd sve\n\nModel\t: Board X\n")
    assert _cpuinfo(arm) == ("Board X", {"fp", "asimd", "sve"})
    assert _cpuinfo(tmp_path / "missing") == (None, set())


def test_a_learner_that_cannot_be_encoded_is_recorded_by_repr_with_a_warning():
    class LocalRandom(Random):
        """Defined in a function: not importable, so not encodable."""

    X, y = _data(n=60)
    net = ActiveNet(MLP, module__hidden_sizes=(4,), max_epochs=1, verbose=0)
    with pytest.warns(UserWarning, match=r"learner 'local': its parameters cannot be recorded") as caught:
        result = active_learning_curve({"local": ActiveLearner(net, LocalRandom())}, X, y, X_test=X, y_test=y,
                                       initial_size=10, query_size=5, n_cycles=1, n_repeats=1, random_state=0)
    assert caught[0].filename == __file__  # reported at the caller's line
    record = result.meta["provenance"]["learners"]["local"]
    assert "LocalRandom" in record["repr"] and "not importable" in record["not_encoded"]


def test_json_round_trip_is_exact_and_keeps_config(run, tmp_path):
    _, _, result = run
    result.meta["config"] = {"selectors": ["entropy", "random"], "seed": 7, "out": "skal-results"}
    try:
        result.to_json(tmp_path / "r.json")
        back = ActiveLearningCurve.from_json(tmp_path / "r.json")
    finally:
        del result.meta["config"]
    assert back.names == result.names and back.scoring == result.scoring
    assert back.reference == result.reference == "random"
    for key in ("n_labeled", "scores", "fit_times", "query_times", "class_counts", "classes"):
        expected, got = getattr(result, key), getattr(back, key)
        assert got.dtype == expected.dtype, key
        np.testing.assert_array_equal(got, expected, err_msg=key)
    assert back.meta["config"] == {"selectors": ["entropy", "random"], "seed": 7, "out": "skal-results"}
    assert back.meta["provenance"] == result.meta["provenance"]
    assert back.table() == result.table()
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["paired"]["final"] == result.paired_differences("final").to_dict()
    assert data["paired"]["cycles"]["mean"] == result.paired_differences("cycles").mean.tolist()
    assert data["auc"] == result.auc.tolist()


def test_json_round_trip_of_string_classes_and_errors(tmp_path):
    counts = np.ones((3, 4, 3, 2), dtype=np.int64)
    result = _made_up(class_counts=counts, classes=np.array(["cat", "dog"], dtype="<U7"), reference="margin",
                      meta={"note": np.int64(3)})
    result.to_json(tmp_path / "r.json")
    back = ActiveLearningCurve.from_json(tmp_path / "r.json")
    assert back.classes.dtype == np.dtype("<U7") and back.classes.tolist() == ["cat", "dog"]
    assert back.reference == "margin" and back.meta == {"note": 3}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: not a JSON file"):
        ActiveLearningCurve.from_json(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"names": ["a"]}')
    with pytest.raises(ValueError, match=r"other\.json: not an ActiveLearningCurve result, it lacks "
                                         r"\['n_labeled', 'scores', 'fit_times', 'query_times'\]"):
        ActiveLearningCurve.from_json(tmp_path / "other.json")


def test_a_recorded_run_reruns_from_its_provenance_to_the_same_numbers(run):
    X, y, result = run
    prov = result.meta["provenance"]
    assert hashlib.sha256(X.tobytes()).hexdigest() == prov["data"]["X"]["sha256"]
    settings = {k: result.meta[k] for k in ("initial_size", "query_size", "n_cycles", "n_repeats")}
    again = active_learning_curve(_learners(), X, y, random_state=prov["seeds"]["random_state"], **settings)
    np.testing.assert_array_equal(again.scores, result.scores)
    np.testing.assert_array_equal(again.class_counts, result.class_counts)
    assert again.meta["provenance"]["seeds"] == prov["seeds"]


# --- the plot ----------------------------------------------------------------------------------


def test_plot_differences_panel_draws_each_methods_mean_and_interval():
    result = _made_up()
    top, bottom = plot_active_learning_curve(result, differences=True)
    assert [line.get_label() for line in top.get_lines()] == NAMES
    diff = result.paired_differences("cycles")
    lines = bottom.get_lines()
    assert [line.get_label() for line in lines] == ["margin", "entropy", "Random (reference)"]
    np.testing.assert_allclose(lines[0].get_ydata(), (SCORES[0] - SCORES[1]).mean(0), atol=1e-15)
    np.testing.assert_allclose(lines[2].get_ydata(), [0, 0])
    # the same colour for a method in both panels
    assert lines[1].get_color() == top.get_lines()[2].get_color()
    band = bottom.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(diff.low[0].min()) and band.max() == pytest.approx(diff.high[0].max())
    assert len(bottom.collections) == 2
    assert top.figure is bottom.figure


def test_plot_differences_on_given_axes_one_repeat_and_errors():
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2)
    top, bottom = plot_active_learning_curve(_made_up(SCORES[:, :1]), axes, differences=True)
    assert (top, bottom) == tuple(axes)
    assert len(bottom.collections) == 0 and "no interval" in bottom.get_title()
    with pytest.raises(TypeError, match=r"^ax: with differences=True, pass a pair of Axes"):
        plot_active_learning_curve(_made_up(), axes[0], differences=True)
    with pytest.raises(TypeError, match=r"^differences must be a bool, got str\.$"):
        plot_active_learning_curve(_made_up(), differences="yes")
    no_random = ActiveLearningCurve(["a", "b"], N_LABELED, SCORES[:2], SCORES[:2], SCORES[:2])
    with pytest.raises(ValueError, match=r"^reference: no method is named 'random'"):
        plot_active_learning_curve(no_random, differences=True)
    assert plot_active_learning_curve(no_random, differences=True, reference="a")[1].get_ylabel() == "Δ accuracy vs a"
    plt.close("all")


def test_provenance_records_a_parameters_large_array_by_its_checksum():
    # ISAL's reference set in a selector parameter: described, not written out as JSON
    from skal.model_selection import active_learning_curve
    from skal.selectors import ISAL

    rng = np.random.default_rng(0)
    X = rng.normal(size=(360, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    X_ref, y_ref = X[:300], y[:300]  # 1,200 values: more than the save format writes inline
    learner = ActiveLearner(ActiveNet(MLP, module__in_features=4, max_epochs=1, verbose=0),
                            ISAL(reference=(X_ref, y_ref), depth=2, repeats=1), random_state=0)
    result = active_learning_curve({"isal": learner}, X[300:], y[300:], initial_size=20, query_size=5,
                                   n_cycles=1, n_repeats=1, random_state=0)
    record = result.meta["provenance"]["learners"]["isal"]
    reference = record["params"]["selector"]["params"]["reference"]["__tuple__"]
    assert reference[0] == {"__npy__": "params.0.npy"}
    assert record["arrays"]["params.0.npy"] == {
        "shape": [300, 4], "dtype": "<f4", "sha256": hashlib.sha256(X_ref.tobytes()).hexdigest()}
    assert len(json.dumps(record)) < 5_000
