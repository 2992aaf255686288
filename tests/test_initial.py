"""Tests of skal.initial.initial_batch against brute-force numpy references."""

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from torch.utils.data import Dataset, TensorDataset

import skal.initial
from skal.initial import initial_batch

STRATEGIES = ["kmeans", "kcenter", "random", "typiclust"]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


# --- float64 numpy references (full distance matrices are fine here) ----------


def ref_distances(F, C):
    F, C = np.asarray(F, dtype=np.float64), np.asarray(C, dtype=np.float64)
    return np.sqrt(((F[:, None, :] - C[None, :, :]) ** 2).sum(axis=2))


def ref_kcenter(F, n, first):
    """Sener & Savarese's Alg. 1 from an empty labeled set, first pick forced."""
    F = np.asarray(F, dtype=np.float64)
    md = np.full(len(F), np.inf)
    picks = []
    for t in range(n):
        j = first if t == 0 else int(np.argmax(md))
        picks.append(j)
        md = np.minimum(md, np.sqrt(((F - F[j]) ** 2).sum(axis=1)))
        md[j] = -1.0
    return np.array(picks)


def ref_nearest_distinct(F, C):
    """Per centre the nearest row; centres by (distance to it, index); a taken row passes on."""
    D = ref_distances(F, C)
    nearest = D.min(axis=0)
    chosen, taken = np.empty(len(C), dtype=np.int64), []
    for j in np.lexsort((np.arange(len(C)), nearest)):
        d = D[:, j].copy()
        d[taken] = np.inf
        chosen[j] = int(np.argmin(d))  # first minimum: the lowest row among equals
        taken.append(chosen[j])
    return chosen


def _pool(n_rows, d, seed, dtype=np.float64):
    return np.random.default_rng(seed).normal(size=(n_rows, d)).astype(dtype)


def _blobs(seed, n_blobs=4, per_blob=25, d=3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=20.0, size=(n_blobs, d))
    labels = np.repeat(np.arange(n_blobs), per_blob)
    X = centres[labels] + rng.normal(scale=0.5, size=(len(labels), d))
    return X, labels


@pytest.fixture
def recorded_centres(monkeypatch):
    """Record the centres that the real k-means hands to initial_batch."""
    calls = []
    real = skal.initial.kmeans

    def recording(X, k, **kwargs):
        labels, centres = real(X, k, **kwargs)
        calls.append((X.clone(), centres.clone()))
        return labels, centres

    monkeypatch.setattr(skal.initial, "kmeans", recording)
    return calls


def _fixed_centres(monkeypatch, centres):
    """Make initial_batch's k-means return ``centres`` (to script collisions)."""
    def fixed(X, k, **kwargs):
        assert k == len(centres)
        C = torch.as_tensor(np.asarray(centres), dtype=X.dtype, device=X.device)
        return torch.zeros(len(X), dtype=torch.int64, device=X.device), C

    monkeypatch.setattr(skal.initial, "kmeans", fixed)


# --- random ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 7, 12345])
@pytest.mark.parametrize("n", [1, 5, 40])
def test_random_is_default_rng_choice(seed, n):
    X = _pool(40, 3, 0)
    expected = np.random.default_rng(seed).choice(40, n, replace=False)
    got = initial_batch(X, n, strategy="random", random_state=seed)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    # a Generator is used as given: the draw of its next choice
    np.testing.assert_array_equal(
        initial_batch(X, n, strategy="random", random_state=np.random.default_rng(seed)), expected)


def test_random_does_not_compute_features():
    def embedding(batch):
        raise AssertionError("random must not call the embedding")

    got = initial_batch(_pool(10, 2, 0), 3, strategy="random", embedding=embedding, random_state=0)
    np.testing.assert_array_equal(got, np.random.default_rng(0).choice(10, 3, replace=False))


# --- k-center greedy -----------------------------------------------------------------


