"""Cold start: the first samples to label, chosen from unlabeled data.

Active learning needs a trained model to score the pool, and a model needs
labels. :func:`initial_batch` chooses the first batch from the pool's features
alone: the inputs themselves (flattened) or the output of a pretrained
embedding or a fitted scikit-learn transformer. Features are computed chunk by
chunk on ``device`` and stored there as one ``(n_samples, n_features)`` tensor;
no ``n_samples x n_samples`` matrix is ever built.
"""

from contextlib import contextmanager, nullcontext
from numbers import Integral

import numpy as np
import torch
from scipy.sparse import issparse
from sklearn.exceptions import NotFittedError
from sklearn.utils import _safe_indexing, check_array
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions, validate_params
from sklearn.utils.validation import check_is_fitted
from torch.utils.data import DataLoader, IterableDataset, default_collate

from ._data import _features, check_array_like, is_dataset, named_errors
from .kcenter import kcenter_greedy
from .kmeans import kmeans

__all__ = ["initial_batch"]


@validate_params(
    {
        "X": ["array-like", torch.utils.data.Dataset],
        "n": [Interval(Integral, 1, None, closed="left")],
        "strategy": [StrOptions({"kmeans", "kcenter", "random", "typiclust"})],
        "embedding": [callable, HasMethods(["transform"]), None],
        "device": [str, torch.device],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left"), np.random.Generator,
                         np.random.RandomState, None],
    },
    prefer_skip_nested_validation=True,
)
def initial_batch(X, n, *, strategy="kmeans", embedding=None, device="cpu", batch_size=1024,
                  random_state=None):
    """Choose the first ``n`` samples to label, without any labels.

    Three strategies:

    - ``"kmeans"``: cluster the features into ``k = n`` groups with seeded
      k-means++ and Lloyd's iterations (:func:`skal.kmeans.kmeans`), then take,
      for every centre, the sample nearest to it (Euclidean). Representative
      samples: one typical sample per region of the feature space. Two
      centres can share a nearest sample; they are then resolved
      deterministically: centres are visited in increasing order of the
      distance to their nearest sample (ties: lower centre index) and each
      takes its nearest sample not taken yet (ties: lower row index).
    - ``"kcenter"``: k-center greedy (:func:`skal.kcenter.kcenter_greedy`,
      Sener & Savarese 2018, Alg. 1 with an empty labeled set): the first
      sample is drawn uniformly at random, then each step takes the sample
      farthest from every sample taken so far. Diverse samples that cover the
      feature space, outliers included.
    - ``"typiclust"``: TypiClust (Hacohen et al., ICML 2022): k-means into
      ``min(n, 500)`` clusters (the paper's ``min(|L| + n, max_clusters)``
      with no labels yet), then ``n`` times: among the clusters of more than 5
      samples (all of them if none is), the one holding the fewest samples
      chosen so far, the largest among those (ties: lower cluster index);
      from it, its most typical sample not chosen yet, the typicality of a
      sample being the inverse of its mean Euclidean distance to its
      ``min(20, m // 2)`` nearest other samples of the cluster (``m`` its
      remaining size; ties: lower row index). Typical samples of the
      densest regions: the paper's cold start for very low budgets.
    - ``"random"``: ``n`` rows uniformly without replacement, the draw of
      ``np.random.default_rng(random_state).choice(len(X), n, replace=False)``.
      No features are computed (``embedding`` is not called).

    Parameters
    ----------
    X : array-like of shape (n_samples, ...), DataFrame or torch Dataset
        The unlabeled pool. A Dataset's items may be ``x`` or ``(x, y)``; only
        ``x`` is read, ``batch_size`` items at a time.
    n : int
        Number of samples to choose, ``1 <= n <= n_samples``.
    strategy : {"kmeans", "kcenter", "random", "typiclust"}, default="kmeans"
        How to choose them, see above.
    embedding : callable, fitted transformer or None, default=None
        The features the strategy works on. ``None``: the inputs, each sample
        flattened to one row. A callable (a pretrained :class:`torch.nn.Module`
        or a function) receives a batch of ``X`` as a tensor on ``device``
        (float64 inputs cast to float32, as skorch does; other dtypes kept)
        and returns one row of features per sample; a module runs in eval
        mode under :func:`torch.no_grad` and its training mode is restored
        afterwards, and it must already be on ``device``. An object with
        ``transform`` (a fitted scikit-learn transformer or
        :class:`~sklearn.pipeline.Pipeline`) receives the batch as ``X``'s
        rows in their own type (array, DataFrame; a Dataset's items stacked
        into an array). Outputs of shape ``(batch, ...)`` are flattened.
    device : str or torch.device, default="cpu"
        Where features are stored and the strategy runs.
    batch_size : int, default=1024
        Samples per chunk when reading ``X`` and computing features.
    random_state : int, numpy Generator, RandomState or None, default=None
        Seeds one :func:`numpy.random.default_rng` (a RandomState is used to
        draw that seed). ``"random"`` makes its draw from it; the other
        strategies draw from it the seed of a torch Generator: on the CPU for
        k-center greedy (so CPU and CUDA choose the same rows, up to rounding
        of the distances), on ``device`` for k-means (its draws differ between
        devices).

    Returns
    -------
    ndarray of shape (n,), dtype int64
        Distinct row positions in ``X`` (positions, not DataFrame index
        labels): in the order drawn (random), chosen (k-center) or of the
        k-means centres.

    Raises
    ------
    ValueError
        If ``n > n_samples``, the features hold NaN or infinity, an embedding's
        output does not have one row per sample or changes width between
        batches, or a module's parameters are not on ``device``; errors name
        the argument at fault. Invalid parameters raise scikit-learn's
        ``InvalidParameterError`` naming the parameter.

    See Also
    --------
    skal.kmeans.kmeans : The k-means used by ``"kmeans"``.
    skal.kcenter.kcenter_greedy : The greedy selection used by ``"kcenter"``.
    skal.selectors.CoreSet : k-center greedy once labels exist, on the net's embeddings.

    Notes
    -----
    Memory: the features, ``n_samples x n_features`` values (float64 when the
    inputs or the embedding's outputs are float64, float32 otherwise), plus
    ``O(batch_size x n_features)`` per chunk; k-means adds
    ``O(4096 x n)``. Time: k-center greedy makes ``n`` passes over the
    features; k-means makes ``n`` seeding passes, up to 20 Lloyd's iterations
    of ``O(n_samples x n x n_features)`` each, and one exact-distance pass of
    the same size to find the nearest samples. On one thread of a shared
    CPU, a 60,000 x 784 pool with ``n = 100`` took 60 s for k-means (4 s on
    50 PCA components) and 9 s for k-center greedy
    (``benchmarks/bench_initial.py``, which also measures the batches'
    worth: on Fashion-MNIST, k-means beat random sampling by 14 points of
    accuracy at 20 labels, k-center greedy, which takes outliers first, lost
    8).

    References
    ----------
    .. [1] O. Sener and S. Savarese, "Active Learning for Convolutional Neural
       Networks: A Core-Set Approach", ICLR 2018 (k-center greedy).
    .. [2] D. Arthur and S. Vassilvitskii, "k-means++: The Advantages of
       Careful Seeding", SODA 2007.
    .. [3] G. Hacohen, A. Dekel and D. Weinshall, "Active Learning on a
       Budget: Opposite Strategies Suit High and Low Budgets", ICML 2022
       (TypiClust).

    Examples
    --------
    Two tight groups of points: k-means takes one sample from each.

    >>> import numpy as np
    >>> from skal.initial import initial_batch
    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [5.1, 5.0]])
    >>> idx = initial_batch(X, 2, strategy="kmeans", random_state=0)
    >>> sorted(int(i) // 3 for i in idx)  # rows 0-2 are group 0, rows 3-4 group 1
    [0, 1]
    >>> initial_batch(X, 3, strategy="random", random_state=0).tolist()
    [3, 4, 2]

    Any fitted transformer or a torch module can provide the features:

    >>> from sklearn.decomposition import PCA
    >>> pca = PCA(n_components=1).fit(X)
    >>> initial_batch(X, 2, strategy="kcenter", embedding=pca, random_state=0).shape
    (2,)
    """
    check_array_like(X, "X")
    if isinstance(X, IterableDataset):
        raise TypeError("X must be a map-style torch Dataset with a length; got an IterableDataset.")
    n_samples = len(X)
    if n > n_samples:
        raise ValueError(f"n must be in [1, len(X)] = [1, {n_samples}]; got {n}.")
    device = _check_device(device)
    if isinstance(random_state, np.random.RandomState):
        random_state = random_state.randint(np.iinfo(np.int32).max)
    rng = np.random.default_rng(random_state)
    if strategy == "random":
        return rng.choice(n_samples, n, replace=False).astype(np.int64)
    _check_embedding(embedding, device)
    features = _compute_features(X, n_samples, embedding, device, batch_size)
    seed = int(rng.integers(2**63))
    with torch.no_grad():
        if strategy == "kcenter":
            indices, _ = kcenter_greedy(features, n, generator=torch.Generator().manual_seed(seed))
            return indices.cpu().numpy().astype(np.int64)
        generator = torch.Generator(device=features.device).manual_seed(seed)
        if strategy == "typiclust":
            labels, _ = kmeans(features, min(n, TYPICLUST_MAX_CLUSTERS), generator=generator)
            return typiclust_select(features, labels, n)
        _, centers = kmeans(features, n, generator=generator)
        return _nearest_distinct(features, centers)


