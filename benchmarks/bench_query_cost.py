"""Query cost of each selector relative to one streamed forward pass over the same pool.

Each selector's learner is fitted on the same labeled set (the net configured with
what the selector needs; BALD's SmallCNN has dropout 0.5 before the classifier), then `query`
is timed against `for _ in net.iter_logits(pool)` on the same net in the same process; the
ratio is what the table reports.

    python benchmarks/bench_query_cost.py            # 20,000 1x28x28 pool, 1,000 labeled, n=1,000
    python benchmarks/bench_query_cost.py --quick    # 4,000 pool, 500 labeled, n=200, ISAL depth 50
    python benchmarks/bench_query_cost.py --device cuda

Writes benchmarks/results/query_cost.json.
"""

import argparse
import json
import os
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from skal import ActiveLearner, ActiveNet
from skal.models import SmallCNN
from skal.selectors import (BADGE, BALD, DISAL, ISAL, LL4AL, CoreSet, Entropy, LeastConfidence, Margin,
                            Random, TiDAL)
from skal._provenance import machine


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _median_time(fn, device, repeats):
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n_pool, n_labeled, n, depth = (4_000, 500, 200, 50) if args.quick else (20_000, 1_000, 1_000, 250)

    rng = np.random.default_rng(0)
    X_lab = rng.random((n_labeled, 1, 28, 28), dtype=np.float32)
    y_lab = np.arange(n_labeled) % 10
    X_pool = rng.random((n_pool, 1, 28, 28), dtype=np.float32)
    selectors = {
        "Random": Random(), "Entropy": Entropy(), "Margin": Margin(),
        "LeastConfidence": LeastConfidence(), "DISAL": DISAL(),
        "TiDAL (full pool)": TiDAL(subset=None), "LL4AL (full pool)": LL4AL(subset=None),
        "CoreSet": CoreSet(), f"ISAL (all weights, depth {depth})": ISAL(depth=depth),
        f"ISAL (last layer, depth {depth})": ISAL(params="last layer", depth=depth),
        "BALD (T=20)": BALD(n_samples=20), "BADGE": BADGE(),
    }
    net_params = {"BALD (T=20)": {"module__dropout": 0.5}}  # MC dropout needs a dropout layer
    rows = []
    for name, selector in selectors.items():
        net = ActiveNet(SmallCNN, max_epochs=2, batch_size=128, lr=0.05, device=args.device,
                        iterator_valid__batch_size=1024, verbose=0, **net_params.get(name, {}))
        learner = ActiveLearner(net, selector=selector, classes=np.arange(10), random_state=0)
        learner.fit(X_lab, y_lab)
        forward = _median_time(lambda: [None for _ in learner.estimator_.iter_logits(X_pool)],
                               args.device, args.repeats)
        repeats = 1 if name.startswith("ISAL") else args.repeats
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            query = _median_time(lambda: learner.query(X_pool, n), args.device, repeats)
        rows.append({"selector": name, "forward_s": forward, "query_s": query, "ratio": query / forward})
        print(f"{name}: query {query:.3f} s, forward {forward:.3f} s, ratio {query / forward:.2f}", flush=True)

    result = {
        "command": "python benchmarks/bench_query_cost.py" + (" --quick" if args.quick else "")
                   + (f" --device {args.device}" if args.device != "cpu" else ""),
        "device": args.device, "machine": machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "n_pool": n_pool, "n_labeled": n_labeled, "n": n,
        "model": "SmallCNN on 1x28x28", "rows": rows, "loadavg": os.getloadavg(),
    }
    print(f"\n| selector | query s | one forward pass s | ratio |\n|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['selector']} | {row['query_s']:.3f} | {row['forward_s']:.3f} | {row['ratio']:.2f} |")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / ("query_cost_quick.json" if args.quick else "query_cost.json")).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
