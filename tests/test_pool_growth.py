"""Pools that grow, fingerprints every row counts in, bad rows that can be skipped (issue 21, points 2-4)."""

import re

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from skal import UNLABELED, ActiveLearner, ActiveNet
from skal._fingerprint import BLOCK, compare, fingerprint
from skal.models import MLP
from skal.selectors import Entropy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64)


def _learner():
    net = ActiveNet(MLP, module__hidden_sizes=(8,), max_epochs=2, batch_size=16, lr=0.1, verbose=0)
    return ActiveLearner(net, Entropy(), random_state=0, unlabeled=UNLABELED)


def _marked(y, labeled):
    out = np.full(len(y), UNLABELED)
    out[labeled] = y[labeled]
    return out


def _campaign(X, y):
    learner = _learner().fit(X, _marked(y, np.arange(20)))
    return learner.teach(X, y[[40, 41]], rows=[40, 41]).skip([50, 51])


# --- growth ---------------------------------------------------------------------------------


def test_rows_appended_to_the_pool_are_new_unlabeled_rows_and_labeled_rows_stay_out():
    X, y = _data()
    learner = _campaign(X[:250], y[:250])
    grown = np.concatenate([X[:250], X[250:255]])  # a folder gained 5 files
    idx = learner.query(grown, 231)  # every candidate: 250 - 22 labeled - 2 skipped + 5 new
    done = set(range(20)) | {40, 41, 50, 51}
    assert set(idx.tolist()) == set(range(255)) - done
    assert learner.unlabeled_rows_.tolist() == sorted(set(range(255)) - done)
    learner.teach(grown, y[[252]], rows=[252])  # a new row is labeled by its row
    assert 252 in learner.labeled_rows_.tolist() and learner.X_labeled_.shape[0] == 23
    np.testing.assert_array_equal(learner.X_labeled_[-1], X[252])


def test_extend_pool_lets_a_new_row_be_skipped_and_survives_a_save(tmp_path):
    X, y = _data()
    learner = _campaign(X[:250], y[:250])
    with pytest.raises(ValueError, match=r"^rows must be in \[0, 250\)"):
        learner.skip([260])
    learner.extend_pool(X).skip([260])
    assert learner.skipped_rows_.tolist() == [50, 51, 260]
    learner.save(tmp_path / "grown.skal")
    loaded = ActiveLearner.load(tmp_path / "grown.skal")
    np.testing.assert_array_equal(loaded.query(X, 10), learner.query(X, 10))
    assert loaded.skipped_rows_.tolist() == [50, 51, 260]
    with pytest.raises(ValueError, match=r"^X_pool has 250 rows, fewer than the 300"):
        loaded.query(X[:250], 3)


def test_a_grown_pool_whose_old_rows_changed_is_refused():
    X, y = _data()
    learner = _campaign(X[:250], y[:250])
    grown = X.copy()
    grown[[3, 200]] = grown[[200, 3]]
    with pytest.raises(ValueError, match=r"^X_pool is not the learner's pool with rows appended: its rows "
                                         r"0\.\.249 hold other contents"):
        learner.query(grown, 3)
    assert learner.unlabeled_rows_.tolist()[-1] == 249  # nothing changed


# --- the fingerprint ------------------------------------------------------------------------


def test_a_swap_of_a_labeled_and_an_unlabeled_row_outside_any_sample_of_rows_is_refused():
    X, y = _data()
    learner = _campaign(X, y)
    swapped = X.copy()
    swapped[[41, 137]] = swapped[[137, 41]]  # 41 is labeled; neither is among 64 evenly spread rows
    with pytest.raises(ValueError, match="other contents"):
        learner.query(swapped, 3)


def test_a_pool_with_most_rows_replaced_is_refused():
    X, y = _data()
    learner = _campaign(X, y)
    replaced = X.copy()
    rows = np.setdiff1d(np.arange(300), np.linspace(0, 299, 64).round().astype(int))
    replaced[rows] = _data(seed=1)[0][rows]  # 236 rows, the ones a 64-row sample skips
    with pytest.raises(ValueError, match="other contents"):
        learner.query(replaced, 3)


def test_the_fingerprint_names_the_block_that_differs_and_sees_growth_across_a_block_boundary():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2 * BLOCK + 10, 3)).astype(np.float32)
    stored = fingerprint(X[:BLOCK + 5])
    assert compare(X[:BLOCK + 5], stored) is None
    assert compare(X, stored) == fingerprint(X)  # grown in one pass, across the block boundary
    changed = X.copy()
    changed[BLOCK + 2, 1] += 1.0
    with pytest.raises(ValueError, match=rf"its rows {BLOCK}\.\.{BLOCK + 4} hold other contents"):
        compare(changed, stored)


class _Augmented(Dataset):
    """Items with noise added on read, drawn from torch's random generator (as torchvision does)."""

    def __init__(self, X):
        self.X = torch.from_numpy(X)

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self.X[i] + 0.01 * torch.randn(self.X.shape[1])


class _NumpyAugmented(_Augmented):
    def __getitem__(self, i):
        return self.X[i].numpy() + np.random.normal(size=self.X.shape[1]).astype(np.float32)


