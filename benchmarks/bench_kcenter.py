"""Benchmark of skal.kcenter.kcenter_greedy (CoreSet selection).

Usage::

    python benchmarks/bench_kcenter.py [--quick] [--device cpu|cuda]

* Time: N=100,000 random float32 embeddings, d=128, L=1,000 centers, n=1,000
  (``--quick``: N=20,000, n=200); median of 3 runs after one tiny warm-up call.
  The initial ``min_distances`` pass is timed on its own as well.
* Memory (CPU, skipped with ``--quick``): N=1,000,000, d=128, L=1,000, n=100,
  in a fresh subprocess so earlier allocations do not hide the peak; reports
  the rise of ``ru_maxrss`` from just after the inputs exist to just after the
  call, i.e. the peak memory beyond the input arrays.

Prints a markdown table and writes ``benchmarks/results/kcenter.json``.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from skal.kcenter import kcenter_greedy, min_distances

D, L = 128, 1000
RESULTS = Path(__file__).resolve().parent / "results" / "kcenter.json"


def _data(n_rows, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n_rows, D, generator=g)
    C = torch.randn(L, D, generator=g)
    return X.to(device), C.to(device)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats=3):
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def time_run(n_rows, n, device):
    X, C = _data(n_rows, device)
    kcenter_greedy(X[:1000], 2, centers=C)  # warm-up: lazy init, thread pool
    _sync(device)

    def greedy_call():
        kcenter_greedy(X, n, centers=C, generator=torch.Generator().manual_seed(0))

    greedy = _timed(greedy_call, device)
    initial = _timed(lambda: min_distances(X, C), device)
    return {
        "N": n_rows,
        "d": D,
        "L": L,
        "n": n,
        "device": str(device),
        "kcenter_greedy_s": greedy,
        "kcenter_greedy_median_s": statistics.median(greedy),
        "min_distances_s": initial,
        "min_distances_median_s": statistics.median(initial),
        "per_step_ms": 1e3 * (statistics.median(greedy) - statistics.median(initial)) / n,
    }


def _maxrss_bytes():
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def memory_child():
    """Run in a fresh process: the peak RSS rise of one 1M-row call on CPU."""
    n_rows, n = 1_000_000, 100
    X, C = _data(n_rows, torch.device("cpu"))
    before = _maxrss_bytes()
    start = time.perf_counter()
    kcenter_greedy(X, n, centers=C, generator=torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - start
    after = _maxrss_bytes()
    inputs = X.nbytes + C.nbytes
    print(
        json.dumps(
            {
                "N": n_rows,
                "d": D,
                "L": L,
                "n": n,
                "device": "cpu",
                "seconds": seconds,
                "input_bytes": inputs,
                "maxrss_before_bytes": before,
                "maxrss_after_bytes": after,
                "peak_increase_bytes": after - before,
                "full_NxL_matrix_bytes": n_rows * L * 4,
            }
        )
    )


def memory_run():
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child"], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=20,000, n=200; no 1M memory run")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child()
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    device = torch.device(args.device)

    n_rows, n = (20_000, 200) if args.quick else (100_000, 1000)
    # CPU timings are only as good as the machine is idle: record its load.
    load_before = os.getloadavg()
    timing = time_run(n_rows, n, device)
    memory = None if args.quick else memory_run()
    load_after = os.getloadavg()

    MiB = 2**20
    print(
        f"\nk-center greedy, torch {torch.__version__}, {torch.get_num_threads()} CPU threads "
        f"on {os.cpu_count()} cores, 1-min load average "
        f"{load_before[0]:.1f} before / {load_after[0]:.1f} after\n"
    )
    print("| run | N | d | L | n | device | median s (of 3) | min_distances s | per step ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| time | {n_rows:,} | {D} | {L:,} | {n:,} | {device} "
        f"| {timing['kcenter_greedy_median_s']:.3f} | {timing['min_distances_median_s']:.3f} "
        f"| {timing['per_step_ms']:.2f} |"
    )
    if memory is not None:
        print(
            "\n| memory run | N | d | L | n | seconds | inputs MiB | peak RSS rise MiB "
            "| full N x L matrix MiB |\n|---|---|---|---|---|---|---|---|---|\n"
            f"| cpu | {memory['N']:,} | {D} | {L:,} | {memory['n']} | {memory['seconds']:.2f} "
            f"| {memory['input_bytes'] / MiB:.0f} | {memory['peak_increase_bytes'] / MiB:.1f} "
            f"| {memory['full_NxL_matrix_bytes'] / MiB:.0f} |"
        )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "quick": args.quick,
        "timing": timing,
        "memory": memory,
    }
    path = RESULTS.with_name("kcenter_quick.json") if args.quick else RESULTS
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