@pytest.mark.parametrize("n_rows, d", [(1, 2), (7, 1), (50, 3), (300, 16)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kcenter_matches_brute_force(n_rows, d, dtype):
    if dtype == np.float32 and d == 1:
        pytest.skip("1-D float32 data on a grid have exactly tied gaps")
    X = _pool(n_rows, d, seed=n_rows + d, dtype=dtype)
    for n in sorted({1, max(1, n_rows // 3), n_rows}):
        for seed in (0, 1):
            got = initial_batch(X, n, strategy="kcenter", random_state=seed)
            np.testing.assert_array_equal(got, ref_kcenter(X, n, first=got[0]))


def test_kcenter_first_pick_is_seeded_and_uniform():
    X = _pool(20, 2, 0)
    firsts = [int(initial_batch(X, 1, strategy="kcenter", random_state=s)[0]) for s in range(400)]
    assert firsts == [int(initial_batch(X, 1, strategy="kcenter", random_state=s)[0])
                      for s in range(400)]
    counts = np.bincount(firsts, minlength=20)
    # 400 uniform draws over 20 rows: each count ~ Binomial(400, 0.05), sd 4.4
    assert counts.min() >= 5 and counts.max() <= 40, counts


# --- k-means: nearest sample to each centre --------------------------------------------


@pytest.mark.parametrize("n_rows, d, n", [(30, 2, 3), (200, 5, 20), (500, 16, 50), (64, 3, 64)])
def test_kmeans_nearest_samples_match_numpy_argmin(recorded_centres, n_rows, d, n):
    X = _pool(n_rows, d, seed=n_rows)
    got = initial_batch(X, n, strategy="kmeans", random_state=3, batch_size=37)
    (features, centres), = recorded_centres
    np.testing.assert_array_equal(features.numpy(), X)  # the inputs themselves, float64
    expected = ref_nearest_distinct(X, centres.numpy())
    np.testing.assert_array_equal(got, expected)
    assert len(set(got.tolist())) == n


def test_kmeans_collisions_resolved_by_distance_then_centre(monkeypatch):
    X = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [10.0, 0.0]])
    # all three centres are nearest to row 0; by distance: c1 (0.1), c2 (0.2), c0 (0.4)
    centres = [[0.4, 0.0], [0.1, 0.0], [0.2, 0.0]]
    _fixed_centres(monkeypatch, centres)
    got = initial_batch(X, 3, strategy="kmeans", random_state=0)
    # c1 takes row 0; c2 takes row 1 (0.8 away); c0 takes row 2 (2.6 away)
    np.testing.assert_array_equal(got, [2, 0, 1])
    np.testing.assert_array_equal(got, ref_nearest_distinct(X, np.array(centres)))


def test_kmeans_ties_go_to_the_lower_centre_and_lower_row(monkeypatch):
    X = np.array([[5.0, 5.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    _fixed_centres(monkeypatch, [[0.0, 0.0], [0.0, 0.0], [5.0, 5.0]])
    np.testing.assert_array_equal(initial_batch(X, 3, strategy="kmeans"), [1, 2, 0])


def test_kmeans_collision_on_a_large_pool_is_found_across_chunks(monkeypatch):
    X = _pool(5000, 4, 1)
    X[4500] = X[100]  # duplicates 4,400 rows apart, in different distance chunks
    # two centres on row 4321: the one farther from it takes its next nearest row;
    # a centre on the duplicated row takes the lower of the two
    centres = np.stack([X[4321], X[4321] + 1e-3, X[17], X[4500]])
    _fixed_centres(monkeypatch, centres)
    got = initial_batch(X, 4, strategy="kmeans", batch_size=999)
    np.testing.assert_array_equal(got, ref_nearest_distinct(X, centres))
    assert got[0] == 4321 and got[2] == 17 and got[3] == 100 and got[1] not in (4321, 17, 100)


# --- properties: any data, duplicates included ---------------------------------------


@settings(max_examples=40, deadline=None)
@given(n_rows=st.integers(1, 30), n_distinct=st.integers(1, 6), d=st.integers(1, 3),
       frac=st.floats(0.01, 1.0), seed=st.integers(0, 2**16), strategy=st.sampled_from(STRATEGIES))
def test_always_n_distinct_rows(n_rows, n_distinct, d, frac, seed, strategy):
    rng = np.random.default_rng(seed)
    values = rng.integers(-3, 4, size=(n_distinct, d)).astype(np.float64)
    X = values[rng.integers(0, n_distinct, size=n_rows)]  # few distinct rows, many duplicates
    n = max(1, int(frac * n_rows))
    got = initial_batch(X, n, strategy=strategy, random_state=seed, batch_size=4)
    assert got.dtype == np.int64 and got.shape == (n,)
    assert len(set(got.tolist())) == n and got.min() >= 0 and got.max() < n_rows


@pytest.mark.parametrize("strategy", ["kmeans", "kcenter"])
def test_well_separated_blobs_get_one_pick_each(strategy):
    X, labels = _blobs(0)
    got = initial_batch(X, 4, strategy=strategy, random_state=0)
    assert sorted(labels[got].tolist()) == [0, 1, 2, 3]


# --- reproducibility, chunking and input types ------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_seeded_runs_are_reproducible_and_seeds_differ(strategy):
    X = _pool(200, 4, 0)
    runs = {tuple(initial_batch(X, 10, strategy=strategy, random_state=s)) for s in range(5)}
    assert len(runs) > 1  # different seeds, different batches
    for seed in range(3):
        np.testing.assert_array_equal(initial_batch(X, 10, strategy=strategy, random_state=seed),
                                      initial_batch(X, 10, strategy=strategy, random_state=seed))
    a = initial_batch(X, 10, strategy=strategy, random_state=np.random.RandomState(4))
    b = initial_batch(X, 10, strategy=strategy, random_state=np.random.RandomState(4))
    np.testing.assert_array_equal(a, b)


class _ItemsOnly(Dataset):
    """A Dataset yielding ``x`` alone (not ``(x, y)``), as numpy arrays."""

    def __init__(self, X):
        self.X = X

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self.X[i]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_input_type_and_chunking_gives_the_array_result(strategy, dtype):
    X = _pool(120, 3, 5, dtype=dtype)
    images = X.reshape(120, 3, 1)  # samples of shape (3, 1), flattened to 3 features
    expected = initial_batch(X, 12, strategy=strategy, random_state=1, batch_size=1000)
    inputs = {
        "chunks of 7": X,
        "tensor": torch.from_numpy(X),
        "DataFrame": pd.DataFrame(X, index=np.arange(120) * 10 + 3, columns=["a", "b", "c"]),
        "list": X.tolist() if dtype == np.float64 else X,
        "nd array": images,
        "TensorDataset (x, y)": TensorDataset(torch.from_numpy(images), torch.zeros(120)),
        "Dataset of x": _ItemsOnly(X),
    }
    for name, pool in inputs.items():
        got = initial_batch(pool, 12, strategy=strategy, random_state=1, batch_size=7)
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_integer_inputs_are_float32_features(recorded_centres):
    X = np.random.default_rng(0).integers(0, 255, size=(50, 6)).astype(np.uint8)
    initial_batch(X, 5, strategy="kmeans", random_state=0)
    (features, _), = recorded_centres
    assert features.dtype == torch.float32
    np.testing.assert_array_equal(features.numpy(), X.astype(np.float32))


# --- embeddings -------------------------------------------------------------------------


def _chunked(fn, X, batch_size):
    return np.concatenate([fn(X[s:s + batch_size]) for s in range(0, len(X), batch_size)])


@pytest.mark.parametrize("strategy", ["kmeans", "kcenter"])
def test_module_embedding_runs_in_eval_mode_and_is_restored(strategy):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.ReLU(),
                                 torch.nn.Linear(8, 3))
    module.train()
    module[3].eval()  # a submodule's own mode must survive too
    X = _pool(90, 4, 2, dtype=np.float64)  # float64 inputs reach the module as float32
    with torch.no_grad():
        module.eval()
        reference = _chunked(lambda b: module(torch.from_numpy(b).float()).numpy(), X, 16)
        module.train()
        module[3].eval()
    got = initial_batch(X, 9, strategy=strategy, embedding=module, batch_size=16, random_state=2)
    assert module.training and module[1].training and not module[3].training
    np.testing.assert_array_equal(
        got, initial_batch(reference, 9, strategy=strategy, random_state=2))


def test_function_embedding_and_feature_maps_are_flattened(recorded_centres):
    X = _pool(40, 12, 3, dtype=np.float32).reshape(40, 3, 4)
    initial_batch(X, 4, strategy="kmeans", embedding=lambda b: b[:, :2, :] * 2.0, batch_size=9)
    (features, _), = recorded_centres
    np.testing.assert_array_equal(features.numpy(), (X[:, :2, :] * 2.0).reshape(40, 8))


@pytest.mark.parametrize("strategy", ["kmeans", "kcenter"])
def test_transformer_and_pipeline_embeddings(strategy):
    X = _pool(150, 6, 4)
    for embedding in (PCA(n_components=3).fit(X), make_pipeline(StandardScaler(), PCA(2)).fit(X)):
        reference = _chunked(embedding.transform, X, 32)
        got = initial_batch(X, 10, strategy=strategy, embedding=embedding, batch_size=32,
                            random_state=0)
        np.testing.assert_array_equal(got, initial_batch(reference, 10, strategy=strategy,
                                                         random_state=0))


def test_column_transformer_gets_dataframe_rows():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"colour": rng.choice(["red", "green", "blue"], 80),
                       "size": rng.normal(size=80)})
    ct = ColumnTransformer([("onehot", OneHotEncoder(sparse_output=True), ["colour"])],
                           remainder="passthrough", sparse_threshold=1.0).fit(df)
    reference = np.concatenate([ct.transform(df.iloc[s:s + 25]).toarray() for s in range(0, 80, 25)])
    got = initial_batch(df, 6, strategy="kcenter", embedding=ct, batch_size=25, random_state=0)
    np.testing.assert_array_equal(got, initial_batch(reference, 6, strategy="kcenter",
                                                     random_state=0))
    # without an embedding, a string column is refused, naming X
    with pytest.raises(ValueError, match=r"^X: could not convert string to float"):
        initial_batch(df, 6, strategy="kcenter")


# --- errors -------------------------------------------------------------------------------


def test_n_out_of_range():
    X = _pool(10, 2, 0)
    with pytest.raises(ValueError, match=r"^n must be in \[1, len\(X\)\] = \[1, 10\]; got 11\.$"):
        initial_batch(X, 11)
    for bad in (0, -1):
        with pytest.raises(InvalidParameterError, match=r"The 'n' parameter of initial_batch must be "
                                                        r"an int in the range \[1, inf\)"):
            initial_batch(X, bad)
    with pytest.raises(InvalidParameterError, match="The 'n' parameter"):
        initial_batch(X, 2.0)


def test_bad_parameters_are_named():
    X = _pool(10, 2, 0)
    cases = {
        "strategy": dict(strategy="kmedoids"),
        "embedding": dict(embedding="pca"),
        "batch_size": dict(batch_size=0),
        "random_state": dict(random_state="seed"),
        "device": dict(device=3),
    }
    for name, kwargs in cases.items():
        with pytest.raises(InvalidParameterError, match=f"The '{name}' parameter of initial_batch"):
            initial_batch(X, 2, **kwargs)
    with pytest.raises(ValueError, match=r"^device must name a torch device, got 'gpu'"):
        initial_batch(X, 2, device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"^device='cuda' but CUDA is not available\.$"):
            initial_batch(X, 2, device="cuda")
    with pytest.raises(TypeError, match=r"^X must be an array-like"):
        initial_batch({"a": X}, 2)
    with pytest.raises(InvalidParameterError, match="The 'X' parameter"):
        initial_batch(None, 2)


@pytest.mark.parametrize("strategy", ["kmeans", "kcenter"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features(strategy, bad):
    X = _pool(30, 3, 0)
    X[17, 1] = bad
    for pool in (X, TensorDataset(torch.from_numpy(X))):
        with pytest.raises(ValueError, match=r"^X contains NaN or infinity\.$"):
            initial_batch(pool, 3, strategy=strategy, batch_size=8)
    with pytest.raises(ValueError, match=r"^The embedding's output \(check X and embedding\) "
                                         r"contains NaN or infinity\.$"):
        initial_batch(_pool(30, 3, 0), 3, strategy=strategy,
                      embedding=lambda b: torch.log(b))  # log of negative values: NaN


def test_embedding_output_of_wrong_shape():
    X = _pool(20, 3, 0)
    shapes = {"one row short": lambda b: b[:-1], "1-D": lambda b: b.sum(dim=1)}
    for name, embedding in shapes.items():
        with pytest.raises(ValueError, match=r"^embedding must return one row of features per "
                                             r"sample, shape \(8, n_features\) for a batch of 8"):
            initial_batch(X, 2, strategy="kcenter", embedding=embedding, batch_size=8)

    def changing(batch):
        return batch if batch.shape[0] == 8 else batch[:, :2]

    with pytest.raises(ValueError, match=r"^embedding returned 2 features for the samples from row "
                                         r"16 on, 3 for the first batch\.$"):
        initial_batch(X, 2, strategy="kcenter", embedding=changing, batch_size=8)
    ragged = _ItemsOnly([np.zeros(3)] * 8 + [np.zeros(2)] * 8)  # sample shape changes at row 8
    with pytest.raises(ValueError, match=r"^X has 2 features for the samples from row 8 on, 3 for "
                                         r"the first batch\.$"):
        initial_batch(ragged, 2, strategy="kcenter", batch_size=8)
    with pytest.raises(TypeError, match=r"^embedding must return a tensor or a numeric array; got "
                                        r"tuple\.$"):
        initial_batch(X, 2, strategy="kcenter", embedding=lambda b: (b, b), batch_size=8)


def test_unfitted_transformer_and_misplaced_module():
    X = _pool(20, 3, 0)
    with pytest.raises(NotFittedError, match=r"^embedding: This PCA instance is not fitted yet"):
        initial_batch(X, 2, embedding=PCA(2))
    with pytest.raises(ValueError, match=r"^embedding has parameters or buffers on meta but "
                                         r"device='cpu'"):
        initial_batch(X, 2, embedding=torch.nn.Linear(3, 2, device="meta"))


def test_a_failing_embedding_leaves_the_module_in_its_mode():
    calls = []

    class Fails(torch.nn.Module):
        def forward(self, batch):
            calls.append(self.training)
            if len(calls) == 2:
                raise RuntimeError("second batch fails")
            return batch

    module = Fails().train()
    with pytest.raises(RuntimeError, match="second batch fails"):
        initial_batch(_pool(20, 3, 0), 2, embedding=module, batch_size=8)
    assert calls == [False, False] and module.training


# --- the device -----------------------------------------------------------------------------


@cuda
def test_cuda_kcenter_chooses_the_cpu_rows():
    X = _pool(3000, 16, 0, dtype=np.float32)
    for seed in range(3):
        np.testing.assert_array_equal(
            initial_batch(X, 50, strategy="kcenter", device="cuda", random_state=seed),
            initial_batch(X, 50, strategy="kcenter", device="cpu", random_state=seed))


@cuda
def test_cuda_kmeans_is_seeded_and_matches_numpy_nearest(recorded_centres):
    X = _pool(4000, 8, 1)
    a = initial_batch(X, 40, strategy="kmeans", device="cuda", random_state=5, batch_size=500)
    b = initial_batch(X, 40, strategy="kmeans", device="cuda", random_state=5, batch_size=500)
    np.testing.assert_array_equal(a, b)
    features, centres = recorded_centres[0]
    assert features.device.type == "cuda" and centres.device.type == "cuda"
    np.testing.assert_array_equal(a, ref_nearest_distinct(X, centres.cpu().numpy()))


@cuda
def test_cuda_module_embedding():
    module = torch.nn.Linear(6, 4).cuda()
    X = _pool(500, 6, 2, dtype=np.float32)
    got = initial_batch(X, 10, strategy="kcenter", embedding=module, device="cuda", random_state=0)
    with torch.no_grad():
        reference = module(torch.from_numpy(X).cuda()).cpu().numpy()
    np.testing.assert_array_equal(got, initial_batch(reference, 10, strategy="kcenter",
                                                     random_state=0))
    with pytest.raises(ValueError, match="embedding has parameters or buffers on cuda"):
        initial_batch(X, 2, embedding=module, device="cpu")


def test_the_labeling_page_cold_start_snippets_run():
    from docs_snippets import run_section

    namespace = run_section("user_guide/labeling.md", "Cold start")
    for name in ("first", "by_pca", "by_encoder"):
        batch = namespace[name]
        assert batch.shape == (50,) and len(set(batch.tolist())) == 50
    assert namespace["encoder"].training  # left in its own (training) mode


# --- TypiClust -----------------------------------------------------------------------


def ref_typiclust(F, labels, n, k_nn=20, min_size=5):
    """Hacohen et al.'s selection, brute force in float64 with full distance matrices."""
    F = np.asarray(F, dtype=np.float64)
    labels = np.asarray(labels)
    sizes = np.bincount(labels)
    eligible = [c for c in range(len(sizes)) if sizes[c] > min_size] or [c for c in range(len(sizes)) if sizes[c]]
    taken, counts = [], np.zeros(len(sizes), dtype=int)
    for _ in range(n):
        open_ = [c for c in eligible if any(labels[i] == c and i not in taken for i in range(len(F)))]
        if not open_:
            open_ = [c for c in range(len(sizes)) if any(labels[i] == c and i not in taken for i in range(len(F)))]
        cluster = sorted(open_, key=lambda c: (counts[c], -sizes[c], c))[0]
        members = [i for i in range(len(F)) if labels[i] == cluster and i not in taken]
        k = min(k_nn, len(members) // 2)
        best, best_typ = None, -np.inf
        for i in members:
            d = sorted(np.sqrt(((F[i] - F[j]) ** 2).sum()) for j in members if j != i)
            typ = 1.0 / np.mean(d[:k]) if k else 1.0
            if typ > best_typ:
                best, best_typ = i, typ
        taken.append(best)
        counts[cluster] += 1
    return taken


@pytest.mark.parametrize("n", [1, 3, 7])
def test_typiclust_selection_matches_a_brute_force_reference(n):
    rng = np.random.default_rng(n)
    F = rng.normal(size=(90, 3))
    # clusters of sizes 40, 30, 15, 5 (the last too small to be picked)
    labels = np.repeat([0, 1, 2, 3], [40, 30, 15, 5])[rng.permutation(90)]
    got = skal.initial.typiclust_select(torch.as_tensor(F), torch.as_tensor(labels), n)
    assert got.tolist() == ref_typiclust(F, labels, n)


def test_typiclust_more_picks_than_clusters_cycles_through_them_largest_first():
    rng = np.random.default_rng(0)
    F = rng.normal(size=(30, 2))
    labels = np.repeat([0, 1], [18, 12])
    got = skal.initial.typiclust_select(torch.as_tensor(F), torch.as_tensor(labels), 5)
    assert got.tolist() == ref_typiclust(F, labels, 5)
    assert [int(labels[i]) for i in got] == [0, 1, 0, 1, 0]


def test_typiclust_initial_batch_clusters_with_seeded_kmeans_and_takes_the_typical_points():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    X = np.concatenate([c + rng.normal(scale=0.5, size=(size, 2)) for c, size in zip(centres, (60, 40, 25))])
    got = initial_batch(X, 3, strategy="typiclust", random_state=4)
    # the same k-means (same seed derivation as initial_batch), then the reference selection
    seed = int(np.random.default_rng(4).integers(2**63))
    labels, _ = skal.kmeans.kmeans(torch.as_tensor(X, dtype=torch.float64), 3,
                                   generator=torch.Generator().manual_seed(seed))
    assert got.tolist() == ref_typiclust(X, labels.numpy(), 3)
    # one per blob, largest blob first, each the densest point of its blob
    assert got[0] < 60 and 60 <= got[1] < 100 and got[2] >= 100
