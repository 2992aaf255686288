"""Seeded k-means on the device: clustering a few thousand embeddings, and k-means++
seeding on outer-product rows (BADGE's gradient embeddings) without forming them."""

import torch

from .kcenter import _check_finite, _scale_for
from .scores import top_n

__all__ = ["kmeans", "kmeans_plusplus_outer"]


def _sq_distances(X, C, X_sq):
    """Squared Euclidean distances ``(n, k)`` by the matmul expansion, clamped at 0."""
    return (X_sq[:, None] - 2 * X @ C.T + (C * C).sum(1)[None, :]).clamp_min_(0)


def kmeans(X, k, *, max_iter=20, generator=None, chunk_size=4096):
    """Cluster the rows of ``X`` into ``k`` groups: k-means++ seeding, then Lloyd's iterations.

    Everything runs on ``X.device``; memory is ``O(chunk_size k)`` beyond the
    inputs and outputs (distances are computed ``chunk_size`` rows at a time);
    time is ``O(n_samples k d)`` for the seeding and again per iteration, so
    on a CPU it suits the ``10 n`` candidates of a batch rule or a cold start's
    ``k`` of a few hundred.
    Seeding draws each new center with probability proportional to its
    squared distance to the nearest chosen one (Arthur and Vassilvitskii,
    2007); a cluster left empty by an iteration keeps its center.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        Floating-point rows.
    k : int
        Number of clusters, ``1 <= k <= n_samples``.
    max_iter : int, default=20
        Lloyd's iterations at most; stops early when no label changes.
    generator : torch.Generator, default=None
        Source of the seeding draws; must live on ``X.device``.
    chunk_size : int, default=4096
        Rows per distance computation.

    Returns
    -------
    labels : torch.Tensor of shape (n_samples,), dtype int64
        Each row's cluster in ``0 .. k-1``.
    centers : torch.Tensor of shape (k, n_features)

    Notes
    -----
    Rows so large that squared distances would overflow (float32
    coordinates beyond about ``1e17``, as a diverging net's embeddings
    reach) are divided by a power of two first: exact, and k-means does not
    change under a common scale; the centers are multiplied back.

    Examples
    --------
    >>> import torch
    >>> from skal.kmeans import kmeans
    >>> X = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> labels, centers = kmeans(X, 2, generator=torch.Generator().manual_seed(0))
    >>> bool(labels[0] == labels[1]), bool(labels[2] == labels[3]), bool(labels[0] != labels[2])
    (True, True, True)
    """
    if X.ndim != 2 or not X.is_floating_point():
        raise ValueError(f"X must be a 2-D floating-point tensor, got shape {tuple(X.shape)}, "
                         f"dtype {X.dtype}.")
    n = X.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] (the number of rows), got {k}.")
    largest = _check_finite("X", X, chunk_size)  # chunked: no (n, d) temporary
    scale = _scale_for(largest, X.shape[1], X.dtype)
    if scale != 1.0:
        labels, centers = kmeans(X / scale, k, max_iter=max_iter, generator=generator,
                                 chunk_size=chunk_size)
        return labels, centers * scale
    # Chunked: (X * X) at once would be an (n, d) temporary, a second copy of X.
    X_sq = torch.cat([(X[s:s + chunk_size] * X[s:s + chunk_size]).sum(1)
                      for s in range(0, n, chunk_size)])
    centers = torch.empty((k, X.shape[1]), dtype=X.dtype, device=X.device)
    first = torch.randint(n, (1,), generator=generator, device=X.device)
    centers[0] = X[first[0]]
    closest = (X_sq - 2 * X @ centers[0] + X_sq[first[0]]).clamp_min_(0)
    for j in range(1, k):
        total = closest.sum()
        if total > 0:
            pick = torch.multinomial(closest / total, 1, generator=generator)[0]
        else:  # fewer distinct rows than k: any row will do
            pick = torch.randint(n, (1,), generator=generator, device=X.device)[0]
        centers[j] = X[pick]
        closest = torch.minimum(closest, (X_sq - 2 * X @ centers[j] + X_sq[pick]).clamp_min_(0))
    labels = _assign(X, centers, X_sq, chunk_size)
    for _ in range(max_iter):
        sums, counts = _cluster_sums(X, labels, k, chunk_size)
        filled = counts > 0
        centers[filled] = sums[filled] / counts[filled, None]
        new = _assign(X, centers, X_sq, chunk_size)
        if torch.equal(new, labels):
            break
        labels = new
    return labels, centers


