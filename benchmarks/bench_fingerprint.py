"""Cost of the pool fingerprint on a 1,000,000-row pool, against one scoring pass of a linear model.

The learner recognises its pool on every ``query`` / ``teach(rows=)`` by a fingerprint that
every row counts in (skal._fingerprint: a CRC-32 per block of 4,096 rows over the rows'
float32 bytes; a DataFrame with non-numeric columns by pandas' per-row hash). Reported, each
the median of 3 runs on one thread:

- ``fingerprint``: the fingerprint of the whole pool (what ``fit`` computes);
- ``compare_grown``: recognising the pool with 1,000 rows appended (what ``query`` does then);
- ``linear_scoring``: ``LogisticRegression.predict_proba`` on the same rows (10 classes), the
  target's yardstick (a selector scores every candidate with a model at least this costly);
- ``frame_fingerprint``: a DataFrame of the same numbers plus a string column;
- ``sampled_64_rows``: the earlier fingerprint (64 rows; it missed changes elsewhere).

    python benchmarks/bench_fingerprint.py            # 1,000,000 rows x 32 features (~1 min)
    python benchmarks/bench_fingerprint.py --quick    # 100,000 rows

Writes benchmarks/results/fingerprint[_quick].json.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from skal._bookkeeping import fingerprint as sampled_fingerprint
from skal._fingerprint import compare, fingerprint
from skal._provenance import machine

HERE = Path(__file__).parent
N_FEATURES, N_CLASSES = 32, 10


def _median_seconds(call, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 rows instead of 1,000,000")
    args = parser.parse_args()
    n = 100_000 if args.quick else 1_000_000
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n + 1000, N_FEATURES)).astype(np.float32)
    pool, grown = X[:n], X
    y = rng.integers(N_CLASSES, size=5000)
    model = LogisticRegression(max_iter=50).fit(X[:5000], y)
    frame = pd.DataFrame(pool, columns=[f"f{i}" for i in range(N_FEATURES)])
    frame["region"] = np.array(["north", "south", "east", "west"])[rng.integers(4, size=n)]
    stored = fingerprint(pool)
    with threadpool_limits(1):
        results = {
            "fingerprint": _median_seconds(lambda: fingerprint(pool)),
            "compare_grown": _median_seconds(lambda: compare(grown, stored)),
            "linear_scoring": _median_seconds(lambda: model.predict_proba(pool)),
            "frame_fingerprint": _median_seconds(lambda: fingerprint(frame)),
            "sampled_64_rows": _median_seconds(lambda: sampled_fingerprint(pool)),
        }
    record = {"rows": n, "features": N_FEATURES, "classes": N_CLASSES, "seconds": results,
              "fingerprint_over_linear_scoring": results["fingerprint"] / results["linear_scoring"],
              "fingerprint_bytes": len(stored), "machine": machine(),
              "threads": 1, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    print(json.dumps(record, indent=2))
    out = HERE / "results" / f"fingerprint{'_quick' if args.quick else ''}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
