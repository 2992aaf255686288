"""A query sharded over 2 and 3 processes (gloo on the CPU) equals the single-process query.

The learners are fitted here once, pickled, and every spawned process runs each
case twice: inside ``local_query()`` (the single-process query, in the same
process, threads and library build) and sharded. Indices and scores must be equal,
bit for bit, on every process.
"""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from skal import UNLABELED, ActiveLearner, ActiveNet
from skal.distributed import is_sharded, local_query, split
from skal.models import MLP, SmallCNN
from skal.selectors import (
    BADGE, BALD, DISAL, ISAL, LL4AL, ClusterBatch, CoreSet, Entropy, LeastConfidence, Margin,
    Random, StochasticBatch, TiDAL,
)

HERE = Path(__file__).parent
needs_gloo = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="needs torch.distributed with the gloo backend")


def _tabular(n, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1).astype(np.int64)


def _images(n, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 1, 8, 8)).astype(np.float32)
    return X, (np.arange(n) % 3).astype(np.int64)


def _mlp(batch_size=8, **kwargs):
    kwargs = {"max_epochs": 2, "lr": 0.1, **kwargs}
    return ActiveNet(MLP, module__hidden_sizes=(8,), batch_size=batch_size, verbose=0, **kwargs)


def _cnn():
    return ActiveNet(SmallCNN, module__width=4, max_epochs=2, batch_size=8, lr=0.05, verbose=0)


def _last_layer(name, param):
    return param.ndim == 1  # the biases


def _cases():
    """(name, fitted learner, pool, n): every selector and batch rule, uneven and tiny pools."""
    X, y = _tabular(120, 0)
    pool = _tabular(53, 1)[0]  # 7 batches of 8 (the last of 5): 4 + 3 and 3 + 2 + 2 per rank
    tied = pool.copy()
    tied[1::2] = tied[::2][:len(tied[1::2])]  # pairs of equal rows: tied scores across ranks
    few = pool[np.arange(len(pool)) % 4]  # 4 distinct rows: D^2 and distances reach 0
    cases = []

    def add(name, selector, n=6, pool=pool, net=None, data=(X[:40], y[:40])):
        learner = ActiveLearner(net or _mlp(), selector, random_state=0).fit(*data)
        cases.append((name, learner, pool, n))

    add("random", Random())
    add("entropy", Entropy())
    add("margin", Margin())
    add("least_confidence", LeastConfidence())
    add("margin_ties", Margin(), n=9, pool=tied)
    add("softrank", Margin(batch=StochasticBatch()), n=7)
    add("power", Entropy(batch=StochasticBatch(mode="power", beta=2.0)), n=7)
    add("softmax", LeastConfidence(batch=StochasticBatch(mode="softmax", beta=3.0)), n=7)
    add("cluster", Margin(batch=ClusterBatch(factor=3)), n=5)
    add("coreset", CoreSet(), n=10)
    add("coreset_subset", CoreSet(subset=30), n=8)
    add("coreset_ties", CoreSet(), n=9, pool=tied)
    add("badge", BADGE(), n=10)
    add("badge_random_first", BADGE(first="random", subset=40), n=8)
    add("badge_duplicates", BADGE(), n=8, pool=few)  # uniform draws once every D^2 is 0
    add("coreset_duplicates", CoreSet(), n=8, pool=few)
    add("bald", BALD(n_samples=4, subset=45), n=6, net=_mlp(module__dropout=0.3))
    add("disal_drift", DISAL(), n=6)
    add("disal_keep", DISAL(drift="keep", transitions=2), n=6, net=_mlp(max_epochs=3))
    # the paper's DISAL (no class balance) and drift removal without it: plain top-k of the KL
    add("disal_paper", DISAL(drift="keep", balance="none"), n=6)
    add("disal_drift_unbalanced", DISAL(balance="none", batch="stochastic"), n=6)
    add("isal", ISAL(depth=3, repeats=1), n=6)
    Xi, yi = _images(60, 2)
    pool_images = _images(29, 3)[0]
    add("tidal", TiDAL(subset=None, batch="cluster"), n=4, net=_cnn(), pool=pool_images,
        data=(Xi[:30], yi[:30]))
    add("ll4al", LL4AL(subset=20), n=4, net=_cnn(), pool=pool_images, data=(Xi[:30], yi[:30]))
    # a lazy Dataset pool, streamed through skorch's loader
    add("dataset_pool", Margin(), n=5, pool=torch.utils.data.TensorDataset(torch.from_numpy(pool)))
    # a selector holding a callable (its repr differs between processes)
    add("isal_last_layer", ISAL(params=_last_layer, depth=2, repeats=1), n=4)
    # a pool of one batch: some ranks have no rows
    add("one_batch_pool", Margin(), n=3, pool=pool[:6])
    add("one_batch_coreset", CoreSet(), n=3, pool=pool[:6])
    add("one_batch_badge", BADGE(), n=3, pool=pool[:6])
    add("one_batch_disal", DISAL(), n=2, pool=pool[:6])
    # a pool smaller than the world size, one row per batch
    add("tiny_pool", Entropy(), n=1, pool=pool[:2], net=_mlp(batch_size=1))
    add("tiny_coreset", CoreSet(), n=2, pool=pool[:2], net=_mlp(batch_size=1))
    # the learner's own pool: candidates are its unlabeled rows, indices its rows
    marked = np.full(len(y), UNLABELED)
    marked[:30] = y[:30]
    for name, selector in (("pool_margin", Margin()), ("pool_coreset", CoreSet()),
                           ("pool_badge", BADGE()), ("pool_stochastic", Entropy(batch="stochastic"))):
        learner = ActiveLearner(_mlp(), selector, unlabeled=UNLABELED, random_state=0)
        learner.fit(X, marked)
        learner.teach(X, y[[31, 33, 40, 41, 42, 90]], rows=[31, 33, 40, 41, 42, 90])  # uneven holes
        cases.append((name, learner, X, 5))
    return cases