def _cluster_sums(X, labels, k, chunk_size):
    """Per-cluster sums and counts by one-hot matrix products: deterministic on CUDA too
    (``index_add_`` accumulates with atomics there, so its float sums vary from run to run)."""
    sums = torch.zeros((k, X.shape[1]), dtype=X.dtype, device=X.device)
    counts = torch.zeros(k, dtype=X.dtype, device=X.device)
    for s in range(0, X.shape[0], chunk_size):
        onehot = torch.nn.functional.one_hot(labels[s:s + chunk_size], k).to(X.dtype)
        sums += onehot.T @ X[s:s + chunk_size]
        counts += onehot.sum(0)
    return sums, counts


def _assign(X, centers, X_sq, chunk_size):
    return torch.cat([
        _sq_distances(X[s:s + chunk_size], centers, X_sq[s:s + chunk_size]).argmin(1)
        for s in range(0, X.shape[0], chunk_size)
    ])


def _row_dots(M, v):
    """``M @ v`` with each row's dot product computed on its own, in blocks of rows.

    A matrix-vector product rounds a row's result differently depending on
    the row's position in the matrix (its kernels block and vectorise across
    rows), so the rows of a process holding part of the pool would get other
    bits than in the whole pool. An element-wise product summed per row does
    not; blocks of rows keep the temporary in cache (about 20 % slower than
    the matrix-vector product on a CPU).
    """
    block = 1024 if M.device.type == "cpu" else 65536
    out = torch.empty(M.shape[0], dtype=torch.promote_types(M.dtype, v.dtype), device=M.device)
    buffer = torch.empty((min(block, M.shape[0]), M.shape[1]), dtype=out.dtype, device=M.device)
    for start in range(0, M.shape[0], block):
        rows = M[start:start + block]
        torch.sum(torch.mul(rows, v, out=buffer[:len(rows)]), dim=1, out=out[start:start + block])
    return out


