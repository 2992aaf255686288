"""
Quickstart: the fit / query / teach loop
========================================

Active learning with a simulated annotator on scikit-learn's handwritten digits: train a small
CNN on 100 labels, let Margin (the default selector) choose which pool images to label next,
"label" them with the known targets, retrain, and watch the test accuracy grow. It runs in about ten seconds on a CPU.
"""

# %%
# The data
# --------
# :func:`skal.datasets.load_digits_images` returns scikit-learn's 1,797 8x8 digits as float32
# images of shape ``(N, 1, 8, 8)``. 500 are kept aside for testing; the rest is the pool, whose
# labels ``y_pool`` play the annotator.

import matplotlib.pyplot as plt
import numpy as np
import torch

from skal import ActiveLearner, ActiveNet
from skal.datasets import load_digits_images
from skal.models import SmallCNN
from skal.selectors import Margin

N_CYCLES, QUERY_SIZE, SEED = 3, 100, 0

X, y = load_digits_images(return_X_y=True)
rng = np.random.default_rng(SEED)
order = rng.permutation(len(X))
X_test, y_test = X[order[:500]], y[order[:500]]
X_pool, y_pool = X[order[500:]], y[order[500:]]  # y_pool plays the annotator
print(f"pool: {X_pool.shape}, test: {X_test.shape}")

# %%
# The learner
# -----------
# An :class:`~skal.ActiveNet` is a skorch ``NeuralNetClassifier`` that also trains with whatever
# its selector needs (DISAL's dynamic loss, a loss-prediction head, nothing for Margin) and
# streams the pool through the net. :class:`~skal.ActiveLearner` wraps it in a scikit-learn
# meta-estimator with a selector: here :class:`~skal.selectors.Margin`, the default, which had
# the best measured gain over random sampling in skal's benchmarks. ``classes`` declares all ten
# digits up front, in case the first labels miss one.

net = ActiveNet(SmallCNN, max_epochs=30, batch_size=32, lr=0.05,
                optimizer=torch.optim.SGD, optimizer__momentum=0.9, verbose=0)
learner = ActiveLearner(net, selector=Margin(), classes=np.arange(10), random_state=SEED)

# %%
# The loop
# --------
# ``fit`` trains on the initial labels. Each cycle, ``query`` returns the positions (into the pool
# it is given) of the ``n`` samples the selector rates most informative, best first; ``teach``
# adds their labels to the labeled set and retrains.

labeled = rng.choice(len(X_pool), 100, replace=False)
learner.fit(X_pool[labeled], y_pool[labeled])
n_labels, accuracies = [len(learner.y_labeled_)], [learner.score(X_test, y_test)]
print(f"{n_labels[-1]} labels: test accuracy {accuracies[-1]:.3f}")

unlabeled = np.setdiff1d(np.arange(len(X_pool)), labeled)
for _ in range(N_CYCLES):
    idx = learner.query(X_pool[unlabeled], n=QUERY_SIZE)
    chosen = unlabeled[idx]
    learner.teach(X_pool[chosen], y_pool[chosen])  # ask your annotator here
    unlabeled = np.setdiff1d(unlabeled, chosen)
    n_labels.append(len(learner.y_labeled_))
    accuracies.append(learner.score(X_test, y_test))
    print(f"{n_labels[-1]} labels: test accuracy {accuracies[-1]:.3f}")

# %%
# The learner keeps every label it was taught, and the cycle in which each arrived:

print("labels per cycle:", np.bincount(learner.labeled_cycle_).tolist())

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(n_labels, accuracies, marker="o")
ax.set_xlabel("labeled samples")
ax.set_ylabel("test accuracy")
ax.set_title("Margin sampling on the digits")
ax.grid(True, alpha=0.3)
fig.tight_layout()

# %%
# What DISAL picked
# -----------------
# ``return_scores=True`` also returns each pick's score: for DISAL, how much the prediction
# changed between the last two training epochs. The images it rates highest are the ones the
# net is still making up its mind about.

idx, scores = learner.query(X_pool[unlabeled], n=8, return_scores=True)
fig, axes = plt.subplots(1, 8, figsize=(8, 1.6))
for ax, i, s in zip(axes, unlabeled[idx], scores):
    ax.imshow(X_pool[i, 0], cmap="gray_r")
    ax.set_title(f"{y_pool[i]}\n{s:.1e}", fontsize=8)
    ax.axis("off")
fig.suptitle("next queries: true label and DISAL score", fontsize=9)
fig.tight_layout()

# %%
# Next: compare DISAL with random sampling over several seeds
# (:ref:`sphx_glr_auto_examples_plot_disal_vs_random.py`), or save the learner between labeling
# sessions (:ref:`sphx_glr_auto_examples_plot_save_resume.py`).