@pytest.fixture(scope="module")
def cases_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sharded") / "cases.pkl"
    with open(path, "wb") as f:
        pickle.dump(_cases(), f)
    return path


def _spawn(world, cases_file, tmp_path):
    init = tmp_path / "init"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    outs = [tmp_path / f"out{rank}.pkl" for rank in range(world)]
    procs = [subprocess.Popen([sys.executable, str(HERE / "_distributed_worker.py"), str(rank),
                               str(world), str(init), str(cases_file), str(outs[rank])],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for rank in range(world)]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=240)[0].decode(errors="replace"))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for rank, out in enumerate(outs):
        assert out.exists(), f"rank {rank} wrote no results:\n{logs[rank][-3000:]}"
    results = []
    for out in outs:
        with open(out, "rb") as f:
            results.append(pickle.load(f))
    return results


@pytest.fixture(scope="module", params=[pytest.param(2, marks=needs_gloo),
                                        pytest.param(3, marks=needs_gloo)])
def sharded(request, cases_file, tmp_path_factory):
    return request.param, _spawn(request.param, cases_file, tmp_path_factory.mktemp("run"))


def _failed(result):
    return isinstance(result[0], str) and result[0] == "error"


CASE_NAMES = [
    "random", "entropy", "margin", "least_confidence", "margin_ties", "softrank",
    "power", "softmax", "cluster", "coreset", "coreset_subset", "coreset_ties", "badge",
    "badge_random_first", "badge_duplicates", "coreset_duplicates", "bald", "disal_drift", "disal_keep", "disal_paper", "disal_drift_unbalanced", "isal", "tidal", "ll4al",
    "dataset_pool", "isal_last_layer", "one_batch_pool", "one_batch_coreset", "one_batch_badge", "one_batch_disal", "tiny_pool",
    "tiny_coreset", "pool_margin", "pool_coreset", "pool_badge", "pool_stochastic",
]


def test_case_names_cover_the_cases(cases_file):
    with open(cases_file, "rb") as f:
        assert [name for name, *_ in pickle.load(f)] == CASE_NAMES


@pytest.mark.parametrize("name", CASE_NAMES)
def test_sharded_query_equals_the_single_process_query(sharded, name):
    world, results = sharded
    single = results[0][name]["single"]
    assert not _failed(single), single
    for rank in range(world):
        assert results[rank]["is_sharded"]
        alone, sharded_calls = results[rank][name]["collectives"]
        assert alone == 0 and sharded_calls > 0  # the query was sharded, local_query was not
        # every rank's own single-process query agrees (same learner, same pool)
        np.testing.assert_array_equal(results[rank][name]["single"][0], single[0])
        got = results[rank][name]["sharded"]
        assert not _failed(got), f"rank {rank}: {got}"
        indices, scores = got
        assert indices.dtype == np.int64 and scores.dtype == single[1].dtype
        np.testing.assert_array_equal(indices, single[0])
        np.testing.assert_array_equal(scores, single[1])


