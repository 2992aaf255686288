"""Run skal's benchmark suite: one entry point, one markdown report, one JSON summary.

    python benchmarks/run.py                  # full CPU numbers (about 15 minutes on 2 cores)
    python benchmarks/run.py --quick          # smoke run (CI runs this; times are not asserted)
    python benchmarks/run.py --device cuda    # where the scripts support it, on the GPU
    python benchmarks/run.py --all            # also the Fashion-MNIST comparison (~1 h more)

Each script also runs on its own (see its docstring) and writes benchmarks/results/<name>.json;
this runner prints their tables in order and writes benchmarks/results/summary[_quick].md.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
# (script, takes --device)
SCRIPTS = [
    ("bench_training_overhead.py", True),
    ("bench_query_cost.py", True),
    ("bench_entropy_peers.py", False),
    ("bench_scaling.py", False),
    ("bench_kcenter.py", True),
    ("bench_sharded_query.py", True),
    ("bench_coreset_peer.py", False),
    ("bench_long_campaign.py", False),
    ("bench_initial.py", False),
    ("main_job_recipe.py", False),
    ("bench_persistence.py", False),
    ("bench_bookkeeping.py", False),
    ("bench_fingerprint.py", False),
    ("compare_fashion_mnist.py", True),
    ("compare_selectors.py", False),
    ("labels_saved.py", False),
    ("recipe_convergence.py", False),
]
# full runs of these take an hour: included in --quick runs, in full runs only with --all / --only
LONG = {"compare_fashion_mnist.py", "bench_initial.py", "compare_selectors.py", "labels_saved.py",
        "recipe_convergence.py"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--device", default="cpu", help="torch device for the scripts that take one")
    parser.add_argument("--only", nargs="*", help="run only these scripts (file names)")
    parser.add_argument("--all", action="store_true", help="full runs include " + ", ".join(LONG))
    args = parser.parse_args()
    sections, failed = [], []
    for script, takes_device in SCRIPTS:
        if args.only and script not in args.only:
            continue
        if script in LONG and not (args.quick or args.all or args.only):
            continue
        command = [sys.executable, str(HERE / script)] + (["--quick"] if args.quick else [])
        if takes_device and args.device != "cpu":
            command += ["--device", args.device]
        print(f"== {script}", flush=True)
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            failed.append(script)
            print(result.stdout[-2000:], result.stderr[-4000:], sep="\n", file=sys.stderr)
            continue
        table = "\n".join(line for line in result.stdout.splitlines() if line.startswith("|"))
        print(table, f"\n({elapsed:.0f} s)\n", flush=True)
        sections.append(f"### {script}\n\n`{' '.join(['python', 'benchmarks/' + script] + command[2:])}`\n\n{table}\n")
    name = "summary_quick.md" if args.quick else "summary.md"
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / name).write_text("\n".join(sections))
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