# --- features -----------------------------------------------------------------


def _check_device(device):
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must name a torch device, got {device!r}: {error}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but CUDA is not available.")
    return device


def _same_device(a, b):
    if a.type != b.type:
        return False
    if a.type == "cuda":
        current = torch.cuda.current_device()
        return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
    return a.index is None or b.index is None or a.index == b.index


def _check_embedding(embedding, device):
    if embedding is None:
        return
    if hasattr(embedding, "transform"):
        try:
            check_is_fitted(embedding)
        except NotFittedError as error:
            raise NotFittedError(f"embedding: {error}") from error
    elif isinstance(embedding, torch.nn.Module):
        for tensor in (*embedding.parameters(), *embedding.buffers()):
            if not _same_device(tensor.device, device):
                raise ValueError(
                    f"embedding has parameters or buffers on {tensor.device} but device="
                    f"{str(device)!r}; move the module there first (embedding.to(device)).")


@contextmanager
def _eval_mode(module):
    """Run ``module`` in eval mode, restoring every submodule's own mode afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.train(training)


def _collate_features(items):
    return default_collate([_features(item) for item in items])


def _chunks(X, n_samples, batch_size):
    """``X``'s rows ``batch_size`` at a time: tensors for a Dataset, X's own type otherwise."""
    if is_dataset(X):
        yield from DataLoader(X, batch_size=batch_size, shuffle=False, collate_fn=_collate_features)
    else:
        for start in range(0, n_samples, batch_size):
            yield _safe_indexing(X, slice(start, start + batch_size))


def _input_tensor(chunk, device):
    """A chunk of X as a tensor on ``device``; non-numeric input raises a ValueError naming X."""
    if not isinstance(chunk, torch.Tensor):
        with named_errors("X"):
            chunk = check_array(chunk, allow_nd=True, dtype="numeric", ensure_all_finite=False,
                                input_name="X")
        chunk = torch.from_numpy(np.require(chunk, requirements="W"))  # a DataFrame view is read-only
    return chunk.to(device)


def _compute_features(X, n_samples, embedding, device, batch_size):
    """The ``(n_samples, n_features)`` feature tensor on ``device``, filled chunk by chunk."""
    transform = embedding is not None and hasattr(embedding, "transform")
    mode = _eval_mode(embedding) if isinstance(embedding, torch.nn.Module) else nullcontext()
    out, filled = None, 0
    bad = torch.zeros((), dtype=torch.bool, device=device)
    with mode, torch.no_grad():
        for chunk in _chunks(X, n_samples, batch_size):
            size = len(chunk)
            if embedding is None:
                values = _input_tensor(chunk, device)
            elif transform:
                if isinstance(chunk, torch.Tensor):
                    chunk = chunk.cpu().numpy()
                values = embedding.transform(chunk)
                values = torch.as_tensor(values.toarray() if issparse(values) else np.asarray(values))
            else:
                batch = _input_tensor(chunk, device)
                if batch.dtype == torch.float64:
                    batch = batch.float()
                values = embedding(batch)
                if not isinstance(values, torch.Tensor):
                    array = np.asarray(values) if isinstance(values, np.ndarray) else None
                    if array is None or not np.issubdtype(array.dtype, np.number):
                        raise TypeError("embedding must return a tensor or a numeric array; got "
                                        f"{type(values).__name__}.")
                    values = torch.as_tensor(array)
            if embedding is not None and (values.ndim < 2 or values.shape[0] != size):
                raise ValueError(
                    f"embedding must return one row of features per sample, shape ({size}, "
                    f"n_features) for a batch of {size}; got shape {tuple(values.shape)}.")
            values = values.reshape(size, -1)
            if out is None:
                dtype = torch.float64 if values.dtype == torch.float64 else torch.float32
                out = torch.empty((n_samples, values.shape[1]), dtype=dtype, device=device)
            elif values.shape[1] != out.shape[1]:
                source = "X has" if embedding is None else "embedding returned"
                raise ValueError(
                    f"{source} {values.shape[1]} features for the samples from row {filled} on, "
                    f"{out.shape[1]} for the first batch.")
            if values.shape[1] == 0:
                raise ValueError("X: the features have 0 columns; nothing to compare samples by.")
            out[filled:filled + size] = values
            bad |= ~torch.isfinite(out[filled:filled + size]).all()
            filled += size
    if filled != n_samples:
        raise ValueError(f"X: read {filled} samples but len(X) = {n_samples}.")
    if bad:
        source = "X" if embedding is None else "The embedding's output (check X and embedding)"
        raise ValueError(f"{source} contains NaN or infinity.")
    return out


# --- k-means: the sample nearest to each centre ----------------------------------


def _exact_distances(rows, centers):
    """Euclidean distances from exact differences (cdist's direct kernel, no (m, k, d) temporary).

    The matrix-product expansion is faster (13x for 60,000 x 784 rows against
    100 centres on one CPU thread), but its rounding makes
    which of two (near-)equidistant samples is nearest depend on the sample's
    position in the chunk; exact differences keep the tie rules exact.
    """
    return torch.cdist(rows, centers, compute_mode="donot_use_mm_for_euclid_dist")


def _nearest_distinct(features, centers, chunk_size=4096):
    """One distinct row of ``features`` per centre: its nearest, collisions resolved (see initial_batch)."""
    n_samples, k = features.shape[0], centers.shape[0]
    best_dist = torch.full((k,), float("inf"), dtype=features.dtype, device=features.device)
    best_row = torch.zeros(k, dtype=torch.int64, device=features.device)
    for start in range(0, n_samples, chunk_size):
        distances = _exact_distances(features[start:start + chunk_size], centers)
        row = distances.argmin(dim=0)  # the first (lowest) row among equals
        dist = distances.gather(0, row.unsqueeze(0)).squeeze(0)
        closer = dist < best_dist  # strict: an earlier chunk keeps a tie
        best_dist = torch.where(closer, dist, best_dist)
        best_row = torch.where(closer, row + start, best_row)
    best_dist, best_row = best_dist.cpu().numpy(), best_row.cpu().numpy()
    chosen = np.empty(k, dtype=np.int64)
    taken = set()
    for j in np.lexsort((np.arange(k), best_dist)):  # by distance, then centre index
        row = int(best_row[j])
        if row in taken:  # rare: one O(n_samples d) pass per collision
            distances = _exact_distances(features, centers[j:j + 1]).squeeze(1)
            distances[torch.tensor(sorted(taken), device=features.device)] = float("inf")
            row = int(distances.argmin())
        chosen[j] = row
        taken.add(row)
    return chosen


# --- TypiClust: the most typical sample of the largest uncovered clusters -------------------

#: TypiClust's constants (Hacohen et al. 2022, reference code): at most 500
#: clusters, typicality over 20 neighbours, clusters of at most 5 samples skipped.
TYPICLUST_MAX_CLUSTERS, TYPICLUST_NEIGHBOURS, TYPICLUST_MIN_CLUSTER = 500, 20, 5


def _typicality(rows, chunk_size=1024):
    """Each row's inverse mean Euclidean distance to its ``min(20, m // 2)`` nearest other rows."""
    m = rows.shape[0]
    k = min(TYPICLUST_NEIGHBOURS, m // 2)
    if k == 0:
        return torch.ones(m, dtype=torch.float64, device=rows.device)
    out = torch.empty(m, dtype=torch.float64, device=rows.device)
    for start in range(0, m, chunk_size):
        distances = _exact_distances(rows[start:start + chunk_size], rows).double()
        block = torch.arange(distances.shape[0], device=rows.device)
        distances[block, block + start] = float("inf")  # not its own neighbour
        out[start:start + chunk_size] = 1.0 / distances.topk(k, dim=1, largest=False).values.mean(dim=1)
    return out


def typiclust_select(features, labels, n):
    """TypiClust's choice of ``n`` rows of ``features`` given their clusters ``labels`` (see initial_batch).

    Parameters
    ----------
    features : torch.Tensor of shape (n_samples, n_features)
    labels : torch.Tensor of shape (n_samples,), dtype int64
        Each row's cluster.
    n : int

    Returns
    -------
    ndarray of shape (n,), dtype int64
        Distinct rows, in the order chosen.
    """
    labels_np = labels.cpu().numpy()
    n_clusters = int(labels_np.max()) + 1
    sizes = np.bincount(labels_np, minlength=n_clusters)
    chosen_count = np.zeros(n_clusters, dtype=np.int64)
    available = np.ones(len(labels_np), dtype=bool)
    eligible = np.flatnonzero(sizes > TYPICLUST_MIN_CLUSTER)
    if len(eligible) == 0:
        eligible = np.flatnonzero(sizes > 0)
    # each cluster's rows in ascending order, grouped once; `remaining` counts its rows not chosen
    groups = np.split(np.argsort(labels_np, kind="stable"), np.cumsum(sizes)[:-1])
    remaining = sizes.copy()
    chosen = []
    for _ in range(n):
        open_ = eligible[remaining[eligible] > 0]
        if len(open_) == 0:  # every eligible cluster used up: the small ones too
            open_ = np.flatnonzero(remaining > 0)
        cluster = int(min(open_, key=lambda c: (chosen_count[c], -sizes[c], c)))
        members = groups[cluster][available[groups[cluster]]]
        typicality = _typicality(features[torch.as_tensor(members, device=features.device)]).cpu().numpy()
        row = int(members[np.flatnonzero(typicality == typicality.max())[0]])
        chosen.append(row)
        chosen_count[cluster] += 1
        remaining[cluster] -= 1
        available[row] = False
    return np.asarray(chosen, dtype=np.int64)
