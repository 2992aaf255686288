"""Does each selector beat random on real data? A seeded comparison on Fashion-MNIST.

The papers' protocol (random initial set, equal query steps, fixed epochs with the learning
rate cut 10x at 80% of training, repeats sharing initial sets across methods), scaled to a
2-core CPU: a small CNN on Fashion-MNIST images average-pooled to 14x14, a 10,000-image pool
drawn from the 60,000 training images, the full 10,000-image test set, 500 initial labels and
6 queries of 250. Every selector runs (BALD's net with dropout 0.5 before the classifier),
plus DISAL as the paper scores it ("disal", the class drift kept) and as skal's default does
("disal drift removed"), DISAL's two ablations ("w/o S": random selection trained with the
dynamic loss; "w/o D": DISAL's selection without it), the two batch rules (stochastic and
cluster) on DISAL and Entropy, the papers' methods as their papers run them ("tidal warm" and
"ll4al warm": a new optimizer and schedule each cycle; "disal balanced": skal's default DISAL;
"isal (validation set)": 1,000 labeled images outside the pool as its reference), 5 repeats, and, as the ceiling, the same recipe trained on all 60,000 training images. Per
cycle it records test accuracy, time, and how the picks spread over the classes (normalised
entropy of the picked labels).

    python benchmarks/compare_fashion_mnist.py            # the documented run (~50 min on 2 shared cores)
    python benchmarks/compare_fashion_mnist.py --quick    # smoke run (~2 min)
    python benchmarks/compare_fashion_mnist.py --device cuda --model resnet18 --size 32 \\
        --epochs 50 --pool-size 20000 --initial 1000 --query 500     # GPU variant

Reads Debian's dataset-fashion-mnist (or --data PATH); nothing is downloaded. Writes
<out>/<name>[_quick].{json,csv,md,png} (defaults: benchmarks/results, fashion_mnist).
"""

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone
from skorch.callbacks import LRScheduler
from torch.optim.lr_scheduler import MultiStepLR

from compare_pairs import cell  # this directory
from skal import ActiveLearner, ActiveNet
from skal.datasets import load_fashion_mnist
from skal.model_selection import ActiveLearningCurve, active_learning_curve
from skal.models import SmallCNN, resnet18_cifar
from skal.parts import DynamicLoss
from skal.selectors import (
    BADGE,
    BALD,
    DISAL,
    ISAL,
    LL4AL,
    ClusterBatch,
    CoreSet,
    Entropy,
    LeastConfidence,
    Margin,
    Random,
    StochasticBatch,
    TiDAL,
)

# name -> (selector, training parts added to the net by hand). Each selector brings its own
# parts (DISAL: the dynamic loss and the snapshot); "w/o S" is random picks trained with DISAL's
# dynamic loss, "w/o D" DISAL's score without it.
VARIANTS = {
    "random": (Random(), []),
    "entropy": (Entropy(), []),
    "margin": (Margin(), []),
    "least-confidence": (LeastConfidence(), []),
    "coreset": (CoreSet(), []),
    "ll4al": (LL4AL(subset=None), []),
    "tidal": (TiDAL(subset=None), []),
    "isal": (ISAL(), []),
    # "disal" is the paper's score (drift kept, no balance); skal's default DISAL() removes the
    # class drift and balances the predicted classes
    "disal": (DISAL(drift="keep", balance="none"), []),
    "disal drift removed": (DISAL(drift="remove", balance="none"), []),
    "disal w/o S": (Random(), [("dynamic_loss", DynamicLoss())]),
    "disal w/o D": (DISAL(weight=0, drift="keep", balance="none"), []),
    "disal + stochastic": (DISAL(batch=StochasticBatch(), drift="keep", balance="none"), []),
    "disal + cluster": (DISAL(batch=ClusterBatch(), drift="keep", balance="none"), []),
    "entropy + stochastic": (Entropy(batch=StochasticBatch()), []),
    "entropy + cluster": (Entropy(batch=ClusterBatch()), []),
    "bald": (BALD(), []),
    "badge": (BADGE(), []),
    # as their papers run them (0.3): warm starts with a new optimizer and schedule each cycle,
    # DISAL's balanced default, ISAL with a labeled validation set outside the pool and the budget
    "tidal warm": (TiDAL(subset=None), []),
    "ll4al warm": (LL4AL(subset=None), []),
    "disal balanced": (DISAL(), []),
    "isal (validation set)": (ISAL(), []),  # main gives it the reference set (from the data)
}
WARM = {"tidal warm": True, "ll4al warm": True}
VALIDATION_SIZE = 1_000  # training images outside the pool, for "isal (validation set)"
# extra net parameters of a variant: BALD's MC dropout needs a dropout layer (p = 0.5 before the
# classifier, as in Gal et al.'s code); every other variant trains the model without one
NET_PARAMS = {"bald": {"module__dropout": 0.5}}


