"""The ``skal`` command."""

import argparse
import sys
import time

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from . import __version__
from .datasets import load_digits_images
from .learner import ActiveLearner
from .model_selection import _initial_indices, _run_campaign
from .models import SmallCNN
from .net import ActiveNet
from .selectors import DISAL, ISAL, LL4AL, CoreSet, Entropy, LeastConfidence, Margin, Random, TiDAL

SELECTORS = {
    "disal": DISAL,
    "tidal": TiDAL,
    "ll4al": LL4AL,
    "isal": ISAL,
    "coreset": CoreSet,
    "random": Random,
    "entropy": Entropy,
    "margin": Margin,
    "least-confidence": LeastConfidence,
}
DATASETS = {"digits": load_digits_images}


def _selector_list(text):
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SELECTORS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown selector(s) {unknown or text!r}; choose from {', '.join(SELECTORS)}"
        )
    return names


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="skal", description="Deep active learning, scikit-learn style."
    )
    parser.add_argument("--version", action="version", version=f"skal {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    sim = verbs.add_parser(
        "simulate",
        help="simulate active-learning campaigns and compare selectors",
        description=(
            "Run a seeded active-learning campaign per selector on a labeled data set, "
            "with its labels as the annotator: train on a random initial set, then "
            "query and teach for a number of cycles, and print test accuracy per cycle. "
            "Every selector starts from the same initial set."
        ),
    )
    sim.add_argument("--dataset", choices=sorted(DATASETS), default="digits",
                     help="data set (default: digits, scikit-learn's 8x8 digits as images)")
    sim.add_argument("--selectors", type=_selector_list, default=["disal", "random"],
                     help=f"comma-separated selectors from {', '.join(SELECTORS)} (default: disal,random)")
    sim.add_argument("--initial", type=_positive_int, default=100, help="initial labeled set size (default: 100)")
    sim.add_argument("--query", type=_positive_int, default=100, help="samples queried per cycle (default: 100)")
    sim.add_argument("--cycles", type=_positive_int, default=5, help="query/teach cycles (default: 5)")
    sim.add_argument("--epochs", type=_positive_int, default=30, help="training epochs per cycle (default: 30)")
    sim.add_argument("--test-size", type=float, default=0.3, help="held-out test fraction (default: 0.3)")
    sim.add_argument("--device", default="cpu", help="torch device for training and queries (default: cpu)")
    sim.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sim.add_argument("--quiet", action="store_true", help="print only the final table")
    return parser


def simulate(args, out=sys.stdout):
    """Run the campaigns described by ``args``; return {selector: records}."""
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("skal simulate: error: --device cuda requested but CUDA is not available")
    X, y = DATASETS[args.dataset](return_X_y=True)
    X_pool, X_test, y_pool, y_test = train_test_split(
        X, y, test_size=args.test_size, stratify=y, random_state=args.seed
    )
    if args.initial >= len(X_pool):
        raise SystemExit(f"skal simulate: error: --initial must be below the pool size {len(X_pool)}")
    initial_idx = _initial_indices(len(X_pool), args.initial, args.seed)
    net = ActiveNet(
        SmallCNN,
        module__in_channels=X.shape[1],
        max_epochs=args.epochs,
        batch_size=32,
        optimizer=torch.optim.SGD,
        lr=0.05,
        optimizer__momentum=0.9,
        optimizer__weight_decay=5e-4,
        device=args.device,
        verbose=0,
    )
    results = {}
    for name in args.selectors:
        learner = ActiveLearner(net, selector=SELECTORS[name](), classes=np.unique(y),
                                random_state=args.seed)
        start = time.perf_counter()

        def progress(record, name=name):
            if not args.quiet:
                print(f"[{name}] cycle {record['cycle']}: {record['n_labeled']} labeled, "
                      f"accuracy {record['score']:.4f}", file=out, flush=True)

        results[name] = _run_campaign(
            learner, X_pool, y_pool, X_test, y_test, initial_idx=initial_idx,
            query_size=args.query, n_cycles=args.cycles, callback=progress,
        )
        if not args.quiet:
            print(f"[{name}] done in {time.perf_counter() - start:.1f} s", file=out, flush=True)
    print(format_table(results), file=out)
    return results


def format_table(results):
    """A markdown table: one row per cycle, labeled count and accuracy per selector."""
    names = list(results)
    header = "| cycle | labeled | " + " | ".join(names) + " |"
    rule = "|---:|---:|" + "---:|" * len(names)
    rows = []
    for i, record in enumerate(results[names[0]]):
        scores = " | ".join(
            f"{results[name][i]['score']:.4f}" if i < len(results[name]) else "" for name in names
        )
        rows.append(f"| {record['cycle']} | {record['n_labeled']} | {scores} |")
    return "\n".join([header, rule, *rows])


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.verb == "simulate":
        simulate(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
