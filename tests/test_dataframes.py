"""Samples kept as the user gave them when the estimator is a Pipeline (issue 21, point 1).

The most common tabular set-up: a DataFrame with numeric, string, categorical and boolean
columns (and missing values the Pipeline handles) through a ColumnTransformer that selects its
columns by name, then the net. The learner hands the DataFrame to the Pipeline unchanged and
keeps the labeled samples as a DataFrame; only the net's input is float32.
"""

import numpy as np
import torch
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skal import UNLABELED, ActiveLearner, ActiveNet
from skal.models import MLP
from skal.selectors import Entropy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N = 160


def _frame(n=N, seed=0):
    rng = np.random.default_rng(seed)
    size = rng.normal(size=n)
    region = rng.choice(["north", "south", "east", "west"], size=n)
    frame = pd.DataFrame({
        "size": size,
        "age": rng.normal(size=n),
        "region": region,
        "kind": pd.Categorical(rng.choice(["a", "b"], size=n)),
        "member": rng.random(n) > 0.5,
    })
    frame.loc[3, "age"] = np.nan  # a missing value the Pipeline's imputer fills
    y = ((size > 0) ^ (region == "north")).astype(np.int64)
    return frame, y


def _pipeline(**net):
    columns = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["size", "age"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["region", "kind", "member"]),
    ])
    params = dict(module__hidden_sizes=(8,), max_epochs=3, batch_size=16, lr=0.1, verbose=0)
    return make_pipeline(columns, ActiveNet(MLP, **{**params, **net}))


def _learner(**params):
    return ActiveLearner(_pipeline(), Entropy(), random_state=0, **params)


def test_a_dataframe_with_strings_trains_queries_and_teaches_and_stays_a_dataframe():
    frame, y = _frame()
    learner = _learner().fit(frame[:40], y[:40])
    assert list(learner.feature_names_in_) == list(frame.columns) and learner.n_features_in_ == 5
    idx = learner.query(frame[40:], 5)
    learner.teach(frame[40:].iloc[idx], y[40:][idx])
    labeled = learner.X_labeled_
    assert isinstance(labeled, pd.DataFrame) and list(labeled.columns) == list(frame.columns)
    assert dict(labeled.dtypes) == dict(frame.dtypes)  # categorical, bool, object kept
    pd.testing.assert_frame_equal(labeled, pd.concat([frame[:40], frame[40:].iloc[idx]], ignore_index=True))
    proba = learner.predict_proba(frame)
    assert proba.shape == (N, 2) and np.allclose(proba.sum(axis=1), 1)
    # the Pipeline's own answer on the DataFrame, as the learner gives it
    np.testing.assert_allclose(proba, learner.estimator_.predict_proba(frame), rtol=1e-6)
    assert 0.0 <= learner.score(frame, y) <= 1.0


def test_the_net_sees_float32_from_the_transformers():
    frame, y = _frame()
    learner = _learner().fit(frame[:40], y[:40])
    expected = learner.estimator_[:-1].transform(frame[:40])
    net_input = learner.estimator_[-1].get_dataset(expected).X
    assert net_input.dtype == np.float32


def test_pool_bookkeeping_with_a_dataframe_pool_of_strings():
    frame, y = _frame()
    marked = np.full(N, UNLABELED)
    marked[:30] = y[:30]
    learner = _learner(unlabeled=UNLABELED).fit(frame, marked)
    rows = learner.query(frame, 10)
    assert not set(rows.tolist()) & set(range(30))
    learner.teach(frame, y[rows[:8]], rows=rows[:8]).skip(rows[8:])
    assert sorted(learner.labeled_rows_.tolist()) == sorted([*range(30), *rows[:8].tolist()])
    again = learner.query(frame, 120)  # every candidate left: 160 - 38 labeled - 2 skipped
    assert set(again.tolist()) == set(range(N)) - set(range(30)) - set(rows.tolist())
    changed = frame.copy()
    changed.loc[[5, 90], "region"] = changed.loc[[90, 5], "region"].to_numpy()
    if (changed["region"] != frame["region"]).any():
        with pytest.raises(ValueError, match="other contents"):
            learner.query(changed, 3)
    grown = pd.concat([frame, _frame(n=4, seed=1)[0]], ignore_index=True)
    assert set(learner.query(grown, 124).tolist()) >= {160, 161, 162, 163}


def test_cross_val_score_and_grid_search_take_the_dataframe():
    frame, y = _frame()
    scores = cross_val_score(_learner(), frame[:90], y[:90], cv=KFold(3))
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    search = GridSearchCV(_learner(), {"warm_start": [False, True]}, cv=KFold(2)).fit(frame[:60], y[:60])
    assert search.best_params_["warm_start"] in (False, True)
    assert isinstance(search.best_estimator_.X_labeled_, pd.DataFrame)


def test_warm_start_teach_with_a_dataframe():
    frame, y = _frame()
    learners = [_learner(warm_start=warm).fit(frame[:40], y[:40]) for warm in (True, False)]
    for learner in learners:
        learner.teach(frame[40:50], y[40:50])
    warm, cold = (learner.estimator_[-1] for learner in learners)
    # warm_start=True: the cycle trains max_epochs (3) epochs afresh, from the kept weights (so
    # the result differs from a cold start with the same seed, which trains the same epochs)
    assert learners[0].X_labeled_.shape == (50, 5) and len(warm.history) == len(cold.history) == 3
    assert any(not torch.equal(a, b) for a, b in zip(warm.module_.parameters(), cold.module_.parameters()))


