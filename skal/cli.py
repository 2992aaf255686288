"""The ``skal`` command."""

import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from . import __version__
from .callbacks import ProgressBars
from .datasets import load_digits_images, load_fashion_mnist
from .learner import ActiveLearner
from .model_selection import active_learning_curve
from .models import MLP, SmallCNN
from .net import ActiveNet
from .plotting import plot_active_learning_curve
from .selectors import (BADGE, BALD, DISAL, ISAL, LL4AL, CoreSet, Entropy, LeastConfidence, Margin,
                        Random, TiDAL)

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
    "bald": BALD,
    "badge": BADGE,
}
DATASETS = ("digits", "fashion-mnist", "PATH.npz")


def _selector_list(text):
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SELECTORS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown selector(s) {unknown or text!r}; choose from {', '.join(SELECTORS)}"
        )
    return names


# argparse reports a ValueError from a type function as "invalid <function name> value",
# so each one raises ArgumentTypeError with its own message instead.


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1), got {text}")
    return value


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**32 - 1], got {text}")
    return value


def _device(text):
    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}; use a torch device such as cpu, cuda or cuda:1"
        ) from None
    return text


def _dataset(text):
    if text in ("digits", "fashion-mnist") or text.endswith(".npz"):
        return text
    raise argparse.ArgumentTypeError(
        f"unknown dataset {text!r}; choose from digits, fashion-mnist, or a PATH.npz file "
        "with arrays X and y (and optionally X_test, y_test)"
    )


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
            "Run seeded active-learning campaigns per selector on a labeled data set, with "
            "its labels as the annotator: train on a random initial set, then query and "
            "teach for a number of cycles, recording test accuracy after each training. "
            "Every selector starts each repeat from the same initial set and seed. Prints a "
            "table (mean ± std over repeats, area under the curve, time) and writes "
            "results.csv, results.json and curve.png to --out."
        ),
    )
    sim.add_argument("--dataset", type=_dataset, default="digits", metavar="DATASET",
                     help="digits (scikit-learn's 8x8 digits, the default), fashion-mnist "
                          "(local IDX files, see skal.datasets.load_fashion_mnist), or PATH.npz "
                          "with arrays X, y and optionally X_test, y_test")
    sim.add_argument("--selectors", type=_selector_list, default=["disal", "random"],
                     help=f"comma-separated selectors from {', '.join(SELECTORS)} (default: disal,random)")
    sim.add_argument("--initial", type=_positive_int, default=100, help="initial labeled set size (default: 100)")
    sim.add_argument("--query", type=_positive_int, default=100, help="samples queried per cycle (default: 100)")
    sim.add_argument("--cycles", type=_positive_int, default=5, help="query/teach cycles (default: 5)")
    sim.add_argument("--repeats", type=_positive_int, default=1, help="independent repeats (default: 1)")
    sim.add_argument("--epochs", type=_positive_int, default=30, help="training epochs per cycle (default: 30)")
    sim.add_argument("--pool-size", type=_positive_int, default=None,
                     help="use a random subset of this many training samples as the pool")
    sim.add_argument("--test-size", type=_fraction, default=0.3,
                     help="held-out test fraction when the data has no test split (default: 0.3)")
    sim.add_argument("--test-limit", type=_positive_int, default=None,
                     help="evaluate on a random subset of this many test samples")
    sim.add_argument("--device", type=_device, default="cpu",
                     help="torch device for training and queries (default: cpu)")
    sim.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    sim.add_argument("--out", default="skal-results", metavar="DIR",
                     help="directory for results.csv, results.json, curve.png (default: skal-results)")
    sim.add_argument("--quiet", action="store_true", help="print only the final table")
    return parser


def _load(args):
    """(X_pool, y_pool, X_test, y_test) for --dataset, subsampled as asked."""
    rng = np.random.default_rng(args.seed)
    if args.dataset == "digits":
        X, y = load_digits_images(return_X_y=True)
        X_test = y_test = None
    elif args.dataset == "fashion-mnist":
        try:
            X, y = load_fashion_mnist(subset="train", return_X_y=True)
            X_test, y_test = load_fashion_mnist(subset="test", return_X_y=True)
        except FileNotFoundError as error:
            raise SystemExit(f"skal simulate: error: {error}") from None
    else:
        try:
            with np.load(args.dataset, allow_pickle=False) as data:
                X, y = data["X"].astype(np.float32), data["y"]
                if ("X_test" in data) != ("y_test" in data):
                    raise ValueError("it has one of X_test and y_test but not the other")
                X_test = data["X_test"].astype(np.float32) if "X_test" in data else None
                y_test = data["y_test"] if "y_test" in data else None
        except (OSError, KeyError, ValueError) as error:
            raise SystemExit(f"skal simulate: error: cannot read {args.dataset}: {error}") from None
        _check_arrays(args.dataset, X, y, "X", "y")
        if X_test is not None:
            _check_arrays(args.dataset, X_test, y_test, "X_test", "y_test")
            if X_test.shape[1:] != X.shape[1:]:
                raise SystemExit(f"skal simulate: error: {args.dataset}: X_test has samples of shape "
                                 f"{X_test.shape[1:]}, but X has samples of shape {X.shape[1:]}")
    if X_test is None:
        try:
            X, X_test, y, y_test = train_test_split(X, y, test_size=args.test_size, stratify=y,
                                                    random_state=args.seed)
        except ValueError as error:
            raise SystemExit(f"skal simulate: error: --test-size {args.test_size}: cannot split off "
                             f"a stratified test set: {error}") from None
    if args.pool_size is not None and args.pool_size < len(y):
        keep = np.sort(rng.choice(len(y), args.pool_size, replace=False))
        X, y = X[keep], y[keep]
    if args.test_limit is not None and args.test_limit < len(y_test):
        keep = np.sort(rng.choice(len(y_test), args.test_limit, replace=False))
        X_test, y_test = X_test[keep], y_test[keep]
    return X, y, X_test, y_test


