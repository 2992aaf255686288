"""A campaign over one dataset: the learner keeps which rows are labeled, skipped or unlabeled."""

import tracemalloc

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import TensorDataset

from skal import UNLABELED, ActiveLearner, ActiveNet
from skal._bookkeeping import PoolState, Rows, fingerprint
from skal.models import MLP
from skal.selectors import DISAL, CoreSet, Entropy, Margin, Random

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N = 120


def _data(n=N, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64)


def _learner(selector=None, **kwargs):
    net = ActiveNet(MLP, module__hidden_sizes=(8,), max_epochs=2, batch_size=16, lr=0.1, verbose=0)
    return ActiveLearner(net, selector or Entropy(), random_state=0, **{"unlabeled": UNLABELED, **kwargs})


def _marked(y, labeled):
    out = np.full(len(y), UNLABELED)
    out[labeled] = y[labeled]
    return out


def test_fit_on_a_marked_dataset_trains_on_the_labeled_rows_only():
    X, y = _data()
    first = np.array([3, 10, 40, 41, 77, 100])
    pooled = _learner(Random()).fit(X, _marked(y, first))
    plain = _learner(Random(), unlabeled=None).fit(X[first], y[first])
    np.testing.assert_array_equal(pooled.X_labeled_, X[first])
    np.testing.assert_array_equal(pooled.y_labeled_, y[first])
    np.testing.assert_array_equal(pooled.predict_proba(X), plain.predict_proba(X))  # the same training
    np.testing.assert_array_equal(pooled.labeled_rows_, first)
    assert len(pooled.unlabeled_rows_) == N - 6 and len(pooled.skipped_rows_) == 0
    assert plain.labeled_rows_ is None  # no pool without marked rows


@pytest.mark.parametrize("selector", [Random(), Entropy(), Margin(), DISAL(), CoreSet()], ids=repr)
def test_query_on_the_pool_never_returns_a_labeled_or_skipped_row(selector):
    X, y = _data()
    learner = _learner(selector).fit(X, _marked(y, np.arange(10)))
    learner.skip([10, 11, 12])
    picked = learner.query(X, n=N - 13)  # every candidate
    assert sorted(picked.tolist()) == list(range(13, N))
    with pytest.raises(ValueError, match=r"n must be in \[1, the pool's unlabeled rows\] = \[1, 107\], got 108"):
        learner.query(X, n=108)


def test_query_on_the_pool_scores_its_unlabeled_rows_as_a_pool_of_them_would():
    X, y = _data()
    learner = _learner(Entropy()).fit(X, _marked(y, np.arange(20)))
    expected = _learner(Entropy(), unlabeled=None).fit(X[:20], y[:20])
    rows = np.arange(20, N)
    # Entropy with top-k: the same model ranks the same rows; indices are pool rows
    np.testing.assert_array_equal(learner.query(X, 15), rows[expected.query(X[20:], 15)])


def test_teach_by_rows_labels_the_rows_and_a_label_is_never_replaced():
    X, y = _data()
    learner = _learner().fit(X, _marked(y, np.arange(10)))
    learner.teach(X, y[[50, 60]], rows=[50, 60])
    np.testing.assert_array_equal(learner.X_labeled_[-2:], X[[50, 60]])
    np.testing.assert_array_equal(learner.labeled_cycle_[-2:], [1, 1])
    assert {50, 60} <= set(learner.labeled_rows_.tolist())
    before = learner._state()
    with pytest.raises(ValueError, match=r"rows: \[60\] are labeled already; a label is never replaced"):
        learner.teach(X, y[[61, 60]], rows=[61, 60])
    assert learner._state() is before  # nothing changed
    for rows, message in [([200], r"rows must be in \[0, 120\)"), ([5, 5], "holds a row more than once"),
                          ([[1]], "non-empty 1-d array of row indices"), ([1.5], "row indices")]:
        with pytest.raises(ValueError, match=message):
            learner.teach(X, y[:len(np.ravel(rows))], rows=rows)
    with pytest.raises(ValueError, match=r"^X has 50 rows, fewer than the 120 of the learner's pool\.$"):
        learner.teach(X[:50], y[:1], rows=[1])