def load(size, data=None, test_limit=None):
    """Fashion-MNIST train and test as float32 (N, C, size, size), normalised."""
    X, y = load_fashion_mnist(data, subset="train", return_X_y=True)
    X_test, y_test = load_fashion_mnist(data, subset="test", return_X_y=True)
    if test_limit:
        X_test, y_test = X_test[:test_limit], y_test[:test_limit]

    def prepare(images):
        images = torch.from_numpy(images)
        if size < 28:
            images = torch.nn.functional.adaptive_avg_pool2d(images, size)
        elif size > 28:
            pad = (size - 28) // 2
            images = torch.nn.functional.pad(images, (pad, size - 28 - pad) * 2)
        return ((images - 0.2860) / 0.3530).numpy()  # Fashion-MNIST's pixel mean and std

    return prepare(X), y, prepare(X_test), y_test


def make_net(args):
    milestone = max(1, round(0.8 * args.epochs))
    module = SmallCNN if args.model == "smallcnn" else resnet18_cifar
    return ActiveNet(
        module, module__num_classes=10, module__in_channels=1,
        max_epochs=args.epochs, batch_size=64, lr=args.lr,
        optimizer=torch.optim.SGD, optimizer__momentum=0.9, optimizer__weight_decay=5e-4,
        callbacks=[("lr", LRScheduler(policy=MultiStepLR, milestones=[milestone], gamma=0.1))],
        iterator_valid__batch_size=1024, device=args.device, verbose=0,
    )


def ceiling(args, X, y, X_test, y_test, seed):
    """The same recipe trained once on every training image: the accuracy AL aims for."""
    net = make_net(args)
    start = time.perf_counter()
    learner = ActiveLearner(net, Random(), random_state=seed).fit(X, y)
    return float(learner.score(X_test, y_test)), time.perf_counter() - start


def table(result, ceiling_scores, ceiling_time, n_train=60000):
    """DISAL-Table-2-style markdown: one row per method, accuracy (%) at each budget."""
    paired = "random" in result.names and len(result.names) > 1
    header = ("| method | " + " | ".join(str(n) for n in result.n_labeled) + " | AUC |"
              + (" Δ AUC vs random | Δ final vs random |" if paired else "") + " pick spread | s / cycle |")
    rule = "|---|" + "---:|" * (len(result.n_labeled) + 3 + 2 * paired)
    rows = [header, rule]
    cycle_time = (result.fit_times + result.query_times)[..., 1:].mean(axis=(1, 2))
    spread = result.pick_entropy[..., 1:].mean(axis=2)
    diffs = {m: result.paired_differences(m, "random") for m in ("auc", "final")} if paired else {}
    for i, name in enumerate(result.names):
        cells = [_pct(result.scores[i, :, c]) for c in range(len(result.n_labeled))]
        cells.append(_pct(result.auc[i]))
        for metric, diff in diffs.items():
            cells.append("(reference)" if name == "random" else cell(diff, diff.names.index(name)))
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {spread[i].mean():.3f} | {cycle_time[i]:.1f} |")
    if np.all(np.isnan(ceiling_scores)):
        return "\n".join(rows)
    runs = f"{len(ceiling_scores)} run{'s' * (len(ceiling_scores) > 1)}"
    rows.append(f"| full data ({runs}, {n_train:,} labels) | {_pct(ceiling_scores)} | "
                + "| " * (len(result.n_labeled) + 1) + f"{ceiling_time:.0f} (training) |")
    return "\n".join(rows)


def _pct(values):
    values = 100 * np.asarray(values, dtype=np.float64)
    return f"{values.mean():.1f} ± {values.std():.1f}" if values.size > 1 else f"{values.mean():.1f}"


PANELS = {
    "the papers' selectors": ["random", "entropy", "margin", "least-confidence", "coreset", "ll4al",
                              "tidal", "isal", "disal"],
    "DISAL's ablations and the batch rules": ["random", "disal", "disal drift removed", "disal w/o S", "disal w/o D",
                                              "disal + stochastic", "disal + cluster", "entropy",
                                              "entropy + stochastic", "entropy + cluster"],
    "BALD and BADGE": ["random", "entropy", "margin", "coreset", "bald", "badge"],
}


