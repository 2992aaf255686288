"""k-center greedy, the selection step of CoreSet (METHODS.md section 5).

Pure tensor functions: every one takes tensors on any device, works on the
device of ``X`` and returns tensors there. No ``N x N`` matrix is ever built
(deepAL's full distance matrix needs ~10 GB at 50k points); distances to the
initial centers are computed in ``chunk_size x chunk_size`` tiles, and each
greedy step costs one ``O(N d)`` pass with no host synchronisation.

Distances are computed in float32, or float64 when ``X`` is float64. The fast
expansion ``|a|^2 - 2 a.b + |b|^2`` loses all precision for near-duplicate
points (its absolute error scales with ``|a|^2``), so it is only used to find
each row's nearest center; the distance to that center is then recomputed
from the difference ``a - b``, which is exact to rounding.
"""

from numbers import Integral

import torch

__all__ = ["min_distances", "kcenter_greedy"]

# torch's intra-op grain size: CPU ops on fewer elements run on one thread.
_GRAIN_SIZE = 32768


def _compute_dtype(X):
    return torch.float64 if X.dtype == torch.float64 else torch.float32


def _check_chunk_size(chunk_size):
    if not isinstance(chunk_size, Integral) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}.")


def _check_finite(name, T, chunk_size):
    # Chunked so that the check allocates no (N, d) boolean mask; one sync.
    bad = torch.zeros((), dtype=torch.bool, device=T.device)
    for start in range(0, T.shape[0], chunk_size):
        bad |= ~torch.isfinite(T[start : start + chunk_size]).all()
    if bad:
        raise ValueError(f"{name} contains NaN or infinity.")


def _distance_to_row(X, j):
    """Exact Euclidean distance of every row of X to row ``j`` (a 1-element index tensor)."""
    return _distances_to(X, X.index_select(0, j))


def _distances_to(X, row):
    """Exact Euclidean distance of every row of X to ``row`` (shape (1, d))."""
    if X.device.type == "cpu" and X.numel() < _GRAIN_SIZE:
        # cdist parallelises even tiny inputs; waking the thread pool then
        # costs ~ms per step on a busy machine, the serial form ~10 us.
        return (X - row).pow_(2).sum(dim=1).sqrt_()
    # cdist's direct kernel: exact differences and no (N, d) temporary; on CPU
    # ~10x faster than (X - row).pow(2).sum(1) at N=1e5, d=128.
    return torch.cdist(X, row, compute_mode="donot_use_mm_for_euclid_dist").squeeze(1)


def _validate(X, centers, chunk_size):
    """Check the inputs; return ``(X, centers)`` with centers on X's device in the compute dtype."""
    _check_chunk_size(chunk_size)
    X = torch.as_tensor(X)
    if X.ndim != 2:
        raise ValueError(
            f"X must be a 2-D tensor of shape (n_samples, n_features); got shape {tuple(X.shape)}."
        )
    dtype = _compute_dtype(X)
    if centers is None:
        centers = torch.empty((0, X.shape[1]), dtype=dtype, device=X.device)
    centers = torch.as_tensor(centers)
    if centers.ndim != 2 or centers.shape[1] != X.shape[1]:
        raise ValueError(
            f"centers must be a 2-D tensor of shape (n_centers, {X.shape[1]}) to match X; "
            f"got shape {tuple(centers.shape)}."
        )
    centers = centers.to(device=X.device, dtype=dtype)
    _check_finite("X", X, chunk_size)
    _check_finite("centers", centers, chunk_size)
    return X, centers


