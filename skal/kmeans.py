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


def _clocks(n, generator, device):
    """``n`` exponential variates ``-log(1 - u)``, ``u`` uniform in [0, 1) from ``generator``."""
    return torch.rand(n, generator=generator, device=device, dtype=torch.float64).neg_().log1p_().neg_()


def _race(weights, clocks):
    """Each row's finishing time ``clocks / weights``: infinite for a weight of 0."""
    return torch.where(weights > 0, clocks / weights, float("inf"))


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

    Each pick after the first draws one uniform ``u_i`` per row from
    ``generator`` and takes the row of smallest ``-log(1 - u_i) / D^2_i``
    (the first of equal ones): a race of exponential clocks with rates
    ``D^2_i``, won by row ``i`` with probability ``D^2_i / sum(D^2)``
    exactly. Unlike inverse-CDF sampling it needs no running sum, so a row's
    key does not depend on the rows before it and a pool split between
    processes draws the same row with one round trip
    (:func:`kmeans_plusplus_outer_sharded`). Rows already picked have
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
        ``first="random"``, then ``n_samples`` float64 uniforms for each of
        the ``k - 1`` other picks.

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
        pick = _race(weights, _clocks(n, generator, A.device)).argmin().view(1)
        indices[j:j + 1], d2[j:j + 1] = pick, closest[pick]
    return indices, d2


