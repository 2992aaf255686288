"""k-center greedy, the selection step of CoreSet (Sener and Savarese, ICLR 2018).

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

Squared norms overflow float32 once coordinates reach about ``1e17`` (a
diverging net's embeddings reach ``1e19``). Inputs that large are divided by
a power of two first, which is exact and changes no choice (k-center is
invariant to a common scale), and the distances are multiplied back, in
float64 where float32 cannot hold them.
"""

import math
from numbers import Integral

import torch

__all__ = ["min_distances", "kcenter_greedy"]

# torch's intra-op grain size: CPU ops on fewer elements run on one thread.
_GRAIN_SIZE = 32768
# rows each process offers per round trip of the sharded greedy loop: with 2 processes and
# 100 picks on random 128-d embeddings, 32 settle the picks in ~5 round trips instead of 100
_SENT_PER_PROCESS = 32


def _compute_dtype(X):
    return torch.float64 if X.dtype == torch.float64 else torch.float32


def _check_chunk_size(chunk_size):
    if not isinstance(chunk_size, Integral) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}.")


def _check_finite(name, T, chunk_size):
    """The largest ``|value|`` of ``T`` (0 if empty), after checking that all are finite.

    Chunked so that the check allocates no (N, d) boolean mask; one sync.
    """
    bad = torch.zeros((), dtype=torch.bool, device=T.device)
    top = torch.zeros((), dtype=T.dtype, device=T.device)
    for start in range(0, T.shape[0], chunk_size):
        chunk = T[start : start + chunk_size]
        bad |= ~torch.isfinite(chunk).all()
        if chunk.numel():
            top = torch.maximum(top, chunk.abs().amax())
    bad, top = torch.stack([bad.to(top.dtype), top]).tolist()  # one sync for both
    if bad:
        raise ValueError(f"{name} contains NaN or infinity.")
    return top


def _scale_for(largest, n_features, dtype):
    """A power of two to divide by so that squared distances cannot overflow ``dtype``, or 1.

    The expansion sums ``n_features`` products of (centred) coordinates up to
    ``2 * largest``; with room for a factor 64 that stays finite below
    ``sqrt(max / (64 n_features))``. Dividing by a power of two is exact.
    """
    if largest <= math.sqrt(torch.finfo(dtype).max / (64 * max(n_features, 1))):
        return 1.0
    return math.ldexp(1.0, math.frexp(largest)[1] - 1)  # largest / scale in [1, 2)


def _scaled_back(distances, scale):
    """``distances * scale``; in float64 if float32 cannot hold the result."""
    if scale == 1.0:
        return distances
    finite = distances[torch.isfinite(distances)]  # a first pick without centers is +inf
    if distances.dtype != torch.float64 and len(finite) and float(finite.max()) * scale > torch.finfo(
            distances.dtype).max:
        distances = distances.double()
    return distances * scale


def _distance_to_row(X, j):
    """Exact Euclidean distance of every row of X to row ``j`` (a 1-element index tensor)."""
    return _distances_to(X, X.index_select(0, j))


def _distances_to(X, row, numel=None):
    """Exact Euclidean distance of every row of X to ``row`` (shape (1, d)).

    ``numel`` (default ``X.numel()``) chooses the kernel; a sharded query
    passes the whole pool's count so that every process takes the kernel
    the single process takes (the two round differently in the last bit).
    """
    numel = X.numel() if numel is None else numel
    if X.device.type == "cpu" and numel < _GRAIN_SIZE:
        # cdist parallelises even tiny inputs; waking the thread pool then
        # costs ~ms per step on a busy machine, the serial form ~10 us.
        return (X - row).pow_(2).sum(dim=1).sqrt_()
    # cdist's direct kernel: exact differences and no (N, d) temporary; on CPU
    # ~10x faster than (X - row).pow(2).sum(1) at N=1e5, d=128.
    return torch.cdist(X, row, compute_mode="donot_use_mm_for_euclid_dist").squeeze(1)


def _validate(X, centers, chunk_size):
    """Check the inputs; return ``(X, centers, scale)``, centers on X's device in the compute dtype.

    When coordinates are so large that squared distances would overflow,
    ``X`` (in the compute dtype) and ``centers`` come back divided by
    ``scale``, a power of two; else ``scale`` is 1 and ``X`` is the input.
    """
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
    largest = max(_check_finite("X", X, chunk_size), _check_finite("centers", centers, chunk_size))
    scale = _scale_for(largest, X.shape[1], dtype)
    if scale != 1.0:
        X, centers = X.to(dtype) / scale, centers / scale
    return X, centers, scale


