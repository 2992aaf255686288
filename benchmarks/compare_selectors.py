"""Which selector pays? Every selector, DISAL's variants and the batch rules, on two real image sets in two regimes.

Settings (each a seeded active_learning_curve: every method of a repeat starts from the same
random initial set and seed, so differences to random sampling are paired, repeat by repeat):

  digits, low budget      scikit-learn's 8x8 digits (1,437-image pool, 360 test images),
                          50 initial labels + 5 x 25
  digits, papers' regime  10% of the pool growing to 40% in 5% steps: 144 + 6 x 72
  fashion, low budget     Fashion-MNIST (Debian's package) average-pooled to 14x14, a 10,000-image
                          pool, 2,000 test images; 100 initial labels + 5 x 100
  fashion, papers' regime a 3,000-image pool: 300 + 6 x 150 (10% to 40%)

The net is SmallCNN (width 16) trained with SGD (lr 0.05, momentum 0.9, weight decay 5e-4,
the learning rate cut 10x at 80% of the epochs) at batch 16: 50 epochs on digits, 15 on
Fashion-MNIST, retrained from scratch each cycle (warm-started for TiDAL and LL4AL, as in
their papers). BALD's net has dropout 0.5 before the classifier. ISAL holds out a stratified
reference set of max(10%, 12 samples) of the initial labels; "isal (validation set)" uses a
labeled validation set outside the pool and the budget instead, as its paper does (digits: a
stratified 10% of the training part, out of every method's pool; Fashion-MNIST: 1,000 images
outside the pool). --recipe augmented trains every method with random crops (and flips, for
Fashion-MNIST); --recipe long trains 100 epochs on digits and 60 on Fashion-MNIST
(benchmarks/recipe_convergence.py: the smallest budgets still gain at 50 and 15).

Methods: random, entropy, margin, least confidence, BALD (and random sampling on BALD's dropout
net, which separates the selection from the net), BADGE, CoreSet, LL4AL, TiDAL (entropy and
margin scores), ISAL (all weights and last layer), DISAL and its ablations (w/o D: the snapshot
score without the dynamic loss; w/o S: random picks trained with the dynamic loss), DISAL's
variants (literal eq. 15 ordering; the KL summed over 3 epoch transitions; class drift removed;
a recency-weighted target, decay 0.6; a ramp-up of the dynamic loss over 10 epochs), and the
stochastic and cluster batch rules on DISAL and entropy (stochastic on margin too; cluster on
DISAL with its class drift removed).

    python benchmarks/compare_selectors.py               # the documented run (5 repeats; 59 min on 2 idle cores)
    python benchmarks/compare_selectors.py --quick       # smoke run: 4 methods, 2 repeats, tiny sizes
    python benchmarks/compare_selectors.py --only digits-low --methods random,margin,disal --name mine
    python benchmarks/compare_selectors.py --recipe augmented --name augmented

Writes benchmarks/results/compare_<setting>[_quick].json (the ActiveLearningCurve) and
compare_selectors[_quick].md (the tables: per method the mean AUC and final accuracy, the paired
difference to random with its 95% t interval, the variants' paired difference to DISAL, the
pick spread and the time per cycle), with the CPU model and its flags.
"""

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per campaign process (n_jobs=2 on 2 cores)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from skorch.callbacks import LRScheduler  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch.optim.lr_scheduler import MultiStepLR  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from skal import ActiveLearner, ActiveNet  # noqa: E402
from compare_pairs import cell  # noqa: E402  (this directory)
from skal._provenance import machine  # noqa: E402
from skal.datasets import load_digits_images, load_fashion_mnist  # noqa: E402
from skal.model_selection import active_learning_curve  # noqa: E402
from skal.models import SmallCNN  # noqa: E402
from skal.parts import DynamicLoss  # noqa: E402
from skal.selectors import (BADGE, BALD, DISAL, ISAL, LL4AL, ClusterBatch, CoreSet, Entropy,  # noqa: E402
                            LeastConfidence, Margin, Random, StochasticBatch, TiDAL)