def _min_distances(X, C, chunk_size, return_nearest=False):
    """Euclidean distance of each row of X to its nearest row of C (both validated).

    With ``return_nearest``, also the index into C of that nearest row (-1
    when C is empty).
    """
    dtype = _compute_dtype(X)
    n_rows, n_centers = X.shape[0], C.shape[0]
    out = torch.full((n_rows,), float("inf"), dtype=dtype, device=X.device)
    nearest_index = torch.full((n_rows,), -1, dtype=torch.int64, device=X.device)
    if n_rows == 0 or n_centers == 0:
        return (out, nearest_index) if return_nearest else out
    # Centring shrinks |a|^2 and |b|^2, hence the expansion's error, when the
    # embeddings share a large offset (post-ReLU features).
    shift = C.mean(dim=0)
    C_shifted = C - shift
    c_sq = C_shifted.pow(2).sum(dim=1)
    # Tiles are written into buffers allocated once: a fresh 32 MB tile per
    # chunk raised the CPU's peak RSS by ~5 tiles (malloc fragmentation).
    row_block, col_block = min(chunk_size, n_rows), min(chunk_size, n_centers)
    score_buf = X.new_empty(row_block * col_block, dtype=dtype)
    rows_buf = X.new_empty((row_block, X.shape[1]), dtype=dtype)
    near_buf = X.new_empty((row_block, X.shape[1]), dtype=dtype)
    for r0 in range(0, n_rows, chunk_size):
        rows = X[r0 : r0 + chunk_size].to(dtype)
        m = rows.shape[0]
        rows_shifted = torch.sub(rows, shift, out=rows_buf[:m])
        best_val = best_idx = None
        for c0 in range(0, n_centers, chunk_size):
            cols = C_shifted[c0 : c0 + chunk_size]
            score = score_buf[: m * cols.shape[0]].view(m, cols.shape[0])
            # |c|^2 - 2 a.c: the row's own |a|^2 does not change its argmin.
            torch.addmm(c_sq[c0 : c0 + chunk_size], rows_shifted, cols.T, alpha=-2, out=score)
            # argmin + gather, not min(dim=1): the latter wakes the thread
            # pool even for tiny tiles, which costs ~10 ms on a busy CPU.
            idx = score.argmin(dim=1)
            val = score.gather(1, idx.unsqueeze(1)).squeeze(1)
            idx += c0
            if best_val is None:
                best_val, best_idx = val, idx
            else:
                better = val < best_val
                best_val = torch.where(better, val, best_val)
                best_idx = torch.where(better, idx, best_idx)
        # Unshifted values: a - c is then exact for close points (Sterbenz),
        # whereas (a - s) - (c - s) carries the rounding of the shift.
        nearest = torch.index_select(C, 0, best_idx, out=near_buf[:m])
        out[r0 : r0 + m] = nearest.sub_(rows).pow_(2).sum(dim=1).sqrt_()
        nearest_index[r0 : r0 + m] = best_idx
    return (out, nearest_index) if return_nearest else out


def min_distances(X, centers, *, chunk_size=8192):
    """Euclidean distance of every row of ``X`` to its nearest row of ``centers``.

    The nearest center is found with the matrix-product expansion
    ``|a|^2 - 2 a.b + |b|^2`` in tiles of at most ``chunk_size x chunk_size``,
    then the distance to it is recomputed from ``a - b``, so near-duplicate
    points get accurate (not rounding-noise) distances. Only when two centers
    are both within rounding of the expansion from a row can the one picked be
    the farther of the two, by at most that rounding.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
    centers : torch.Tensor of shape (n_centers, n_features)
        Moved to ``X.device``; ``n_centers`` may be 0.
    chunk_size : int, default=8192
        Rows of ``X`` and of ``centers`` per tile: memory beyond the inputs is
        ``O(chunk_size * (min(chunk_size, n_centers) + n_features) + n_centers * n_features)``.

    Returns
    -------
    torch.Tensor of shape (n_samples,)
        Distances on ``X.device``, float64 if ``X`` is float64 and float32
        otherwise; ``+inf`` everywhere when ``n_centers == 0``.

    Raises
    ------
    ValueError
        If ``X`` is not 2-D, ``centers`` does not have ``X``'s number of
        columns, either holds NaN or infinity, or ``chunk_size < 1``.

    See Also
    --------
    kcenter_greedy : Greedy selection built on these distances.

    Examples
    --------
    >>> import torch
    >>> from skal.kcenter import min_distances
    >>> X = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    >>> min_distances(X, torch.tensor([[0.0, 0.0], [6.0, 8.0]]))
    tensor([0., 5., 0.])
    """
    with torch.no_grad():
        X, centers = _validate(X, centers, chunk_size)
        return _min_distances(X, centers, chunk_size)


