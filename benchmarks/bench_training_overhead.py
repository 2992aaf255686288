"""Training cost of ActiveNet's additions relative to a plain skorch NeuralNetClassifier.

Same module class, data, epochs, batch size and seed; the variants are timed in interleaved
rounds (plain, dynamic loss + snapshot, TiDAL head, LL4AL head, ...) so that load drifts hit all
of them alike, and the table reports each one's median time over the rounds divided by plain's.

    python benchmarks/bench_training_overhead.py            # SmallCNN, 4,000 1x28x28 images, 3 epochs, 5 rounds
    python benchmarks/bench_training_overhead.py --quick    # 1,000 images, 2 epochs, 3 rounds
    python benchmarks/bench_training_overhead.py --device cuda --model resnet18   # 32x32x3, the papers' net

Writes benchmarks/results/training_overhead[_quick].json. Targets (issue 7): dynamic loss +
snapshot <= 1.05; the DISAL paper's own implementation measured 1.20 (359 s vs 299 s per cycle),
TiDAL 1.24 and LL4AL 1.14.
"""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from skorch import NeuralNetClassifier

from skal import ActiveNet
from skal.models import SmallCNN, resnet18_cifar


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", choices=["smallcnn", "resnet18"], default="smallcnn")
    args = parser.parse_args()
    n, epochs, rounds = (1_000, 2, 3) if args.quick else (4_000, 3, 5)
    shape = (3, 32, 32) if args.model == "resnet18" else (1, 28, 28)
    module = resnet18_cifar if args.model == "resnet18" else SmallCNN
    module_kwargs = {"module__num_classes": 10}
    if args.model == "smallcnn":
        module_kwargs["module__in_channels"] = 1

    rng = np.random.default_rng(0)
    X = rng.random((n, *shape), dtype=np.float32)
    y = rng.integers(0, 10, size=n)
    common = dict(max_epochs=epochs, batch_size=128, lr=0.05, optimizer=torch.optim.SGD,
                  optimizer__momentum=0.9, iterator_train__shuffle=True, device=args.device,
                  verbose=0, **module_kwargs)
    variants = {
        "plain skorch NeuralNetClassifier": lambda: NeuralNetClassifier(
            module, criterion=torch.nn.CrossEntropyLoss, train_split=None, **common),
        "ActiveNet, dynamic_weight=0": lambda: ActiveNet(module, dynamic_weight=0.0, **common),
        "ActiveNet, dynamic loss + T-1 snapshot (DISAL)": lambda: ActiveNet(
            module, dynamic_weight=1.0, snapshot=True, **common),
        "ActiveNet, TiDAL head": lambda: ActiveNet(
            module, dynamic_weight=0.0, dynamics_head_weight=1.0, classes=np.arange(10), **common),
        "ActiveNet, LL4AL head": lambda: ActiveNet(
            module, dynamic_weight=0.0, loss_head_weight=1.0, classes=np.arange(10), **common),
    }
    times = {name: [] for name in variants}
    order_rng = np.random.default_rng(1)
    for r in range(rounds + 1):  # round 0 warms up (lazy layers, allocator, kernels)
        # a fresh random order each round: no variant always runs after the same one
        for name in order_rng.permutation(list(variants)):
            make = variants[name]
            torch.manual_seed(0)
            net = make()
            _sync(args.device)
            start = time.perf_counter()
            net.fit(X, y)
            _sync(args.device)
            if r:
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["plain skorch NeuralNetClassifier"])
    rows = [{"variant": name, "median_s": statistics.median(t), "ratio": statistics.median(t) / base,
             "times_s": t} for name, t in times.items()]
    print(f"| variant | median fit ({epochs} epochs, {n:,} samples) | ratio to plain skorch |")
    print("|---|---:|---:|")
    for row in rows:
        print(f"| {row['variant']} | {row['median_s']:.2f} s | {row['ratio']:.3f} |")
    result = {
        "command": "python benchmarks/bench_training_overhead.py" + (" --quick" if args.quick else "")
                   + (f" --device {args.device}" if args.device != "cpu" else "")
                   + (f" --model {args.model}" if args.model != "smallcnn" else ""),
        "device": args.device, "model": args.model, "n": n, "epochs": epochs, "rounds": rounds,
        "machine": platform.machine(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "loadavg": os.getloadavg(), "rows": rows,
    }
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    name = "training_overhead_quick.json" if args.quick else "training_overhead.json"
    (out / name).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
