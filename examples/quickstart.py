"""The fit / query / teach loop on scikit-learn's digits, with y as a simulated annotator.

Run: python examples/quickstart.py   (well under a minute on a CPU)
"""

import numpy as np
import torch

from skal import ActiveLearner, ActiveNet
from skal.datasets import load_digits_images
from skal.models import SmallCNN
from skal.selectors import DISAL


def main(n_cycles=3, query_size=100, seed=0):
    X, y = load_digits_images(return_X_y=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(X))
    X_test, y_test = X[order[:500]], y[order[:500]]
    X_pool, y_pool = X[order[500:]], y[order[500:]]  # y_pool plays the annotator

    net = ActiveNet(SmallCNN, max_epochs=30, batch_size=32, lr=0.05,
                    optimizer=torch.optim.SGD, optimizer__momentum=0.9, verbose=0)
    learner = ActiveLearner(net, selector=DISAL(), classes=np.arange(10), random_state=seed)

    labeled = rng.choice(len(X_pool), 100, replace=False)
    learner.fit(X_pool[labeled], y_pool[labeled])
    print(f"{len(learner.y_labeled_)} labels: test accuracy {learner.score(X_test, y_test):.3f}")
    unlabeled = np.setdiff1d(np.arange(len(X_pool)), labeled)
    for _ in range(n_cycles):
        idx = learner.query(X_pool[unlabeled], n=query_size)
        chosen = unlabeled[idx]
        learner.teach(X_pool[chosen], y_pool[chosen])  # ask your annotator here
        unlabeled = np.setdiff1d(unlabeled, chosen)
        print(f"{len(learner.y_labeled_)} labels: test accuracy {learner.score(X_test, y_test):.3f}")
    return learner


if __name__ == "__main__":
    main()