def kmeans_plusplus_outer(A, H, k, *, first="norm", generator=None):
    """k-means++ seeding on the rows ``g_i = vec(a_i h_i^T)`` without forming them.

    Picks ``k`` distinct rows: the first by ``first``, each next one with
    probability proportional to its squared distance ``D^2`` to the nearest
    row picked so far (Arthur and Vassilvitskii, 2007). The rows are outer
    products, as BADGE's last-layer gradient embeddings are, and are never
    materialised: ``<g_i, g_j> = <a_i, a_j> <h_i, h_j>``, so

    ``||g_i - g_j||^2 = |a_i|^2 |h_i|^2 + |a_j|^2 |h_j|^2 - 2 <a_i, a_j> <h_i, h_j>``

    and the ``D^2`` update after each pick costs ``O(n (C + d))`` time (row by row, so that
    a row's value does not depend on the other rows: see :func:`kmeans_plusplus_outer_sharded`) for
    ``n`` rows of ``a`` (``C`` wide) and ``h`` (``d`` wide), against
    ``O(n C d)`` time and ``n C d`` memory for the explicit rows. The update
    runs in float64, because the factorised form subtracts products of size
    ``|g|^2`` and float32 would leave noise of that size for near neighbours.

    Each pick after the first draws one uniform ``u`` from ``generator``
    and takes the first row whose cumulative ``D^2`` exceeds
    ``u * sum(D^2)`` (inverse-CDF sampling). Rows already picked have
    ``D^2 = 0`` and are never drawn again; when every remaining row has
    ``D^2 = 0`` (fewer distinct rows than ``k``), the draw is uniform over
    the rows not yet picked. Everything stays on the inputs' device with no
    host synchronisation inside the loop.

    Parameters
    ----------
    A : torch.Tensor of shape (n_samples, C)
        Left factors (BADGE: ``softmax(z) - onehot(argmax z)``).
    H : torch.Tensor of shape (n_samples, d)
        Right factors (BADGE: the penultimate embeddings); same device as ``A``.
    k : int
        Number of rows to pick, ``1 <= k <= n_samples``.
    first : {"norm", "random"}, default="norm"
        The first pick: ``"norm"`` the row of largest ``|g_i|`` (BADGE's
        released code; ties broken by ``generator``), ``"random"`` a uniform
        draw (Arthur and Vassilvitskii's k-means++).
    generator : torch.Generator, default=None
        Source of every draw; must live on the inputs' device. The draws are,
        in order: ``n_samples`` values for the tie-breaking permutation of
        ``first="norm"`` (see :func:`skal.scores.top_n`) or one integer for
        ``first="random"``, then ``k - 1`` float64 uniforms, one per pick.

    Returns
    -------
    indices : torch.Tensor of shape (k,), dtype int64
        Distinct row positions, in the order they were picked.
    d2 : torch.Tensor of shape (k,), dtype float64
        Each pick's ``D^2`` when it was picked; for the first pick its
        ``|g|^2``, its squared distance to the zero row (a sample predicted
        with certainty has ``a = 0``).

    See Also
    --------
    skal.selectors.BADGE : The selector that seeds on gradient embeddings.

    References
    ----------
    .. [1] Arthur and Vassilvitskii, "k-means++: The Advantages of Careful
       Seeding", SODA 2007.
    .. [2] Ash, Zhang, Krishnamurthy, Langford and Agarwal, "Deep Batch Active
       Learning by Diverse, Uncertain Gradient Lower Bounds", ICLR 2020.

    Examples
    --------
    Two tight groups of rows; seeding two centers takes one from each:

    >>> import torch
    >>> from skal.kmeans import kmeans_plusplus_outer
    >>> A = torch.tensor([[1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, 1.0]])
    >>> H = torch.tensor([[2.0, 0.0], [1.9, 0.0], [0.0, 1.0], [0.0, 1.1]])
    >>> idx, d2 = kmeans_plusplus_outer(A, H, 2, generator=torch.Generator().manual_seed(0))
    >>> int(idx[0]), float(d2[0])  # row 0 has the largest |g|^2 = |a|^2 |h|^2 = 2 * 4
    (0, 8.0)
    >>> int(idx[1]) in (2, 3)  # D^2 20.42 against 0.02: the other group
    True
    """
    if A.ndim != 2 or H.ndim != 2 or A.shape[0] != H.shape[0]:
        raise ValueError(f"A and H must be 2-D with the same number of rows, got shapes "
                         f"{tuple(A.shape)} and {tuple(H.shape)}.")
    if not (A.is_floating_point() and H.is_floating_point()):
        raise ValueError(f"A and H must be floating point, got {A.dtype} and {H.dtype}.")
    n = A.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] (the number of rows), got {k}.")
    if first not in ("norm", "random"):
        raise ValueError(f"first must be 'norm' or 'random', got {first!r}.")
    A, H = A.double(), H.double()
    norms = (A * A).sum(1) * (H * H).sum(1)  # |g_i|^2
    # picks stay one-element index tensors: indexing with them never syncs with the host
    if first == "norm":
        pick = top_n(norms, 1, generator=generator)
    else:
        pick = torch.randint(n, (1,), generator=generator, device=A.device)
    uniforms = torch.rand(k - 1, generator=generator, device=A.device, dtype=torch.float64)
    indices = torch.empty(k, dtype=torch.int64, device=A.device)
    d2 = torch.empty(k, dtype=torch.float64, device=A.device)
    remaining = torch.ones(n, dtype=torch.float64, device=A.device)
    closest = torch.full((n,), float("inf"), dtype=torch.float64, device=A.device)
    indices[:1], d2[:1] = pick, norms[pick]
    for j in range(1, k):
        remaining[pick] = 0.0
        new = norms + norms[pick] - 2 * _row_dots(A, A[pick][0]) * _row_dots(H, H[pick][0])
        closest = torch.minimum(closest, new.clamp_min_(0)) * remaining
        weights = torch.where(closest.sum() > 0, closest, remaining)
        cumulative = weights.cumsum(0)
        pick = torch.searchsorted(cumulative, uniforms[j - 1:j] * cumulative[-1:], right=True)
        pick = pick.clamp_max_(n - 1)
        # u * total can round up to total itself; then take the heaviest row instead
        pick = torch.where(weights[pick] > 0, pick, weights.argmax().view(1))
        indices[j:j + 1], d2[j:j + 1] = pick, closest[pick]
    return indices, d2