def kcenter_greedy(X, n, *, centers=None, chunk_size=8192, generator=None):
    """Choose ``n`` rows of ``X`` by k-center greedy (CoreSet's selection).

    Each step takes the row farthest from its nearest center, the centers
    being ``centers`` (for CoreSet, the labeled set's embeddings) plus every
    row chosen so far (Sener & Savarese 2018, Alg. 1). With no centers, the
    first row is drawn uniformly at random. Ties are broken at random but
    reproducibly: the argmax is taken over the rows in an order given by one
    random permutation drawn from ``generator`` up front.

    Time ``O(N L d + N n d)``, memory ``O((N + L) d)``, all on ``X.device``.
    The loop keeps its argmax on the device and never synchronises with the
    host; only the up-front NaN/infinity check does, once.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        Pool embeddings (penultimate-layer features, METHODS.md section 5).
    n : int
        Number of rows to choose, ``1 <= n <= n_samples``.
    centers : torch.Tensor of shape (n_centers, n_features), default=None
        Initial centers, moved to ``X.device``; ``None`` means none.
    chunk_size : int, default=8192
        Tile size for the distances to ``centers``, see :func:`min_distances`.
    generator : torch.Generator, default=None
        Source of the first pick (without centers) and of the tie-breaking
        permutation. It may live on any device: the permutation is drawn on
        the generator's device and then moved, so a CPU generator gives the
        same choices for CPU and CUDA inputs. ``None`` uses torch's global
        generator.

    Returns
    -------
    indices : torch.Tensor of shape (n,), dtype int64
        Chosen rows of ``X`` in the order chosen, all distinct.
    distances : torch.Tensor of shape (n,)
        ``distances[t]`` is the Euclidean distance of ``indices[t]`` to its
        nearest center when it was chosen (``+inf`` for a first pick made
        without centers); non-increasing. Float64 if ``X`` is float64,
        float32 otherwise.

    Raises
    ------
    ValueError
        If ``n`` is not an integer in ``[1, n_samples]``, ``X`` is not 2-D,
        ``centers`` does not have ``X``'s number of columns, either holds NaN
        or infinity, or ``chunk_size < 1``.

    See Also
    --------
    min_distances : Distance of each row to its nearest center.

    References
    ----------
    .. [1] O. Sener and S. Savarese, "Active Learning for Convolutional
       Neural Networks: A Core-Set Approach", ICLR 2018.

    Examples
    --------
    >>> import torch
    >>> from skal.kcenter import kcenter_greedy
    >>> X = torch.tensor([[0.0], [1.0], [4.0], [10.0]])
    >>> indices, distances = kcenter_greedy(X, 2, centers=torch.tensor([[0.0]]))
    >>> indices
    tensor([3, 2])
    >>> distances
    tensor([10.,  4.])
    """
    with torch.no_grad():
        X, centers = _validate(X, centers, chunk_size)
        n_samples = X.shape[0]
        if not isinstance(n, Integral) or isinstance(n, bool) or not 1 <= n <= n_samples:
            raise ValueError(f"n must be an integer in [1, n_samples={n_samples}]; got {n!r}.")
        device = X.device
        X = X.to(_compute_dtype(X))
        min_dist, nearest = _min_distances(X, centers, chunk_size, return_nearest=True)

        gen_device = generator.device if generator is not None else device
        perm = torch.randperm(n_samples, generator=generator, device=gen_device).to(device)
        # Work in permuted order: argmax returns the first maximum, i.e. a
        # random one of tied rows, without a gather per step.
        X = X.index_select(0, perm)
        min_dist = min_dist.index_select(0, perm)
        if device.type == "cpu":
            positions, distances = _greedy_pruned(X, min_dist, nearest.index_select(0, perm), centers, n)
        else:
            positions, distances = _greedy_dense(X, min_dist, n)
        return perm.index_select(0, positions), distances


def _greedy_dense(X, min_dist, n):
    """The greedy loop on an accelerator: one O(N d) pass per step, no host sync."""
    indices = torch.empty(n, dtype=torch.int64, device=X.device)
    distances = torch.empty(n, dtype=X.dtype, device=X.device)
    for t in range(n):
        j = min_dist.argmax().view(1)
        indices[t : t + 1] = j
        distances[t : t + 1] = min_dist.index_select(0, j)
        if t + 1 < n:
            torch.minimum(min_dist, _distance_to_row(X, j), out=min_dist)
        # Distances are >= 0, so a chosen row is never the argmax again.
        min_dist.index_fill_(0, j, -1.0)
    return indices, distances


def _greedy_pruned(X, min_dist, nearest, centers, n):
    """The greedy loop on a CPU, skipping rows the triangle inequality rules out.

    A row ``x`` whose nearest center ``a`` satisfies ``d(a, c) >= 2 d(x, a)``
    cannot get closer to a new center ``c``: ``d(x, c) >= d(a, c) - d(x, a)
    >= d(x, a)``. Only the other rows get a distance computation, typically a
    small fraction once there are many centers, so a step costs O(N) scalar
    work plus O(candidates d) instead of O(N d) (memory traffic, not flops,
    bounds the dense loop on a CPU). The picks are those of the dense loop.
    """
    n_centers = centers.shape[0]
    all_centers = X.new_empty((n_centers + n, X.shape[1]))
    all_centers[:n_centers] = centers
    indices = torch.empty(n, dtype=torch.int64)
    distances = torch.empty(n, dtype=X.dtype)
    # A small relative slack keeps rounding in d(a, c) from skipping a row
    # whose distance would drop by a rounding error.
    slack = 2.0 * (1.0 + 1e-5)
    for t in range(n):
        j = int(min_dist.argmax())
        indices[t] = j
        distances[t] = min_dist[j]
        if t + 1 < n:
            k = n_centers + t
            row = X[j : j + 1]
            all_centers[k] = row[0]
            if k == 0:
                candidates = torch.arange(X.shape[0])
            else:
                to_new = _distances_to(all_centers[:k], row)
                candidates = torch.nonzero(to_new.index_select(0, nearest) < slack * min_dist).squeeze(1)
            if len(candidates):
                new = _distances_to(X.index_select(0, candidates), row)
                closer = new < min_dist.index_select(0, candidates)
                rows = candidates[closer]
                min_dist.index_copy_(0, rows, new[closer])
                nearest.index_fill_(0, rows, k)
        min_dist[j] = -1.0
    return indices, distances
