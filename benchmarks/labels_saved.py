"""Labels saved: how many labels each configuration needs to reach random sampling's final accuracy.

Configurations: a selector (Random, Margin, DISAL as the paper method) x a semi-supervised
training part (none, skal.semi.PseudoLabel, skal.semi.FixMatch) x an initial
strategy (random, kmeans, typiclust; skal.initial.initial_batch on the pool's features). The
reference is random sampling without a part from a random initial set. Within a repeat every
configuration shares the learner seed, and the configurations of one initial strategy share the
initial set. Per repeat, the target is the reference's test accuracy at the final budget; a
configuration's "labels needed" is the first labeled-set size at which its curve reaches the
target, interpolated linearly between the two cycles around the crossing (the initial size when
the first model already reaches it: the value is then an upper bound, marked "<="; not reached:
"> final budget"). Reported: mean labels needed and its paired difference to the reference's
final budget, normalised AUC (skal's trapezoid over the labeled-set sizes) with its paired 95%
Student t interval to the reference (skal._stats.paired_t_interval), and the training time of a
part relative to the same configuration without it.

Scales (2 shared CPU cores, one torch thread):

* digits: skal simulate's default recipe (MLP with 128 hidden units on the 64 standardised
  pixels, SGD lr 0.05 momentum 0.9, batch 32, 30 epochs), 70/30 split (1,257-row pool, 540
  test rows); 20 initial labels, 10 queries of 20 (final budget 220). With FixMatch in --semi,
  the same standardised pixels are fed as the 8x8 images, (1, 8, 8), to the same MLP (which
  flattens them: the other configurations train as on the 64 columns, and the initial
  strategies flatten them too, so the initial sets are the same); FixMatch(flip=False), since a
  mirror does not preserve a digit: its views are the 1-pixel (12.5%) translation and, for the
  strong view, contrast, brightness, noise and Cutout.
* fashion: Fashion-MNIST average-pooled to 14x14 and scaled by one global mean and standard
  deviation, the same MLP (196 inputs) and recipe, a 5,000-row pool drawn from the 60,000
  training images, 2,000 test images drawn from the 10,000; 40 initial labels, 8 queries of
  40 (final budget 360). FixMatch reads the images as (1, 14, 14).

    python benchmarks/labels_saved.py --dataset digits --strategies random   # 3 min (shared cores)
    python benchmarks/labels_saved.py --dataset digits --strategies kmeans,typiclust   # 6 min
    python benchmarks/labels_saved.py --dataset digits --semi fixmatch   # FixMatch, 3 initial strategies
    python benchmarks/labels_saved.py --dataset fashion --strategies random  # 12 min, FixMatch included
    python benchmarks/labels_saved.py --dataset fashion --strategies kmeans --semi none,pseudo     # 5 min
    python benchmarks/labels_saved.py --dataset fashion --strategies typiclust --semi none,pseudo  # 6 min
    python benchmarks/labels_saved.py --dataset fashion --strategies kmeans --semi fixmatch
    python benchmarks/labels_saved.py --dataset fashion --strategies typiclust --semi fixmatch
    python benchmarks/labels_saved.py --dataset fashion --strategies timing
    python benchmarks/labels_saved.py --dataset digits --strategies timing   # training-time ratios
    python benchmarks/labels_saved.py --dataset digits --strategies random --selectors random,margin --epochs 100
    python benchmarks/labels_saved.py --dataset fashion --strategies random --selectors random,margin \
        --semi none,pseudo --epochs 100                      # longer training (its own report, _e100)
    python benchmarks/labels_saved.py --dataset digits --quick   # smoke run

Each run writes benchmarks/results/labels_saved_<dataset>[_<strategies>][_<parts, when "none" is not
among them>][_e<epochs>][_quick].json; the
report (markdown tables) is printed and written next to it (.md), merging every JSON of the
dataset already written (so the fashion runs, split to stay under 10 minutes each, make one table).
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from skal import ActiveLearner, ActiveNet
from skal._campaign import normalised_auc
from skal._cli_data import features_for, load
from skal._stats import paired_t_interval
from skal.cli import MLP_HIDDEN_SIZES, RECIPE
from skal.model_selection import active_learning_curve
from skal.models import MLP
from skal.selectors import DISAL, Margin, Random
from skal.semi import FixMatch, PseudoLabel

SELECTORS = {"random": Random, "margin": Margin, "disal": DISAL}
PARTS = {"none": None, "pseudo": PseudoLabel, "fixmatch": FixMatch}
SCALES = {
    "digits": {"initial": 20, "query": 20, "cycles": 10, "semi": ("none", "pseudo"),
               "image_shape": (1, 8, 8), "fixmatch": {"flip": False}},
    "fashion": {"initial": 40, "query": 40, "cycles": 8, "semi": ("none", "pseudo", "fixmatch"),
                "fixmatch": {}},
}
REFERENCE = ("random", "none", "random")
RESULTS = Path(__file__).parent / "results"


def data(dataset, seed, images=False):
    if dataset == "digits":
        X, y, X_test, y_test = load("digits", data_path=None, test_size=0.3, pool_size=None,
                                    test_limit=None, seed=seed)
        X, X_test = features_for("mlp", X, X_test, standardize=True)
        if images:  # the standardised pixels as (1, 8, 8) images, for FixMatch's views
            shape = SCALES["digits"]["image_shape"]
            X, X_test = X.reshape(-1, *shape), X_test.reshape(-1, *shape)
        return X, y, X_test, y_test
    X, y, X_test, y_test = load("fashion-mnist", data_path=None, test_size=0.3, pool_size=5000,
                                test_limit=2000, seed=seed)
    pool = torch.nn.functional.avg_pool2d
    X, X_test = (pool(torch.as_tensor(a), 2).numpy() for a in (X, X_test))
    mean, std = X.mean(), X.std()
    return ((X - mean) / std).astype(np.float32), y, ((X_test - mean) / std).astype(np.float32), y_test


def learners(X, classes, epochs, selectors, semis, dataset="fashion"):
    out = {}
    for semi in semis:
        for name in selectors:
            kwargs = SCALES[dataset].get(semi, {})
            callbacks = None if PARTS[semi] is None else [("semi", PARTS[semi](**kwargs))]
            net = ActiveNet(MLP, max_epochs=epochs, verbose=0, callbacks=callbacks,
                            module__hidden_sizes=MLP_HIDDEN_SIZES,
                            module__in_features=int(np.prod(X.shape[1:])), **RECIPE)
            out[f"{name} + {semi}"] = ActiveLearner(net, selector=SELECTORS[name](), classes=classes)
    return out


def labels_needed(scores, n_labeled, target):
    """(labels, bound): the interpolated first crossing of ``target``; bound '<=', '' or '>'."""
    above = np.flatnonzero(scores >= target)
    if len(above) == 0:
        return float(n_labeled[-1]), ">"
    i = above[0]
    if i == 0:
        return float(n_labeled[0]), "<="
    s0, s1, n0, n1 = scores[i - 1], scores[i], n_labeled[i - 1], n_labeled[i]
    return float(n0 + (target - s0) / (s1 - s0) * (n1 - n0)), ""


def run(args):
    torch.set_num_threads(1)
    scale = dict(SCALES[args.dataset])
    if args.quick:
        scale.update(initial=20, query=20, cycles=2)
    semis = list(args.semi)
    X, y, X_test, y_test = data(args.dataset, args.seed, images="fixmatch" in semis)
    epochs = 2 if args.quick else args.epochs
    runs = {}
    for strategy in args.strategies:
        start = time.perf_counter()
        curve = active_learning_curve(
            learners(X, np.unique(y), epochs, args.selectors, semis, args.dataset), X, y, X_test=X_test, y_test=y_test,
            initial_size=scale["initial"], query_size=scale["query"], n_cycles=scale["cycles"],
            n_repeats=2 if args.quick else args.repeats, random_state=args.seed, initial_strategy=strategy)
        for i, name in enumerate(curve.names):
            selector, semi = name.split(" + ")
            runs[f"{selector}|{semi}|{strategy}"] = {
                "scores": curve.scores[i].tolist(), "fit_times": curve.fit_times[i].tolist()}
        print(f"{args.dataset} {strategy}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        n_labeled = curve.n_labeled.tolist()
    cpu = _cpu()
    return {"dataset": args.dataset, "n_labeled": n_labeled, "runs": runs, "epochs": epochs,
            "repeats": 2 if args.quick else args.repeats, "seed": args.seed, "pool": len(y),
            "test": len(y_test), "cpu": cpu, "python": platform.python_version(),
            "torch": torch.__version__, "command": " ".join(sys.argv)}


def _cpu():
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name")), "")


def timing(dataset, seed, n_labeled=(50, 200), repeats=5):
    """Training time of one fit with each part over the time without, interleaved, median of repeats."""
    torch.set_num_threads(1)
    X, y, _, _ = data(dataset, seed, images=True)  # digits as (1, 8, 8): the MLP flattens them
    out = {}
    for n in n_labeled:
        times = {semi: [] for semi in PARTS}
        for r in range(repeats):
            rows = np.random.default_rng(r).choice(len(y), n, replace=False)
            y_marked = np.full(len(y), -1)
            y_marked[rows] = y[rows]
            for semi in times:  # interleaved, so that the machine's load hits every part alike
                learner = learners(X, np.unique(y), 30, ["random"], [semi], dataset)[f"random + {semi}"]
                start = time.perf_counter()
                learner.set_params(unlabeled=-1, random_state=r).fit(X, y_marked)
                times[semi].append(time.perf_counter() - start)
        base = np.median(times["none"])
        out[n] = {semi: {"median_s": float(np.median(t)), "ratio": float(np.median(t) / base)}
                  for semi, t in times.items()}
    return out


def report(results):
    """Markdown tables of labels needed, AUC and training-time ratios, from merged runs."""
    n_labeled = np.asarray(results["n_labeled"])
    runs = results["runs"]
    ref_key = "|".join(REFERENCE)
    if ref_key not in runs:
        return "(the reference, random + none from a random initial set, has not run yet)\n"
    ref = np.asarray(runs[ref_key]["scores"])
    target = ref[:, -1]
    final = n_labeled[-1]
    ref_auc = normalised_auc(ref, n_labeled)
    lines = [f"Target: random sampling's final accuracy at {final} labels, "
             f"{target.mean():.3f} (mean over {len(target)} repeats).", "",
             "| selector | part | initial | labels needed [95% CI] | saved vs random's final | AUC | AUC - random's [95% CI] | training time x |",
             "|---|---|---|---|---|---|---|---|"]
    rows = []
    for key, run in runs.items():
        selector, semi, strategy = key.split("|")
        scores = np.asarray(run["scores"])
        needed = [labels_needed(scores[r], n_labeled, target[r]) for r in range(len(target))]
        values = np.array([v for v, _ in needed])
        reached = sum(b != ">" for _, b in needed)
        upper = any(b == "<=" for _, b in needed)
        auc = normalised_auc(scores, n_labeled)
        mean, low, high = paired_t_interval(auc - ref_auc)
        base = runs.get(f"{selector}|none|{strategy}")
        ratio = (np.mean(run["fit_times"]) / np.mean(base["fit_times"])) if base and semi != "none" else 1.0
        if reached == len(values):
            _, lo, hi = paired_t_interval(values - final)
            text = f"{'<=' if upper else ''}{values.mean():.0f} [{final + lo:.0f}, {final + hi:.0f}]"
            saved = f"{1 - values.mean() / final:.0%}"
        else:
            text = f"> {final} in {len(values) - reached}/{len(values)}"
            saved = "n/a"
        rows.append((values.mean() if reached == len(values) else np.inf, -auc.mean(),
                     f"| {selector} | {semi} | {strategy} | {text} | {saved} | {auc.mean():.3f} | "
                     f"{mean:+.3f} [{low:+.3f}, {high:+.3f}] | {ratio:.1f} |"))
    lines += [row for *_, row in sorted(rows, key=lambda r: (r[0], r[1]))]
    best = min(rows, key=lambda r: (r[0], r[1]))
    met = np.isfinite(best[0]) and best[0] <= final / 2
    lines += ["", "The 'training time x' column divides the mean fit time of a configuration by that of the "
              "same configuration without its part; where the two ran in different runs (FixMatch from "
              "kmeans and typiclust initial sets, FixMatch on digits), the machine's load differed between "
              "them, so only the interleaved timing table below measures the cost."]
    lines += ["", "What a part adds: AUC with the part minus without it, same selector and initial set, "
              "paired over repeats [95% CI]; and random's own labels needed "
              f"({np.mean([labels_needed(ref[r], n_labeled, target[r])[0] for r in range(len(target))]):.0f}: "
              "its noisy curve often reaches its final accuracy before the final budget).", "",
              "| selector | initial | part | AUC - without [95% CI] |", "|---|---|---|---|"]
    for key in sorted(runs):
        selector, semi, strategy = key.split("|")
        base = runs.get(f"{selector}|none|{strategy}")
        if semi == "none" or base is None:
            continue
        diff = normalised_auc(np.asarray(runs[key]["scores"]), n_labeled) - normalised_auc(
            np.asarray(base["scores"]), n_labeled)
        mean, low, high = paired_t_interval(diff)
        lines.append(f"| {selector} | {strategy} | {semi} | {mean:+.3f} [{low:+.3f}, {high:+.3f}] |")
    if "timing" in results:
        lines += ["", "Training time of one fit (30 epochs), median of 5 interleaved repeats, and its ratio "
                  "to the fit without a part:", "", "| labels | part | seconds | x |", "|---|---|---|---|"]
        for n, parts in results["timing"].items():
            lines += [f"| {n} | {semi} | {v['median_s']:.2f} | {v['ratio']:.1f} |" for semi, v in parts.items()]
    lines += ["", f"Best configuration: {best[2].split('|')[1].strip()} + {best[2].split('|')[2].strip()} "
              f"+ {best[2].split('|')[3].strip()} initial set: "
              f"{'%.0f' % best[0] if np.isfinite(best[0]) else 'not reached'} labels for random's "
              f"{final}; target (<= half) {'met' if met else 'NOT met'}."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=tuple(SCALES), default="digits")
    parser.add_argument("--selectors", default="random,margin,disal")
    parser.add_argument("--semi", default=None, help="comma-separated parts (default: per dataset)")
    parser.add_argument("--strategies", default="random,kmeans,typiclust",
                        help="initial strategies; 'timing': only time one fit with each part")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report-only", action="store_true",
                        help="only rebuild the report from the JSON files already written")
    args = parser.parse_args(argv)
    args.selectors = args.selectors.split(",")
    args.strategies = args.strategies.split(",")
    args.semi = args.semi.split(",") if args.semi else list(SCALES[args.dataset]["semi"])
    suffix = "_quick" if args.quick else ""
    if args.report_only:
        results = next(json.loads(path.read_text()) for path in sorted(
            RESULTS.glob(f"labels_saved_{args.dataset}_*{suffix}.json"))
            if json.loads(path.read_text())["epochs"] == args.epochs)
    else:
        if args.strategies == ["timing"]:
            scale = SCALES[args.dataset]
            results = {"dataset": args.dataset, "runs": {}, "repeats": args.repeats, "epochs": args.epochs,
                       "n_labeled": [scale["initial"] + c * scale["query"] for c in range(scale["cycles"] + 1)],
                       "timing": timing(args.dataset, args.seed), "cpu": _cpu(), "command": " ".join(sys.argv)}
        else:
            results = run(args)
        tag = "" if args.strategies == ["random", "kmeans", "typiclust"] else "_" + "-".join(args.strategies)
        tag += "" if "none" in args.semi else "_" + "-".join(args.semi)
        tag += "" if args.epochs == 30 else f"_e{args.epochs}"
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"labels_saved_{args.dataset}{tag}{suffix}.json"
        path.write_text(json.dumps(results, indent=1))
    merged = dict(results, runs={})
    for other in sorted(RESULTS.glob(f"labels_saved_{args.dataset}_*{suffix}.json")):
        if suffix or not other.stem.endswith("_quick"):
            previous = json.loads(other.read_text())
            if (previous["n_labeled"], previous["repeats"], previous["epochs"]) == (
                    results["n_labeled"], results["repeats"], results["epochs"]):
                merged["runs"].update(previous["runs"])
                merged.update({key: value for key, value in previous.items()
                               if key in ("timing", "pool", "test") or key not in merged})
    text = (f"# Labels saved on {args.dataset} ({merged.get('pool', '?')}-row pool, "
            f"{merged.get('test', '?')} test rows, {merged['repeats']} repeats, {merged['epochs']} epochs; "
            f"CPU: {merged['cpu']}, shared with other work)\n\n" + report(merged))
    epochs = "" if args.epochs == 30 else f"_e{args.epochs}"
    (RESULTS / f"labels_saved_{args.dataset}{epochs}{suffix}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
