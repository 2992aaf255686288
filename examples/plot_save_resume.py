"""
Saving and resuming a campaign
==============================

With a human annotator, a campaign spans days: label a batch, stop, come back when the next
labels are in. :meth:`skal.ActiveLearner.save` writes the learner (parameters, labeled set, the
net's weights, optimizer state, snapshot and training dynamics) to one file without pickle, and
:meth:`skal.ActiveLearner.load` reads it back. This example interrupts a campaign after two
cycles, resumes it from the file, and checks that it ends exactly where an uninterrupted run does.
"""

# %%
# The set-up
# ----------
# The digits, a pool whose labels play the annotator, and a learner with DISAL. ``run_cycles``
# is the loop of the quickstart, recording the test accuracy after each training.

import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch

from skal import ActiveLearner, ActiveNet
from skal.datasets import load_digits_images
from skal.models import SmallCNN
from skal.selectors import DISAL

X, y = load_digits_images(return_X_y=True)
rng = np.random.default_rng(0)
order = rng.permutation(len(X))
X_test, y_test = X[order[:500]], y[order[:500]]
X_pool, y_pool = X[order[500:]], y[order[500:]]
initial = rng.choice(len(X_pool), 100, replace=False)


def new_learner():
    net = ActiveNet(SmallCNN, max_epochs=20, batch_size=32, lr=0.05,
                    optimizer=torch.optim.SGD, optimizer__momentum=0.9, verbose=0)
    return ActiveLearner(net, selector=DISAL(), classes=np.arange(10), random_state=0)


def run_cycles(learner, unlabeled, n_cycles, history):
    for _ in range(n_cycles):
        chosen = unlabeled[learner.query(X_pool[unlabeled], n=50)]
        learner.teach(X_pool[chosen], y_pool[chosen])  # the annotator's labels
        unlabeled = np.setdiff1d(unlabeled, chosen)
        history.append((len(learner.y_labeled_), learner.score(X_test, y_test)))
    return unlabeled


# %%
# Session 1: two cycles, then save
# --------------------------------
# The pool is not part of the learner, so we save which pool samples are still unlabeled next to
# it. ``save`` writes to a temporary file and moves it into place when complete: an interrupted
# save leaves the previous one loadable.

folder = tempfile.mkdtemp()
path = os.path.join(folder, "campaign.skal")

learner = new_learner().fit(X_pool[initial], y_pool[initial])
history = [(len(learner.y_labeled_), learner.score(X_test, y_test))]
unlabeled = run_cycles(learner, np.setdiff1d(np.arange(len(X_pool)), initial), 2, history)
learner.save(path)
np.save(os.path.join(folder, "unlabeled.npy"), unlabeled)
print(f"saved after cycle {learner.labeled_cycle_.max()}: {len(learner.y_labeled_)} labels, "
      f"{os.path.getsize(path) / 1e6:.2f} MB")
del learner

# %%
# Session 2: load and continue
# ----------------------------
# ``load`` runs no pickled code: tensors are read with ``torch.load(weights_only=True)`` and only
# torch, skorch, scikit-learn and skal classes are imported by name. The loaded learner has the
# labeled set, the cycle count, the seeds and the weights of the saved one.

learner = ActiveLearner.load(path)
unlabeled = np.load(os.path.join(folder, "unlabeled.npy"))
print("loaded: labels per cycle", np.bincount(learner.labeled_cycle_).tolist())
unlabeled = run_cycles(learner, unlabeled, 2, history)

# %%
# The same campaign without interruption
# --------------------------------------
# Four cycles in one go, from the same initial labels and seed.

uninterrupted = new_learner().fit(X_pool[initial], y_pool[initial])
reference = [(len(uninterrupted.y_labeled_), uninterrupted.score(X_test, y_test))]
_ = run_cycles(uninterrupted, np.setdiff1d(np.arange(len(X_pool)), initial), 4, reference)

for (n, resumed), (_, straight) in zip(history, reference):
    print(f"{n} labels: resumed {resumed:.4f}   uninterrupted {straight:.4f}")
same_labels = np.array_equal(learner.X_labeled_, uninterrupted.X_labeled_)
same_model = np.array_equal(learner.predict_proba(X_test), uninterrupted.predict_proba(X_test))
print(f"same labeled set: {same_labels}; same predicted probabilities: {same_model}")

# %%
# On a CPU with a fixed seed the resumed campaign is the uninterrupted one, bit for bit: the same
# samples were queried and the final nets are identical.

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(*zip(*reference), marker="o", linewidth=3, alpha=0.4, label="uninterrupted")
ax.plot(*zip(*history), marker="x", linestyle="--", label="saved after cycle 2, resumed")
ax.axvline(history[2][0], color="grey", linewidth=0.8)
ax.set_xlabel("labeled samples")
ax.set_ylabel("test accuracy")
ax.legend()
ax.grid(True, alpha=0.3)
fig.tight_layout()