def test_a_dataset_augmented_on_read_is_its_own_pool_and_another_dataset_is_refused():
    X, y = _data()
    pool = _Augmented(X)
    learner = _learner().fit(pool, _marked(y, np.arange(20)))
    first = learner.query(pool, 5)
    assert not set(first.tolist()) & set(range(20))
    learner.teach(pool, y[first], rows=first)  # recognised on every call
    assert set(first.tolist()) <= set(learner.labeled_rows_.tolist())
    second = learner.query(pool, 5)
    assert len(second) == 5 and not set(second.tolist()) & (set(first.tolist()) | set(range(20)))
    with pytest.raises(ValueError, match="other contents"):
        learner.query(_Augmented(_data(seed=1)[0]), 5)


def test_a_dataset_random_from_elsewhere_warns_and_is_recognised_by_its_length():
    X, y = _data()
    with pytest.warns(UserWarning, match="differ from one read to the next"):
        learner = _learner().fit(_NumpyAugmented(X), _marked(y, np.arange(20)))
    assert not set(learner.query(_NumpyAugmented(X), 5).tolist()) & set(range(20))


# --- bad rows ------------------------------------------------------------------------------


def _with_nan(X, row):
    X = X.copy()
    X[row, 2] = np.nan
    return X


def test_a_non_finite_pool_row_is_named_and_skip_unblocks_it():
    X, y = _data()
    X = _with_nan(X, 100)
    learner = _learner().fit(X, _marked(y, np.arange(20)))
    message = re.escape("X_pool contains NaN or infinity in row 100; skip them (learner.skip(rows)) or pass "
                        "non_finite='leave_out'.")
    with pytest.raises(ValueError, match=f"^{message}$"):
        learner.query(X, 3)
    left_out = learner.query(X, 279, non_finite="leave_out")  # every candidate but row 100
    assert 100 not in left_out.tolist() and len(set(left_out.tolist())) == 279
    learner.skip([100])
    assert 100 not in learner.query(X, 279).tolist()
    with pytest.raises(ValueError, match=r"^X contains NaN or infinity in row 100\.$"):
        learner.teach(X, [0], rows=[100])


def test_a_non_finite_dataset_row_is_named_by_its_pool_row_in_query_and_teach():
    X, y = _data()
    pool = TensorDataset(torch.from_numpy(_with_nan(X, 100)))
    learner = _learner().fit(pool, _marked(y, np.arange(20)))
    with pytest.raises(ValueError, match=r"^X_pool contains NaN or infinity in row 100\.$"):
        learner.query(pool, 3)
    with pytest.raises(ValueError, match=r"^X contains NaN or infinity in row 100\.$"):
        learner.teach(pool, [0, 1], rows=[30, 100])
    assert 100 not in learner.query(pool, 279, non_finite="leave_out").tolist()
    learner.skip([100])
    assert len(learner.query(pool, 279)) == 279


def test_a_non_finite_row_at_fit_is_named_by_its_row_and_not_by_a_probe():
    X, y = _data()
    with pytest.raises(ValueError, match=r"^X contains NaN or infinity in row 7\.$"):
        _learner().fit(_with_nan(X, 7), _marked(y, np.arange(20)))
    with pytest.raises(ValueError, match=r"^X contains NaN or infinity in row 7\.$"):
        _learner().set_params(unlabeled=None).fit(_with_nan(X, 7)[:20], y[:20])
    with pytest.raises(ValueError, match=r"^rows must be in \[0, 300\)"):
        _learner().fit(X, _marked(y, np.arange(20))).skip([300])


def test_the_growing_folder_recipe_of_the_labeling_page_runs_as_printed():
    from docs_snippets import run_section

    namespace = run_section("user_guide/labeling.md", "A pool that grows")
    learner, pool = namespace["learner"], namespace["pool"]
    assert pool.files[200:] == [f"a_{k:03d}.npy" for k in range(5)]  # the new files went last
    assert set(learner.unlabeled_rows_.tolist()) >= set(range(200, 205))


def test_a_save_of_an_earlier_skal_keeps_recognising_its_unchanged_pool(tmp_path):
    import json
    import zipfile

    from skal._bookkeeping import fingerprint as fingerprint_of_64_rows

    X, y = _data()
    learner = _campaign(X, y)
    learner.save(tmp_path / "new.skal")
    with zipfile.ZipFile(tmp_path / "new.skal") as source, zipfile.ZipFile(tmp_path / "old.skal", "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "learner.json":  # the pool as skal <= 0.2 recorded it
                meta = json.loads(data)
                meta["fitted"]["pool"]["fingerprint"] = fingerprint_of_64_rows(X)
                data = json.dumps(meta).encode()
            target.writestr(info, data)
    loaded = ActiveLearner.load(tmp_path / "old.skal")
    np.testing.assert_array_equal(loaded.query(X, 10), learner.query(X, 10))
    with pytest.raises(ValueError, match=r"^X_pool is not the learner's pool of 300 rows \(a save of an "
                                         r"earlier skal"):
        loaded.query(np.concatenate([X, X[:5]]), 3)
