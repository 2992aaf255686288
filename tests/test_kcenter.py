"""Tests of skal.kcenter against a brute-force float64 numpy k-center greedy."""

import numpy as np
import pytest
import torch

from skal.kcenter import kcenter_greedy, min_distances

# --- float64 numpy references (full distance matrices are fine here) ----------


def ref_min_distances(X, C):
    X, C = np.asarray(X, dtype=np.float64), np.asarray(C, dtype=np.float64)
    if len(C) == 0:
        return np.full(len(X), np.inf)
    return np.sqrt(((X[:, None, :] - C[None, :, :]) ** 2).sum(axis=2)).min(axis=1)


def ref_kcenter_greedy(X, n, C, first=None, return_gap=False):
    """Sener & Savarese's Alg. 1; ``first`` is the forced first pick when C is empty.

    With ``return_gap``, also return the smallest relative gap between the
    largest and second-largest min-distance over the steps that took an argmax
    (inf when there were none): a tiny gap means a tie in the data.
    """
    X = np.asarray(X, dtype=np.float64)
    md = ref_min_distances(X, C)
    picks, dists, gap = [], [], np.inf
    for t in range(n):
        j = first if (t == 0 and len(C) == 0) else int(np.argmax(md))
        if j != first and len(md) > 1 and t < len(md) - 1:
            top2 = np.sort(md)[-2:]
            gap = min(gap, (top2[1] - top2[0]) / max(top2[1], 1e-300))
        picks.append(j)
        dists.append(md[j])
        md = np.minimum(md, np.sqrt(((X - X[j]) ** 2).sum(axis=1)))
        md[j] = -1.0
    if return_gap:
        return np.array(picks), np.array(dists), gap
    return np.array(picks), np.array(dists)


def _data(n_rows, d, n_centers, seed, dtype=torch.float32):
    """Continuous random pool and centers (no ties), as stored in ``dtype``."""
    g = _gen(seed)
    X = torch.randn(n_rows, d, generator=g, dtype=torch.float64).to(dtype)
    C = torch.randn(n_centers, d, generator=g, dtype=torch.float64).to(dtype)
    return X, C


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _np(t):
    return t.detach().cpu().to(torch.float64).numpy()


CASES = [
    (n_rows, d, n_centers)
    for n_rows in (1, 7, 50, 300)
    for d in (1, 3, 16)
    for n_centers in (0, 1, 10)
]


