"""
A Pipeline and GridSearchCV
===========================

:class:`~skal.ActiveLearner` is a scikit-learn classifier: it goes into a
:class:`~sklearn.pipeline.Pipeline`, it clones, cross-validates and grid-searches. Here the digits
are a table of 64 pixel values, scaled by a :class:`~sklearn.preprocessing.StandardScaler` and
classified by an MLP, and a grid search picks the learning rate and the weight of DISAL's dynamic
loss on the initial labels before the active-learning loop starts.
"""

# %%
# A pipeline as the learner's estimator
# -------------------------------------
# With ``make_pipeline(StandardScaler(), net)`` as the estimator, the scaler is fitted on the
# labeled data and :meth:`~skal.ActiveLearner.query` passes the pool through it before the
# selector scores it. Nested parameter names reach every level:
# ``estimator__activenet__lr`` is the net's learning rate, ``selector__subset`` a selector's
# parameter.

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skal import ActiveLearner, ActiveNet
from skal.models import MLP
from skal.selectors import Entropy

X, y = load_digits(return_X_y=True)  # (1797, 64) float64 pixel counts 0..16
X_pool, X_test, y_pool, y_test = train_test_split(X, y, test_size=500, stratify=y, random_state=0)

net = ActiveNet(MLP, module__hidden_sizes=(128,), max_epochs=30, batch_size=32,
                optimizer=torch.optim.SGD, optimizer__momentum=0.9, verbose=0)
learner = ActiveLearner(make_pipeline(StandardScaler(), net), selector=Entropy(),
                        classes=np.arange(10), random_state=0)
params = learner.get_params()
print({name: params[name] for name in
       ["estimator__activenet__lr", "estimator__activenet__dynamic_weight", "selector"]})

# %%
# Grid search on the initial labels
# ---------------------------------
# The search cross-validates the *initial training* on the 150 labels we start with (querying is
# not part of model selection). Every fit is seeded, so the search is reproducible, and with
# ``n_jobs`` it runs in parallel with the same scores.

rng = np.random.default_rng(0)
labeled = rng.choice(len(X_pool), 150, replace=False)
search = GridSearchCV(
    learner,
    {"estimator__activenet__lr": [0.01, 0.1],
     "estimator__activenet__dynamic_weight": [0.0, 1.0]},
    cv=StratifiedKFold(3, shuffle=True, random_state=0),
)
search.fit(X_pool[labeled], y_pool[labeled])

results = pd.DataFrame(search.cv_results_)
print(results[["param_estimator__activenet__lr", "param_estimator__activenet__dynamic_weight",
               "mean_test_score", "std_test_score", "rank_test_score"]].to_string(index=False))
print("best:", search.best_params_)

# %%
# The loop with the best learner
# ------------------------------
# ``best_estimator_`` is an :class:`~skal.ActiveLearner` refitted on all 150 labels with the best
# parameters: query and teach it as usual.

best = search.best_estimator_
unlabeled = np.setdiff1d(np.arange(len(X_pool)), labeled)
n_labels, accuracies = [len(best.y_labeled_)], [best.score(X_test, y_test)]
for _ in range(3):
    chosen = unlabeled[best.query(X_pool[unlabeled], n=100)]
    best.teach(X_pool[chosen], y_pool[chosen])
    unlabeled = np.setdiff1d(unlabeled, chosen)
    n_labels.append(len(best.y_labeled_))
    accuracies.append(best.score(X_test, y_test))
    print(f"{n_labels[-1]} labels: test accuracy {accuracies[-1]:.3f}")

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(n_labels, accuracies, marker="o")
ax.set_xlabel("labeled samples")
ax.set_ylabel("test accuracy")
ax.set_title("Entropy sampling with the searched MLP")
ax.grid(True, alpha=0.3)
fig.tight_layout()

# %%
# The learner in a pipeline, the other way round
# ----------------------------------------------
# The learner can also be the last step of a pipeline, for instance to use the pipeline where a
# plain classifier is expected. Queries then go to the learner step, on scaled samples:

pipe = make_pipeline(StandardScaler(), ActiveLearner(net, selector=Entropy(), random_state=0))
pipe.fit(X_pool[labeled], y_pool[labeled])
step = pipe[-1]
idx = step.query(pipe[:-1].transform(X_pool[unlabeled]), n=5)
print("pipeline accuracy:", round(pipe.score(X_test, y_test), 3), "next queries:", idx.tolist())