@pytest.mark.parametrize("case", ["kcenter_torch.float64_5", "kcenter_torch.float64_0",
                                  "kcenter_torch.float32_0", "kcenter_torch.float32_5_large"]
                         + [f"kcenter_torch.float{bits}_{c}_{rows}_offer{offer}"
                            for bits, c, rows in ((64, 5, 70), (64, 0, 70), (32, 0, 70), (32, 5, 6000))
                            for offer in (1, 3)])
def test_sharded_kcenter_equals_kcenter_greedy_in_both_loops(sharded, case):
    # float64 runs the dense loop (the one GPUs run), float32 the CPU's screened loop;
    # without centers the first pick is the permutation's first row; the large case's
    # exact distances take cdist's kernel
    world, results = sharded
    for rank in range(world):
        got = results[rank][case]
        np.testing.assert_array_equal(got["sharded"][0], got["single"][0])
        np.testing.assert_array_equal(got["sharded"][1], got["single"][1])


@pytest.mark.parametrize("case", [f"seeding_{name}_{ahead}_{offered}" for name in ("many", "few")
                                  for ahead, offered in ((8, 1), (3, 4), (8, 4))])
def test_sharded_seeding_settles_picks_ahead_exactly(sharded, case):
    # the picks a round trip settles ahead equal the single process's, D^2 bit for bit
    world, results = sharded
    for rank in range(world):
        got = results[rank][case]
        np.testing.assert_array_equal(got["sharded"][0], got["single"][0])
        np.testing.assert_array_equal(got["sharded"][1], got["single"][1])


def test_an_error_on_one_rank_raises_on_every_rank(sharded):
    world, results = sharded
    for rank in range(world):
        got = results[rank]["error_on_one_rank"]["sharded"]
        assert _failed(got) and got[1] == "ValueError", got
        assert "a corrupt pool batch" in got[2]
        if rank != world - 1:
            assert f"rank {world - 1} of the sharded query failed" in got[2]
        # and the group still serves the next query, exactly
        after = results[rank]["after_error"]
        np.testing.assert_array_equal(after["sharded"][0], after["single"][0])
        np.testing.assert_array_equal(after["sharded"][1], after["single"][1])


def test_processes_that_disagree_on_the_seed_all_raise(sharded):
    world, results = sharded
    for rank in range(world):
        got = results[rank]["seed_mismatch"]["sharded"]
        assert _failed(got) and got[1] == "ValueError", got
        assert "disagree on its random_state" in got[2]


def test_local_query_runs_each_process_alone(sharded):
    world, results = sharded
    for rank in range(world):
        got = results[rank]["local_query"]
        assert not _failed(got["sharded"]), got
        # each process's pool is its own (shifted by its rank): its own smallest margins
        np.testing.assert_array_equal(got["sharded"][0], got["expected"])


def test_a_rank_that_never_queries_makes_the_others_fail_not_hang(sharded):
    world, results = sharded
    got = results[0]["missing_rank"]
    assert _failed(got["sharded"]), got
    assert got["seconds"] < 30  # the group's timeout is 20 s


@pytest.mark.parametrize("n_total, unit, world, bounds", [
    (53, 8, 2, (0, 32, 53)),
    (53, 8, 3, (0, 24, 40, 53)),
    (6, 8, 3, (0, 6, 6, 6)),
    (2, 1, 3, (0, 1, 2, 2)),
    (0, 8, 2, (0, 0, 0)),
    (64, 8, 2, (0, 32, 64)),
])
def test_split_deals_whole_batches_like_the_distributed_sampler(n_total, unit, world, bounds):
    assert split(n_total, unit, world) == bounds


def test_without_a_process_group_nothing_is_sharded():
    assert not (torch.distributed.is_available() and torch.distributed.is_initialized())
    assert not is_sharded()
    with local_query():
        assert not is_sharded()
