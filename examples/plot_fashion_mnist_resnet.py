"""
Images: ResNet-18 with augmentation on Fashion-MNIST
====================================================

The papers behind skal train a ResNet-18 with the CIFAR stem for 200 epochs per cycle, with
random-crop and flip augmentation, on tens of thousands of 32x32 images. This example sets up
exactly that pipeline, :func:`skal.models.resnet18_cifar` and
:func:`skal.transforms.cifar_augmentation` on Fashion-MNIST padded to 32x32, and runs one DISAL
cycle on a few hundred images for two epochs so that it finishes in well under a minute on a CPU.

.. note::

   At this scale the accuracies are **not meaningful**: a ResNet-18 trained for two epochs on 60
   to 100 images is near chance (0.1 for ten classes). The example shows the set-up; with a GPU, run it at the papers'
   scale with ``SKAL_EXAMPLE_SCALE=paper python examples/plot_fashion_mnist_resnet.py`` (the
   DISAL paper's protocol: 10% of the 60,000 training images labeled at first, +5% per cycle up to
   40%, 200 epochs per training, batch 128, lr 0.1; hours on one GPU).

Fashion-MNIST is read from local files by :func:`skal.datasets.load_fashion_mnist`; nothing is
downloaded. On Debian or Ubuntu, ``apt-get install dataset-fashion-mnist`` provides them.
"""

# %%
# Scale
# -----
# ``SKAL_EXAMPLE_SCALE`` selects the size: unset (or ``small``) for this page's CPU run,
# ``paper`` for the DISAL paper's protocol on a GPU.

import os

import matplotlib.pyplot as plt
import numpy as np
import torch

from skal import ActiveLearner, ActiveNet
from skal.datasets import load_fashion_mnist
from skal.models import resnet18_cifar
from skal.selectors import DISAL
from skal.transforms import cifar_augmentation

SCALE = os.environ.get("SKAL_EXAMPLE_SCALE", "small")
if SCALE == "paper":
    config = dict(n_pool=None, n_test=None, initial=6000, query=3000, cycles=6,
                  epochs=200, batch_size=128, lr=0.1,
                  device="cuda" if torch.cuda.is_available() else "cpu")
elif SCALE == "small":
    config = dict(n_pool=260, n_test=200, initial=60, query=40, cycles=1,
                  epochs=2, batch_size=20, lr=0.05, device="cpu")
else:
    raise ValueError(f"SKAL_EXAMPLE_SCALE must be 'small' or 'paper', got {SCALE!r}")
print(SCALE, config)

# %%
# The data
# --------
# 28x28 grey-scale images, zero-padded to the 32x32 the CIFAR ResNet stem expects, in
# ``(N, 1, 32, 32)`` float32. The pool comes from the training split, the test set from the
# official test split.

data = load_fashion_mnist(subset="train")
X_test, y_test = load_fashion_mnist(subset="test", return_X_y=True)
rng = np.random.default_rng(0)
pool_idx = rng.permutation(len(data.target))[:config["n_pool"]]
test_idx = rng.permutation(len(y_test))[:config["n_test"]]


def pad32(images):
    return np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2)))


X_pool, y_pool = pad32(data.data[pool_idx]), data.target[pool_idx]
X_test, y_test = pad32(X_test[test_idx]), y_test[test_idx]
print(f"pool {X_pool.shape}, test {X_test.shape}")

# %%
# ResNet-18 with augmentation
# ---------------------------
# :func:`~skal.models.resnet18_cifar` is torchvision's ResNet-18 with the 3x3, stride-1 stem and
# no max-pool; ``module__in_channels=1`` adapts it to grey-scale, and ``num_classes`` is filled in
# from the learner's classes. ``train_transform`` applies the augmentation (random 32x32 crop of
# the 4-pixel-padded image, horizontal flip) to training samples only: queries and predictions
# see the images as they are.

net = ActiveNet(
    resnet18_cifar, module__in_channels=1,
    max_epochs=config["epochs"], batch_size=config["batch_size"], lr=config["lr"],
    optimizer=torch.optim.SGD, optimizer__momentum=0.9, optimizer__weight_decay=5e-4,
    iterator_valid__batch_size=256, train_transform=cifar_augmentation(),
    device=config["device"], verbose=0,
)
learner = ActiveLearner(net, selector=DISAL(), classes=np.arange(10), random_state=0)

# %%
# The loop
# --------

labeled = rng.choice(len(X_pool), config["initial"], replace=False)
learner.fit(X_pool[labeled], y_pool[labeled])
print(f"{len(learner.y_labeled_)} labels: test accuracy {learner.score(X_test, y_test):.3f}")
unlabeled = np.setdiff1d(np.arange(len(X_pool)), labeled)
for _ in range(config["cycles"]):
    idx, scores = learner.query(X_pool[unlabeled], n=config["query"], return_scores=True)
    chosen = unlabeled[idx]
    learner.teach(X_pool[chosen], y_pool[chosen])
    unlabeled = np.setdiff1d(unlabeled, chosen)
    print(f"{len(learner.y_labeled_)} labels: test accuracy {learner.score(X_test, y_test):.3f}")

# %%
# What the last query chose
# -------------------------
# The eight highest-scoring images of the last query, with their class, and how the queried
# labels spread over the ten classes.

names = data.target_names
fig, axes = plt.subplots(1, 8, figsize=(9, 1.9))
for ax, i, s in zip(axes, chosen[:8], scores[:8]):
    ax.imshow(X_pool[i, 0], cmap="gray_r")
    ax.set_title(f"{names[y_pool[i]]}\n{s:.1e}", fontsize=7)
    ax.axis("off")
fig.suptitle("top DISAL picks: class and score", fontsize=9)
fig.tight_layout()

fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(range(10), np.bincount(y_pool[chosen], minlength=10))
ax.set_xticks(range(10), names, rotation=45, ha="right", fontsize=8)
ax.set_ylabel("queried samples")
ax.set_title("classes of the last query")
fig.tight_layout()
