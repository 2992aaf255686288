"""The ``skal`` command."""

import argparse
import contextlib
import json
import os
import stat
import sys
import tempfile
from pathlib import Path

import joblib
import numpy as np
import torch
from sklearn.base import clone
from skorch.callbacks import LRScheduler
from torch.optim.lr_scheduler import MultiStepLR

from . import __version__
from ._archive import InvalidSave, check_depth, json_scan
from ._cli_data import CommandError, features_for, load, read_capped
from ._cli_spec import SpecError, parse_selectors
from .callbacks import ProgressBars
from .learner import ActiveLearner
from .model_selection import active_learning_curve
from .models import MLP, SmallCNN
from .transforms import cifar_augmentation
from .net import ActiveNet
from .plotting import plot_active_learning_curve
from .semi import FixMatch, PseudoLabel
from .selectors import (BADGE, BALD, DISAL, ISAL, LL4AL, CoreSet, Entropy, LeastConfidence, Margin,
                        Random, TiDAL)

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None

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
MODELS = ("auto", "mlp", "cnn")
RECIPES = ("plain", "step")
SEMI_PARTS = {"pseudo": PseudoLabel, "fixmatch": FixMatch}

# How every net of the command trains. With the default 150 initial labels of
# digits (MLP on the 64 standardised pixels) the cycle-0 test accuracy spreads
# by about 0.6 points over training seeds and 2 over initial sets; SmallCNN on
# the 8x8 images with 100 labels by 10-19 (benchmarks/main_job_recipe.py, docs/cli.md).
RECIPE = {"batch_size": 32, "optimizer": torch.optim.SGD, "lr": 0.05,
          "optimizer__momentum": 0.9, "optimizer__weight_decay": 5e-4}
MLP_HIDDEN_SIZES = (128,)
# The SmallCNN is for images at least this large; smaller ones (8x8 digits) go flattened to the MLP.
CNN_MIN_SIDE = 16
# Upper bounds on counts, so that an absurd value is refused rather than overflowing later.
CONFIG_LIMIT = 16 << 20  # bytes of a --config file (a results.json of a large run is a few MB)
BOUNDS = {"initial": 10**9, "query": 10**9, "pool_size": 10**9, "test_limit": 10**9,
          "cycles": 10_000, "repeats": 1_000, "epochs": 100_000, "n_jobs": 1_024}


# argparse reports a ValueError from a type function as "invalid <function name> value",
# so each one raises ArgumentTypeError with its own message instead.