def plot(result, ceiling_scores, path):
    """One panel per PANELS entry (the papers' selectors; ablations and batch rules; BALD and
    BADGE against the baselines), at most 10 lines each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from skal.plotting import plot_active_learning_curve

    fig, axes = plt.subplots(1, len(PANELS), figsize=(6.5 * len(PANELS), 5.5), sharey=True)
    for ax, (title, names) in zip(axes, PANELS.items()):
        rows = [i for i, name in enumerate(result.names) if name in names]
        if not rows:
            ax.set_visible(False)
            continue
        plot_active_learning_curve(_subset(result, rows), ax=ax)
        if not np.all(np.isnan(ceiling_scores)):
            ax.axhline(np.mean(ceiling_scores), color="k", linestyle=":", label="full data")
        ax.set_title(f"{title} (mean ± std, {result.scores.shape[1]} repeats)", fontsize=10)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _subset(result, rows):
    return ActiveLearningCurve(
        [result.names[i] for i in rows], result.n_labeled, result.scores[rows],
        result.fit_times[rows], result.query_times[rows], scoring=result.scoring,
        class_counts=None if result.class_counts is None else result.class_counts[rows],
        classes=result.classes, reference="random" if "random" in [result.names[i] for i in rows] else None)


def load_result(path):
    """An ActiveLearningCurve and the ceiling scores back from the script's JSON file."""
    result = ActiveLearningCurve.from_json(path)
    return result, result.meta.get("ceiling_scores", [float("nan")])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, 1 repeat")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset of: " + ", ".join(VARIANTS))
    parser.add_argument("--model", choices=["smallcnn", "resnet18"], default="smallcnn")
    parser.add_argument("--size", type=int, default=14, help="image side (28 = original)")
    parser.add_argument("--pool-size", type=int, default=10000)
    parser.add_argument("--initial", type=int, default=500)
    parser.add_argument("--query", type=int, default=250)
    parser.add_argument("--cycles", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--ceiling-repeats", type=int, default=1)
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--n-jobs", type=int, default=2, help="campaigns run in parallel")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="directory of the Fashion-MNIST IDX files")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--name", default="fashion_mnist", help="stem of the output files")
    parser.add_argument("--replot", metavar="JSON", help="only redraw the plot and table of a run")
    args = parser.parse_args(argv)
    if args.replot:
        result, ceiling_scores = load_result(args.replot)
        plot(result, ceiling_scores, str(Path(args.replot).with_suffix(".png")))
        print(table(result, ceiling_scores, result.meta.get("ceiling_time", float("nan"))))
        return result
    if args.quick:
        args.pool_size, args.initial, args.query, args.cycles = 800, 100, 40, 2
        args.repeats, args.epochs, args.test_limit = 1, 2, args.test_limit or 500
        args.ceiling_repeats = 0
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")

    X, y, X_test, y_test = load(args.size, args.data, args.test_limit)
    rng = np.random.default_rng(args.seed)
    pool = rng.choice(len(y), args.pool_size, replace=False)
    net = make_net(args)
    selectors = dict((name, selector) for name, (selector, _) in VARIANTS.items())
    if "isal (validation set)" in names:
        outside = rng.choice(np.setdiff1d(np.arange(len(y)), pool), VALIDATION_SIZE, replace=False)
        selectors["isal (validation set)"] = ISAL(reference=(X[outside], y[outside]))
    learners = {
        name: ActiveLearner(_with_parts(net, VARIANTS[name][1]).set_params(**NET_PARAMS.get(name, {})),
                            selectors[name], warm_start=WARM.get(name, False))
        for name in names
    }
    start = time.perf_counter()
    result = active_learning_curve(
        learners, X[pool], y[pool], X_test=X_test, y_test=y_test, initial_size=args.initial,
        query_size=args.query, n_cycles=args.cycles, n_repeats=args.repeats,
        n_jobs=args.n_jobs, random_state=args.seed, verbose=1,
    )
    campaigns_time = time.perf_counter() - start
    ceilings = [ceiling(args, X, y, X_test, y_test, args.seed + r) for r in range(args.ceiling_repeats)]
    ceiling_scores = [c[0] for c in ceilings] or [float("nan")]
    ceiling_time = float(np.mean([c[1] for c in ceilings])) if ceilings else float("nan")

    markdown = table(result, ceiling_scores, ceiling_time)
    print(markdown)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / (args.name + "_quick" if args.quick else args.name)
    result.meta.update(
        command=shlex.join(["python", "benchmarks/compare_fashion_mnist.py",
                            *(sys.argv[1:] if argv is None else argv)]),
        args=vars(args), ceiling_scores=ceiling_scores, ceiling_time=ceiling_time,
        campaigns_time=campaigns_time, load_average=os.getloadavg(), cpu_count=os.cpu_count(),
        torch=torch.__version__, python=platform.python_version(),
    )
    result.to_json(f"{stem}.json")
    result.to_csv(f"{stem}.csv")
    Path(f"{stem}.md").write_text(markdown + "\n")
    plot(result, ceiling_scores, f"{stem}.png")
    print(f"campaigns {campaigns_time:.0f} s; wrote {stem}.json/.csv/.md/.png", file=sys.stderr)
    return result


def _with_parts(net, parts):
    return clone(net).set_params(callbacks=[*net.callbacks, *parts])


if __name__ == "__main__":
    main()