def _min_distances(X, C, chunk_size):
    """Euclidean distance of each row of X to its nearest row of C (both validated)."""
    dtype = _compute_dtype(X)
    n_rows, n_centers = X.shape[0], C.shape[0]
    out = torch.full((n_rows,), float("inf"), dtype=dtype, device=X.device)
    if n_rows == 0 or n_centers == 0:
        return out
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
    return out


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
        The points whose nearest-center distance is wanted.
    centers : torch.Tensor of shape (n_centers, n_features)
        Moved to ``X.device``; ``n_centers`` may be 0.
    chunk_size : int, default=8192
        Rows of ``X`` and of ``centers`` per tile: memory beyond the inputs is
        ``O(chunk_size * (min(chunk_size, n_centers) + n_features) + n_centers * n_features)``.

    Returns
    -------
    torch.Tensor of shape (n_samples,)
        Distances on ``X.device``, float64 if ``X`` is float64 and float32
        otherwise (float64 also when a distance exceeds float32's range);
        ``+inf`` everywhere when ``n_centers == 0``.

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
        X, centers, scale = _validate(X, centers, chunk_size)
        return _scaled_back(_min_distances(X, centers, chunk_size), scale)


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
        Pool embeddings (penultimate-layer features).
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
        float32 otherwise (float64 also when a distance exceeds float32's
        range).

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
        X, centers, scale = _validate(X, centers, chunk_size)
        n_samples = X.shape[0]
        if not isinstance(n, Integral) or isinstance(n, bool) or not 1 <= n <= n_samples:
            raise ValueError(f"n must be an integer in [1, n_samples={n_samples}]; got {n!r}.")
        device = X.device
        X = X.to(_compute_dtype(X))
        min_dist = _min_distances(X, centers, chunk_size)

        gen_device = generator.device if generator is not None else device
        perm = torch.randperm(n_samples, generator=generator, device=gen_device).to(device)
        # Ranks live in permuted order: argmax returns the first maximum, i.e.
        # a random one of tied rows. X itself is never permuted (no copy).
        min_dist = min_dist.index_select(0, perm)
        if device.type == "cpu" and X.dtype == torch.float32:
            positions, distances = _greedy_filtered(X, perm, min_dist, n, _shift(X, centers, perm))
        else:
            positions, distances = _greedy_dense(X, perm, min_dist, n)
        return perm.index_select(0, positions), _scaled_back(distances, scale)


def _greedy_dense(X, perm, min_dist, n):
    """The greedy loop on an accelerator: one O(N d) pass per step, no host sync.

    ``min_dist`` is in the order of ``perm``; returns positions in that order.
    """
    indices = torch.empty(n, dtype=torch.int64, device=X.device)
    distances = torch.empty(n, dtype=X.dtype, device=X.device)
    for t in range(n):
        position = min_dist.argmax().view(1)
        indices[t : t + 1] = position
        distances[t : t + 1] = min_dist.index_select(0, position)
        if t + 1 < n:
            to_new = _distance_to_row(X, perm.index_select(0, position))
            torch.minimum(min_dist, to_new.index_select(0, perm), out=min_dist)
        # Distances are >= 0, so a chosen row is never the argmax again.
        min_dist.index_fill_(0, position, -1.0)
    return indices, distances


def _shift(X, centers, perm):
    """The point the CPU loop centres its bfloat16 copy on: the centers' mean, else the first pick.

    Any shift keeps the screening rigorous; this one is the same for every
    process of a sharded query (the pool's mean is not: its rounding depends
    on how the rows are summed), so that the screened rows, and with them the
    distance kernel used, match a single process's.
    """
    if len(centers):
        return centers.mean(dim=0)
    return X[int(perm[0])]


def _greedy_filtered(X, perm, min_dist, n, shift=None):
    """The greedy loop on a CPU: a bfloat16 pass finds the rows a new center may reach.

    On a CPU each dense step streams all ``N d`` float32 values and is bound
    by memory bandwidth. Here each step first computes approximate squared
    distances to the new center from a bfloat16 copy of the (centred) pool,
    half the traffic, with a rigorous error bound: rounding the inputs and
    the result to bfloat16 (unit roundoff ``u = 2^-8``) perturbs a dot
    product by at most ``3u sum_i |x_i c_i| <= 3u |x| |c|``. Only rows whose
    approximate distance minus that bound falls below their current minimum
    can get closer; they alone get an exact float32 distance. The picks and
    distances are those of the dense loop. ``min_dist`` and the returned
    positions are in the order of ``perm``.
    """
    # Distances do not change under a shift; centring shrinks the norms and
    # with them the bound. The copy is built in permuted order, chunk by chunk.
    mean = X.mean(dim=0) if shift is None else shift
    low = torch.empty(X.shape, dtype=torch.bfloat16)
    norms = torch.empty(X.shape[0], dtype=X.dtype)
    for start in range(0, X.shape[0], 65536):
        centred = X.index_select(0, perm[start : start + 65536]).sub_(mean)
        low[start : start + 65536] = centred
        norms[start : start + 65536] = centred.norm(dim=1)
    squared_norms = norms.square()
    slack_factor = 2.0 * 0.0125 * norms  # 2 |x| (3u + margin); times |c| per step
    # Row x may get closer to center c iff |x|^2 + |c|^2 - 2 x.c - slack < md(x)^2,
    # i.e. 2 x.c + slack + (md(x)^2 - |x|^2) > |c|^2; `level` holds the last
    # bracket and changes only where md does, so a step is four passes over N.
    level = torch.where(min_dist > 0, min_dist.square(), 0.0).sub_(squared_norms)
    indices = torch.empty(n, dtype=torch.int64)
    distances = torch.empty(n, dtype=X.dtype)
    for t in range(n):
        j = int(min_dist.argmax())
        indices[t] = j
        distances[t] = min_dist[j]
        if t + 1 < n:
            score = torch.add(level, slack_factor, alpha=float(norms[j]))
            score.add_(torch.mv(low, low[j]), alpha=2.0)
            candidates = torch.nonzero(score > squared_norms[j]).squeeze(1)
            if len(candidates):
                center = X[int(perm[j])].unsqueeze(0)
                # the kernel chosen by the pool's size, not the candidates' count: cdist's
                # value for a row does not depend on the other rows passed with it, so a
                # sharded query (which does not know the count over all processes) takes
                # the same kernel without a round trip
                new = _distances_to(X.index_select(0, perm.index_select(0, candidates)), center,
                                    numel=X.numel())
                closer = new < min_dist.index_select(0, candidates)
                rows = candidates[closer]
                min_dist.index_copy_(0, rows, new[closer])
                level.index_copy_(0, rows, new[closer].square() - squared_norms.index_select(0, rows))
        min_dist[j] = -1.0
        level[j] = -squared_norms[j]
    return indices, distances


def kcenter_greedy_sharded(X, n, shard, *, centers=None, chunk_size=8192, generator=None):
    """:func:`kcenter_greedy` over a pool whose rows are split between processes.

    Each process passes its rows ``shard.start .. shard.stop - 1`` of the
    pool (``X``, shape ``(shard.n_local, d)``; ``n_local`` may be 0) and the
    same ``centers`` and seed; every process returns the indices (pool rows)
    and distances that :func:`kcenter_greedy` returns for the whole pool.
    Each process keeps its rows' distance to the nearest center. A round
    trip is one all-gather of each process's farthest rows with their
    embeddings, and it settles every pick that is certain from them (see
    ``_ShardedLoop.picks``): on random embeddings, 100 picks take 2 or 3
    round trips. The exact distances take the kernel of the whole pool's
    size, which every process knows, as the single process does.

    Parameters
    ----------
    X : torch.Tensor of shape (n_local, n_features)
    n : int
        ``1 <= n <= shard.n_total``.
    shard : skal.distributed.Shard
    centers, chunk_size, generator
        As for :func:`kcenter_greedy`; equal on every process.

    Returns
    -------
    indices : torch.Tensor of shape (n,), dtype int64
        Pool rows, on ``X.device``.
    distances : torch.Tensor of shape (n,)
    """
    with torch.no_grad():
        X = torch.as_tensor(X)
        n_total = shard.n_total
        largest = torch.zeros((), dtype=torch.float64)
        with shard.guard():
            _check_chunk_size(chunk_size)
            if shard.n_local == 0:
                X = X.new_empty((0, X.shape[1] if X.ndim == 2 else 0))
            if X.ndim != 2:
                raise ValueError(f"X must be a 2-D tensor of shape (n_samples, n_features); got "
                                 f"shape {tuple(X.shape)}.")
            if not isinstance(n, Integral) or isinstance(n, bool) or not 1 <= n <= n_total:
                raise ValueError(f"n must be an integer in [1, n_samples={n_total}]; got {n!r}.")
            if centers is not None:
                centers = torch.as_tensor(centers)
            if shard.n_local:
                largest = torch.tensor(_check_finite("X", X, chunk_size), dtype=torch.float64)
        widths = {w for w in shard.gather_objects(X.shape[1] if shard.n_local else None)
                  if w is not None}
        if len(widths) != 1:
            raise ValueError(f"the processes' embeddings have different widths: {sorted(widths)}.")
        d = widths.pop()
        if shard.n_local == 0:
            X = X.new_empty((0, d))
        dtype = _compute_dtype(X)
        if centers is None:
            centers = torch.empty((0, d), dtype=dtype, device=X.device)
        if centers.ndim != 2 or centers.shape[1] != d:
            raise ValueError(
                f"centers must be a 2-D tensor of shape (n_centers, {d}) to match X; "
                f"got shape {tuple(centers.shape)}."
            )
        centers = centers.to(device=X.device, dtype=dtype)  # the same on every rank
        largest = max(float(shard.all_reduce(largest, "max")),
                      _check_finite("centers", centers, chunk_size))
        scale = _scale_for(largest, d, dtype)
        if scale != 1.0:
            X, centers = X.to(dtype) / scale, centers / scale
        device = X.device
        X = X.to(dtype)
        min_dist = _min_distances(X, centers, chunk_size)
        gen_device = generator.device if generator is not None else device
        perm = torch.randperm(n_total, generator=generator, device=gen_device).to(device)
        keys = torch.empty_like(perm)
        keys[perm] = torch.arange(n_total, device=device)
        keys = keys[shard.start:shard.stop]
        local_perm = torch.argsort(keys)  # this rank's rows in the single process's order
        keys = keys.index_select(0, local_perm)
        min_dist = min_dist.index_select(0, local_perm)
        loop = _ShardedLoop(X, local_perm, keys, min_dist, shard, dtype)
        if device.type == "cpu" and dtype == torch.float32:
            if len(centers):
                shift = centers.mean(dim=0)
            else:  # the first pick, the row first in the permutation
                first = int(perm[0])
                owner = shard.owner(first)
                row = X[first - shard.start] if owner == shard.rank else X.new_zeros(d)
                shift = shard.broadcast(row, owner)
            loop.screen(shift)
        indices = torch.empty(n, dtype=torch.int64)
        distances = torch.empty(n, dtype=dtype)
        t = 0
        while t < n:
            for row, distance, owner, j, payload in loop.picks(n - t):
                indices[t], distances[t] = row, distance
                t += 1
                if t < n:
                    loop.update(payload)
                if owner == shard.rank:
                    loop.mark(j)
        return indices.to(device), _scaled_back(distances.to(device), scale)


class _ShardedLoop:
    """One process's state in :func:`kcenter_greedy_sharded`: its rows in tie-breaking order."""

    def __init__(self, X, local_perm, keys, min_dist, shard, dtype):
        self.X, self.local_perm, self.keys, self.min_dist = X, local_perm, keys, min_dist
        self.shard, self.dtype, self.screened = shard, dtype, False
        self.d = X.shape[1]

    def screen(self, shift):
        """Build the bfloat16 copy of :func:`_greedy_filtered` (same ops, this rank's rows)."""
        X, perm = self.X, self.local_perm
        self.low = torch.empty(X.shape, dtype=torch.bfloat16)
        self.norms = torch.empty(X.shape[0], dtype=X.dtype)
        for start in range(0, X.shape[0], 65536):
            centred = X.index_select(0, perm[start : start + 65536]).sub_(shift)
            self.low[start : start + 65536] = centred
            self.norms[start : start + 65536] = centred.norm(dim=1)
        self.squared_norms = self.norms.square()
        self.slack_factor = 2.0 * 0.0125 * self.norms
        md = self.min_dist
        self.level = torch.where(md > 0, md.square(), 0.0).sub_(self.squared_norms)
        self.screened = True

    def picks(self, remaining):
        """The next picks, as many as one all-gather settles: ``(row, distance, owner, j, payload)``.

        Each process sends its ``_SENT_PER_PROCESS`` farthest rows (largest distance,
        then smallest tie-breaking key, as the single process's argmax
        orders them) with what the others need of each (its embedding and,
        for the screened loop, its bfloat16 copy and norm), and the largest
        distance among its other rows. Every process then runs the greedy
        steps on the gathered rows alone, lowering their distances by each
        pick with the kernel the owners use, for as long as the next pick is
        certain: the first always (the overall farthest row is some process's
        farthest), a later one while its distance exceeds every process's
        largest unsent distance (unsent rows only get closer). ``j`` is the
        row's position on this process, -1 when another owns it.
        """
        shard, d = self.shard, self.d
        m = min(_SENT_PER_PROCESS, remaining)
        width = 3 + 2 * d + 1
        mine = torch.zeros((m + 1, width), dtype=torch.float64)
        mine[:, 0] = float("-inf")  # rows 0 .. m - 1: candidates (distance -inf: none); m: the rest
        md = self.min_dist
        if len(md):
            order = torch.sort(md, descending=True, stable=True).indices[:m + 1]
            sent = order[:m][md.index_select(0, order[:m]) >= 0]  # centers (-1) are never sent
            k = len(sent)
            mine[:k, 0], mine[:k, 1] = md.index_select(0, sent).double(), self.keys.index_select(0, sent).double()
            rows = self.local_perm.index_select(0, sent)
            mine[:k, 2] = (rows + shard.start).double()
            mine[:k, 3:3 + d] = self.X.index_select(0, rows).double()
            if self.screened:
                mine[:k, 3 + d:3 + 2 * d] = self.low.index_select(0, sent).double()
                mine[:k, 3 + 2 * d] = self.norms.index_select(0, sent).double()
            if len(order) > m:
                mine[m, 0] = float(md[order[m]])
        gathered = shard.all_gather(mine)
        unsent = gathered[:, m, 0].max()
        sent = gathered[:, :m].reshape(-1, width)
        owners = torch.arange(shard.world).repeat_interleave(m)
        sent, owners = sent[sent[:, 0] > float("-inf")], owners[sent[:, 0] > float("-inf")]
        value = sent[:, 0].to(self.dtype)
        X_sent = sent[:, 3:3 + d].to(dtype=self.dtype, device=self.X.device)
        alive = torch.ones(len(sent), dtype=torch.bool)
        out = []
        while len(out) < remaining and bool(alive.any()):
            top = value[alive].max()
            tied = torch.nonzero(alive & (value == top)).squeeze(1)
            i = int(tied[sent[tied, 1].argmin()])
            if out and not float(top) > float(unsent):
                break  # an unsent row may be as far: the next all-gather decides
            owner = int(owners[i])
            j = -1
            if owner == shard.rank:
                j = int(torch.nonzero(self.local_perm == int(sent[i, 2]) - shard.start)[0, 0])
            out.append((int(sent[i, 2]), value[i].clone(), owner, j, sent[i, 3:]))
            alive[i] = False
            if len(out) < remaining:  # the sent rows' distances after this pick, as their owners get them
                to_new = _distances_to(X_sent, X_sent[i:i + 1], numel=shard.n_total * d).to(self.dtype)
                value = torch.minimum(value, to_new.cpu())
        return out

    def update(self, payload):
        """Lower this rank's distances by a new center (its embedding, bfloat16 copy and norm)."""
        shard, d = self.shard, self.d
        center = payload[:d].to(device=self.X.device, dtype=self.dtype).unsqueeze(0)
        if not self.screened:  # the dense loop: every row, the kernel of the whole pool's size
            if len(self.min_dist):
                to_new = _distances_to(self.X, center, numel=shard.n_total * d)
                torch.minimum(self.min_dist, to_new.index_select(0, self.local_perm),
                              out=self.min_dist)
            return
        low_j = payload[d:2 * d].to(torch.bfloat16)
        norm_j = payload[2 * d].to(self.dtype)
        candidates = torch.empty(0, dtype=torch.int64)
        if len(self.min_dist):
            score = torch.add(self.level, self.slack_factor, alpha=float(norm_j))
            score.add_(torch.mv(self.low, low_j), alpha=2.0)
            candidates = torch.nonzero(score > norm_j.square()).squeeze(1)
        if len(candidates):  # the kernel of the whole pool's size, as the single process
            new = _distances_to(self.X.index_select(0, self.local_perm.index_select(0, candidates)),
                                center, numel=shard.n_total * d)
            closer = new < self.min_dist.index_select(0, candidates)
            rows = candidates[closer]
            self.min_dist.index_copy_(0, rows, new[closer])
            self.level.index_copy_(0, rows,
                                   new[closer].square() - self.squared_norms.index_select(0, rows))

    def mark(self, j):
        """Row ``j`` is a center now: never the argmax again."""
        self.min_dist[j] = -1.0
        if self.screened:
            self.level[j] = -self.squared_norms[j]
