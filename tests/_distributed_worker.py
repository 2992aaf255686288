"""One process of the sharded-query tests (tests/test_distributed.py); run as a script.

    python tests/_distributed_worker.py RANK WORLD INIT_FILE CASES_FILE OUT_FILE

Joins a gloo process group, runs every case of CASES_FILE (a pickled list of
``(name, learner, pool, n)``) twice, once inside ``local_query()`` (the
single-process query on this process) and once sharded, then the special cases,
and pickles ``{name: {"single": ..., "sharded": ...}}`` to OUT_FILE, where
each value is ``(indices, scores)`` or ``("error", type name, message)``.
"""

import os
import pickle
import sys
import time
from datetime import timedelta
from unittest import mock

import numpy as np
import torch
import torch.distributed as dist


def _run(fn):
    try:
        indices, scores = fn()
        return np.asarray(indices), np.asarray(scores)
    except Exception as error:  # recorded for the parent to check
        return ("error", type(error).__name__, str(error))


def main():
    rank, world = int(sys.argv[1]), int(sys.argv[2])
    init_file, cases_file, out_file = sys.argv[3:6]
    torch.set_num_threads(1)
    from skal import ActiveLearner, ActiveNet
    from skal.distributed import is_sharded, local_query
    from skal.models import MLP
    from skal.selectors import Margin, ScoreSelector

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=20))
    results = {"is_sharded": is_sharded()}
    calls = [0]  # collectives a query makes: none alone, some sharded
    for name in ("all_gather", "all_gather_object", "broadcast", "all_reduce"):
        def counted(*args, _fn=getattr(dist, name), **kwargs):
            calls[0] += 1
            return _fn(*args, **kwargs)
        setattr(dist, name, counted)
    with open(cases_file, "rb") as f:
        cases = pickle.load(f)
    for name, learner, pool, n in cases:
        calls[0] = 0
        with local_query():
            single = _run(lambda: learner.query(pool, n, return_scores=True))
        alone = calls[0]
        sharded = _run(lambda: learner.query(pool, n, return_scores=True))
        results[name] = {"single": single, "sharded": sharded, "collectives": (alone, calls[0] - alone)}

    # the functions themselves: float64 k-center takes the dense loop (as on a GPU)
    from skal.distributed import Shard, split
    from skal.kcenter import kcenter_greedy, kcenter_greedy_sharded

    # the last case is large enough (rows x width >= 32768) for the exact distances' cdist
    # kernel, which the processes take without knowing each other's candidate counts
    for dtype, n_centers, rows, width in ((torch.float64, 5, 70, 6), (torch.float64, 0, 70, 6),
                                          (torch.float32, 0, 70, 6), (torch.float32, 5, 6000, 8)):
        g = torch.Generator().manual_seed(1)
        E = torch.randn(rows, width, generator=g, dtype=dtype)
        E[40:50] = E[10:20]  # exact duplicates: ties across processes
        C = torch.randn(n_centers, width, generator=g, dtype=dtype)
        bounds = split(rows, 4, world)
        shard = Shard(rank, world, rows, 4, bounds, torch.device("cpu"))
        single = kcenter_greedy(E, 30, centers=C, generator=torch.Generator().manual_seed(3))
        sharded = kcenter_greedy_sharded(E[shard.start:shard.stop], 30, shard, centers=C,
                                         generator=torch.Generator().manual_seed(3))
        results[f"kcenter_{dtype}_{n_centers}" + ("" if rows == 70 else "_large")] = {
            "single": (single[0].numpy(), single[1].numpy()),
            "sharded": (sharded[0].numpy(), sharded[1].numpy())}
        # one or three rows offered per process and round trip: most picks are settled
        # by the next round, the ties (duplicates) across processes included
        for per_process in (1, 3):
            with mock.patch("skal.kcenter._SENT_PER_PROCESS", per_process):
                again = kcenter_greedy_sharded(E[shard.start:shard.stop], 30, shard, centers=C,
                                               generator=torch.Generator().manual_seed(3))
            results[f"kcenter_{dtype}_{n_centers}_{rows}_offer{per_process}"] = {
                "single": (single[0].numpy(), single[1].numpy()),
                "sharded": (again[0].numpy(), again[1].numpy())}

    # BADGE's seeding: picks settled ahead of their round trip (1 or 4 rows offered per pick,
    # 8 or 3 picks ahead), duplicate rows (every D^2 0 at the end: the uniform draws) included
    from skal.kmeans import kmeans_plusplus_outer, kmeans_plusplus_outer_sharded

    g = torch.Generator().manual_seed(5)
    A, H = torch.randn(400, 4, generator=g), torch.randn(400, 6, generator=g)
    A[300:], H[300:] = A[:100], H[:100]
    few_A, few_H = A[:10].repeat(6, 1), H[:10].repeat(6, 1)
    for name, (a, h, k) in {"many": (A, H, 120), "few": (few_A, few_H, 40)}.items():
        rows = len(a)
        bounds = split(rows, 8, world)
        shard = Shard(rank, world, rows, 8, bounds, torch.device("cpu"))
        single = kmeans_plusplus_outer(a, h, k, generator=torch.Generator().manual_seed(9))
        for ahead, offered in ((8, 1), (3, 4), (8, 4)):
            with mock.patch("skal.kmeans._PICKS_AHEAD", ahead), \
                    mock.patch("skal.kmeans._OFFERED_PER_PICK", offered):
                sharded = kmeans_plusplus_outer_sharded(
                    a[shard.start:shard.stop], h[shard.start:shard.stop], k, shard,
                    generator=torch.Generator().manual_seed(9))
            results[f"seeding_{name}_{ahead}_{offered}"] = {
                "single": (single[0].numpy(), single[1].numpy()),
                "sharded": (sharded[0].numpy(), sharded[1].numpy())}

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)

    class FailsOnLastRank(ScoreSelector):
        def _score_batch(self, net, X_batch):
            if dist.get_rank() == dist.get_world_size() - 1:
                raise ValueError("a corrupt pool batch")
            return -net.logits(X_batch).max(dim=1).values

    def net():
        return ActiveNet(MLP, max_epochs=1, batch_size=8, verbose=0)

    failing = ActiveLearner(net(), FailsOnLastRank(), random_state=0).fit(X[:20], y[:20])
    results["error_on_one_rank"] = {"sharded": _run(lambda: failing.query(X[20:], 3, True))}
    # the group still works after a shared error
    learner = ActiveLearner(net(), Margin(), random_state=0).fit(X[:20], y[:20])
    with local_query():
        single = _run(lambda: learner.query(X[20:], 4, True))
    results["after_error"] = {"single": single, "sharded": _run(lambda: learner.query(X[20:], 4, True))}
    # processes that disagree on the seed: every process raises
    own = ActiveLearner(net(), Margin(), random_state=rank).fit(X[:20], y[:20])
    results["seed_mismatch"] = {"sharded": _run(lambda: own.query(X[20:], 4, True))}
    # the opt-out: each process queries a pool of its own, no collective
    with local_query():
        mine = X[20 + rank:40 + rank]
        proba = np.sort(learner.predict_proba(mine), axis=1)
        results["local_query"] = {"sharded": _run(lambda: learner.query(mine, 2, True)),
                                  "expected": np.argsort(proba[:, -1] - proba[:, -2],
                                                         kind="stable")[:2]}
    # a process that never joins the query: the others fail within the timeout, none hangs
    start = time.perf_counter()
    if rank == 0:
        results["missing_rank"] = {"sharded": _run(lambda: learner.query(X[20:], 4, True)),
                                   "seconds": time.perf_counter() - start}
    with open(out_file + ".tmp", "wb") as f:
        pickle.dump(results, f)
    os.replace(out_file + ".tmp", out_file)
    if rank != 0:
        time.sleep(1.0)  # let rank 0 reach its collective before this process leaves
    os._exit(0)  # no teardown: rank 0's group is broken on purpose


if __name__ == "__main__":
    main()
