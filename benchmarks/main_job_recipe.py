"""Is the main job's comparison signal or noise? The cycle-0 spread and run time of `skal simulate`.

    python benchmarks/main_job_recipe.py            # 30 seeds, 30 initial sets, ~5 minutes on 2 cores
    python benchmarks/main_job_recipe.py --quick    # smoke run (CI); numbers not meaningful
    python benchmarks/main_job_recipe.py --time-only  # re-time the command, keep the spreads

Issue 15's targets for the default recipe (digits): the standard deviation of cycle-0 test
accuracy at most 1 point over >= 10 training seeds on one initial set and at most 2.5 points over
>= 10 initial sets; the whole default run (>= 3 repeats) within 60 s on 2 idle cores.

Everything goes through the command's own code and skal's public API: the data, features and
learners come from `skal simulate`'s defaults (`skal.cli`), each training is
`ActiveLearner.fit` + `score`, the initial-set spread is `active_learning_curve` with no query
cycle (each repeat draws its own initial set and seed, as the command's repeats do), and the run
time is the command itself (`python -m skal.cli simulate --quiet`) in a subprocess. The old
recipe (SmallCNN on the 8x8 images with 100 labels: `--model cnn --initial 100`) is measured in
the same process as the baseline. Standard deviations are sample ones (ddof=1) with 95%
chi-square intervals.

Writes benchmarks/results/main_job_recipe[_quick].json with the CPU model, its flags and the load.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np
import scipy.stats
import sklearn
import skorch
import torch
from joblib import Parallel, delayed
from sklearn.base import clone

import skal
from skal._cli_data import features_for, load
from skal.cli import build_learners, build_parser, model_for
from skal.model_selection import active_learning_curve
from skal._provenance import machine

HERE = Path(__file__).parent


def _setup(argv):
    """The command's parsed defaults (plus ``argv``), its data as the model reads it, and its learners."""
    args = build_parser().parse_args(["simulate", *argv])
    X, y, X_test, y_test = load(args.dataset, data_path=args.data_path, test_size=args.test_size,
                                pool_size=args.pool_size, test_limit=args.test_limit, seed=args.seed)
    model = model_for(args.model, X)
    X, X_test = features_for(model, X, X_test, standardize=args.standardize)
    learners = build_learners(args.selectors, model, X, np.unique(y), epochs=args.epochs,
                              device=args.device)
    return args, model, (X, y, X_test, y_test), learners


def _fit_score(learner, data, initial_idx, seed):
    torch.set_num_threads(1)
    X, y, X_test, y_test = data
    fitted = clone(learner).set_params(random_state=seed).fit(X[initial_idx], y[initial_idx])
    return fitted.score(X_test, y_test)


def _sd(values):
    """Sample standard deviation in accuracy points, with its 95% chi-square interval."""
    values = 100 * np.asarray(values, dtype=np.float64)
    n, sd = len(values), values.std(ddof=1)
    low = sd * np.sqrt((n - 1) / scipy.stats.chi2.ppf(0.975, n - 1))
    high = sd * np.sqrt((n - 1) / scipy.stats.chi2.ppf(0.025, n - 1))
    return {"sd_points": round(float(sd), 3), "sd_95ci": [round(float(low), 3), round(float(high), 3)],
            "mean": round(float(values.mean() / 100), 4), "min": round(float(values.min() / 100), 4),
            "max": round(float(values.max() / 100), 4), "n": n,
            "accuracies": [round(float(v / 100), 4) for v in values]}


def spreads(argv, n_seeds, n_sets, n_jobs):
    """Cycle-0 accuracy spread over training seeds (one initial set) and over initial sets, per learner."""
    args, model, data, learners = _setup(argv)
    X, y, X_test, y_test = data
    # one initial set, drawn like active_learning_curve draws one, from a seed of its own
    initial_idx = np.random.default_rng(12345).choice(len(y), args.initial, replace=False)
    out = {"argv": argv, "model": model, "initial": args.initial, "epochs": args.epochs,
           "pool": len(y), "test": len(y_test), "learners": {}}
    with joblib.parallel_config(backend="loky", inner_max_num_threads=1):
        for name, learner in learners.items():
            start = time.perf_counter()
            seeds = Parallel(n_jobs=n_jobs)(delayed(_fit_score)(learner, data, initial_idx, s)
                                            for s in range(n_seeds))
            seconds_seeds = time.perf_counter() - start
            start = time.perf_counter()
            curve = active_learning_curve(learner, X, y, X_test=X_test, y_test=y_test,
                                          initial_size=args.initial, query_size=args.query,
                                          n_cycles=0, n_repeats=n_sets, n_jobs=n_jobs,
                                          random_state=args.seed)
            out["learners"][name] = {
                "dynamic_loss": any(n == "dynamic_loss" for n, _ in learner.selector.training_needs().parts),
                "over_training_seeds": _sd(seeds),
                "over_initial_sets": _sd(curve.scores[0, :, 0]),
                "seconds": round(seconds_seeds + time.perf_counter() - start, 1),
            }
    return out


