"""The papers' protocol on a GPU: ResNet-18 on CIFAR-like 32x32 images, 200 epochs, the papers' budgets.

Every method in one go, paired (each repeat's methods share the initial set and seed):

  data      a local .npz with x_train, y_train, x_test, y_test (uint8 or float images, NHWC or
            NCHW; CIFAR-10's 50,000 / 10,000 are the papers'); nothing is downloaded
  net       skal.models.resnet18_cifar, SGD lr 0.1, momentum 0.9, weight decay 5e-4, batch 128,
            200 epochs with the rate cut 10x at epoch 160, random crop (padding 4) and horizontal
            flip (skal.transforms.cifar_augmentation)
  budget    1,000 initial labels + 10 x 1,000 (LL4AL's and TiDAL's CIFAR-10 protocol; DISAL's and
            ISAL's grow by the same steps); LL4AL and TiDAL score a random subset of 10,000
  warm      LL4AL and TiDAL warm-started as in their code (weights kept, a new optimizer and
            schedule each cycle), and also cold; the others cold, as their papers
  ISAL      its reference set is a validation split of the training images outside the pool
            (--reference-size, 5,000 by default), not counted as labels, as in its paper

    python benchmarks/gpu_papers_protocol.py --data cifar10.npz --device cuda             # the papers' run
    python benchmarks/gpu_papers_protocol.py --data cifar10.npz --device cuda --repeats 3 --methods random,disal
    python benchmarks/gpu_papers_protocol.py --tiny                                      # CPU smoke run (synthetic data)

Writes benchmarks/results/<name>_gpu[_tiny].json (the ActiveLearningCurve) and <name>_gpu[_tiny].md.
"""

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from skorch.callbacks import LRScheduler
from torch.optim.lr_scheduler import MultiStepLR

from skal import ActiveLearner, ActiveNet
from skal._provenance import machine
from skal.model_selection import active_learning_curve
from skal.models import resnet18_cifar
from skal.selectors import BADGE, BALD, DISAL, ISAL, LL4AL, CoreSet, Entropy, Margin, Random, TiDAL
from skal.transforms import cifar_augmentation

HERE = Path(__file__).parent
PAPERS = dict(initial=1000, query=1000, cycles=10, epochs=200, milestone=160, batch=128, subset=10_000,
              reference=5000, lissa={})  # ISAL's LiSSA at its defaults (the reference code's)
TINY = dict(initial=10, query=10, cycles=1, epochs=2, milestone=1, batch=10, subset=None, reference=10,
            lissa={"depth": 5, "repeats": 1})


def methods(reference, subset, lissa=None):
    """name -> (selector, warm start, extra net parameters)."""
    return {
        "random": (Random(), False, {}),
        "entropy": (Entropy(), False, {}),
        "margin": (Margin(), False, {}),
        "badge": (BADGE(), False, {}),
        "coreset": (CoreSet(), False, {}),
        "bald": (BALD(), False, {"module__dropout": 0.5}),
        "ll4al warm": (LL4AL(subset=subset), True, {}),
        "ll4al cold": (LL4AL(subset=subset), False, {}),
        "tidal warm": (TiDAL(subset=subset), True, {}),
        "tidal cold": (TiDAL(subset=subset), False, {}),
        "isal (validation set)": (ISAL(reference=reference, **(lissa or {})), False, {}),
        "disal (paper)": (DISAL(drift="keep", balance="none"), False, {}),
        "disal": (DISAL(), False, {}),
    }


def load(path, reference_size, seed):
    """(X pool, y pool, X test, y test, X reference, y reference), float32 NCHW, normalised per channel."""
    data = np.load(path)
    X, y, X_test, y_test = (data[k] for k in ("x_train", "y_train", "x_test", "y_test"))

    def nchw(images):
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[:, None]
        if images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
            images = images.transpose(0, 3, 1, 2)
        return images / 255.0 if images.max() > 1.5 else images

    X, X_test = nchw(X), nchw(X_test)
    mean, std = X.mean(axis=(0, 2, 3), keepdims=True), X.std(axis=(0, 2, 3), keepdims=True) + 1e-8
    X, X_test = (X - mean) / std, (X_test - mean) / std
    y, y_test = np.asarray(y, dtype=np.int64).ravel(), np.asarray(y_test, dtype=np.int64).ravel()
    ref = np.random.default_rng(seed).choice(len(y), reference_size, replace=False)
    pool = np.setdiff1d(np.arange(len(y)), ref)
    return X[pool], y[pool], X_test, y_test, X[ref], y[ref]


