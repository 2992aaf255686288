"""Why DISAL's picks pile into one class on text: per cycle, where its KL mass and its picks go.

One campaign per seed on the news set of compare_text.py (topic sections, 20 + 6 x 20 labels,
the same MLP and Adam). At each cycle, for the scored pool: the test accuracy; the training
loss of the last epoch; the share of DISAL's top-20 in the most picked predicted class; that
class's share of the pool's predictions and of the pool's total KL; the mean max-probability
(confidence) of the picks and of the pool; and the last epoch's change of each class's logit
(mean |Δz_c| over the pool), whose largest over smallest ratio says whether one class's
logits moved most; and the rank correlation of the KL with each pool sample's largest cosine
similarity to a labeled sample (how much of the score is nearness to what was trained on).
--optimizer sgd trains with SGD instead of Adam.

    python benchmarks/diagnose_disal_text.py --seeds 0,1 --variant paper
    python benchmarks/diagnose_disal_text.py --variant paper --optimizer sgd

Prints a Markdown table per seed.
"""

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from compare_text import learners  # noqa: E402  (this directory)
from text_data import load_news  # noqa: E402
from skal.parts import EpochSnapshot  # noqa: E402
from skal.scores import kl_divergence  # noqa: E402
from skal.selectors import DISAL  # noqa: E402

VARIANTS = {"paper": DISAL(drift="keep", balance="none"), "drift removed": DISAL(drift="remove", balance="none"),
            "default": DISAL(), "w/o D": DISAL(weight=0, balance="none"), "balanced": DISAL(balance="predicted")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--variant", default="paper", choices=list(VARIANTS))
    parser.add_argument("--labeling", default="section")
    parser.add_argument("--cycles", type=int, default=6)
    parser.add_argument("--optimizer", default="adam", choices=["adam", "sgd"],
                        help="sgd: lr 0.1, momentum 0.9 instead of Adam (lr 1e-3)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    X, y, X_test, y_test, classes = load_news(args.labeling)
    k = len(classes)
    for seed in map(int, args.seeds.split(",")):
        rng = np.random.default_rng(seed)
        labeled = rng.choice(len(y), 20, replace=False)
        learner = learners(["random"], k, None)["random"].set_params(selector=VARIANTS[args.variant],
                                                                    random_state=seed)
        if args.optimizer == "sgd":
            learner.set_params(estimator__optimizer=torch.optim.SGD, estimator__lr=0.1,
                               estimator__optimizer__momentum=0.9)
        learner.fit(X[labeled], y[labeled])
        print(f"\n### seed {seed}, DISAL {args.variant}\n")
        print("| cycle | labels | test acc | last train loss | top class share of picks | its share of "
              "pool predictions | its share of pool KL | pick confidence | pool confidence | "
              "max/min class mean abs logit change | rank corr. of KL with similarity to the labeled set |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for cycle in range(args.cycles + 1):
            net = learner.estimator_
            pool = np.setdiff1d(np.arange(len(y)), labeled)
            Xp = torch.from_numpy(X[pool])
            with torch.no_grad():
                z_t = net.logits(Xp).float()
                z_prev = net.logits(Xp, module=net.get_part(EpochSnapshot).module(net)).float()
            kl = kl_divergence(z_prev, z_t).numpy()
            pred = z_t.argmax(1).numpy()
            conf = torch.softmax(z_t, 1).max(1).values.numpy()
            picks = learner.query(X[pool], 20)
            counts = np.bincount(pred[picks], minlength=k)
            top = counts.argmax()
            change = (z_t - z_prev).abs().mean(0).numpy()
            # TF-IDF rows are L2-normalised: the dot product is the cosine similarity
            similarity = (X[pool] @ X[labeled].T).max(1)
            corr = spearmanr(kl, similarity).statistic
            acc = (learner.predict(X_test) == y_test).mean()
            print(f"| {cycle} | {len(labeled)} | {acc:.3f} | {net.history[-1, 'train_loss']:.2e} | "
                  f"{counts[top] / 20:.2f} ({classes[top]}) | {(pred == top).mean():.2f} | "
                  f"{kl[pred == top].sum() / kl.sum():.2f} | {conf[picks].mean():.3f} | {conf.mean():.3f} | "
                  f"{change.max() / change.min():.1f} | {corr:+.2f} |")
            if cycle == args.cycles:
                break
            learner.teach(X[pool[picks]], y[pool[picks]])
            labeled = np.concatenate([labeled, pool[picks]])


if __name__ == "__main__":
    main()
