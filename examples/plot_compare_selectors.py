"""
Comparing all selectors
=======================

Every selector of :mod:`skal.selectors` in one campaign on the digits: DISAL, ISAL, TiDAL, LL4AL,
CoreSet and the four baselines, each trained the way its paper trains it, from the same initial
labeled sets and seeds. :func:`~skal.model_selection.active_learning_curve` runs the campaigns
and returns accuracy per cycle, the area under the curve and the time each learner took;
:func:`~skal.plotting.plot_active_learning_curve` draws the curves.
"""

# %%
# One net, configured per method
# ------------------------------
# The base net is a small CNN (:class:`~skal.models.SmallCNN`, whose stages ``layer1`` and
# ``layer2`` are the multi-level features the TiDAL and LL4AL heads read). Each learner gets a
# clone configured as the method's paper trains:
#
# * DISAL trains with its dynamic loss (a training part it declares); every other method
#   trains as a plain skorch net;
# * TiDAL and LL4AL continue training across cycles (``warm_start=True``); the others retrain
#   from scratch;
# * ISAL holds out part of the initial labels as its reference set, never trained on: 20% here
#   (10 of 50, one per class; the default 10% would leave fewer reference samples than classes).
#   Its LiSSA recursion is shortened from the paper's ``depth=250, repeats=4`` (1,000
#   Hessian-vector products) to ``depth=20, repeats=2``, which also keeps it from drawing more
#   samples than the 40 it trains on.
#
# What each selector needs from training (the snapshot for DISAL, a head for TiDAL and LL4AL) is
# switched on by the learner; nothing else changes.

import matplotlib.pyplot as plt
import numpy as np
import torch

from skal import ActiveLearner, ActiveNet
from skal.datasets import load_digits_images
from skal.model_selection import active_learning_curve
from skal.models import SmallCNN
from skal.plotting import plot_active_learning_curve
from skal.selectors import (DISAL, ISAL, LL4AL, CoreSet, Entropy, LeastConfidence, Margin,
                            Random, TiDAL)

X, y = load_digits_images(return_X_y=True)

net = ActiveNet(SmallCNN, max_epochs=20, batch_size=32, lr=0.05,
                optimizer=torch.optim.SGD, optimizer__momentum=0.9, verbose=0)

learners = {
    "DISAL": ActiveLearner(net, DISAL()),
    "ISAL": ActiveLearner(net, ISAL(reference=0.2, depth=20, repeats=2)),
    "TiDAL": ActiveLearner(net, TiDAL(), warm_start=True),
    "LL4AL": ActiveLearner(net, LL4AL(), warm_start=True),
    "CoreSet": ActiveLearner(net, CoreSet()),
    "Entropy": ActiveLearner(net, Entropy()),
    "Margin": ActiveLearner(net, Margin()),
    "LeastConfidence": ActiveLearner(net, LeastConfidence()),
    "Random": ActiveLearner(net, Random()),
}

# %%
# The campaigns
# -------------
# Two repeats of: 50 initial labels, then three cycles of 50 queries. ``n_jobs=-1`` would run
# the 18 campaigns in parallel through joblib with the same results.

result = active_learning_curve(learners, X, y, initial_size=50, query_size=50, n_cycles=3,
                               n_repeats=2, random_state=0)
print(result.table())

# %%
# The curves, and the paired differences to random sampling
# ---------------------------------------------------------
# Every repeat gives all methods the same initial set and seed, so each method's score minus
# Random's within a repeat is a *paired* difference. The lower panel shows its mean per cycle,
# with the 95% paired t interval over the repeats as a band; the table's ``Δ`` rows give it for
# the AUC and the final accuracy, ``*`` marking an interval that excludes zero.

fig, (ax, ax_diff) = plt.subplots(2, 1, figsize=(7, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
plot_active_learning_curve(result, (ax, ax_diff), differences=True)
ax.legend(ncol=3, fontsize=8)
ax_diff.legend(ncol=3, fontsize=7)
fig.tight_layout()

# %%
# Ranking by area under the curve
# -------------------------------
# The AUC is each curve's average height; the time is the total of training and querying per
# repeat, where the selectors' extra training (heads, snapshot) and query work (ISAL's
# Hessian-vector products, CoreSet's greedy search) show.

auc_mean = result.auc.mean(axis=1)
seconds = (result.fit_times + result.query_times).sum(axis=2).mean(axis=1)
query_seconds = result.query_times.sum(axis=2).mean(axis=1)
diff = result.paired_differences("auc")  # against "Random", found by its name
delta = {name: (diff.mean[j], diff.low[j], diff.high[j]) for j, name in enumerate(diff.names)}
for i in np.argsort(-auc_mean):
    name = result.names[i]
    vs_random = ("reference" if name == diff.reference
                 else "Δ {:+.3f} [{:+.3f}, {:+.3f}]".format(*delta[name]))
    print(f"{name:>16}  AUC {auc_mean[i]:.3f}  {vs_random:>26}   time {seconds[i]:5.1f} s "
          f"(query {query_seconds[i]:.2f} s)")

# %%
# At this size (a few hundred labels, 20 epochs, two repeats) the differences are within what
# seeds alone change, and with two repeats a paired interval's half-width is
# ``t(0.975, 1) * sd / sqrt(2)``, about 9 times the spread ``sd`` of the two differences: the
# ranking is not a verdict on the methods. Run five or more
# repeats before reading the intervals. The papers compare the methods on CIFAR with ResNet-18,
# thousands of labels per cycle and 200 epochs per training: see
# :ref:`sphx_glr_auto_examples_plot_fashion_mnist_resnet.py` for the image set-up and the
# selector pages of the user guide for each method's protocol.
