"""Entropy query through skal vs modAL's entropy_sampling and baal's Entropy heuristic.

One fitted skorch net (an ActiveNet, which is a NeuralNetClassifier) and one pool, same process:
skal's `ActiveLearner.query` with `Entropy()` against modAL's `entropy_sampling(net, pool, n)` and
baal's `Entropy()` on `net.predict_proba(pool)`. Each peer's time includes its forward pass.

    python benchmarks/bench_entropy_peers.py            # MLP on 784 features, pool 100,000, n=1,000
    python benchmarks/bench_entropy_peers.py --quick    # pool 20,000

Install the peers without their dependencies, which would downgrade skorch (modAL pins
skorch==0.9) or pull in Jupyter (baal): `pip install --no-deps modAL-python` and
`pip install --no-deps baal structlog torchmetrics lightning-utilities`. A peer that is not
importable is skipped.
Writes benchmarks/results/entropy_peers[_quick].json.
"""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from skal import ActiveLearner, ActiveNet
from skal.models import MLP
from skal.selectors import Entropy


def _median(fn, repeats):
    fn()  # warm-up: first calls pay one-off costs (thread pools, allocator)
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n_pool, n = (20_000, 200) if args.quick else (100_000, 1_000)
    rng = np.random.default_rng(0)
    X = rng.random((1_000, 784), dtype=np.float32)
    y = rng.integers(0, 10, size=1_000)
    pool = rng.random((n_pool, 784), dtype=np.float32)
    net = ActiveNet(MLP, module__hidden_sizes=(256,), module__num_classes=10, max_epochs=2,
                    iterator_valid__batch_size=4096, verbose=0)
    learner = ActiveLearner(net, selector=Entropy(), random_state=0).fit(X, y)
    fitted = learner.estimator_

    rows = {}
    t, skal_idx = _median(lambda: learner.query(pool, n), args.repeats)
    rows["skal ActiveLearner.query(Entropy)"] = (t, set(skal_idx.tolist()))
    try:
        from modAL.uncertainty import entropy_sampling

        t, idx = _median(lambda: entropy_sampling(fitted, pool, n_instances=n), args.repeats)
        idx = idx[0] if isinstance(idx, tuple) else idx
        rows["modAL entropy_sampling"] = (t, set(np.asarray(idx).tolist()))
    except ImportError:
        print("modAL not installed: skipped")
    try:
        from baal.active.heuristics import Entropy as BaalEntropy

        def baal_query():
            probs = fitted.predict_proba(pool)[:, :, None]  # (N, C, 1 iteration)
            return BaalEntropy()(probs)[:n]

        t, idx = _median(baal_query, args.repeats)
        rows["baal heuristics.Entropy"] = (t, set(np.asarray(idx).tolist()))
    except ImportError:
        print("baal not importable: skipped")

    base = rows["skal ActiveLearner.query(Entropy)"][0]
    skal_set = rows["skal ActiveLearner.query(Entropy)"][1]
    print(f"| library | query time (pool {n_pool:,}, n={n:,}) | ratio to skal | same picks as skal |")
    print("|---|---:|---:|---:|")
    out_rows = []
    for name, (t, picks) in rows.items():
        overlap = len(picks & skal_set) / n
        print(f"| {name} | {t:.3f} s | {t / base:.2f} | {overlap:.1%} |")
        out_rows.append({"library": name, "median_s": t, "ratio": t / base, "overlap": overlap})
    result = {"command": "python benchmarks/bench_entropy_peers.py" + (" --quick" if args.quick else ""),
              "n_pool": n_pool, "n": n, "machine": platform.machine(), "cpu_count": os.cpu_count(),
              "torch": torch.__version__, "loadavg": os.getloadavg(), "rows": out_rows}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / ("entropy_peers_quick.json" if args.quick else "entropy_peers.json")).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
