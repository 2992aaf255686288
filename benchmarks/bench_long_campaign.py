"""Host memory over a long campaign: 50 fit/query/teach cycles must not grow beyond the labels.

The campaign that `tests/test_reliability.py` bounds (the test calls `run`): an MLP learner
(12 features, 400-row pool, Entropy, 2 labels per cycle, one torch thread), cold and warm
start; Python allocations (tracemalloc) and resident memory (less tracemalloc's own) measured
after cycle 5 and after the last cycle, and the live ActiveNet / tensor counts. The test asserts
bounds; this script reports the numbers the docs quote.

    python benchmarks/bench_long_campaign.py            # 50 cycles (~10 s)
    python benchmarks/bench_long_campaign.py --quick    # 15 cycles

Writes benchmarks/results/long_campaign[_quick].json.
"""

import argparse
import gc
import json
import os
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import torch

from skal import ActiveLearner, ActiveNet
from skal.models import MLP
from skal.selectors import Entropy

N_FEATURES, WARM_UP = 12, 5


def _rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _live(cls):
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return sum(isinstance(obj, cls) for obj in gc.get_objects())


def run(warm_start, cycles):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, N_FEATURES)).astype(np.float32)
    y = X[:, :3].argmax(1)
    net = ActiveNet(MLP, module__hidden_sizes=(16,), max_epochs=1, batch_size=32, lr=0.05, verbose=0)
    marks = {}
    tracemalloc.start()
    start = time.perf_counter()
    learner = ActiveLearner(net, selector=Entropy(), warm_start=warm_start, classes=np.arange(3),
                            random_state=0).fit(X[:20], y[:20])
    pool = np.arange(20, 400)
    for cycle in range(cycles):
        idx = learner.query(X[pool], 2)
        chosen, pool = pool[idx], np.delete(pool, idx)
        learner.teach(X[chosen], y[chosen])
        if cycle in (WARM_UP - 1, cycles - 1):
            live = (_live(ActiveNet), _live(torch.Tensor))
            gc.collect()
            marks[cycle] = (tracemalloc.get_traced_memory()[0],
                            _rss() - tracemalloc.get_tracemalloc_memory(), live)
    elapsed = time.perf_counter() - start
    tracemalloc.stop()
    (t0, r0, l0), (t1, r1, l1) = marks[WARM_UP - 1], marks[cycles - 1]
    return {"warm_start": warm_start, "cycles": cycles, "seconds": elapsed,
            "n_labeled": len(learner.y_labeled_),
            "traced_growth_kib": (t1 - t0) / 1024, "rss_growth_mib": (r1 - r0) / 2**20,
            "live_nets_tensors_before": l0, "live_nets_tensors_after": l1,
            "labeled_kib_added": 2 * (cycles - WARM_UP) * (4 * N_FEATURES + 8 + 8 + 1) / 1024}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cycles = 15 if args.quick else 50
    rows = [run(warm, cycles) for warm in (False, True)]
    print(f"| start | cycles {WARM_UP} to {cycles} | labels added | Python allocations "
          "(tracemalloc) | resident memory | live ActiveNet / tensors | time |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {'warm' if r['warm_start'] else 'cold'} | {cycles - WARM_UP} | "
              f"{r['labeled_kib_added']:.1f} KiB | +{r['traced_growth_kib']:.0f} KiB | "
              f"{r['rss_growth_mib']:+.2f} MiB | {r['live_nets_tensors_before']} -> "
              f"{r['live_nets_tensors_after']} | {r['seconds']:.1f} s |")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    name = "long_campaign_quick.json" if args.quick else "long_campaign.json"
    (out / name).write_text(json.dumps({"rows": rows, "load_average": os.getloadavg(),
                                        "python": sys.version.split()[0]}, indent=1))


if __name__ == "__main__":
    main()