HERE = Path(__file__).parent
SETTINGS = {
    # name: (dataset, pool size or None for all, initial, query, cycles)
    "digits-low": ("digits", None, 50, 25, 5),
    "digits-papers": ("digits", None, 144, 72, 6),
    "fashion-low": ("fashion", 10_000, 100, 100, 5),
    "fashion-papers": ("fashion", 3_000, 300, 150, 6),
}
QUICK = {
    "digits-low": ("digits", 600, 30, 20, 2),
    "fashion-low": ("fashion", 1_500, 60, 40, 2),
}
RECIPES = {"digits": {"max_epochs": 50, "batch_size": 16}, "fashion": {"max_epochs": 15, "batch_size": 16}}
# --recipe long: the longest epoch counts of recipe_convergence.py's table; the smallest budgets
# still gained up to there (digits 50 labels: 68.8 at 50 epochs, 77.9 at 100; Fashion-MNIST 100
# labels: 53.9 at 15, 60.0 at 60), the largest about one point over the previous count
LONG_EPOCHS = {"digits": 100, "fashion": 60}


def methods(initial, validation=None):
    """name -> (selector, warm start, extra net parameters, extra callbacks).

    ``validation``: ``(X_val, y_val)`` outside the pool and the budget, ISAL's reference set as
    in its paper (the other methods never see it).
    """
    reference = max(0.1, 12 / initial)
    dynamic = [("dynamic_loss", DynamicLoss())]
    return {
        "random": (Random(), False, {}, []),
        "entropy": (Entropy(), False, {}, []),
        "margin": (Margin(), False, {}, []),
        "least-confidence": (LeastConfidence(), False, {}, []),
        "bald": (BALD(), False, {"module__dropout": 0.5}, []),
        # BALD's net differs (dropout): random sampling on that net separates selection from training
        "random (dropout net)": (Random(), False, {"module__dropout": 0.5}, []),
        "badge": (BADGE(), False, {}, []),
        "coreset": (CoreSet(), False, {}, []),
        "ll4al": (LL4AL(subset=None), True, {}, []),
        "tidal": (TiDAL(subset=None), True, {}, []),
        "tidal (margin)": (TiDAL(subset=None, score="margin"), True, {}, []),
        # warm_start="continue": the optimizer and the schedule carried over (warm_start=True before 0.2)
        "ll4al continue": (LL4AL(subset=None), "continue", {}, []),
        "ll4al cold": (LL4AL(subset=None), False, {}, []),
        "tidal continue": (TiDAL(subset=None), "continue", {}, []),
        "tidal cold": (TiDAL(subset=None), False, {}, []),
        "isal": (ISAL(reference=reference), False, {}, []),
        "isal (last layer)": (ISAL(reference=reference, params="last layer"), False, {}, []),
        # the paper's set-up: a labeled validation set outside the pool and the budget
        "isal (validation set)": (ISAL(reference=validation if validation is not None else reference),
                                  False, {}, []),
        "disal": (DISAL(drift="keep", balance="none"), False, {}, []),
        "disal w/o D": (DISAL(weight=0, drift="keep", balance="none"), False, {}, []),
        "disal w/o S": (Random(), False, {}, dynamic),
        "disal literal": (DISAL(mode="literal", drift="keep", balance="none"), False, {}, []),
        "disal 3 transitions": (DISAL(transitions=3, drift="keep", balance="none"), False, {}, []),
        "disal drift removed": (DISAL(drift="remove", balance="none"), False, {}, []),
        "disal balanced": (DISAL(balance="predicted"), False, {}, []),
        "disal current buffers": (DISAL(snapshot_buffers="current", drift="keep", balance="none"), False, {}, []),
        "disal recency target": (DISAL(target_decay=0.6, drift="keep", balance="none"), False, {}, []),
        "disal ramp-up": (DISAL(ramp_up=10, drift="keep", balance="none"), False, {}, []),
        "disal + stochastic": (DISAL(batch=StochasticBatch(), drift="keep", balance="none"), False, {}, []),
        "disal + cluster": (DISAL(batch=ClusterBatch(), drift="keep", balance="none"), False, {}, []),
        "disal drift removed + cluster": (DISAL(batch=ClusterBatch(), balance="none"), False, {}, []),
        "entropy + stochastic": (Entropy(batch=StochasticBatch()), False, {}, []),
        "entropy + cluster": (Entropy(batch=ClusterBatch()), False, {}, []),
        "margin + stochastic": (Margin(batch=StochasticBatch()), False, {}, []),
    }


DISAL_VARIANTS = ["disal w/o D", "disal w/o S", "disal literal", "disal 3 transitions", "disal drift removed",
                  "disal balanced", "disal current buffers",
                  "disal recency target", "disal ramp-up", "disal + stochastic", "disal + cluster",
                  "disal drift removed + cluster"]


