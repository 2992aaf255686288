"""Cold start on Fashion-MNIST: what skal.initial.initial_batch costs and what its batches are worth.

For every repeat r (seed r) and budget n, each strategy chooses n of the 60,000 training images
with ``random_state=r``, without labels; a logistic regression (scikit-learn, pixels in [0, 1])
is trained on the n images and their labels and scored on the 10,000 test images. Reported per
strategy: test accuracy, classes present among the n (of 10), and the paired difference of
accuracy to random sampling of the same repeat, mean with a 95 % t-interval over repeats.
Strategies: random, k-means and k-center greedy on the pixels, and both on a 50-component PCA
of the unlabeled pool (``embedding=``; PCA needs no labels). Time: one call per strategy at
n = 100 on the full pool (the last repeat's), one torch thread.

    python benchmarks/bench_initial.py            # 10 repeats, n in (20, 100): 15 min, 1 thread
    python benchmarks/bench_initial.py --quick    # 6,000-image pool, 2 repeats, n = 20

Writes benchmarks/results/initial[_quick].json.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

from skal.datasets import load_fashion_mnist
from skal.initial import initial_batch
from skal._provenance import machine
from skal._stats import paired_t_interval

RESULTS = Path(__file__).resolve().parent / "results"


def _interval(differences):
    """Mean of the paired differences and the half-width of its 95% t interval (NaN for one)."""
    mean, low, high = paired_t_interval(np.asarray(differences, dtype=float))
    return float(mean), float((high - low) / 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    X, y = load_fashion_mnist(return_X_y=True)
    X_test, y_test = load_fashion_mnist(subset="test", return_X_y=True)
    if args.quick:
        X, y = X[:6000], y[:6000]
    flat, flat_test = X.reshape(len(X), -1), X_test.reshape(len(X_test), -1)
    repeats, budgets = (2, (20,)) if args.quick else (10, (20, 100))
    pca = PCA(n_components=50, random_state=0).fit(flat)  # on the unlabeled pool only
    strategies = {
        "random": dict(strategy="random"),
        "kmeans": dict(strategy="kmeans"),
        "kcenter": dict(strategy="kcenter"),
        "kmeans, PCA-50": dict(strategy="kmeans", embedding=pca),
        "kcenter, PCA-50": dict(strategy="kcenter", embedding=pca),
    }
    rows = {(name, n): {"accuracy": [], "classes": [], "seconds": []}
            for name in strategies for n in budgets}
    for n in budgets:
        for r in range(repeats):
            for name, kwargs in strategies.items():
                start = time.perf_counter()
                idx = initial_batch(flat, n, random_state=r, **kwargs)
                seconds = time.perf_counter() - start
                model = LogisticRegression(max_iter=2000).fit(flat[idx], y[idx])
                row = rows[name, n]
                row["accuracy"].append(float(model.score(flat_test, y_test)))
                row["classes"].append(int(len(np.unique(y[idx]))))
                row["seconds"].append(seconds)
            print(f"n={n} repeat {r} done", file=sys.stderr, flush=True)
    print(f"Fashion-MNIST pool of {len(X)} images, {repeats} repeats; {machine()['cpu']}, "
          f"torch {torch.__version__}, 1 thread\n")
    print("| n | strategy | test accuracy | classes (of 10) | accuracy - random (95 % CI) | s / call |")
    print("|---:|---|---:|---:|---:|---:|")
    summary = []
    for n in budgets:
        base = np.array(rows["random", n]["accuracy"])
        for name in strategies:
            row = rows[name, n]
            acc = np.array(row["accuracy"])
            mean, half = _interval(acc - base)
            diff = "" if name == "random" else f"{100 * mean:+.1f} ± {100 * half:.1f}"
            print(f"| {n} | {name} | {100 * acc.mean():.1f} | {np.mean(row['classes']):.1f} | "
                  f"{diff} | {np.median(row['seconds']):.2f} |")
            summary.append({"n": n, "strategy": name, **row, "difference_to_random": mean,
                            "difference_ci95_half_width": half})
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"initial{'_quick' if args.quick else ''}.json"
    out.write_text(json.dumps({
        "pool_size": len(X), "repeats": repeats, "budgets": list(budgets),
        "machine": machine(), "torch": torch.__version__, "threads": 1,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "rows": summary}, indent=1))


if __name__ == "__main__":
    main()
