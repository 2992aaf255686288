"""Feature names and memory layouts in query and teach (issue 13, deliverable 4).

After ``fit`` on a DataFrame, ``query`` and ``teach`` refuse reordered,
renamed, missing or extra columns with scikit-learn's own message, exactly as
``predict`` does, and a refused ``teach`` stores nothing; a plain array warns
as in ``predict``. Views of any layout (negative strides, steps, Fortran
order, transposed) give exactly the results of their C-contiguous copies.
"""

import pickle
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import StandardScaler

from skal import ActiveLearner, ActiveNet
from skal.models import MLP
from skal.selectors import CoreSet, Entropy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COLUMNS = ["a", "b", "c", "d"]
rng = np.random.default_rng(0)
X = rng.normal(size=(60, 4)).astype(np.float32)
X[:, 1] *= 3  # columns of different scales: a swap changes every prediction
Y = X[:, :3].argmax(1).astype(np.int64)
FRAME = pd.DataFrame(X, columns=COLUMNS)


def _learner(selector=None):
    net = ActiveNet(MLP, module__hidden_sizes=(8,), max_epochs=3, batch_size=16, lr=0.1, verbose=0)
    return ActiveLearner(net, selector or Entropy(), random_state=0)


@pytest.fixture(scope="module")
def fitted(one_torch_thread):
    return _learner().fit(FRAME[:20], Y[:20])


_BAD_COLUMNS = {
    "reordered": lambda frame: frame[["b", "a", "c", "d"]],
    "renamed": lambda frame: frame.rename(columns={"a": "z"}),
    "missing": lambda frame: frame[["a", "b", "c"]],
    "extra": lambda frame: frame.assign(e=1.0),
}


def _sklearn_message(bad):
    """What a scikit-learn estimator fitted on the same DataFrame says about ``bad``."""
    scaler = StandardScaler().fit(FRAME[:20])
    with pytest.raises(ValueError) as error:
        scaler.transform(bad)
    return str(error.value)


@pytest.mark.parametrize("kind", list(_BAD_COLUMNS))
def test_bad_columns_are_refused_by_query_and_teach_exactly_as_by_predict(fitted, kind):
    bad = _BAD_COLUMNS[kind](FRAME)
    expected = _sklearn_message(bad[20:])
    assert "The feature names should match those that were passed during fit." in expected
    before = pickle.dumps(fitted)
    calls = {"X": [lambda: fitted.predict(bad[20:]), lambda: fitted.predict_proba(bad[20:]),
                   lambda: fitted.score(bad[20:], Y[20:]), lambda: fitted.teach(bad[20:24], Y[20:24])],
             "X_pool": [lambda: fitted.query(bad[20:], 3)]}
    for name, entry_points in calls.items():
        for call in entry_points:
            with pytest.raises(ValueError, match=f"^{re.escape(f'{name}: {expected}')}$"):
                call()
    assert pickle.dumps(fitted) == before  # nothing stored, nothing trained


def test_teach_stores_the_rows_in_fit_column_order_and_never_swapped(fitted):
    learner = _learner().fit(FRAME[:20], Y[:20])
    with pytest.raises(ValueError, match="Feature names must be in the same order as they were in fit"):
        learner.teach(FRAME[["b", "a", "c", "d"]][20:24], Y[20:24])
    np.testing.assert_array_equal(learner.X_labeled_, X[:20])
    learner.teach(FRAME[20:24], Y[20:24])
    np.testing.assert_array_equal(learner.X_labeled_, X[:24])
    # the same samples with their columns swapped back by name are accepted: same rows
    swapped = FRAME[["b", "a", "c", "d"]][24:28]
    learner.teach(swapped[COLUMNS], Y[24:28])
    np.testing.assert_array_equal(learner.X_labeled_, X[:28])
    assert learner.feature_names_in_.tolist() == COLUMNS and learner.n_features_in_ == 4


def test_a_plain_array_after_a_dataframe_fit_warns_like_predict(fitted):
    message = "X does not have valid feature names, but ActiveLearner was fitted with feature names"
    learner = _learner().fit(FRAME[:20], Y[:20])
    calls = [lambda: learner.predict(X[20:]), lambda: learner.query(X[20:], 3),
             lambda: learner.teach(X[20:24], Y[20:24])]
    for call in calls:
        with pytest.warns(UserWarning, match=f"^{re.escape(message)}$"):
            call()
    np.testing.assert_array_equal(learner.X_labeled_, X[:24])  # an array is taken in fit's order


# torch warns once about pandas' read-only view
@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable:UserWarning")
def test_a_dataframe_after_an_array_fit_warns_like_predict():
    learner = _learner().fit(X[:20], Y[:20])
    message = "X has feature names, but ActiveLearner was fitted without feature names"
    for call in (lambda: learner.predict(FRAME[20:]), lambda: learner.query(FRAME[20:], 3),
                 lambda: learner.teach(FRAME[20:24], Y[20:24])):
        with pytest.warns(UserWarning, match=f"^{re.escape(message)}$"):
            call()


def test_matching_dataframes_give_exactly_the_array_results(fitted):
    from_array = _learner().fit(X[:20], Y[:20])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matching names: no warning at all
        np.testing.assert_array_equal(fitted.predict_proba(FRAME[20:]), from_array.predict_proba(X[20:]))
        idx, scores = fitted.query(FRAME[20:], 5, return_scores=True)
    expected_idx, expected_scores = from_array.query(X[20:], 5, return_scores=True)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_array_equal(scores, expected_scores)


# --- memory layouts ---------------------------------------------------------------------------


def _layouts(A):
    """Views of ``A``'s values in other layouts: each equals ``A`` but is not C-contiguous."""
    reversed_columns = np.ascontiguousarray(A[:, ::-1])[:, ::-1]
    reversed_rows = np.ascontiguousarray(A[::-1])[::-1]
    every_other = np.repeat(A, 2, axis=0)[::2]
    strided_columns = np.repeat(A, 3, axis=1)[:, ::3]
    fortran = np.asfortranarray(A)
    transposed = np.ascontiguousarray(A.T).T
    views = {"X[:, ::-1]": reversed_columns, "X[::-1]": reversed_rows, "X[::2]": every_other,
             "X[:, ::3]": strided_columns, "Fortran order": fortran, "transposed view": transposed}
    for name, view in views.items():
        np.testing.assert_array_equal(view, A)
        assert not view.flags.c_contiguous, name
    assert reversed_columns.strides[1] < 0 and reversed_rows.strides[0] < 0
    return views


@pytest.mark.parametrize("layout", list(_layouts(X)))
@pytest.mark.parametrize("selector", [Entropy, CoreSet], ids=["Entropy", "CoreSet"])
def test_non_contiguous_views_give_exactly_the_results_of_their_copies(layout, selector):
    def campaign(fit, pool, new, test):
        learner = _learner(selector()).fit(fit, Y[:20])
        idx, scores = learner.query(pool, 4, return_scores=True)
        learner.teach(new, Y[20:24])
        return (learner.X_labeled_, idx, scores, learner.predict_proba(test), learner.predict(test),
                learner.score(test, Y[40:]), learner.query(pool, 4))

    parts = (X[:20], X[24:], X[20:24], X[40:])
    expected = campaign(*parts)
    got = campaign(*(_layouts(part)[layout] for part in parts))
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