def load(dataset, pool_size, seed=0, data=None, quick=False):
    """(X pool, y pool, X test, y test, (X val, y val)), float32 (N, 1, H, W), normalised.

    The validation set (ISAL's reference in "isal (validation set)") lies outside the pool:
    digits: a stratified 10% of the training part, taken out of the pool for every method;
    Fashion-MNIST: 1,000 training images (200 with --quick) outside the pool subset.
    """
    rng = np.random.default_rng(seed)
    if dataset == "digits":
        X, y = load_digits_images(return_X_y=True)
        X = (X - X.mean()) / X.std()
        X, X_test, y, y_test = train_test_split(X, y, test_size=0.2, stratify=y, random_state=seed)
        X, X_val, y, y_val = train_test_split(X, y, test_size=0.1, stratify=y, random_state=seed)
    else:
        X, y = load_fashion_mnist(data, subset="train", return_X_y=True)
        X_test, y_test = load_fashion_mnist(data, subset="test", return_X_y=True)
        keep = rng.choice(len(X_test), 500 if quick else 2_000, replace=False)
        X_test, y_test = X_test[keep], y_test[keep]

        def prepare(images):
            images = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(images), 14)
            return ((images - 0.2860) / 0.3530).numpy()  # Fashion-MNIST's pixel mean and std

        X, X_test = prepare(X), prepare(X_test)
    if pool_size is not None and pool_size < len(y):
        keep = np.sort(rng.choice(len(y), pool_size, replace=False))
        if dataset != "digits":
            outside = rng.choice(np.setdiff1d(np.arange(len(y)), keep), 200 if quick else 1_000,
                                 replace=False)
            X_val, y_val = X[outside], y[outside]
        X, y = X[keep], y[keep]
    elif dataset != "digits":
        raise ValueError("Fashion-MNIST's validation set comes from outside the pool: give a pool size")
    return X.astype(np.float32), y, X_test.astype(np.float32), y_test, (X_val.astype(np.float32), y_val)


