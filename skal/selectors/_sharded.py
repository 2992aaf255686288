"""The selectors' ``select`` when the query is sharded over processes (:mod:`skal.distributed`).

Each function returns, on every process, what the selector's single-process
``select`` returns for the whole pool with the same seed.
"""

import numpy as np
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
    from .base import _check_picks, _generator

    random_state, candidates, X_pool, shard, local = _start(selector, net, X_pool, n, random_state)
    scores = None
    with shard.guard(), distributed.active(shard):
        scores = selector.score_pool(net, local, random_state=random_state, labeled=labeled)
        if scores.ndim != 1 or scores.shape[0] != len(local):
            raise RuntimeError(
                f"{type(selector).__name__} returned {tuple(scores.shape)} scores for a pool "
                f"of {len(local)} samples."
            )
        if torch.isnan(scores).any():
            raise ValueError(
                f"{type(selector).__name__} produced NaN scores; the net's outputs are not "
                "finite (did training diverge?)."
            )
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
    indices = order.cpu().numpy().astype(np.int64)
    if candidates is not None:
        indices = candidates[indices]
    return indices, picked.cpu().numpy()


def coreset_select(selector, net, X_pool, n, random_state, labeled):
    """:meth:`CoreSet.select`, sharded."""
    from .base import _generator, embeddings

    random_state, candidates, X_pool, shard, local = _start(selector, net, X_pool, n, random_state)
    pool = centers = None
    with shard.guard():
        pool = embeddings(net, local)
        if labeled is not None:  # the labeled set is embedded whole on every process
            parts = [embeddings(net, X) for X in (labeled.X, labeled.X_reference) if len(X)]
            centers = torch.cat(parts) if parts else None
        for name, values in (("pool", pool), ("labeled set", centers)):
            if values is not None and not torch.isfinite(values).all():
                raise ValueError(
                    f"CoreSet: the net's embeddings of the {name} are NaN or infinite; the "
                    "net's outputs are not finite (did training diverge?)."
                )
    indices, distances = kcenter_greedy_sharded(
        pool, n, shard, centers=centers, chunk_size=selector.chunk_size,
        generator=_generator(pool.device, random_state))
    indices = indices.cpu().numpy().astype(np.int64)
    if candidates is not None:
        indices = candidates[indices]
    return indices, distances.cpu().numpy()


def badge_select(selector, net, X_pool, n, random_state, labeled):
    """:meth:`BADGE.select`, sharded."""
    from .badge import gradient_embedding_factors
    from .base import _generator

    random_state, candidates, X_pool, shard, local = _start(selector, net, X_pool, n, random_state)
    a = h = None
    with shard.guard():
        if len(local):
            a, h = gradient_embedding_factors(net, local)
            if not (torch.isfinite(a).all() and torch.isfinite(h).all()):
                raise ValueError(
                    "BADGE: the net's outputs or embeddings of the pool are NaN or infinite; the "
                    "net's outputs are not finite (did training diverge?)."
                )
    widths = {w for w in shard.gather_objects(None if a is None else (a.shape[1], h.shape[1])) if w}
    if a is None:
        c, d = widths.pop()
        device = torch.device(net.device)
        a = torch.empty((0, c), dtype=torch.float64, device=device)
        h = torch.empty((0, d), dtype=torch.float64, device=device)
    indices, d2 = kmeans_plusplus_outer_sharded(a, h, n, shard, first=selector.first,
                                                generator=_generator(a.device, random_state))
    order = torch.sort(d2, descending=True, stable=True).indices
    indices = indices[order].cpu().numpy().astype(np.int64)
    if candidates is not None:
        indices = candidates[indices]
    return indices, d2[order].cpu().numpy()
