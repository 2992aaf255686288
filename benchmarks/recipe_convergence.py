"""Are the comparisons' nets trained long enough? Test accuracy against epochs at each budget.

For the image settings of compare_selectors.py (digits and Fashion-MNIST at 14x14, SmallCNN,
SGD lr 0.05, momentum 0.9, weight decay 5e-4, batch 16, the rate cut 10x at 80% of the epochs),
trains on random labeled subsets of the smallest, a middle and the largest budget of each
setting, for several epoch counts (each a separate run, the schedule scaled to it), with the
papers' recipe (no augmentation) and with ``--recipe augmented``'s (random crop with padding,
and horizontal flip for Fashion-MNIST). Three seeds per cell (subset and training seed), the
same subsets for every epoch count and recipe.

    python benchmarks/recipe_convergence.py            # ~20 min on 2 idle cores
    python benchmarks/recipe_convergence.py --quick    # smoke run

Writes benchmarks/results/recipe_convergence[_quick].{json,md}: mean test accuracy (%) and its
sample standard deviation over the seeds per (setting, budget, recipe, epochs), with the CPU
model and its flags. A budget's accuracy has converged when more epochs no longer raise it by
more than its spread over seeds.
"""

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from joblib import Parallel, delayed  # noqa: E402

from compare_selectors import SETTINGS, learners, load  # noqa: E402  (this directory)
from skal._provenance import machine  # noqa: E402

HERE = Path(__file__).parent
EPOCHS = {"digits": [10, 25, 50, 100], "fashion": [5, 15, 30, 60]}
QUICK_EPOCHS = {"digits": [2, 4], "fashion": [1, 2]}


def budgets(setting):
    _, _, initial, query, cycles = SETTINGS[setting]
    return [initial, initial + query * (cycles // 2), initial + query * cycles]


def train_once(setting, budget, recipe, epochs, seed, quick):
    torch.set_num_threads(1)
    dataset, pool_size = SETTINGS[setting][:2]
    X, y, X_test, y_test, _ = load(dataset, 1_500 if quick and dataset == "fashion" else pool_size,
                                   0, None, quick)
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(y), min(budget, len(y)), replace=False)
    # compare_selectors' net for these epochs (its schedule's cut at 80% of them)
    learner = learners(dataset, budget, ["random"], augment=recipe == "augmented", size=X.shape[-1],
                       epochs=epochs)["random"]
    learner.set_params(random_state=seed)
    learner.fit(X[rows], y[rows])
    return float(learner.score(X_test, y_test))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--only", default=None, help="comma-separated settings (default: the low-budget ones)")
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args(argv)
    settings = args.only.split(",") if args.only else ["digits-low", "fashion-low"]
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        parser.error(f"--only: unknown {sorted(unknown)}; known: {', '.join(SETTINGS)}")
    seeds = args.seeds or (1 if args.quick else 3)
    epochs_for = QUICK_EPOCHS if args.quick else EPOCHS
    jobs = [(setting, budget, recipe, epochs, seed)
            for setting in settings for budget in (budgets(setting)[:1] if args.quick else budgets(setting))
            for recipe in ("papers", "augmented") for epochs in epochs_for[SETTINGS[setting][0]]
            for seed in range(seeds)]
    start = time.perf_counter()
    scores = Parallel(n_jobs=args.n_jobs)(delayed(train_once)(*job, args.quick) for job in jobs)
    seconds = time.perf_counter() - start
    cells = {}
    for (setting, budget, recipe, epochs, seed), score in zip(jobs, scores):
        cells.setdefault((setting, budget, recipe, epochs), []).append(score)
    info = machine()
    suffix = "_quick" if args.quick else ""
    command = "python benchmarks/recipe_convergence.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    lines = [f"# recipe_convergence{suffix}", "",
             f"`{command}` on {info.get('cpu') or '?'} (flags {', '.join(info.get('cpu_flags', [])) or '?'}), "
             f"torch {torch.__version__}, {seeds} seeds, {seconds / 60:.0f} min.", "",
             "Test accuracy in %, mean ± sample sd over seeds (random labeled subsets).", ""]
    for setting in settings:
        epochs_list = epochs_for[SETTINGS[setting][0]]
        lines += [f"### {setting}", "", "| labels | recipe | " + " | ".join(f"{e} epochs" for e in epochs_list) + " |",
                  "|---|---|" + "---:|" * len(epochs_list)]
        for budget in sorted({b for s, b, *_ in cells if s == setting}):
            for recipe in ("papers", "augmented"):
                row = []
                for e in epochs_list:
                    values = 100 * np.array(cells[(setting, budget, recipe, e)])
                    row.append(f"{values.mean():.1f} ± {values.std(ddof=1):.1f}" if len(values) > 1
                               else f"{values.mean():.1f}")
                lines.append(f"| {budget} | {recipe} | " + " | ".join(row) + " |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    out = HERE / "results" / f"recipe_convergence{suffix}"
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps({
        "command": command, "machine": info, "seconds": seconds,
        "cells": [{"setting": s, "labels": b, "recipe": r, "epochs": e, "scores": v}
                  for (s, b, r, e), v in cells.items()]}, indent=1))


if __name__ == "__main__":
    main()