def test_skip_unskip_and_teaching_a_skipped_row():
    X, y = _data()
    learner = _learner().fit(X, _marked(y, np.arange(10)))
    learner.skip([20, 21])
    assert learner.skipped_rows_.tolist() == [20, 21]
    assert not {20, 21} & set(learner.query(X, N - 12).tolist())
    with pytest.raises(ValueError, match=r"rows: \[3\] are labeled; only unlabeled rows can be skipped"):
        learner.skip([3])
    learner.unskip([21])
    assert learner.skipped_rows_.tolist() == [20]
    with pytest.raises(ValueError, match=r"rows: \[22\] are not skipped"):
        learner.unskip([22])
    learner.teach(X, y[[20]], rows=[20])  # an annotator may label a skipped row later
    assert learner.skipped_rows_.tolist() == [] and 20 in learner.labeled_rows_


def test_a_pool_with_other_contents_or_fewer_rows_is_refused_unless_another_dataset_on_purpose():
    X, y = _data()
    learner = _learner().fit(X, _marked(y, np.arange(10)))
    with pytest.raises(ValueError, match=r"^X_pool is not the learner's pool: its rows 0\.\.119 hold other "
                                         r"contents"):
        learner.query(X[::-1].copy(), 5)
    with pytest.raises(ValueError, match=r"^X_pool has 30 rows, fewer than the 120 of the learner's pool\.$"):
        learner.query(X[:30], 5)
    idx = learner.query(X[:30], 30, other_dataset=True)  # every row is a candidate
    assert sorted(idx.tolist()) == list(range(30))
    assert learner.unlabeled_rows_.tolist() == list(range(10, 120))  # the bookkeeping is left alone


def test_without_a_pool_skip_is_refused():
    X, y = _data()
    learner = _learner(unlabeled=None).fit(X[:20], y[:20])
    with pytest.raises(ValueError, match="The learner has no pool"):
        learner.skip([1])


def test_every_row_unlabeled_is_refused_naming_y():
    X, _ = _data()
    with pytest.raises(ValueError, match=r"y: every row is unlabeled \(-1\)"):
        _learner().fit(X, np.full(N, UNLABELED))


def test_without_the_marker_parameter_minus_one_is_a_label():
    X, y = _data()
    labels = np.where(y == 1, 1, -1)  # binary labels {-1, 1}
    learner = _learner(unlabeled=None).fit(X, labels)
    assert learner.labeled_rows_ is None and len(learner.y_labeled_) == N
    assert learner.classes_.tolist() == [-1, 1]
    with pytest.raises(ValueError, match=r"unlabeled=-1 is also one of classes"):
        _learner(classes=[-1, 0, 1]).fit(X, _marked(y, np.arange(10)))


@pytest.mark.parametrize("marker, labels", [(float("nan"), np.array([0.0, 1.0])), ("?", np.array(["cat", "dog"]))])
def test_other_markers_nan_and_a_string(marker, labels, tmp_path):
    X, y = _data()
    marked = labels[y].astype(float if isinstance(marker, float) else object)
    marked[10:] = marker
    learner = _learner(unlabeled=marker).fit(X, marked)
    assert len(learner.unlabeled_rows_) == N - 10 and learner.classes_.tolist() == labels.tolist()
    learner.save(tmp_path / "m.skal")
    assert len(ActiveLearner.load(tmp_path / "m.skal").unlabeled_rows_) == N - 10


def test_string_labels_with_the_marker():
    X, y = _data()
    names = np.array(["cat", "dog"], dtype=object)[y]
    marked = names.copy()
    marked[10:] = UNLABELED
    learner = _learner().fit(X, marked)
    assert learner.classes_.tolist() == ["cat", "dog"] and len(learner.unlabeled_rows_) == N - 10
    learner.teach(X, names[[30]], rows=[30])
    assert learner.y_labeled_[-1] == names[30]


def test_dataset_and_dataframe_pools_give_the_array_pools_picks():
    X, y = _data()
    marked = _marked(y, np.arange(12))
    by_array = _learner(DISAL()).fit(X, marked)
    expected = by_array.query(X, 10)
    dataset = TensorDataset(torch.from_numpy(X), torch.from_numpy(y))
    by_dataset = _learner(DISAL()).fit(dataset, marked)
    np.testing.assert_array_equal(by_dataset.query(dataset, 10), expected)
    frame = pd.DataFrame(X, columns=list("abcd"))
    by_frame = _learner(DISAL()).fit(frame, marked)
    np.testing.assert_array_equal(by_frame.query(frame, 10), expected)
    by_frame.teach(frame, y[expected[:2]], rows=expected[:2])
    by_array.teach(X, y[expected[:2]], rows=expected[:2])
    np.testing.assert_array_equal(by_frame.query(frame, 10), by_array.query(X, 10))