def _count(dest):
    def count(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < 1:
            raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
        if value > BOUNDS[dest]:
            raise argparse.ArgumentTypeError(f"must be at most {BOUNDS[dest]:,}, got {text}")
        return value

    return count


def _n_jobs(text):
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not (value == -1 or 1 <= value <= BOUNDS["n_jobs"]):
        raise argparse.ArgumentTypeError(
            f"must be -1 (all CPUs) or an integer in [1, {BOUNDS['n_jobs']}], got {text}")
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
    """A torch device that exists on this machine and can train."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"{text}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(
            f"{text}: skal simulate trains on cpu, cuda, cuda:N or mps, not on {device.type!r}")
    return text


def _dataset(text):
    if text in ("digits", "fashion-mnist") or text.endswith(".npz"):
        return text
    raise argparse.ArgumentTypeError(
        f"unknown dataset {text!r}; choose from digits, fashion-mnist, or a PATH.npz file "
        "with arrays X and y (and optionally X_test, y_test)"
    )


def _selectors(text):
    try:
        return parse_selectors(text, SELECTORS)
    except SpecError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser():
    """The ``skal`` argument parser."""
    return _build()[0]


def _build():
    """``(parser, simulate_parser, options)``; ``options`` maps each configurable dest to its action."""
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
    options = {}

    def option(*flags, **kwargs):
        action = sim.add_argument(*flags, **kwargs)
        options[action.dest] = action

    option("--dataset", type=_dataset, default="digits", metavar="DATASET",
           help="digits (scikit-learn's 8x8 digits, the default), fashion-mnist (local IDX "
                "files, see --data-path), or PATH.npz with arrays X, y and optionally X_test, y_test")
    option("--data-path", default=None, metavar="DIR",
           help="directory with the Fashion-MNIST IDX files, or a torchvision root "
                "(default: Debian's /usr/share/datasets/fashion-mnist, then torchvision's cache)")
    option("--selectors", type=_selectors, default="margin,disal,random", metavar="SPECS",
           help="comma-separated selectors, each NAME or NAME(key=value,...), e.g. "
                f"'disal(batch=stochastic),margin'; names: {', '.join(SELECTORS)} "
                "(default: margin,disal,random)")
    option("--model", choices=MODELS, default="auto",
           help="auto (the default): SmallCNN for images of at least "
                f"{CNN_MIN_SIDE}x{CNN_MIN_SIDE} pixels, else an MLP on the flattened features; "
                "mlp; cnn")
    option("--initial", type=_count("initial"), default=150, help="initial labeled set size (default: 150)")
    option("--initial-strategy", choices=("random", "kmeans", "kcenter", "typiclust"), default="random",
           help="how each repeat's initial set is chosen without labels: random (the default), "
                "kmeans (the samples nearest the k-means centres of the features), kcenter "
                "(k-center greedy) or typiclust (the most typical sample of each of the largest "
                "k-means clusters); see skal.initial.initial_batch")
    option("--semi", choices=("none", "pseudo", "fixmatch"), default="none",
           help="also train on the pool's unlabeled rows: none (the default), pseudo "
                "(skal.semi.PseudoLabel, any features) or fixmatch (skal.semi.FixMatch, images "
                "with --model cnn); training takes several times longer, see docs")
    option("--query", type=_count("query"), default=100, help="samples queried per cycle (default: 100)")
    option("--cycles", type=_count("cycles"), default=5, help="query/teach cycles (default: 5)")
    option("--repeats", type=_count("repeats"), default=5,
           help="independent repeats, each with its own initial set and seed (default: 5)")
    option("--epochs", type=_count("epochs"), default=30, help="training epochs per cycle (default: 30)")
    option("--recipe", choices=RECIPES, default="plain",
           help="plain (the default): SGD at a constant learning rate; step: the rate cut 10x at "
                "80%% of the epochs, and for the CNN random crops (padding 1/8 of the side) and "
                "horizontal flips of the training images (skal.transforms.cifar_augmentation)")
    option("--pool-size", type=_count("pool_size"), default=None,
           help="use a random subset of this many training samples as the pool")
    option("--test-size", type=_fraction, default=0.3,
           help="held-out test fraction when the data has no test split (default: 0.3)")
    option("--test-limit", type=_count("test_limit"), default=None,
           help="evaluate on a random subset of this many test samples")
    option("--no-standardize", dest="standardize", action="store_false",
           help="feed the MLP raw features (by default they are standardised with a scaler "
                "fitted on the pool's features, never on the test set)")
    option("--device", type=_device, default="cpu",
           help="torch device for training and queries: cpu (the default), cuda, cuda:N or mps")
    option("--n-jobs", type=_n_jobs, default=1,
           help="campaigns run in parallel in this many processes, -1 for all CPUs (default: 1)")
    option("--reference", default=None, metavar="NAME",
           help="the selector the others are compared with in the table's paired rows (default: "
                "the one named random, if any)")
    option("--seed", type=_seed, default=0, help="random seed (default: 0)")
    option("--out", default="skal-results", metavar="DIR",
           help="directory for results.csv, results.json, curve.png (default: skal-results)")
    option("--quiet", action="store_true", help="print only the final table")
    sim.add_argument("--config", metavar="FILE", default=None,
                     help="rerun a configuration: a results.json of an earlier run, or a .toml/"
                          ".json file with the options' names as keys (e.g. initial = 50); "
                          "options given on the command line override the file")
    return parser, sim, options


# --- configuration files ---------------------------------------------------------------


def config_of(args, options):
    """The run's options (defaults filled in) as a JSON-ready dict, as ``--config`` reads it."""
    config = {dest: getattr(args, dest) for dest in options}
    config["selectors"] = [spec.text for spec in args.selectors]
    return config


def _read_config(path, options):
    """The option values of a configuration file, checked like command-line values."""
    source = Path(path)
    suffix = source.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise CommandError(f"--config {path}: give a .toml or .json file")
    raw = read_capped(path, "--config", CONFIG_LIMIT)  # a fifo, a device, a directory: refused first
    try:
        if suffix == ".toml":
            if tomllib is None:
                raise CommandError(f"--config {path}: TOML needs Python >= 3.11; write it as JSON")
            data = tomllib.loads(raw.decode("utf-8"))
        else:
            json_scan(raw, "")  # values counted before any is built
            data = json.loads(raw)
        check_depth(data, "")
    except InvalidSave as error:
        raise CommandError(f"--config {path}: {str(error).lstrip(': ')}") from None
    except RecursionError:
        raise CommandError(f"--config {path}: nested too deeply to be a configuration") from None
    except (ValueError, UnicodeDecodeError) as error:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        raise CommandError(f"--config {path}: not valid {suffix[1:].upper()}: {error}") from None
    if not isinstance(data, dict):
        raise CommandError(f"--config {path}: must hold a table of options, got {type(data).__name__}")
    if "meta" in data:  # a results.json: its run's options are in meta.config
        data = data["meta"].get("config") if isinstance(data["meta"], dict) else None
        if not isinstance(data, dict):
            raise CommandError(f"--config {path}: a results file without meta.config "
                               "(written by skal simulate before it recorded its options)")
    values = {}
    data = _resolved_paths(data, source.parent)
    for key, value in data.items():
        if key not in options:
            raise CommandError(f"--config {path}: unknown option {key!r}; the options are "
                               f"{', '.join(options)}")
        try:
            values[key] = _config_value(options[key], value)
        except argparse.ArgumentTypeError as error:
            raise CommandError(f"--config {path}: {key}: {error}") from None
    return values


# options whose values are paths (``dataset`` only when it names a PATH.npz)
_PATHS = ("dataset", "data_path")


def _is_path(key, value):
    return key in _PATHS and isinstance(value, str) and not (key == "dataset" and value in ("digits", "fashion-mnist"))


def _resolved_paths(data, folder):
    """A configuration's relative data paths, read against ``folder`` (the file's own folder)."""
    return {key: str(folder / value) if _is_path(key, value) and not Path(value).is_absolute() else value
            for key, value in data.items()}


def _recorded_paths(config, out):
    """A run's data paths relative to ``out`` (where results.json goes), as ``--config`` reads them."""
    recorded = dict(config)
    for key, value in config.items():
        if _is_path(key, value):
            try:
                recorded[key] = os.path.relpath(os.path.abspath(value), os.path.abspath(out))
            except ValueError:  # another drive (Windows): no relative path
                recorded[key] = os.path.abspath(value)
    return recorded


def _config_value(action, value):
    if action.nargs == 0:  # an on/off flag
        if not isinstance(value, bool):
            raise argparse.ArgumentTypeError(f"must be true or false, got {value!r}")
        return value
    if value is None and action.default is None:
        return None
    if action.dest == "selectors" and isinstance(value, list):
        if not all(isinstance(item, str) for item in value):
            raise argparse.ArgumentTypeError(f"must be a list of selector specs, got {value!r}")
        value = ",".join(value)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        kind = "a string" if action.type is None else "a number or a string"
        raise argparse.ArgumentTypeError(f"must be {kind}, got {value!r}")
    if action.choices is not None and value not in action.choices:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(action.choices)}, got {value!r}")
    if action.type is None:
        if not isinstance(value, str):
            raise argparse.ArgumentTypeError(f"must be a string, got {value!r}")
        return value
    return action.type(str(value))