def kmeans_plusplus_outer_sharded(A, H, k, shard, *, first="norm", generator=None):
    """:func:`kmeans_plusplus_outer` over rows split between processes.

    Each process passes its rows ``shard.start .. shard.stop - 1`` (``A``
    and ``H`` with ``shard.n_local`` rows, possibly none) and the same seed;
    every process returns the indices (pool rows) and ``D^2`` values that
    :func:`kmeans_plusplus_outer` returns for the whole pool, bit for bit on
    a CPU. Each process keeps its rows' ``D^2``. A draw runs the cumulative
    sum of the weights through the processes in row order (rank ``r`` starts
    from rank ``r - 1``'s last partial sum, so the sums are the single
    process's running sums), takes ``u`` from the shared generator and finds
    the first row whose cumulative weight exceeds ``u`` times the total:
    ``world`` broadcasts of two floats and one all-gather of each process's
    candidate with its factors (``C + d + 7`` floats) per pick.

    Parameters
    ----------
    A, H : torch.Tensor of shape (n_local, C) and (n_local, d)
    k : int
        ``1 <= k <= shard.n_total``.
    shard : skal.distributed.Shard
    first, generator
        As for :func:`kmeans_plusplus_outer`, the same on every process.

    Returns
    -------
    indices : torch.Tensor of shape (k,), dtype int64
        Pool rows in the order picked.
    d2 : torch.Tensor of shape (k,), dtype float64
    """
    from .distributed import tie_keys

    n = shard.n_total
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] (the number of rows), got {k}.")
    if first not in ("norm", "random"):
        raise ValueError(f"first must be 'norm' or 'random', got {first!r}.")
    device = A.device
    A, H = A.double(), H.double()
    c, d = A.shape[1], H.shape[1]
    norms = (A * A).sum(1) * (H * H).sum(1)
    if first == "norm":
        from .distributed import top_n as sharded_top_n

        keys = tie_keys(generator, n, device, shard)
        pick, _ = sharded_top_n(norms, 1, keys, shard)
        pick = int(pick[0])
    else:
        pick = int(torch.randint(n, (1,), generator=generator, device=device)[0])
    uniforms = torch.rand(k - 1, generator=generator, device=device, dtype=torch.float64)
    n_local, start = shard.n_local, shard.start
    indices = torch.empty(k, dtype=torch.int64)
    d2 = torch.empty(k, dtype=torch.float64)
    remaining = torch.ones(n_local, dtype=torch.float64, device=device)
    closest = torch.full((n_local,), float("inf"), dtype=torch.float64, device=device)
    zero = torch.zeros((), dtype=torch.float64, device=device)

    def factors(row, value):
        """The owner's ``a``, ``h``, ``|g|^2`` and ``value`` of pool row ``row``, on every rank."""
        owner = shard.owner(row)
        payload = torch.zeros(c + d + 2, dtype=torch.float64, device=device)
        if owner == shard.rank:
            i = row - start
            payload[:c], payload[c:c + d], payload[c + d] = A[i], H[i], norms[i]
            payload[c + d + 1] = value[i]
        payload = shard.broadcast(payload, owner)
        return payload[:c], payload[c:c + d], payload[c + d], payload[c + d + 1]

    a_pick, h_pick, norm_pick, value = factors(pick, norms)
    indices[0], d2[0] = pick, value
    for j in range(1, k):
        if start <= pick < start + n_local:
            remaining[pick - start] = 0.0
        new = norms + norm_pick - 2 * _row_dots(A, a_pick) * _row_dots(H, h_pick)
        closest = torch.minimum(closest, new.clamp_min_(0)) * remaining
        cumulative = [closest[:0], remaining[:0]]

        def running(carry):
            # both running sums in one pass through the processes: D^2, and the uniform
            # weights used when every D^2 is 0 (a sum of non-negative numbers is > 0 exactly
            # when one of them is, as the single process's closest.sum() > 0)
            if n_local == 0:
                return carry
            cumulative[0] = torch.cat([carry[:1], closest]).cumsum(0)[1:]
            cumulative[1] = torch.cat([carry[1:], remaining]).cumsum(0)[1:]
            return torch.stack([cumulative[0][-1], cumulative[1][-1]])

        totals = shard.chain(running, zero.repeat(2))
        use = 0 if bool(totals[0] > 0) else 1
        weights = (closest, remaining)[use]
        target = uniforms[j - 1:j] * totals[use:use + 1]
        # each process's candidate with the factors the others need of it: one round trip
        mine = torch.zeros(5 + c + d + 2, dtype=torch.float64, device=device)
        mine[0], mine[3], mine[4] = float(n), float("-inf"), -1.0
        if n_local:
            i = int(torch.searchsorted(cumulative[use], target, right=True)[0])
            if i < n_local:
                mine[0], mine[1] = float(start + i), weights[i]
                mine[5:5 + c], mine[5 + c:5 + c + d] = A[i], H[i]
                mine[5 + c + d], mine[6 + c + d] = norms[i], closest[i]
            if start + n_local == n:
                mine[2] = weights[-1]
            top = int(weights.argmax())
            mine[3], mine[4] = weights[top], float(start + top)
        gathered = shard.all_gather(mine)
        r = int(gathered[:, 0].argmin())
        if gathered[r, 0] < n and gathered[r, 1] > 0:
            pick = int(gathered[r, 0])
            a_pick, h_pick = gathered[r, 5:5 + c], gathered[r, 5 + c:5 + c + d]
            norm_pick, value = gathered[r, 5 + c + d], gathered[r, 6 + c + d]
        else:
            if gathered[r, 0] < n:
                pick, weight = int(gathered[r, 0]), gathered[r, 1]
            else:  # u * total rounded up to the total: the last row, as searchsorted + clamp
                pick, weight = n - 1, gathered[shard.owner(n - 1), 2]
            if not weight > 0:  # then the heaviest row, the first of equal ones
                best = gathered[:, 3].max()
                pick = int(gathered[gathered[:, 3] == best, 4].min())
            a_pick, h_pick, norm_pick, value = factors(pick, closest)
        indices[j], d2[j] = pick, value
    return indices.to(device), d2.to(device)