def _budgets(n_rows):
    return sorted({1, max(1, n_rows // 3), n_rows})


# --- kcenter_greedy against the reference ---------------------------------------


@pytest.mark.parametrize("n_rows, d, n_centers", CASES)
def test_kcenter_greedy_matches_reference(n_rows, d, n_centers):
    for n in _budgets(n_rows):
        # float32 data lie on a grid, so in 1-D two gaps between neighbours are
        # sometimes exactly equal: a genuine tie that either side may break
        # its own way. Redraw until the reference meets no (near-)tie.
        for attempt in range(20):
            seed = n_rows * 100 + d * 10 + n_centers + 1000 * attempt
            X, C = _data(n_rows, d, n_centers, seed=seed)
            idx, dist = kcenter_greedy(X, n, centers=C, generator=_gen(0))
            first = int(idx[0]) if n_centers == 0 else None
            ref_idx, ref_dist, gap = ref_kcenter_greedy(
                _np(X), n, _np(C), first=first, return_gap=True
            )
            if gap > 2e-6:  # float32 distances are good to ~5e-7 relative
                break
        else:
            pytest.fail("no tie-free data in 20 draws")
        assert idx.dtype == torch.int64 and idx.shape == (n,)
        assert dist.dtype == torch.float32 and dist.shape == (n,)
        np.testing.assert_array_equal(idx.numpy(), ref_idx)
        np.testing.assert_allclose(dist.numpy(), ref_dist, rtol=1e-5, atol=0)


def test_kcenter_greedy_float64_and_centers_none():
    X, _ = _data(40, 5, 0, seed=3, dtype=torch.float64)
    idx, dist = kcenter_greedy(X, 40, generator=_gen(1))
    assert dist.dtype == torch.float64
    assert dist[0] == np.inf
    ref_idx, ref_dist = ref_kcenter_greedy(_np(X), 40, np.empty((0, 5)), first=int(idx[0]))
    np.testing.assert_array_equal(idx.numpy(), ref_idx)
    np.testing.assert_allclose(dist.numpy(), ref_dist, rtol=1e-12)
    # Picking all rows yields a permutation and non-increasing distances.
    assert sorted(idx.tolist()) == list(range(40))
    assert np.all(np.diff(dist.numpy()[1:]) <= 0)


def test_kcenter_greedy_near_duplicates_with_large_offset():
    # |a|^2 ~ 1.6e5 makes the float32 expansion's error ~0.02 in squared
    # distance, far above the 1e-6 true squared distances: only distances
    # taken from differences pass.
    g = _gen(5)
    base = 100.0 + torch.randn(20, 16, generator=g, dtype=torch.float64)
    C = base[:10]
    X = torch.cat([base[10:], C + 1e-3 * torch.randn(10, 16, generator=g, dtype=torch.float64)])
    X32, C32 = X.float(), C.float()
    idx, dist = kcenter_greedy(X32, 20, centers=C32, generator=_gen(0))
    ref_idx, ref_dist = ref_kcenter_greedy(_np(X32), 20, _np(C32))
    np.testing.assert_array_equal(idx.numpy(), ref_idx)
    np.testing.assert_allclose(dist.numpy(), ref_dist, rtol=1e-4)
    np.testing.assert_allclose(
        min_distances(X32, C32).numpy(), ref_min_distances(_np(X32), _np(C32)), rtol=1e-4
    )


@pytest.mark.parametrize("n_centers", [1, 10])
def test_kcenter_greedy_chunked_equals_unchunked(n_centers):
    X, C = _data(50, 3, n_centers, seed=11)
    results = [
        kcenter_greedy(X, 30, centers=C, chunk_size=chunk, generator=_gen(2))
        for chunk in (1, 3, 8192)
    ]
    for idx, dist in results[1:]:
        np.testing.assert_array_equal(idx.numpy(), results[0][0].numpy())
        np.testing.assert_allclose(dist.numpy(), results[0][1].numpy(), rtol=1e-6)


# --- min_distances -----------------------------------------------------------------


@pytest.mark.parametrize("n_rows, d, n_centers", [(1, 1, 1), (7, 3, 10), (300, 16, 10), (50, 3, 1)])
@pytest.mark.parametrize("chunk_size", [1, 3, 8192])
def test_min_distances_matches_reference(n_rows, d, n_centers, chunk_size):
    X, C = _data(n_rows, d, n_centers, seed=n_rows + d + n_centers)
    got = min_distances(X, C, chunk_size=chunk_size)
    assert got.shape == (n_rows,) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), ref_min_distances(_np(X), _np(C)), rtol=1e-5)


def test_min_distances_float64_exact_for_members():
    X, C = _data(30, 4, 5, seed=9, dtype=torch.float64)
    X[3], X[17] = C[2], C[4]
    got = min_distances(X, C, chunk_size=4)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref_min_distances(_np(X), _np(C)), rtol=1e-12)
    assert got[3] == 0.0 and got[17] == 0.0


def test_empty_pool():
    assert min_distances(torch.zeros(0, 3), torch.ones(2, 3)).shape == (0,)
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, n_samples=0\]"):
        kcenter_greedy(torch.zeros(0, 3), 1)


def test_min_distances_without_centers_is_inf():
    X, C = _data(6, 3, 0, seed=0)
    got = min_distances(X, C)
    assert got.shape == (6,)
    assert torch.isinf(got).all() and (got > 0).all()


# --- ties ----------------------------------------------------------------------------


def test_ties_duplicate_rows_cover_every_cluster_first():
    g = _gen(0)
    points = torch.randn(5, 3, generator=g) * 10
    X = points.repeat_interleave(8, dim=0)  # 5 distinct points, 8 copies each
    idx, dist = kcenter_greedy(X, 40, generator=_gen(4))
    assert sorted(idx.tolist()) == list(range(40))
    # The first 5 picks are one copy of each distinct point, then distance 0.
    assert sorted((idx[:5] // 8).tolist()) == [0, 1, 2, 3, 4]
    assert (dist[5:] == 0).all() and (dist[1:5] > 0).all()


def test_ties_identical_points_seeded_and_random():
    X = torch.ones(12, 4)
    picks = []
    for seed in range(5):
        a, da = kcenter_greedy(X, 6, generator=_gen(seed))
        b, _ = kcenter_greedy(X, 6, generator=_gen(seed))
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert len(set(a.tolist())) == 6
        assert da[0] == np.inf and (da[1:] == 0).all()
        picks.append(tuple(a.tolist()))
    assert len(set(picks)) >= 2


def test_ties_with_centers_equal_to_every_row():
    X = torch.zeros(9, 2)
    idx, dist = kcenter_greedy(X, 9, centers=torch.zeros(3, 2), generator=_gen(0))
    assert sorted(idx.tolist()) == list(range(9))
    assert (dist == 0).all()
    firsts = {int(kcenter_greedy(X, 1, centers=X[:1], generator=_gen(s))[0][0]) for s in range(8)}
    assert len(firsts) >= 2


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, -1, 8, 2.5, True])
def test_bad_n(n):
    X, _ = _data(7, 3, 0, seed=0)
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, n_samples=7\]"):
        kcenter_greedy(X, n)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4), ()])
