"""Training speed of ActiveNet against a hand-written torch loop and plain skorch.

Same module, data, batch size (64), optimizer (SGD, lr 0.05, momentum 0.9), epochs and seed
for every variant; the variants run in interleaved rounds, in a fresh random order each
round, so that load drifts hit all of them alike. Each variant's median time over the
rounds is divided by the torch loop's (and, for the training parts, by ActiveNet's without
parts). Times are the training thread's CPU time (``time.thread_time``) at one torch
thread: on a shared machine that is what the training itself costs; wall times are
recorded beside them.

    python benchmarks/bench_training_overhead.py           # MLP 64-128-10 and SmallCNN on 1x14x14, 4,000 samples, 5 epochs, 7 rounds
    python benchmarks/bench_training_overhead.py --quick   # 1,000 samples, 2 epochs, 3 rounds
    python benchmarks/bench_training_overhead.py --device cuda

The torch loop indexes tensors by a random permutation each epoch (what one writes by
hand); plain skorch is ``NeuralNetClassifier(criterion=CrossEntropyLoss, train_split=None,
iterator_train__shuffle=True)``. Targets (issue 14): ActiveNet without parts <= 1.15x the
loop on both models; the dynamic loss + snapshot <= 1.05x of no parts; a head <= 1.10x.

Writes benchmarks/results/training_overhead[_quick].json.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skorch import NeuralNetClassifier

from skal import ActiveNet
from skal._provenance import machine
from skal.models import MLP, SmallCNN
from skal.parts import DynamicLoss, DynamicsHeadTraining, EpochSnapshot, LossPredictionHeadTraining

BATCH, LR, MOMENTUM = 64, 0.05, 0.9


def _models():
    return {
        "MLP 64-128-10 (tabular)": (MLP, {"num_classes": 10, "in_features": 64, "hidden_sizes": (128,)}, (64,)),
        "SmallCNN on 1x14x14": (SmallCNN, {"num_classes": 10, "in_channels": 1}, (1, 14, 14)),
    }


def torch_loop(module_cls, module_kwargs, X, y, epochs, device):
    """The baseline: a permutation per epoch, tensors indexed by it, SGD steps."""
    model = module_cls(**module_kwargs).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    X, y = torch.as_tensor(X, device=device), torch.as_tensor(y, device=device)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(X), device=device)
        for start in range(0, len(X), BATCH):
            rows = order[start:start + BATCH]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(X[rows]), y[rows])
            loss.backward()
            optimizer.step()
    return model


def _variants(module_cls, module_kwargs, convolutional, epochs, device):
    common = dict(module=module_cls, max_epochs=epochs, batch_size=BATCH, lr=LR,
                  optimizer=torch.optim.SGD, optimizer__momentum=MOMENTUM, device=device, verbose=0,
                  classes=np.arange(10), **{f"module__{k}": v for k, v in module_kwargs.items()})
    variants = {
        "torch loop": lambda X, y: torch_loop(module_cls, module_kwargs, X, y, epochs, device),
        "plain skorch": lambda X, y: NeuralNetClassifier(
            criterion=torch.nn.CrossEntropyLoss, train_split=None, iterator_train__shuffle=True,
            **common).fit(X, y),
        "ActiveNet, no parts": lambda X, y: ActiveNet(**common).fit(X, y),
        "ActiveNet, dynamic loss + snapshot (DISAL)": lambda X, y: ActiveNet(
            callbacks=[("dynamic_loss", DynamicLoss()), ("snapshot", EpochSnapshot())], **common).fit(X, y),
    }
    if convolutional:  # the heads read multi-level feature maps (layer1, layer2)
        variants["ActiveNet, TiDAL head"] = lambda X, y: ActiveNet(
            callbacks=[("dynamics_head", DynamicsHeadTraining())], **common).fit(X, y)
        variants["ActiveNet, LL4AL head"] = lambda X, y: ActiveNet(
            callbacks=[("loss_head", LossPredictionHeadTraining())], **common).fit(X, y)
    return variants


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def measure(name, module_cls, module_kwargs, shape, n, epochs, rounds, device, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, *shape)).astype(np.float32)
    y = rng.integers(0, 10, size=n)
    variants = _variants(module_cls, module_kwargs, len(shape) == 3, epochs, device)
    cpu, wall = {v: [] for v in variants}, {v: [] for v in variants}
    order = np.random.default_rng(seed + 1)
    for r in range(rounds + 1):  # round 0 warms up (allocator, kernels, lazy imports)
        for variant in order.permutation(list(variants)):
            torch.manual_seed(seed)
            _sync(device)
            start_cpu, start_wall = time.thread_time(), time.perf_counter()
            variants[variant](X, y)
            _sync(device)
            if r:
                cpu[variant].append(time.thread_time() - start_cpu)
                wall[variant].append(time.perf_counter() - start_wall)
    loop, plain = statistics.median(cpu["torch loop"]), statistics.median(cpu["ActiveNet, no parts"])
    rows = []
    for variant in variants:
        median = statistics.median(cpu[variant])
        rows.append({"model": name, "variant": variant, "median_cpu_s": median,
                     "median_wall_s": statistics.median(wall[variant]),
                     "ratio_to_torch_loop": median / loop,
                     "ratio_to_activenet_without_parts": median / plain,
                     "cpu_s": cpu[variant], "wall_s": wall[variant]})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    n, epochs, rounds = (1_000, 2, 3) if args.quick else (4_000, 5, 7)
    torch.set_num_threads(1)
    rows = []
    for name, (module_cls, module_kwargs, shape) in _models().items():
        rows += measure(name, module_cls, module_kwargs, shape, n, epochs, rounds, args.device)
    print(f"| model | variant | median fit ({epochs} epochs, {n:,} samples, CPU time) | "
          "ratio to torch loop | ratio to ActiveNet without parts |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['model']} | {row['variant']} | {row['median_cpu_s']:.3f} s | "
              f"{row['ratio_to_torch_loop']:.2f} | {row['ratio_to_activenet_without_parts']:.2f} |")
    command = ("python benchmarks/bench_training_overhead.py" + (" --quick" if args.quick else "")
               + (f" --device {args.device}" if args.device != "cpu" else ""))
    result = {"command": command, "device": args.device, "n": n, "epochs": epochs, "rounds": rounds,
              "batch_size": BATCH, "torch_threads": 1, "machine": machine(), "torch": torch.__version__,
              "rows": rows}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / ("training_overhead_quick.json" if args.quick else "training_overhead.json")).write_text(
        json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
