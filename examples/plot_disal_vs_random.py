"""
DISAL against random sampling on the digits
===========================================

Does choosing samples help, compared with labeling at random? A *campaign* answers it: the
active-learning loop run for each strategy from the same initial labeled set and the same seeds,
the known labels playing the annotator, with the test accuracy recorded after every training.
:func:`skal.model_selection.active_learning_curve` runs campaigns for several learners and
repeats, and :func:`skal.plotting.plot_active_learning_curve` draws them.
"""

# %%
# Two learners
# ------------
# Each method trains as its paper does: the learner adds the training parts its selector declares,
# so DISAL trains with its dynamic loss (:class:`~skal.parts.DynamicLoss`) and random sampling as a
# plain skorch net. Random sampling *with* the dynamic loss, the DISAL paper's "w/o S" ablation,
# would add the part by hand: ``callbacks=[("dynamic_loss", DynamicLoss())]``.

import matplotlib.pyplot as plt
import numpy as np
import torch

from skal import ActiveLearner, ActiveNet
from skal.datasets import load_digits_images
from skal.model_selection import active_learning_curve
from skal.models import SmallCNN
from skal.plotting import plot_active_learning_curve
from skal.selectors import DISAL, Random

X, y = load_digits_images(return_X_y=True)

net = ActiveNet(SmallCNN, max_epochs=30, batch_size=32, lr=0.05,
                optimizer=torch.optim.SGD, optimizer__momentum=0.9, verbose=0)
learners = {
    "DISAL": ActiveLearner(net, selector=DISAL()),
    "random": ActiveLearner(net, selector=Random()),
}

# %%
# The campaigns
# -------------
# 20% of the digits are held out for testing (stratified); from the rest, each repeat draws 50
# initial labels, then four cycles query 50 more. Both learners of a repeat share its initial set
# and seed, so the comparison is paired.

result = active_learning_curve(learners, X, y, initial_size=50, query_size=50, n_cycles=4,
                               n_repeats=3, random_state=0)

# %%
# The table shows test accuracy per cycle (mean ± std over the repeats), the area under the curve
# (AUC: the curve's average height) and the wall time per repeat.

print(result.table())

# %%
# The curves, with a band of one standard deviation over the repeats:

ax = plot_active_learning_curve(result)
plt.tight_layout()

# %%
# Paired differences
# ------------------
# Because both learners saw the same initial sets and seeds, the difference of their AUCs repeat
# by repeat is a fairer measure than the difference of the means.

auc = dict(zip(result.names, result.auc))
gain = auc["DISAL"] - auc["random"]
print("AUC gain of DISAL over random, per repeat:", np.round(gain, 4).tolist())
print(f"mean {gain.mean():+.4f}, std {gain.std():.4f}")

# %%
# On data this small and easy, strategies differ by about as much as seeds do: compare over
# more repeats (``n_repeats``), and on your own data, before drawing conclusions. The same
# comparison runs from the shell with ``skal simulate --selectors disal,random``.
