"""
A Pipeline and GridSearchCV over strategies
===========================================

:class:`~skal.ActiveLearner` is a scikit-learn classifier: it goes into a
:class:`~sklearn.pipeline.Pipeline`, it clones, cross-validates and grid-searches. But its ``fit``
is only the initial training, so a search over a plain learner cannot tell two selectors apart.
:class:`~skal.model_selection.CampaignEstimator` makes a whole campaign the thing that is fitted
and scored: here :class:`~sklearn.model_selection.GridSearchCV` chooses a query strategy and its
batch rule for an MLP on the digits (as a table of 64 pixel values, scaled by a
:class:`~sklearn.preprocessing.StandardScaler`).
"""

# %%
# A pipeline as the learner's estimator
# -------------------------------------
# With ``make_pipeline(StandardScaler(), net)`` as the estimator, the scaler is fitted on the
# labeled data and :meth:`~skal.ActiveLearner.query` passes the pool through it before the
# selector scores it. The campaign around it: 50 random initial labels, then three cycles of 50
# queries, scored by the area under the test-accuracy curve (``scoring="auc"``). Nested
# parameter names reach every level: ``learner__selector`` is the strategy,
# ``learner__selector__batch`` its batch rule, ``learner__estimator__activenet__lr`` the net's
# learning rate.

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skal import ActiveLearner, ActiveNet
from skal.model_selection import CampaignEstimator
from skal.models import MLP
from skal.selectors import Entropy, Margin, Random

X, y = load_digits(return_X_y=True)  # (1797, 64) float64 pixel counts 0..16
X_pool, X_test, y_pool, y_test = train_test_split(X, y, test_size=500, stratify=y, random_state=0)

net = ActiveNet(MLP, module__hidden_sizes=(128,), max_epochs=30, batch_size=32, lr=0.01,
                optimizer=torch.optim.SGD, optimizer__momentum=0.9, verbose=0)
learner = ActiveLearner(make_pipeline(StandardScaler(), net), selector=Random(), classes=np.arange(10))
campaign = CampaignEstimator(learner, initial_size=50, query_size=50, n_cycles=3, scoring="auc",
                             random_state=0)
params = campaign.get_params()
print({name: params[name] for name in
       ["learner__selector", "learner__estimator__activenet__lr", "initial_size", "scoring"]})

# %%
# Grid search over strategies
# ---------------------------
# On each of three folds of the pool, every candidate runs its campaign with the fold's labels as
# the annotator and is scored on the held-out fold. The candidates of a fold share the initial set
# and the seeds (one ``random_state``), so their scores differ only by what they chose to label.

grid = [
    {"learner__selector": [Random(), Entropy()]},
    {"learner__selector": [Margin()], "learner__selector__batch": ["topk", "stochastic"]},
]
search = GridSearchCV(campaign, grid, cv=StratifiedKFold(3, shuffle=True, random_state=0))
search.fit(X_pool, y_pool)

results = pd.DataFrame(search.cv_results_)
results["strategy"] = [f"{p['learner__selector']!r} {p.get('learner__selector__batch', '')}".strip()
                       for p in search.cv_results_["params"]]
print(results[["strategy", "split0_test_score", "split1_test_score", "split2_test_score",
               "mean_test_score", "rank_test_score"]].to_string(index=False))
print("best:", search.best_params_)

# %%
# The winner's campaign
# ---------------------
# ``best_estimator_`` reran the best strategy's campaign on the whole pool. It keeps every cycle's
# model (``scoring="auc"``), so its learning curve on the test set is one call away, and
# ``learner_`` is the final :class:`~skal.ActiveLearner`: query it, teach it, save it.

best = search.best_estimator_
curve = best.score_cycles(X_test, y_test)
for n, accuracy in zip(best.n_labeled_, curve):
    print(f"{n} labels: test accuracy {accuracy:.3f}")
print("area under the curve:", round(best.score(X_test, y_test), 3))

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(best.n_labeled_, curve, marker="o")
ax.set_xlabel("labeled samples")
ax.set_ylabel("test accuracy")
ax.set_title(f"The chosen strategy: {search.best_params_['learner__selector']!r}")
ax.grid(True, alpha=0.3)
fig.tight_layout()

# %%
# Reading the scores
# ------------------
# Three folds are three campaigns per strategy, each on different training data: the spread over
# the folds shows how much one campaign's score varies. To report how strategies compare, with
# repeats that share initial sets and paired confidence intervals, use
# :func:`~skal.model_selection.active_learning_curve` (see the campaigns page of the user guide);
# to *choose* among them inside a scikit-learn workflow, search over a
# :class:`~skal.model_selection.CampaignEstimator` as here.

# %%
# The learner in a pipeline, the other way round
# ----------------------------------------------
# The learner can also be the last step of a pipeline, for instance to use the pipeline where a
# plain classifier is expected. Queries then go to the learner step, on scaled samples:

labeled = np.random.default_rng(0).choice(len(X_pool), 150, replace=False)
unlabeled = np.setdiff1d(np.arange(len(X_pool)), labeled)
pipe = make_pipeline(StandardScaler(), ActiveLearner(net, selector=Margin(), random_state=0))
pipe.fit(X_pool[labeled], y_pool[labeled])
step = pipe[-1]
idx = step.query(pipe[:-1].transform(X_pool[unlabeled]), n=5)
print("pipeline accuracy:", round(pipe.score(X_test, y_test), 3), "next queries:", idx.tolist())