def learners(dataset, initial, names, validation=None, augment=False, size=None, epochs=None):
    """name -> ActiveLearner; ``augment``: random crop (and flip, for Fashion-MNIST) in training."""
    recipe = dict(RECIPES[dataset], **({"max_epochs": epochs} if epochs else {}))
    milestone = max(1, round(0.8 * recipe["max_epochs"]))
    extra = {}
    if augment:
        crop = v2.RandomCrop(size, padding=max(1, size // 8))
        # digits are not mirror-symmetric: crop only; clothes: crop and flip, as the papers' CIFAR recipe
        # (in a Compose: scikit-learn's clone would take RandomCrop's get_params for an estimator's)
        extra["train_transform"] = v2.Compose([crop] if dataset == "digits" else [crop, v2.RandomHorizontalFlip()])
    out = {}
    for name, (selector, warm, net_params, callbacks) in methods(initial, validation).items():
        if names and name not in names:
            continue
        net = ActiveNet(
            SmallCNN, module__in_channels=1, module__width=16, lr=0.05, optimizer=torch.optim.SGD,
            optimizer__momentum=0.9, optimizer__weight_decay=5e-4, iterator_valid__batch_size=1024,
            callbacks=[("lr", LRScheduler(policy=MultiStepLR, milestones=[milestone], gamma=0.1)), *callbacks],
            verbose=0, **recipe, **net_params, **extra)
        out[name] = ActiveLearner(net, selector, classes=np.arange(10), warm_start=warm)
    return out


def table(name, result, seconds):
    """Markdown: per method AUC and final accuracy (%), paired differences to random (and to DISAL)."""
    has_disal = "disal" in result.names
    header = ("| method | AUC | final | Δ AUC vs random | Δ final vs random |"
              + (" Δ AUC vs DISAL |" if has_disal else "") + " pick spread | s / cycle |")
    rows = [f"### {name}: {result.n_labeled[0]} to {result.n_labeled[-1]} labels, "
            f"{result.scores.shape[1]} repeats ({seconds / 60:.1f} min)", "", header,
            "|---|" + "---:|" * (header.count("|") - 2)]
    to_random = {m: result.paired_differences(m, "random") for m in ("auc", "final")}
    to_disal = result.paired_differences("auc", "disal") if has_disal else None
    spread = result.pick_entropy[..., 1:].mean(axis=(1, 2))
    cycle = (result.fit_times + result.query_times)[..., 1:].mean(axis=(1, 2))
    order = np.argsort(-result.auc.mean(axis=1), kind="stable")
    for i in order:
        method = result.names[i]
        cells = [f"{100 * result.auc[i].mean():.1f}", f"{100 * result.scores[i, :, -1].mean():.1f}"]
        for metric in ("auc", "final"):
            diff = to_random[metric]
            cells.append("(reference)" if method == "random" else cell(diff, diff.names.index(method)))
        if has_disal:
            cells.append("(reference)" if method == "disal" else
                         cell(to_disal, to_disal.names.index(method)) if method in DISAL_VARIANTS else "")
        cells += [f"{spread[i]:.2f}", f"{cycle[i]:.1f}"]
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 methods, 2 repeats, tiny sizes")
    parser.add_argument("--only", default=None, help="comma-separated settings: " + ", ".join(SETTINGS))
    parser.add_argument("--methods", default=None, help="comma-separated method names (default: all)")
    parser.add_argument("--repeats", type=int, default=None, help="default: 5 (2 with --quick)")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--data", default=None, help="Fashion-MNIST directory (default: Debian's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", choices=["papers", "augmented", "long"], default="papers",
                        help="papers: no augmentation (the default); augmented: random crop with "
                             "padding (and horizontal flip for Fashion-MNIST) in training, every method; "
                             "long: the papers' recipe trained for 100 epochs (digits) and 60 (Fashion-MNIST)")
    parser.add_argument("--name", default="compare",
                        help="stem of the output files: <name>_<setting>.json, <name>_selectors.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    settings = QUICK if args.quick else SETTINGS
    names = args.methods.split(",") if args.methods else (
        ["random", "margin", "disal", "disal + stochastic"] if args.quick else None)
    known = list(methods(100))
    if names and set(names) - set(known):
        parser.error(f"--methods: unknown {sorted(set(names) - set(known))}; known: {', '.join(known)}")
    if args.only and set(args.only.split(",")) - set(settings):
        parser.error(f"--only: unknown {sorted(set(args.only.split(',')) - set(settings))}; "
                     f"known: {', '.join(settings)}")
    if args.only:
        settings = {name: settings[name] for name in args.only.split(",")}
    if (args.only or args.methods or args.repeats or args.recipe != "papers") and not args.quick \
            and args.name == "compare":
        parser.error("a partial run (--only, --methods or --repeats) needs its own --name, so that it "
                     "does not overwrite the committed results of the full run")
    repeats = args.repeats or (2 if args.quick else 5)
    suffix = "_quick" if args.quick else ""
    sections, meta = [], {}
    for setting, (dataset, pool_size, initial, query, cycles) in settings.items():
        X, y, X_test, y_test, validation = load(dataset, pool_size, args.seed, args.data, args.quick)
        start = time.perf_counter()
        result = active_learning_curve(
            learners(dataset, initial, names, validation, args.recipe == "augmented", X.shape[-1],
                     LONG_EPOCHS[dataset] if args.recipe == "long" else None), X, y, X_test=X_test, y_test=y_test, initial_size=initial,
            query_size=query, n_cycles=cycles, n_repeats=repeats, n_jobs=args.n_jobs,
            random_state=args.seed, data_name=f"{dataset} ({setting})", verbose=0)
        seconds = time.perf_counter() - start
        result.meta["command"] = "python benchmarks/compare_selectors.py " + shlex.join(sys.argv[1:])
        result.to_json(HERE / "results" / f"{args.name}_{setting}{suffix}.json")
        sections.append(table(setting, result, seconds))
        meta[setting] = {"pool": int(len(y)), "test": int(len(y_test)), "seconds": seconds}
        print(sections[-1], "\n", flush=True)
    info = machine()
    header = [f"# {args.name}_selectors{suffix}", "",
              f"`python benchmarks/compare_selectors.py {shlex.join(sys.argv[1:])}` on "
              f"{info.get('cpu') or '?'} ({info.get('usable_cores', info.get('logical_cores', '?'))} cores, "
              f"flags {', '.join(info.get('cpu_flags', [])) or '?'}), torch {torch.__version__}, "
              f"{sum(m['seconds'] for m in meta.values()) / 60:.0f} min in all.", "",
              "Accuracy in %; Δ: mean paired difference over repeats (same initial set and seed) "
              "with its 95% paired t interval, `*` when it excludes zero.", ""]
    (HERE / "results" / f"{args.name}_selectors{suffix}.md").write_text("\n".join(header + sections) + "\n")
    (HERE / "results" / f"{args.name}_selectors{suffix}_meta.json").write_text(json.dumps(
        {"settings": meta, "machine": info, "repeats": repeats}, indent=2))


if __name__ == "__main__":
    main()
