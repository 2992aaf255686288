"""
A labeling session: pool bookkeeping, skipped samples, saving, resuming, stopping
=================================================================================

What a campaign on real, unlabeled data looks like with skal. The pool is a torch
``Dataset`` of images without labels; the first batch is chosen from the images
alone; an annotator (here a stand-in that reads its answers from a CSV file) labels
each queried batch but cannot tell some samples apart and skips them; the learner
keeps which rows are labeled, skipped or still unlabeled, so a query never returns
a row twice; the campaign is saved after every round, resumed in a new process
with a module class defined in the script itself; and it ends when the
predictions on a held-out set of unlabeled samples have stabilised.

Everything runs on a CPU in a few seconds (scikit-learn's 8x8 digits).
"""

# %%
# The pool, the annotator and a module of our own
# ------------------------------------------------
# The pool is a ``TensorDataset`` of images only: the labels are the annotator's
# business. The stand-in annotator answers from a CSV file with a label per row,
# ``?`` where the image is too ambiguous to label (about 5% of them).
import csv
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset

from skal import UNLABELED, ActiveLearner, ActiveNet
from skal.datasets import load_digits_images
from skal.initial import initial_batch
from skal.selectors import Margin
from skal.stopping import StabilizingPredictions

torch.set_num_threads(1)
images, truth = load_digits_images(return_X_y=True)
pool = TensorDataset(torch.from_numpy(images))
work = tempfile.mkdtemp()

answers_csv = os.path.join(work, "answers.csv")
unsure = np.random.default_rng(0).random(len(truth)) < 0.05
with open(answers_csv, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["row", "label"])
    for row, (label, skip) in enumerate(zip(truth, unsure)):
        writer.writerow([row, "?" if skip else int(label)])


class CSVAnnotator:
    """Answers a batch of row indices from the CSV file; ``None`` means "I cannot tell"."""

    def __init__(self, path):
        with open(path) as f:
            self.answers = {int(r["row"]): r["label"] for r in csv.DictReader(f)}

    def __call__(self, rows):
        return [None if self.answers[r] == "?" else int(self.answers[r]) for r in rows]


annotate = CSVAnnotator(answers_csv)


class TinyCNN(nn.Module):
    """A module defined in this script (its class lives in ``__main__``)."""

    def __init__(self, num_classes=10, width=16):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(width * 16, num_classes))

    def forward(self, x):
        return self.head(self.layer1(x))


def teach_answers(learner, rows):
    """Give the learner the annotator's answers for ``rows``: labels, or skips."""
    labels = annotate(rows)
    known = np.array([label is not None for label in labels])
    if known.any():
        learner.teach(pool, np.array(labels, dtype=object)[known].astype(int), rows=rows[known])
    if not known.all():
        learner.skip(rows[~known])
    return int((~known).sum())


# %%
# The first batch, chosen without labels
# --------------------------------------
# :func:`~skal.initial.initial_batch` takes the samples nearest the centres of a
# k-means clustering of the images, one typical sample per region. ``y`` marks every
# other row with ``skal.UNLABELED`` (-1, scikit-learn's semi-supervised convention),
# which the learner is told to read as "not labeled yet" (``unlabeled=UNLABELED``):
# ``fit`` trains on the labeled rows and keeps the bookkeeping of the whole pool, one
# byte per row, without copying it.
first = initial_batch(pool, 30, strategy="kmeans", random_state=0)
labels = annotate(first)
y = np.full(len(pool), UNLABELED)
for row, label in zip(first, labels):
    if label is not None:
        y[row] = label

net = ActiveNet(TinyCNN, max_epochs=20, batch_size=16, lr=0.05, optimizer=torch.optim.SGD,
                optimizer__momentum=0.9, verbose=0)
learner = ActiveLearner(net, Margin(), classes=np.arange(10), warm_start=True, random_state=0,
                        unlabeled=UNLABELED)
learner.fit(pool, y)
learner.skip(first[[label is None for label in labels]])
print(f"labeled {len(learner.labeled_rows_)}, skipped {len(learner.skipped_rows_)}, "
      f"unlabeled {len(learner.unlabeled_rows_)}")

# %%
# Query, label, save: round after round until the predictions settle
# -------------------------------------------------------------------
# The stopping criterion predicts a fixed *stop set* of 300 unlabeled samples after
# every training and stops once Cohen's kappa between consecutive models has stayed
# above 0.99 for three rounds (Bloodgood and Vijay-Shanker, 2009). The learner is
# saved after each round: an interrupted campaign loses nothing.
stop_rows = np.random.default_rng(1).choice(learner.unlabeled_rows_, 300, replace=False)
stopping = StabilizingPredictions(Subset(pool, stop_rows.tolist()), threshold=0.99, window=3)
stopping.update(learner)
path = os.path.join(work, "campaign.skal")
for round_ in range(1, 21):
    rows = learner.query(pool, n=30)  # never a labeled or a skipped row
    skipped = teach_answers(learner, rows)
    learner.save(path)
    stop = stopping.update(learner)
    print(f"round {round_}: {len(learner.labeled_rows_)} labeled ({skipped} skipped), "
          f"kappa {stopping.agreements_[-1]:.3f}")
    if stop:
        break
never = learner.unlabeled_rows_  # rows neither labeled nor skipped
print(f"stopped after round {round_} with {len(learner.labeled_rows_)} labels; accuracy on the "
      f"{len(never)} rows never labeled {learner.score(Subset(pool, never.tolist()), truth[never]):.3f}")

# %%
# Resume in a new process
# -----------------------
# The module class lives in this script, so a saved file cannot name it for import.
# Tomorrow's script defines it again, builds the same learner, and restores the
# saved state onto it with ``like=``; nothing in the file is imported or run.
resume = os.path.join(work, "resume.py")
with open(resume, "w") as f:
    f.write(textwrap.dedent(f'''
        import numpy as np, torch
        from torch import nn
        from torch.utils.data import TensorDataset
        from skal import UNLABELED, ActiveLearner, ActiveNet
        from skal.datasets import load_digits_images
        from skal.selectors import Margin

        class TinyCNN(nn.Module):
            def __init__(self, num_classes=10, width=16):
                super().__init__()
                self.layer1 = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
                self.head = nn.Sequential(nn.Flatten(), nn.Linear(width * 16, num_classes))

            def forward(self, x):
                return self.head(self.layer1(x))

        net = ActiveNet(TinyCNN, max_epochs=20, batch_size=16, lr=0.05, optimizer=torch.optim.SGD,
                        optimizer__momentum=0.9, verbose=0)
        template = ActiveLearner(net, Margin(), classes=np.arange(10), warm_start=True, random_state=0,
                                 unlabeled=UNLABELED)
        learner = ActiveLearner.load({path!r}, like=template)
        pool = TensorDataset(torch.from_numpy(load_digits_images(return_X_y=True)[0]))
        print("resumed:", len(learner.labeled_rows_), "labeled,", len(learner.skipped_rows_),
              "skipped; next batch starts with rows", learner.query(pool, n=30)[:5].tolist())
    '''))
env = {**os.environ, "OMP_NUM_THREADS": "1"}
print(subprocess.run([sys.executable, resume], capture_output=True, text=True, env=env, check=True).stdout)
print("here, the same query:", learner.query(pool, n=30)[:5].tolist())