def test_save_and_load_keep_the_dataframe_without_pickle(tmp_path):
    import zipfile

    frame, y = _frame()
    frame["code"] = pd.array(np.arange(N) % 3, dtype="Int64")
    frame.loc[7, "code"] = pd.NA
    frame.loc[9, "region"] = None
    marked = np.full(N, UNLABELED)
    marked[:30] = y[:30]
    learner = _learner(unlabeled=UNLABELED).fit(frame, marked)
    rows = learner.query(frame, 6)
    learner.teach(frame, y[rows[:4]], rows=rows[:4]).skip(rows[4:])
    path = tmp_path / "frame.skal"
    learner.save(path)
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
    assert {"X_labeled.2.npy", "X_labeled.2.missing.npy", "X_labeled.3.npy", "X_labeled.5.missing.npy"} <= names
    # skops names OneHotEncoder's dtype parameter (numpy.dtype): on the default trust list
    loaded = ActiveLearner.load(path)
    pd.testing.assert_frame_equal(loaded.X_labeled_, learner.X_labeled_)
    np.testing.assert_array_equal(loaded.predict_proba(frame), learner.predict_proba(frame))
    np.testing.assert_array_equal(loaded.query(frame, 10), learner.query(frame, 10))
    assert loaded.skipped_rows_.tolist() == sorted(rows[4:].tolist())
    loaded.teach(frame, y[[100]], rows=[100])  # the campaign goes on
    assert loaded.X_labeled_.shape == (learner.X_labeled_.shape[0] + 1, 6)


def test_the_dataframe_snippet_of_the_sklearn_page_runs_as_printed():
    from docs_snippets import run_section

    namespace = run_section("user_guide/sklearn.md", "DataFrames with text columns")
    labeled = namespace["learner"].X_labeled_
    houses, rows = namespace["houses"], namespace["rows"]
    pd.testing.assert_frame_equal(labeled, pd.concat([houses[:40], houses[40:].iloc[rows]], ignore_index=True))


def test_the_table_example_of_the_labeling_page_runs_as_printed():
    from docs_snippets import run_section

    namespace = run_section("user_guide/labeling.md", "A table with text columns")
    learner, rows = namespace["learner"], namespace["rows"]
    assert not set(rows.tolist()) & set(range(30))
    assert sorted(learner.labeled_rows_.tolist()) == sorted([*range(30), *rows.tolist()])


def _rewritten(source, target, change):
    import json
    import zipfile

    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            if info.filename == "learner.json":
                meta = json.loads(data)
                change(meta, new)
                data = json.dumps(meta).encode()
            new.writestr(info, data)


def test_a_tampered_dataframe_save_is_refused_naming_what_is_wrong(tmp_path):
    from skal._archive import npy_bytes

    frame, y = _frame()
    _learner().fit(frame[:40], y[:40]).save(tmp_path / "good.skal")

    def fewer_categories(meta, archive):
        meta["fitted"]["frame"]["columns"][3]["categories"] = ["a"]  # codes 0 and 1 are stored

    _rewritten(tmp_path / "good.skal", tmp_path / "codes.skal", fewer_categories)
    with pytest.raises(ValueError, match=r"not a valid skal save: learner\.json: X_labeled\.3\.npy: category codes "
                                         r"out of range"):
        ActiveLearner.load(tmp_path / "codes.skal")

    def no_frame(meta, archive):
        del meta["fitted"]["frame"]

    _rewritten(tmp_path / "good.skal", tmp_path / "orphan.skal", no_frame)
    with pytest.raises(ValueError, match=r"not a valid skal save: X_labeled\.0\.npy: no fitted\.frame in "
                                         r"learner\.json refers to this member"):
        ActiveLearner.load(tmp_path / "orphan.skal")

    def extra_column(meta, archive):
        archive.writestr("X_labeled.7.npy", npy_bytes(np.zeros(40)))

    _rewritten(tmp_path / "good.skal", tmp_path / "extra.skal", extra_column)
    with pytest.raises(ValueError, match=r"not a valid skal save: X_labeled\.7\.npy: no column of fitted\.frame "
                                         r"refers to this member"):
        ActiveLearner.load(tmp_path / "extra.skal")


def test_an_array_of_strings_is_kept_and_saved_as_such(tmp_path):
    rng = np.random.default_rng(0)
    X = np.stack([rng.choice(["red", "green", "blue"], size=80), rng.choice(["s", "m", "l"], size=80)], axis=1)
    y = (X[:, 0] == "red").astype(np.int64)
    net = ActiveNet(MLP, module__hidden_sizes=(4,), max_epochs=2, batch_size=16, lr=0.1, verbose=0)
    learner = ActiveLearner(make_pipeline(OneHotEncoder(handle_unknown="ignore"), net), random_state=0)
    learner.fit(X[:30], y[:30]).teach(X[30:35], y[30:35])
    assert learner.X_labeled_.dtype == X.dtype and np.array_equal(learner.X_labeled_, X[:35])
    learner.save(tmp_path / "strings.skal")
    loaded = ActiveLearner.load(tmp_path / "strings.skal")
    assert loaded.X_labeled_.dtype == X.dtype and np.array_equal(loaded.X_labeled_, X[:35])
    np.testing.assert_array_equal(loaded.predict_proba(X), learner.predict_proba(X))
