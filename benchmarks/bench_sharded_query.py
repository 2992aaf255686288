"""Benchmark of a query sharded over processes (skal.distributed): time, memory, communication.

Usage::

    python benchmarks/bench_sharded_query.py [--quick] [--rows N] [--worlds 1 2]
        [--selectors Margin CoreSet BADGE] [--device cpu|cuda] [--backend gloo|nccl]

* A fitted learner (MLP 64 -> 1024 -> 128 -> 10, so a 128-d embedding) is
  queried for ``n=100`` of a pool of N=200,000 rows (``--quick``: 20,000) by
  Margin (top-k), CoreSet (1,000 labeled centers) and BADGE, with 1 and 2
  processes. Each (selector, world size) runs in fresh processes joined by a
  process group (``--backend``, default gloo; a world of 1 runs without
  one), one torch thread each (with ``--device cuda``, one GPU per process).
* Time: wall time of the query on each process, between two barriers (the
  slowest process counts); best of 5 runs (a shared 2-core machine varies by 20%
  between runs).
* Memory: each process's peak RSS during the query (``VmHWM``, reset through
  ``/proc/self/clear_refs`` just before it) minus its RSS just before it
  (CPU), or ``torch.cuda.max_memory_allocated`` (CUDA): the memory the query
  needs beyond the pool and the model.
* Communication: bytes each process passes into the collectives of one
  query (tensors at their size, objects pickled), counted by wrapping
  ``torch.distributed``'s functions; the formulas are in docs/user_guide/scale.md.

Prints a markdown table and writes ``benchmarks/results/sharded_query[_quick].json``.
"""

import argparse
import json
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
FEATURES, N_LABELED, N_QUERY = 64, 1000, 100
SELECTORS = ("Margin", "CoreSet", "BADGE")


def _pool(n_rows):
    return np.random.default_rng(1).standard_normal(size=(n_rows, FEATURES), dtype=np.float32)


def _fit(path, device):
    from skal import ActiveLearner, ActiveNet
    from skal.models import MLP
    from skal.selectors import Margin

    rng = np.random.default_rng(0)
    X = rng.normal(size=(N_LABELED, FEATURES)).astype(np.float32)
    y = (X[:, :10].argmax(1)).astype(np.int64)
    net = ActiveNet(MLP, module__hidden_sizes=(1024, 128), max_epochs=2, batch_size=128,
                    iterator_valid__batch_size=1024, device=device, verbose=0)
    learner = ActiveLearner(net, Margin(), random_state=0).fit(X, y)
    with open(path, "wb") as f:
        pickle.dump(learner, f)


def _status_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss():
    """Reset the process's peak RSS to its current RSS (Linux); return that RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS") * 1024


class _Counter:
    """Bytes passed into torch.distributed's collectives, by wrapping them."""

    def __init__(self):
        import torch.distributed as dist

        self.bytes = 0
        self.calls = 0
        self.tensor_calls = 0  # round trips carrying tensors (the agreement's objects not counted)
        for name in ("all_gather", "broadcast", "all_reduce"):
            setattr(dist, name, self._wrap(getattr(dist, name), self._tensor_bytes))
        dist.all_gather_object = self._wrap(dist.all_gather_object, self._object_bytes)

    def _tensor_bytes(self, args):
        tensor = args[1] if isinstance(args[0], list) else args[0]  # all_gather(out, tensor)
        return tensor.numel() * tensor.element_size()

    def _object_bytes(self, args):
        return len(pickle.dumps(args[1]))

    def _wrap(self, fn, size):
        def wrapped(*args, **kwargs):
            self.bytes += size(args)
            self.calls += 1
            self.tensor_calls += size == self._tensor_bytes
            return fn(*args, **kwargs)

        return wrapped


def worker(args):
    torch.set_num_threads(1)
    rank, world = args.rank, args.world
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    import torch.distributed as dist

    from skal.selectors import BADGE, CoreSet, Margin

    if world > 1:
        dist.init_process_group(args.backend, init_method=f"file://{args.init}", rank=rank,
                                world_size=world, timeout=timedelta(seconds=600))
    with open(args.model, "rb") as f:
        learner = pickle.load(f)
    if device.type == "cuda":
        learner.estimator_.set_params(device=str(device))
        learner.estimator_.module_.to(device)
    selector = {"Margin": Margin(), "CoreSet": CoreSet(), "BADGE": BADGE()}[args.selector]
    learner.set_params(selector=selector)
    pool = _pool(args.rows)
    counter = _Counter() if world > 1 else None

    def barrier():
        if world > 1:
            dist.barrier()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times, picks, sent, peaks = [], None, [], []
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rss_before = _reset_peak_rss()
        barrier()
        if counter is not None:
            counter.bytes = counter.calls = counter.tensor_calls = 0
        start = time.perf_counter()
        picks = learner.query(pool, N_QUERY)
        elapsed = time.perf_counter() - start
        if counter is not None:
            sent.append((counter.bytes, counter.calls, counter.tensor_calls))
        peaks.append(torch.cuda.max_memory_allocated(device) if device.type == "cuda" else
                     _status_kib("VmHWM") * 1024 - rss_before)
        barrier()
        times.append(elapsed)
    out = {"rank": rank, "seconds": min(times), "peak_bytes": max(peaks),
           "comm_bytes": sent[0][0] if sent else 0, "comm_calls": sent[0][1] if sent else 0,
           "round_trips": sent[0][2] if sent else 0,
           "picks": np.asarray(picks).tolist()}
    with open(args.out, "w") as f:
        json.dump(out, f)
    if world > 1:
        dist.destroy_process_group()


