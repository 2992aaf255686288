"""Memory of the pool bookkeeping: a campaign over a 1,000,000-row pool.

``ActiveLearner(unlabeled=UNLABELED).fit(X, y)`` with 200 of the rows labeled, then a query of
1,000 among the unlabeled rows, 1,000 labels taught by row index and 100 rows skipped. Reported:
the bookkeeping's own size (the status array, one byte per row, and the fingerprint), the
Python-allocated memory (tracemalloc) held by the learner after each step beyond what the
same learner holds without a pool, and the peak during the query beside a query of the same
array without bookkeeping. tracemalloc sees numpy's and Python's allocations, not torch's
(the scores of a query live in torch tensors either way). The pool itself is never copied.

    python benchmarks/bench_bookkeeping.py           # 1,000,000 rows x 32 features (~30 s)
    python benchmarks/bench_bookkeeping.py --quick   # 100,000 rows

Writes benchmarks/results/bookkeeping[_quick].json.
"""

import argparse
import gc
import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from skal import UNLABELED, ActiveLearner, ActiveNet
from skal._provenance import machine
from skal.models import MLP
from skal.selectors import Entropy

HERE = Path(__file__).parent
N_FEATURES, N_LABELED, N_QUERY = 32, 200, 1000


def _learner(pool):
    net = ActiveNet(MLP, module__hidden_sizes=(32,), max_epochs=2, batch_size=64, verbose=0,
                    classes=np.arange(4))
    return ActiveLearner(net, Entropy(), random_state=0, **({"unlabeled": UNLABELED} if pool else {}))


def _traced(step):
    """Run ``step``; return its result, the traced memory it left allocated and its peak."""
    gc.collect()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    result = step()
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    return result, current - before, peak - before


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    n = 100_000 if args.quick else 1_000_000
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    truth = rng.integers(0, 4, size=n)
    y = np.full(n, UNLABELED)
    y[:N_LABELED] = truth[:N_LABELED]
    # warm-up: one-time allocations (imports, caches) are not charged to either learner
    warm = _learner(True).fit(X[:1000], y[:1000])
    warm.query(X[:1000], 10)
    del warm
    tracemalloc.start()
    start = time.perf_counter()

    plain, plain_fit, _ = _traced(lambda: _learner(False).fit(X[:N_LABELED], truth[:N_LABELED]))
    _, _, plain_query_peak = _traced(lambda: plain.query(X, N_QUERY))

    learner, fit_held, _ = _traced(lambda: _learner(True).fit(X, y))
    rows, _, query_peak = _traced(lambda: learner.query(X, N_QUERY))
    _, teach_held, _ = _traced(lambda: learner.teach(X, truth[rows], rows=rows))
    _, skip_held, _ = _traced(lambda: learner.skip(learner.unlabeled_rows_[:100]))
    state = learner._state().pool
    seconds = time.perf_counter() - start
    tracemalloc.stop()
    mib = 2 ** 20
    result = {
        "command": "python benchmarks/bench_bookkeeping.py" + (" --quick" if args.quick else ""),
        "n_rows": n, "n_features": N_FEATURES, "pool_mib": X.nbytes / mib,
        "status_bytes": int(state.status.nbytes), "bytes_per_row": state.status.nbytes / n,
        "fingerprint_chars": len(state.fingerprint),
        "fit_held_mib": {"with pool": fit_held / mib, "without pool": plain_fit / mib},
        "query_peak_mib": {"with pool": query_peak / mib, "without pool": plain_query_peak / mib},
        "teach_held_mib": teach_held / mib, "skip_held_mib": skip_held / mib,
        "labeled": len(learner.labeled_rows_), "skipped": len(learner.skipped_rows_),
        "returned_labeled_rows": int(np.isin(rows, np.arange(N_LABELED)).sum()),
        "seconds": seconds, "machine": machine(), "torch": torch.__version__,
    }
    suffix = "_quick" if args.quick else ""
    (HERE / "results" / f"bookkeeping{suffix}.json").write_text(json.dumps(result, indent=2))
    print(f"pool {n:,} x {N_FEATURES} float32 ({result['pool_mib']:.0f} MiB): status "
          f"{result['status_bytes'] / mib:.2f} MiB ({result['bytes_per_row']:.0f} byte/row)")
    print("| step | Python memory held or peak, with the pool's bookkeeping | without |")
    print("|---|---:|---:|")
    print(f"| fit (held) | {fit_held / mib:.2f} MiB | {plain_fit / mib:.2f} MiB |")
    print(f"| query of {N_QUERY:,} (peak) | {query_peak / mib:.2f} MiB | {plain_query_peak / mib:.2f} MiB |")
    print(f"| teach {N_QUERY:,} rows by index (held) | {teach_held / mib:.2f} MiB | |")
    print(f"| skip 100 rows (held) | {skip_held / mib:.2f} MiB | |")
    print(f"{seconds:.1f} s")


if __name__ == "__main__":
    main()