def test_the_bookkeeping_is_saved_and_resumed(tmp_path):
    X, y = _data()
    learner = _learner(Margin()).fit(X, _marked(y, np.arange(10)))
    learner.teach(X, y[[40, 41]], rows=[40, 41]).skip([50, 51, 52])
    learner.save(tmp_path / "campaign.skal")
    loaded = ActiveLearner.load(tmp_path / "campaign.skal")
    for name in ("labeled_rows_", "skipped_rows_", "unlabeled_rows_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(learner, name))
    np.testing.assert_array_equal(loaded.query(X, 20), learner.query(X, 20))
    with pytest.raises(ValueError, match="other contents"):
        loaded.query(X + 1, 3)  # the fingerprint came back too


def test_rows_are_read_a_chunk_at_a_time():
    X = np.arange(40, dtype=np.float32).reshape(20, 2)
    rows = Rows(X, [19, 3, 7, 0])
    assert len(rows) == 4 and rows.shape == (4, 2)
    np.testing.assert_array_equal(rows.chunk(1, 3), X[[3, 7]])
    np.testing.assert_array_equal(rows.take([3, 0]).chunk(0, 2), X[[0, 19]])
    np.testing.assert_array_equal(np.asarray(rows), X[[19, 3, 7, 0]])
    bad = X.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"X_pool contains NaN or infinity \(in row 7\)"):
        Rows(bad, [3, 7], name="X_pool").chunk(0, 2)


def test_the_fingerprint_sees_the_rows_it_reads():
    X, _ = _data()
    assert fingerprint(X) == fingerprint(X.copy()) == fingerprint(torch.from_numpy(X))
    changed = X.copy()
    changed[0, 0] += 1  # row 0 is always read
    assert fingerprint(changed) != fingerprint(X)
    assert fingerprint(X[:-1]) != fingerprint(X)


def test_the_bookkeeping_of_a_million_rows_costs_a_byte_a_row():
    n = 1_000_000
    X = np.zeros((n, 1), dtype=np.float32)
    y = np.full(n, UNLABELED)
    y[:2] = [0, 1]
    tracemalloc.start()
    status = np.where(y == UNLABELED, 0, 1).astype(np.int8)
    state = PoolState(status, fingerprint(X), (1,))
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert state.status.nbytes == n
    assert current < 1.1 * n


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(st.sampled_from(["teach", "skip", "unskip", "save", "query"]),
                                st.lists(st.integers(0, 59), min_size=1, max_size=6, unique=True)),
                      min_size=1, max_size=6),
       first=st.lists(st.integers(0, 59), min_size=4, max_size=8, unique=True))
def test_querying_the_pool_never_returns_a_labeled_or_skipped_row(tmp_path_factory, steps, first):
    X, y = _data(60, seed=1)
    y[first[:2]] = [0, 1]  # both classes in the first labels
    learner = ActiveLearner(ActiveNet(MLP, module__hidden_sizes=(4,), max_epochs=1, verbose=0), Margin(),
                            random_state=0, unlabeled=UNLABELED).fit(X, _marked(y, np.array(first)))
    labeled, skipped = set(first), set()
    for action, rows in steps:
        rows = np.array(rows)
        free = np.array([r for r in rows if r not in labeled and r not in skipped])
        if action == "teach" and len(free):
            learner.teach(X, y[free], rows=free)
            labeled |= set(free.tolist())
        elif action == "skip" and len(free):
            learner.skip(free)
            skipped |= set(free.tolist())
        elif action == "unskip" and skipped:
            back = np.array(sorted(skipped))[:2]
            learner.unskip(back)
            skipped -= set(back.tolist())
        elif action == "save":
            path = tmp_path_factory.mktemp("save") / "l.skal"
            learner.save(path)
            learner = ActiveLearner.load(path)
        candidates = 60 - len(labeled) - len(skipped)
        if candidates:
            picked = learner.query(X, candidates)
            assert set(picked.tolist()) == set(range(60)) - labeled - skipped
        assert set(learner.labeled_rows_.tolist()) == labeled
        assert set(learner.skipped_rows_.tolist()) == skipped


def test_the_labeling_page_bookkeeping_snippet_runs():
    from docs_snippets import run_section

    learner = run_section("user_guide/labeling.md", "Pool bookkeeping")["learner"]
    assert (len(learner.labeled_rows_), len(learner.skipped_rows_), len(learner.unlabeled_rows_)) == (65, 5, 1930)
