"""Seeded k-means on the device, for clustering a few thousand embeddings."""

import torch

__all__ = ["kmeans"]


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