def tiny_data(path, seed=0, size=16, n=60, n_test=30, classes=3):
    """A small synthetic .npz of class-coloured noise images, for the CPU smoke run."""
    rng = np.random.default_rng(seed)

    def make(m):
        y = rng.integers(0, classes, m)
        x = rng.integers(0, 120, size=(m, size, size, 3)) + 100 * np.eye(3)[y % 3][:, None, None, :]
        return x.astype(np.uint8), y

    (x_train, y_train), (x_test, y_test) = make(n), make(n_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def learners(names, protocol, n_classes, reference, device, size):
    out = {}
    for name, (selector, warm, extra) in methods(reference, protocol["subset"], protocol["lissa"]).items():
        if names and name not in names:
            continue
        net = ActiveNet(resnet18_cifar, module__num_classes=n_classes, lr=0.1, optimizer=torch.optim.SGD,
                        optimizer__momentum=0.9, optimizer__weight_decay=5e-4,
                        max_epochs=protocol["epochs"], batch_size=protocol["batch"],
                        iterator_valid__batch_size=1024, train_transform=cifar_augmentation(size=size),
                        callbacks=[("lr", LRScheduler(policy=MultiStepLR, milestones=[protocol["milestone"]],
                                                      gamma=0.1))],
                        device=device, verbose=0, **extra)
        out[name] = ActiveLearner(net, selector, classes=np.arange(n_classes), warm_start=warm)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help=".npz with x_train, y_train, x_test, y_test")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run on synthetic 16x16 images")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", default=None, help="comma-separated (default: all)")
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --tiny)")
    parser.add_argument("--reference-size", type=int, default=None, help="ISAL's validation set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="papers")
    parser.add_argument("--results", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    known = list(methods(None, None))
    names = args.methods.split(",") if args.methods else None
    if names and set(names) - set(known):
        parser.error(f"--methods: unknown {sorted(set(names) - set(known))}; known: {', '.join(known)}")
    protocol = dict(TINY if args.tiny else PAPERS)
    if args.reference_size:
        protocol["reference"] = args.reference_size
    if args.tiny:
        torch.set_num_threads(1)
        if args.data is None:
            args.data = tiny_data(Path(args.results) / "tiny_images.npz", args.seed)
    elif args.data is None:
        parser.error("--data: the .npz of the images (e.g. CIFAR-10 as x_train, y_train, x_test, y_test)")
    X, y, X_test, y_test, X_ref, y_ref = load(args.data, protocol["reference"], args.seed)
    n_classes = int(max(y.max(), y_test.max())) + 1
    start = time.perf_counter()
    result = active_learning_curve(
        learners(names, protocol, n_classes, (X_ref, y_ref), args.device, X.shape[-1]), X, y,
        X_test=X_test, y_test=y_test, initial_size=protocol["initial"], query_size=protocol["query"],
        n_cycles=protocol["cycles"], n_repeats=args.repeats or (1 if args.tiny else 3),
        random_state=args.seed, data_name=f"{Path(args.data).name}", verbose=0)
    seconds = time.perf_counter() - start
    result.meta["command"] = "python benchmarks/gpu_papers_protocol.py " + shlex.join(sys.argv[1:] if argv is None
                                                                                      else argv)
    suffix = "_tiny" if args.tiny else ""
    out = Path(args.results)
    result.to_json(out / f"{args.name}_gpu{suffix}.json")
    info = machine()
    lines = [f"# {args.name}_gpu{suffix}", "", f"{result.meta['command']}: {info.get('cpu') or '?'}, "
             f"device {args.device}, torch {torch.__version__}, {seconds / 60:.1f} min.", "",
             result.table()]
    (out / f"{args.name}_gpu{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