def kmeans_plusplus_outer_sharded(A, H, k, shard, *, first="norm", generator=None):
    """:func:`kmeans_plusplus_outer` over rows split between processes.

    Each process passes its rows ``shard.start .. shard.stop - 1`` (``A``
    and ``H`` with ``shard.n_local`` rows, possibly none) and the same seed;
    every process returns the indices (pool rows) and ``D^2`` values that
    :func:`kmeans_plusplus_outer` returns for the whole pool, bit for bit on
    a CPU. Each process keeps its rows' ``D^2``. A draw is the single
    process's race of exponential clocks: every process draws the whole
    pool's clocks from the shared generator, finds its rows' winner, and one
    all-gather of each process's winner with its factors (``C + d + 5``
    floats) picks the overall one, ties going to the first row as in the
    single process. No running sum passes from process to process, so the
    processes work in parallel, one round trip per pick.

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
    state = _ShardedSeeding(A, H, norms, shard, generator)
    # the first pick's factors from its owner (its D^2 is its |g|^2); later ones travel with the offers
    payload = torch.zeros(c + d + 1, dtype=torch.float64, device=device)
    owner = shard.owner(pick)
    if owner == shard.rank:
        i = pick - shard.start
        payload[:c], payload[c:c + d], payload[c + d] = A[i], H[i], norms[i]
    payload = shard.broadcast(payload, owner)
    settled = [(pick, payload[c + d], payload[:c], payload[c:c + d], payload[c + d])]
    indices = torch.empty(k, dtype=torch.int64)
    d2 = torch.empty(k, dtype=torch.float64)
    t = 0
    while True:
        for pick, value, a_pick, h_pick, norm_pick in settled:
            indices[t], d2[t] = pick, value
            t += 1
            if t < k:
                state.update(pick, a_pick, h_pick, norm_pick)
        if t == k:
            break
        settled = state.next_picks(k - t)
    return indices.to(device), d2.to(device)


# picks looked ahead per round trip of the sharded seeding, and rows each process offers for each
# of them (measured with 2 processes, 100 picks from 200,000 rows: see benchmarks/bench_sharded_query.py)
_PICKS_AHEAD = 8
_OFFERED_PER_PICK = 4


class _ShardedSeeding:
    """One process's state in :func:`kmeans_plusplus_outer_sharded`: its rows' ``D^2``.

    A round trip settles the next pick and, most of the time, several after
    it. The clocks of the next picks are known before the picks are (they are
    the generator's next draws), and a row's ``D^2`` only falls as centers
    are added, so ``clock / D^2`` now is a lower bound of the row's time in
    any later pick. Each process offers, for each of the next
    ``_PICKS_AHEAD`` picks, its ``_OFFERED_PER_PICK`` rows of smallest bound
    with their factors, and the smallest bound among its other rows. Every
    process then plays the picks on the offered rows alone, lowering their
    ``D^2`` by each pick exactly as their owners do, for as long as the next
    winner's time is below every unoffered row's bound; the first pick is
    always settled (each process offers its exact winner for it).
    """

    def __init__(self, A, H, norms, shard, generator):
        self.A, self.H, self.norms, self.shard, self.generator = A, H, norms, shard, generator
        self.start, self.n_local = shard.start, shard.n_local
        device = A.device
        self.remaining = torch.ones(self.n_local, dtype=torch.float64, device=device)
        self.closest = torch.full((self.n_local,), float("inf"), dtype=torch.float64, device=device)
        self.clocks = []  # this process's rows' clocks of the next picks, in the generator's order

    def update(self, pick, a_pick, h_pick, norm_pick):
        """Lower this process's ``D^2`` by a new center, as :func:`kmeans_plusplus_outer` does."""
        if self.start <= pick < self.start + self.n_local:
            self.remaining[pick - self.start] = 0.0
        new = self.norms + norm_pick - 2 * _row_dots(self.A, a_pick) * _row_dots(self.H, h_pick)
        self.closest = torch.minimum(self.closest, new.clamp_min_(0)) * self.remaining
        if self.clocks:
            self.clocks.pop(0)  # the clocks of the pick just made

    def _offer(self, ahead, m):
        """``(ahead, m + 1, 5 + C + d)``: per pick, the rows offered and (last) the unoffered bound."""
        A, H, n_local = self.A, self.H, self.n_local
        c = A.shape[1]
        offer = torch.zeros((ahead, m + 1, 5 + c + H.shape[1]), dtype=torch.float64, device=A.device)
        offer[:, :, 0] = float("inf")
        if not n_local:
            return offer
        positive = bool((self.closest > 0).any())
        offer[0, m, 1] = float(positive)

        def put(q, slot, i, time):
            # [time, row, clock, D^2, |g|^2, a, h]
            offer[q, slot, 0], offer[q, slot, 1] = time, float(self.start + i)
            offer[q, slot, 2], offer[q, slot, 3], offer[q, slot, 4] = (
                self.clocks[q][i], self.closest[i], self.norms[i])
            offer[q, slot, 5:5 + c], offer[q, slot, 5 + c:] = A[i], H[i]

        # the next pick: this process's exact winner (the uniform one while no row has a D^2)
        times = _race(self.closest if positive else self.remaining, self.clocks[0])
        i = int(times.argmin())  # the first of equal times, as the single process's argmin
        put(0, 0, i, times[i])
        # later picks: the rows of smallest bound clock / D^2 (now), and the next bound
        for q in range(1, ahead):
            bounds = _race(self.closest, self.clocks[q])
            smallest = torch.topk(bounds, min(m + 1, n_local), largest=False, sorted=True)
            for slot, (time, i) in enumerate(zip(smallest.values[:m], smallest.indices[:m].tolist())):
                if time < float("inf"):
                    put(q, slot, i, time)
            if len(smallest.values) > m:
                offer[q, m, 0] = smallest.values[m]
        return offer

    def next_picks(self, remaining):
        """The next settled picks: ``[(row, D^2, a, h, |g|^2), ...]``, at least one."""
        shard, generator = self.shard, self.generator
        n, device = shard.n_total, self.A.device
        c, d = self.A.shape[1], self.H.shape[1]
        ahead, m = min(_PICKS_AHEAD, remaining), _OFFERED_PER_PICK
        while len(self.clocks) < ahead:  # every process draws the whole pool's clocks and keeps its rows'
            self.clocks.append(_clocks(n, generator, device)[self.start:self.start + self.n_local])
        gathered = shard.all_gather(self._offer(ahead, m))  # (world, ahead, m + 1, 5 + C + d)
        # the next pick: a D^2 winner if any process has one, else the uniform winners
        first = gathered[:, 0, 0]
        flags = gathered[:, 0, m, 1]
        first = first[flags == flags.max()]
        first = first[first[:, 0] == first[:, 0].min()]
        first = first[first[:, 1].argmin()]
        settled = [(int(first[1]), first[3], first[5:5 + c], first[5 + c:], first[4])]
        # later picks, while certain: the offered rows' D^2 lowered by each pick made (none is
        # offered while no row has a D^2: the uniform draws take a round trip each)
        for q in range(1, ahead):
            offered = gathered[:, q, :m].reshape(-1, 5 + c + d)
            offered = offered[offered[:, 0] < float("inf")]
            if not len(offered):
                break
            closest = offered[:, 3].clone()
            rows = offered[:, 1]
            a, h = offered[:, 5:5 + c], offered[:, 5 + c:]
            for pick, _, a_pick, h_pick, norm_pick in settled:
                new = offered[:, 4] + norm_pick - 2 * _row_dots(a, a_pick) * _row_dots(h, h_pick)
                closest = torch.minimum(closest, new.clamp_min_(0)) * (rows != pick)
            times = _race(closest, offered[:, 2])
            best = times.min()
            if not best < gathered[:, q, m, 0].min():
                break  # an unoffered row may be as early: the next round trip decides
            tied = torch.nonzero(times == best).squeeze(1)
            i = int(tied[rows[tied].argmin()])  # the first row of equal times
            offered_row = offered[i]
            settled.append((int(offered_row[1]), closest[i], offered_row[5:5 + c], offered_row[5 + c:],
                            offered_row[4]))
        return settled