def _check_arrays(path, X, y, x_name, y_name):
    """Refuse an .npz file's arrays that no campaign can run on, naming the array."""
    problem = None
    if X.ndim < 2 or 0 in X.shape:
        problem = f"{x_name} must have shape (n_samples, n_features) or (n_samples, C, H, W), got {X.shape}"
    elif y.ndim != 1:
        problem = f"{y_name} must have shape (n_samples,), got {y.shape}"
    elif len(X) != len(y):
        problem = f"{x_name} and {y_name} have different lengths: {len(X)} and {len(y)}"
    elif not np.isfinite(X).all():
        problem = f"{x_name} contains NaN or infinity"
    if problem:
        raise SystemExit(f"skal simulate: error: {path}: {problem}")


def _module_for(X):
    """A small net for the data's shape: SmallCNN for images, MLP for tables."""
    if X.ndim == 4:
        return SmallCNN, {"module__in_channels": X.shape[1]}
    return MLP, {"module__hidden_sizes": (128,)}


def simulate(args, out=sys.stdout):
    """Run the campaigns described by ``args``; return the ActiveLearningCurve."""
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("skal simulate: error: --device cuda requested but CUDA is not available")
    index = torch.device(args.device).index
    if args.device.startswith("cuda") and index is not None and index >= torch.cuda.device_count():
        raise SystemExit(f"skal simulate: error: --device {args.device}: this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s)")
    X, y, X_test, y_test = _load(args)
    needed = args.initial + args.cycles * args.query
    if needed > len(y):
        raise SystemExit(
            f"skal simulate: error: --initial + --cycles * --query = {args.initial} + "
            f"{args.cycles} * {args.query} = {needed} exceeds the pool of {len(y)} samples"
        )
    module, module_params = _module_for(X)
    if module is MLP and "disal" in args.selectors and args.epochs < 2:
        # the MLP's layers are lazy: no weights exist before epoch 1, so one epoch leaves
        # DISAL no epoch T-1 snapshot and its first query would fail after training
        raise SystemExit("skal simulate: error: --epochs must be at least 2 with the disal selector "
                         "on tabular data (it compares the weights of the last two epochs)")
    callbacks = None if args.quiet else [("progress", ProgressBars())]
    net = ActiveNet(module, max_epochs=args.epochs, batch_size=32, optimizer=torch.optim.SGD,
                    lr=0.05, optimizer__momentum=0.9, optimizer__weight_decay=5e-4,
                    device=args.device, callbacks=callbacks, verbose=0, **module_params)
    # Each method trains as its paper does: its selector declares its training parts
    # (only DISAL adds the dynamic loss), so "random" is plain random sampling.
    learners = {
        name: ActiveLearner(net, selector=SELECTORS[name](), classes=np.unique(y))
        for name in args.selectors
    }
    if not args.quiet:
        print(f"skal simulate: {args.dataset}, pool {len(y)}, test {len(y_test)}, "
              f"selectors {', '.join(args.selectors)}, {args.repeats} repeat(s)", file=out, flush=True)
    with contextlib.redirect_stdout(out):
        result = active_learning_curve(
            learners, X, y, X_test=X_test, y_test=y_test, initial_size=args.initial,
            query_size=args.query, n_cycles=args.cycles, n_repeats=args.repeats,
            random_state=args.seed, verbose=0 if args.quiet else 1,
        )
    print(result.table(), file=out)
    if args.out:
        _write(result, Path(args.out), out, quiet=args.quiet)
    return result


def _write(result, directory, out, quiet=False):
    directory.mkdir(parents=True, exist_ok=True)
    result.to_csv(directory / "results.csv")
    result.to_json(directory / "results.json")
    written = ["results.csv", "results.json"]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ax = plot_active_learning_curve(result)
        ax.figure.savefig(directory / "curve.png", dpi=120, bbox_inches="tight")
        plt.close(ax.figure)
        written.append("curve.png")
    except ImportError:
        print("skal simulate: matplotlib is not installed, no plot written "
              "(pip install 'skal[plot]')", file=out)
    if not quiet:
        print(f"wrote {', '.join(str(directory / name) for name in written)}", file=out)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.verb == "simulate":
        simulate(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
