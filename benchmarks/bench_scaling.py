"""Query time and peak memory against pool size: linear time, memory bounded by the chunk size.

For each pool size a fresh subprocess builds the pool (float32, 784 features), fits an MLP
learner on 1,000 samples, and times `query(pool, 1000)` with Entropy and with DISAL; the resident
memory is sampled every millisecond during the query, and its peak minus the RSS just before
(pool already allocated) is what querying costs beyond the pool itself.

    python benchmarks/bench_scaling.py             # pools of 10,000, 100,000 and 1,000,000
    python benchmarks/bench_scaling.py --quick     # 10,000 and 50,000

Writes benchmarks/results/scaling[_quick].json.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


def _rss():
    """Current resident set size in bytes (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakSampler(threading.Thread):
    """Polls the RSS every millisecond while the measured call runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.running = _rss(), True

    def run(self):
        while self.running:
            self.peak = max(self.peak, _rss())
            time.sleep(0.001)


def child(n_pool, selector_name):
    import torch

    from skal import ActiveLearner, ActiveNet
    from skal.models import MLP
    from skal.selectors import DISAL, Entropy

    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    X = rng.random((1_000, 784), dtype=np.float32)
    y = rng.integers(0, 10, size=1_000)
    selector = {"Entropy": Entropy(), "DISAL": DISAL()}[selector_name]
    net = ActiveNet(MLP, module__hidden_sizes=(256,), module__num_classes=10, max_epochs=2,
                    iterator_valid__batch_size=4096, verbose=0)
    learner = ActiveLearner(net, selector=selector, random_state=0).fit(X, y)
    pool = np.empty((n_pool, 784), dtype=np.float32)
    for start in range(0, n_pool, 100_000):  # filled in blocks: no float64 temporary
        stop = min(start + 100_000, n_pool)
        pool[start:stop] = rng.random((stop - start, 784), dtype=np.float32)
    learner.query(pool[:5_000], 10)  # warm-up
    before = _rss()
    sampler = _PeakSampler()
    sampler.start()
    start = time.perf_counter()
    learner.query(pool, 1_000)
    seconds = time.perf_counter() - start
    sampler.running = False
    sampler.join()
    print(json.dumps({"n_pool": n_pool, "selector": selector_name, "seconds": seconds,
                      "pool_bytes": pool.nbytes, "peak_rise_bytes": max(sampler.peak, _rss()) - before}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("N_POOL", "SELECTOR"))
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), args.child[1])
        return
    sizes = [10_000, 50_000] if args.quick else [10_000, 100_000, 1_000_000]
    rows = []
    for selector in ["Entropy", "DISAL"]:
        for n_pool in sizes:
            out = subprocess.run([sys.executable, __file__, "--child", str(n_pool), selector],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| selector | pool | query time | time per 1,000 samples | pool array | peak RSS rise in query |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['selector']} | {r['n_pool']:,} | {r['seconds']:.2f} s | "
              f"{1000 * r['seconds'] / r['n_pool'] * 1000:.1f} ms | {r['pool_bytes'] / 2**20:,.0f} MiB | "
              f"{r['peak_rise_bytes'] / 2**20:,.1f} MiB |")
    result = {"command": "python benchmarks/bench_scaling.py" + (" --quick" if args.quick else ""),
              "machine": platform.machine(), "cpu_count": os.cpu_count(), "loadavg": os.getloadavg(),
              "rows": rows}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / ("scaling_quick.json" if args.quick else "scaling.json")).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
