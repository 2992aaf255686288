"""The selectors' ``select`` when the query is sharded over processes (:mod:`skal.distributed`).

Each function returns, on every process, what the selector's single-process
``select`` returns for the whole pool with the same seed.
"""

import torch

from .. import distributed
from .._data import take
from ..kcenter import kcenter_greedy_sharded
from ..kmeans import kmeans_plusplus_outer_sharded
from .batch import TopK, resolve_batch


def _start(selector, net, X_pool, n, random_state):
    """Agree on the query, draw the subset; ``(seed, candidates, pool, shard, local rows)``."""
    random_state = distributed.begin(selector, net, X_pool, n, random_state)
    candidates = selector._draw_subset(len(X_pool), n, random_state)
    if candidates is not None:
        X_pool = take(X_pool, candidates)
    shard = distributed.plan(net, len(X_pool))
    return random_state, candidates, X_pool, shard, distributed.rows(X_pool, shard.start, shard.stop)


def _agreed_dtype(shard, tensor):
    """The dtype of the ranks that have rows (a rank without rows has a default one)."""
    dtypes = {d for d in shard.gather_objects(tensor.dtype if len(tensor) else None) if d}
    return dtypes.pop() if len(dtypes) == 1 else tensor.dtype


def score_select(selector, net, X_pool, n, random_state, labeled):
    """:meth:`ScoreSelector.select`, sharded."""
    from .base import _check_picks, _check_scores, _generator, _pool_indices

    random_state, candidates, X_pool, shard, local = _start(selector, net, X_pool, n, random_state)
    scores = None
    with shard.guard(), distributed.active(shard):
        scores = selector.score_pool(net, local, random_state=random_state, labeled=labeled)
        _check_scores(selector, scores, len(local))
    scores = scores.to(_agreed_dtype(shard, scores))
    generator = _generator(scores.device, random_state)
    rule = resolve_batch(getattr(selector, "batch", "topk"))
    if type(rule) is TopK:
        keys = distributed.tie_keys(generator, len(X_pool), scores.device, shard)
        order, picked = distributed.top_n(scores, n, keys, shard)
    else:
        scores = shard.gather_rows(scores)

        def embed(positions):
            return distributed.map_rows(
                net, lambda Xb: net.forward_tapped(Xb, embedding=True)[1]["embedding"],
                take(X_pool, positions.cpu().numpy())).float()

        order = rule.pick(scores, n, generator=generator, embed=embed)
        _check_picks(rule, order, n, len(scores))
        order = order[torch.sort(scores[order], descending=True, stable=True).indices]
        picked = scores[order]
    return _pool_indices(order, candidates), picked.cpu().numpy()


def coreset_select(selector, net, X_pool, n, random_state, labeled):
    """:meth:`CoreSet.select`, sharded."""
    from .base import _generator, _pool_indices, embeddings
    from .coreset import _check_finite_embeddings, _labeled_centers

    random_state, candidates, X_pool, shard, local = _start(selector, net, X_pool, n, random_state)
    pool = centers = None
    with shard.guard():
        pool = embeddings(net, local)
        centers = _labeled_centers(net, labeled)  # the labeled set, whole on every process
        _check_finite_embeddings(pool, centers)
    indices, distances = kcenter_greedy_sharded(
        pool, n, shard, centers=centers, chunk_size=selector.chunk_size,
        generator=_generator(pool.device, random_state))
    return _pool_indices(indices, candidates), distances.cpu().numpy()


def badge_select(selector, net, X_pool, n, random_state, labeled):
    """:meth:`BADGE.select`, sharded."""
    from .badge import _check_finite_factors, _largest_first, gradient_embedding_factors
    from .base import _generator

    random_state, candidates, X_pool, shard, local = _start(selector, net, X_pool, n, random_state)
    a = h = None
    with shard.guard():
        if len(local):
            a, h = gradient_embedding_factors(net, local)
            _check_finite_factors(a, h)
    widths = {w for w in shard.gather_objects(None if a is None else (a.shape[1], h.shape[1])) if w}
    if a is None:
        c, d = widths.pop()
        device = torch.device(net.device)
        a = torch.empty((0, c), dtype=torch.float64, device=device)
        h = torch.empty((0, d), dtype=torch.float64, device=device)
    indices, d2 = kmeans_plusplus_outer_sharded(a, h, n, shard, first=selector.first,
                                                generator=_generator(a.device, random_state))
    return _largest_first(indices, d2, candidates)