def time_command(argv, repeats):
    """Wall and CPU seconds of ``skal simulate --quiet ARGV`` in a fresh process (median of ``repeats``)."""
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            load_before = os.getloadavg()[0]
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "skal.cli", "simulate", "--quiet", "--out", out, *argv],
                           check=True, capture_output=True)
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
        runs.append({"wall_s": round(wall, 1),
                     "cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 1),
                     "load_1min_before": round(load_before, 2)})
    return {"argv": argv, "median_wall_s": float(np.median([r["wall_s"] for r in runs])), "runs": runs}


def _print_times(report):
    print()
    print("| command | median wall (s) | CPU (s) | 1-min load before |")
    print("|---|---:|---:|---:|")
    for run in report["default_run"]:
        cpu = np.median([r["cpu_s"] for r in run["runs"]])
        load = ", ".join(str(r["load_1min_before"]) for r in run["runs"])
        print(f"| skal simulate {' '.join(run['argv'])} | {run['median_wall_s']:.1f} | {cpu:.1f} | {load} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds, 3 sets, a tiny timed run")
    parser.add_argument("--n-seeds", type=int, default=30)
    parser.add_argument("--n-sets", type=int, default=30)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--time-repeats", type=int, default=2, help="timed runs of the default command")
    parser.add_argument("--candidates", nargs="*", default=[],
                        help="extra recipes to measure, each a quoted string of skal simulate options "
                             "(e.g. '--initial 150')")
    parser.add_argument("--time-only", action="store_true",
                        help="only time the command again (e.g. on a quieter machine), keeping the "
                             "spreads of the existing results file")
    args = parser.parse_args()
    path = HERE / "results" / ("main_job_recipe_quick.json" if args.quick else "main_job_recipe.json")
    if args.time_only:
        report = json.loads(path.read_text())
        report["load_1min_start"] = round(os.getloadavg()[0], 2)
        report["default_run"] = [time_command([], args.time_repeats),
                                 time_command(["--n-jobs", "2"], args.time_repeats)]
        report["load_1min_end"] = round(os.getloadavg()[0], 2)
        _print_times(report)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {path}")
        return
    n_seeds, n_sets = (3, 3) if args.quick else (args.n_seeds, args.n_sets)
    tiny = ["--initial", "20", "--query", "10", "--cycles", "1", "--epochs", "2", "--repeats", "1"]
    recipes = {"default": [],
               "baseline: the earlier default, SmallCNN on the 8x8 images, 100 labels":
                   ["--model", "cnn", "--initial", "100"]}
    recipes.update({c: c.split() for c in args.candidates})
    if args.quick:
        recipes = {name: argv + ["--epochs", "2"] for name, argv in recipes.items()}
    report = {
        "script": "benchmarks/main_job_recipe.py" + (" --quick" if args.quick else ""),
        "machine": machine(), "python": platform.python_version(), "skal": skal.__version__,
        "torch": torch.__version__, "skorch": skorch.__version__, "scikit-learn": sklearn.__version__,
        "joblib": joblib.__version__, "n_jobs": args.n_jobs, "torch_threads_per_job": 1,
        "load_1min_start": round(os.getloadavg()[0], 2), "recipes": {},
    }
    print("| recipe | learner | cycle-0 mean | sd over seeds (pt) | sd over initial sets (pt) |")
    print("|---|---|---:|---:|---:|")
    for name, argv in recipes.items():
        result = spreads(argv, n_seeds, n_sets, args.n_jobs)
        report["recipes"][name] = result
        for learner, r in result["learners"].items():
            s, i = r["over_training_seeds"], r["over_initial_sets"]
            print(f"| {name} | {learner} | {i['mean']:.4f} | {s['sd_points']:.2f} "
                  f"[{s['sd_95ci'][0]:.2f}, {s['sd_95ci'][1]:.2f}] | {i['sd_points']:.2f} "
                  f"[{i['sd_95ci'][0]:.2f}, {i['sd_95ci'][1]:.2f}] |", flush=True)
    report["default_run"] = [time_command(tiny if args.quick else [], 1 if args.quick else args.time_repeats)]
    if not args.quick:
        report["default_run"].append(time_command(["--n-jobs", "2"], args.time_repeats))
    report["load_1min_end"] = round(os.getloadavg()[0], 2)
    _print_times(report)
    (HERE / "results").mkdir(exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
