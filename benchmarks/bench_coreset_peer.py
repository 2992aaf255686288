"""CoreSet selection time: skal's k-center greedy vs scikit-activeml's CoreSet.

Same random embeddings, same machine, same process. Prints a markdown table
and writes benchmarks/results/coreset_peer.json.

    python benchmarks/bench_coreset_peer.py            # N=100,000, d=128, 1,000 labeled, n=1,000
    python benchmarks/bench_coreset_peer.py --quick    # N=20,000, n=200

Needs the `bench` extra (scikit-activeml).
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

from skal.kcenter import kcenter_greedy


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n_pool, n_labeled, d, n = (20_000, 1_000, 128, 200) if args.quick else (100_000, 1_000, 128, 1_000)

    rng = np.random.default_rng(0)
    pool = rng.normal(size=(n_pool, d)).astype(np.float32)
    labeled = rng.normal(size=(n_labeled, d)).astype(np.float32)

    skal_times, skal_picks = [], None
    for _ in range(args.repeats):
        start = time.perf_counter()
        idx, _ = kcenter_greedy(torch.from_numpy(pool), n, centers=torch.from_numpy(labeled),
                                generator=torch.Generator().manual_seed(0))
        skal_times.append(time.perf_counter() - start)
        skal_picks = idx.numpy()

    from skactiveml.pool import CoreSet
    from skactiveml.utils import MISSING_LABEL

    X = np.vstack([labeled, pool]).astype(np.float64)
    y = np.full(len(X), MISSING_LABEL)
    y[:n_labeled] = 0
    start = time.perf_counter()
    peer_idx = CoreSet(random_state=0).query(X, y, batch_size=n)
    peer_time = time.perf_counter() - start
    peer_picks = np.asarray(peer_idx) - n_labeled

    result = {
        "command": "python benchmarks/bench_coreset_peer.py" + (" --quick" if args.quick else ""),
        "machine": platform.machine(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "N": n_pool, "d": d, "labeled": n_labeled, "n": n,
        "skal_s": skal_times, "skal_median_s": statistics.median(skal_times),
        "skactiveml_s": peer_time, "speedup": peer_time / statistics.median(skal_times),
        "same_picks": bool(np.array_equal(np.sort(skal_picks), np.sort(peer_picks))),
        "loadavg": os.getloadavg(),
    }
    print(f"| N | d | labeled | n | skal (median of {args.repeats}) | scikit-activeml | speedup | same picks |")
    print("|---:|---:|---:|---:|---:|---:|---:|:---:|")
    print(f"| {n_pool:,} | {d} | {n_labeled:,} | {n:,} | {result['skal_median_s']:.2f} s | "
          f"{peer_time:.2f} s | {result['speedup']:.1f}x | {result['same_picks']} |")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / ("coreset_peer_quick.json" if args.quick else "coreset_peer.json")).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