def test_bad_X_rank(shape):
    with pytest.raises(ValueError, match=r"X must be a 2-D tensor"):
        kcenter_greedy(torch.zeros(shape), 1)
    with pytest.raises(ValueError, match=r"X must be a 2-D tensor"):
        min_distances(torch.zeros(shape), torch.zeros(1, 3))


@pytest.mark.parametrize("centers", [torch.zeros(4, 2), torch.zeros(3), torch.zeros(1, 3, 1)])
def test_bad_centers_dimension(centers):
    X, _ = _data(7, 3, 0, seed=0)
    with pytest.raises(ValueError, match=r"centers must be a 2-D tensor of shape \(n_centers, 3\)"):
        kcenter_greedy(X, 2, centers=centers)
    with pytest.raises(ValueError, match=r"centers must be a 2-D tensor of shape \(n_centers, 3\)"):
        min_distances(X, centers)


def test_bad_chunk_size_and_non_finite():
    X, C = _data(7, 3, 2, seed=0)
    with pytest.raises(ValueError, match=r"chunk_size must be a positive integer"):
        kcenter_greedy(X, 2, chunk_size=0)
    X[4, 1] = float("nan")
    with pytest.raises(ValueError, match=r"X contains NaN or infinity"):
        kcenter_greedy(X, 2, centers=C)
    C[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"centers contains NaN or infinity"):
        min_distances(torch.zeros(3, 3), C)


# --- devices ---------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("n_centers", [0, 10])
def test_cuda_matches_cpu(n_centers):
    X, C = _data(2000, 16, n_centers, seed=7)
    cpu_idx, cpu_dist = kcenter_greedy(X, 100, centers=C, chunk_size=512, generator=_gen(3))
    idx, dist = kcenter_greedy(X.cuda(), 100, centers=C.cuda(), chunk_size=512, generator=_gen(3))
    assert idx.device.type == "cuda" and dist.device.type == "cuda"
    np.testing.assert_array_equal(idx.cpu().numpy(), cpu_idx.numpy())
    np.testing.assert_allclose(dist.cpu().numpy(), cpu_dist.numpy(), rtol=1e-5)
    got = min_distances(X.cuda(), C.cuda())
    np.testing.assert_allclose(got.cpu().numpy(), ref_min_distances(_np(X), _np(C)), rtol=1e-5)


@pytest.mark.parametrize("offset, n_centers", [(0.0, 0), (0.0, 20), (50.0, 20), (3.0, 5)])
def test_cpu_bfloat16_filtered_loop_equals_the_dense_loop(offset, n_centers):
    # The CPU path screens rows with a bfloat16 bound; the accelerator path
    # updates every row. Both must pick the same rows with the same distances,
    # also for far-from-origin embeddings (post-ReLU features) and near-duplicates.
    from skal.kcenter import _greedy_dense, _greedy_filtered, _min_distances

    g = torch.Generator().manual_seed(7)
    X = torch.randn(400, 16, generator=g) + offset
    X[200:210] = X[100:110] + 1e-4 * torch.randn(10, 16, generator=g)  # near-duplicates
    centers = torch.randn(n_centers, 16, generator=g) + offset
    perm = torch.randperm(400, generator=g)
    start = _min_distances(X, centers, 8192).index_select(0, perm)
    dense = _greedy_dense(X, perm, start.clone(), 150)
    filtered = _greedy_filtered(X, perm, start.clone(), 150)
    torch.testing.assert_close(filtered[0], dense[0], rtol=0, atol=0)
    torch.testing.assert_close(filtered[1], dense[1], rtol=1e-6, atol=1e-6)