def _launch(script, selector, world, args, model, tmp):
    init = Path(tmp) / f"init-{selector}-{world}"
    outs = [Path(tmp) / f"out-{selector}-{world}-{r}.json" for r in range(world)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, script, "--worker", "--rank", str(r), "--world",
                               str(world), "--init", str(init), "--out", str(outs[r]), "--model",
                               model, "--selector", selector, "--rows", str(args.rows),
                               "--device", args.device, "--backend", args.backend], env=env)
             for r in range(world)]
    for proc in procs:
        if proc.wait(timeout=1800) != 0:
            sys.exit(f"{selector} with {world} processes failed")
    return [json.loads(out.read_text()) for out in outs]


def _formula(selector, n, d, classes, round_trips):
    """Bytes a process passes into the collectives per query, as in docs/user_guide/scale.md.

    Margin's is exact; CoreSet's and BADGE's are bounds from the measured round trips (a
    round trip offers at most 33 rows of 2 d + 4 float64 values (CoreSet), or 8 picks x 5 rows
    of C + d + 5 (BADGE); the last one offers fewer).
    """
    if selector == "Margin":
        return 32 * n
    if selector == "CoreSet":  # the finite check's all-reduce of the largest coordinate, then the rounds
        return 8 + (round_trips - 1) * 33 * 8 * (2 * d + 4)
    # BADGE: the first pick (top-1 of the norms, 32 bytes, and its factors broadcast), then the rounds
    return 32 + 8 * (classes + d + 1) + (round_trips - 2) * 40 * 8 * (classes + d + 5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 rows: a smoke run")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--worlds", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--selectors", nargs="*", default=list(SELECTORS), choices=SELECTORS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="gloo")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("rank", "world"):
        parser.add_argument(f"--{name}", type=int, help=argparse.SUPPRESS)
    for name in ("init", "out", "model", "selector"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rows is None:
        args.rows = 20_000 if args.quick else 200_000
    if args.worker:
        return worker(args)
    rows, picks = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        model = str(Path(tmp) / "learner.pkl")
        _fit(model, "cpu")
        for selector in args.selectors:
            for world in args.worlds:
                results = _launch(str(Path(__file__).resolve()), selector, world, args, model, tmp)
                seconds = max(r["seconds"] for r in results)
                base = next((row for row in rows if row["selector"] == selector
                             and row["world"] == 1), None)
                same = [r["picks"] for r in results]
                assert all(p == same[0] for p in same), "the processes returned different picks"
                if world == 1:
                    picks[selector] = same[0]
                else:
                    assert selector not in picks or picks[selector] == same[0], \
                        f"{selector}: {world} processes chose other rows than one"
                rows.append({
                    "selector": selector, "world": world, "seconds": seconds,
                    "speedup": (base["seconds"] / seconds) if base else 1.0,
                    "peak_mib_per_rank": [r["peak_bytes"] / 2**20 for r in results],
                    "comm_bytes_per_rank": [r["comm_bytes"] for r in results],
                    "comm_calls_per_rank": [r["comm_calls"] for r in results],
                    "round_trips": results[0]["round_trips"],
                    "formula_bytes": (_formula(selector, N_QUERY, 128, 10, results[0]["round_trips"])
                                      if world > 1 else 0),
                })
    cpu = next((line.split(":", 1)[1].strip() for line in
                open("/proc/cpuinfo").read().splitlines() if line.startswith("model name")),
               platform.processor())
    from skal._provenance import machine

    meta = {"rows": args.rows, "n": N_QUERY, "device": args.device, "backend": args.backend,
            "cpu": cpu, "cores": os.cpu_count(), "load_average": os.getloadavg(),
            "cpu_flags": machine().get("cpu_flags", []), "torch": torch.__version__}
    print(f"Sharded query, {args.rows:,} rows, n={N_QUERY}, {args.device}/{args.backend}, "
          f"{cpu} ({', '.join(meta['cpu_flags'])}), load average {meta['load_average'][0]:.1f} "
          f"on {meta['cores']} cores\n")
    print("| selector | processes | query s | speed-up | peak MiB per rank | round trips | "
          "sent bytes per rank (measured) | formula |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['selector']} | {row['world']} | {row['seconds']:.2f} | "
              f"{row['speedup']:.2f}x | {' / '.join(f'{m:.0f}' for m in row['peak_mib_per_rank'])} | "
              f"{row['round_trips']} | {' / '.join(f'{b:,}' for b in row['comm_bytes_per_rank'])} | "
              f"{row['formula_bytes']:,} |")
    RESULTS.mkdir(exist_ok=True)
    name = "sharded_query_quick.json" if args.quick else "sharded_query.json"
    (RESULTS / name).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