# --- the campaign --------------------------------------------------------------------------


def model_for(model, X):
    """``"mlp"`` or ``"cnn"``: what ``--model`` means for data ``X``."""
    is_image = X.ndim == 4
    if model == "cnn" and not is_image:
        raise CommandError(f"--model cnn needs images of shape (n_samples, C, H, W); the data has "
                           f"samples of shape {X.shape[1:]}")
    if model == "auto":
        return "cnn" if is_image and min(X.shape[2:]) >= CNN_MIN_SIDE else "mlp"
    return model


def build_learners(specs, model, X, classes, *, epochs, device, progress=False, recipe="plain",
                   semi="none"):
    """The learners ``skal simulate`` compares, one per selector spec, keyed by the spec's text.

    Parameters
    ----------
    specs : list of SelectorSpec
        The parsed ``--selectors``.
    model : {"mlp", "cnn"}
        From :func:`model_for`.
    X : ndarray
        The pool as the model reads it (:func:`skal._cli_data.features_for`).
    classes : ndarray
        Every label of the campaign.
    epochs : int
        Training epochs per cycle.
    device : str
        The torch device.
    progress : bool, default=False
        Show training and pool-pass bars (:class:`~skal.callbacks.ProgressBars`).
    recipe : {"plain", "step"}, default="plain"
        ``"step"`` adds a tenfold learning-rate cut at 80% of the epochs and,
        for the CNN, random crop and flip augmentation.
    semi : {"none", "pseudo", "fixmatch"}, default="none"
        A semi-supervised part (:mod:`skal.semi`) every net trains with.

    Returns
    -------
    dict of str to ActiveLearner
    """
    if model == "cnn":
        module, module_params = SmallCNN, {"module__in_channels": X.shape[1]}
    else:
        # in_features given: no lazy layer, so no torch warning and weights from the start
        module, module_params = MLP, {"module__hidden_sizes": MLP_HIDDEN_SIZES,
                                      "module__in_features": int(np.prod(X.shape[1:]))}
    callbacks = [("progress", ProgressBars())] if progress else []
    if semi != "none":
        if semi == "fixmatch" and model != "cnn":
            raise CommandError("--semi fixmatch augments images: use image data with --model cnn "
                               "(or --semi pseudo for other features)")
        callbacks.append(("semi", SEMI_PARTS[semi]()))
    extra = {}
    if recipe == "step":
        callbacks.append(("lr", LRScheduler(policy=MultiStepLR, milestones=[max(1, round(0.8 * epochs))],
                                            gamma=0.1)))
        if model == "cnn":
            side = min(X.shape[2:])
            extra["train_transform"] = cifar_augmentation(size=tuple(X.shape[2:]), padding=max(1, side // 8))
    net = ActiveNet(module, max_epochs=epochs, device=device, callbacks=callbacks or None, verbose=0,
                    **RECIPE, **module_params, **extra)
    learners = {}
    for spec in specs:
        selector = spec.build(SELECTORS)
        if model == "mlp" and isinstance(selector, (TiDAL, LL4AL)):
            raise CommandError(
                f"--selectors {spec.text}: {type(selector).__name__} trains a head on the "
                "multi-level features of a convolutional net, which the MLP does not have; "
                "use image data with --model cnn (digits included)")
        learners[spec.text] = ActiveLearner(_net_for(net, selector), selector=selector, classes=classes)
    return learners


def _net_for(net, selector):
    # Each method's training parts come from its selector (only DISAL's add the dynamic
    # loss). BALD samples models by MC dropout, so its net gets dropout before the
    # classifier, p = 0.5 as in Gal et al.'s code; every other net trains as given.
    return clone(net).set_params(module__dropout=0.5) if isinstance(selector, BALD) else net


def _preflight(learners, X, y, *, initial, query, epochs, seed):
    """Fit and query each learner once on a small slice, so that a bad spec fails before the campaign.

    Catches what only shows when a net meets its selector (a head the MLP has
    no features for, a ``subset`` smaller than ``--query``, ...) in seconds
    instead of after the first training of the real campaign.
    """
    order = np.random.default_rng(seed).permutation(len(y))
    start, pool = order[:initial], order[initial:initial + 2 * query]
    for name, learner in learners.items():
        trial = clone(learner).set_params(estimator__max_epochs=min(epochs, 2),
                                          estimator__callbacks=None, random_state=seed)
        try:
            trial.fit(X[start], y[start])
            trial.query(X[pool], min(query, len(pool)))
        except (ValueError, TypeError, RuntimeError, FloatingPointError) as error:
            raise CommandError(f"--selectors {name}: {error}") from None


def _check_out(text):
    """Refuse an --out that is not a directory, or result files that are not files, by their
    status alone (nothing opened or created): checked before the data is even read."""
    directory = Path(text)
    try:
        status = os.stat(directory)
    except FileNotFoundError:
        return
    except OSError as error:
        raise CommandError(f"--out {text}: cannot write there: {error.strerror or error}") from None
    if not stat.S_ISDIR(status.st_mode):
        kind = "" if stat.S_ISREG(status.st_mode) else f" ({_kind(status.st_mode)})"
        raise CommandError(f"--out {text}: exists and is not a directory{kind}")
    for name in ("results.csv", "results.json", "curve.png"):
        try:
            mode = os.stat(directory / name).st_mode
        except FileNotFoundError:
            continue
        except OSError as error:
            raise CommandError(f"--out {text}: {name}: {error.strerror or error}") from None
        if not stat.S_ISREG(mode):  # a fifo would block the write, a device swallow it
            kind = "" if stat.S_ISDIR(mode) else f" ({_kind(mode)})"
            raise CommandError(f"--out {text}: {name} exists and is not a file{kind}")


def _prepare_out(text):
    """The output directory, created and test-written before anything trains (None: write nothing)."""
    if not text:
        return None
    _check_out(text)
    directory = Path(text)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise CommandError(f"--out {text}: cannot write there: {error.strerror or error}") from None
    _check_out(text)  # again: the directory may have been made by another process meanwhile
    return directory


def _kind(mode):
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a fifo"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a regular file"


@contextlib.contextmanager
def _one_torch_thread(n_jobs):
    """One torch thread per campaign, in this process and in joblib's workers.

    The thread count can change the order of float reductions, so fixing it
    makes a table the same whatever --n-jobs and the machine's core count
    are; more cores are used by running campaigns side by side (--n-jobs).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if n_jobs == 1:  # joblib runs the campaigns here, one after the other
            yield
        else:
            with joblib.parallel_config(backend="loky", inner_max_num_threads=1):
                yield
    finally:
        torch.set_num_threads(before)


def simulate(args, out=sys.stdout):
    """Run the campaigns described by ``args``; return the ActiveLearningCurve.

    Raises
    ------
    CommandError
        For options or data that cannot run, before anything trains (or when
        the campaign itself fails), with the message ``skal simulate`` prints.
    """
    config = config_of(args, _build()[2])
    if args.out:
        _check_out(args.out)  # by status only: before the data is read, before anything trains
    X, y, X_test, y_test = load(args.dataset, data_path=args.data_path, test_size=args.test_size,
                                pool_size=args.pool_size, test_limit=args.test_limit, seed=args.seed)
    needed = args.initial + args.cycles * args.query
    if needed > len(y):
        raise CommandError(
            f"--initial + --cycles * --query = {args.initial} + {args.cycles} * {args.query} = "
            f"{needed} exceeds the pool of {len(y)} samples"
        )
    model = model_for(args.model, X)
    X, X_test = features_for(model, X, X_test, standardize=args.standardize)
    # bars only on a terminal: a redirected stderr gets no carriage returns or escape codes
    progress = not args.quiet and sys.stderr.isatty()
    learners = build_learners(args.selectors, model, X, np.unique(y), epochs=args.epochs,
                              device=args.device, progress=progress and args.n_jobs == 1,
                              recipe=args.recipe, semi=args.semi)
    if args.reference is not None and args.reference not in learners:
        raise CommandError(f"--reference {args.reference}: not one of the selectors compared "
                           f"({', '.join(learners)})")
    with _one_torch_thread(args.n_jobs):
        _preflight(learners, X, y, initial=args.initial, query=args.query, epochs=args.epochs,
                   seed=args.seed)
        directory = _prepare_out(args.out)
        if not args.quiet:
            print(f"skal simulate: {args.dataset} ({model}), pool {len(y)}, test {len(y_test)}, "
                  f"selectors {', '.join(learners)}, {args.repeats} repeat(s)", file=out, flush=True)
        try:
            with contextlib.redirect_stdout(out):
                result = active_learning_curve(
                    learners, X, y, X_test=X_test, y_test=y_test, initial_size=args.initial,
                    query_size=args.query, n_cycles=args.cycles, n_repeats=args.repeats,
                    n_jobs=args.n_jobs, random_state=args.seed, verbose=1 if progress else 0,
                    initial_strategy=args.initial_strategy,
                )
        except (ValueError, RuntimeError, FloatingPointError) as error:
            raise CommandError(f"the campaign failed: {error}") from None
    result.meta["config"] = _recorded_paths(config, args.out)
    result.reference = args.reference
    if args.reference is None and result.reference_name() is None and len(learners) > 1:
        notes_first = ["skal simulate: no paired rows in the table: no selector is named random; "
                       "pass --reference NAME to compare the others with one of them"]
    else:
        notes_first = []
    # files first: a closed stdout (`skal simulate | head`) must not lose them
    notes = notes_first + (_write(result, directory) if directory is not None else [])
    print(result.table(), file=out)
    for note in notes:
        if not (args.quiet and note.startswith("wrote ")):
            print(note, file=out)
    return result


def _write(result, directory):
    """Write results.csv, results.json and curve.png; return the lines to print about them."""
    written, notes = ["results.csv", "results.json"], []
    try:
        result.to_csv(directory / "results.csv")
        result.to_json(directory / "results.json")
    except OSError as error:
        raise CommandError(f"--out {directory}: cannot write the results: {error}") from None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ax = plot_active_learning_curve(result)
        ax.figure.savefig(directory / "curve.png", dpi=120, bbox_inches="tight")
        plt.close(ax.figure)
        written.append("curve.png")
    except ImportError:
        notes.append("skal simulate: matplotlib is not installed, no plot written "
                     "(pip install 'skal[plot]')")
    except OSError as error:
        raise CommandError(f"--out {directory}: cannot write curve.png: {error}") from None
    return [*notes, f"wrote {', '.join(str(directory / name) for name in written)}"]


def _parse(parser, sim, argv):
    """The arguments; one the verb does not know is the verb's error (``skal simulate: error:``)."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        (sim if args.verb == "simulate" else parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv=None):
    """Entry point of the ``skal`` console script; errors exit with status 2."""
    parser, sim, options = _build()
    args = _parse(parser, sim, argv)
    if args.verb == "simulate":
        if args.config is not None:
            try:
                sim.set_defaults(**_read_config(args.config, options))
            except CommandError as error:
                sim.error(str(error))
            except (RecursionError, MemoryError) as error:
                sim.error(f"--config {args.config}: {_bad_data(error)}")
            args = _parse(parser, sim, argv)  # the file's values as defaults: flags given override them
        try:
            simulate(args)
        except CommandError as error:
            sim.error(str(error))
        except (RecursionError, MemoryError, FloatingPointError) as error:
            # bad data that got past every check still ends as a usage error, not a traceback
            sim.error(_bad_data(error))
        except BrokenPipeError:
            # stdout was closed early (`| head`): the files are written; end quietly, as a filter does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
    return 0


def _bad_data(error):
    what = {RecursionError: "the data is nested too deeply", MemoryError: "the data is too large for "
            "this machine's memory", FloatingPointError: "the data's numbers overflow"}
    kind = next(text for cls, text in what.items() if isinstance(error, cls))
    return f"{kind}: {str(error)[:300] or type(error).__name__}"


if __name__ == "__main__":
    sys.exit(main())
