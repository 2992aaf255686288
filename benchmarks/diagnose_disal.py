"""Why does a selector lose to random? Checks on one trained model of the Fashion-MNIST recipe.

Trains the DISAL learner of `compare_fashion_mnist.py`'s repeat 0 exactly as the comparison does
(same data, recipe, initial set and seed, one torch thread as in its worker processes; the script
checks its test accuracy against the comparison's results when they are there), then, on its
pool, with that one model:

* the implementation checks: the snapshot equals the weights of a run stopped one epoch earlier
  (same seed), the learning rate of the last epoch is 1/10 of the first, the net is in eval mode
  with BatchNorm's running statistics at query time (scores unchanged by a second pass);
* what the scores pick (every selector and rule scored on the same DISAL-trained model, with
  the query seed the learner derives for its first query): rank correlation of DISAL's KL with entropy and with the margin score,
  the accuracy of the model on each selector's picks (low = informative, hard samples), the
  class histogram of the picks and its normalised entropy, and how many picks are near-duplicates
  of other picks (nearest pick's embedding closer than the median pool nearest-neighbour distance).

    python benchmarks/diagnose_disal.py            # ~30 s on 2 cores
    python benchmarks/diagnose_disal.py --quick    # smoke run

Writes benchmarks/results/diagnose_disal[_quick].json and prints a markdown table.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.base import clone

sys.path.insert(0, str(Path(__file__).parent))
import compare_fashion_mnist as compare  # noqa: E402

from skal import ActiveLearner  # noqa: E402
from skal.learner import _QUERY, _derive_seed  # noqa: E402
from skal.selectors import (  # noqa: E402
    DISAL,
    ClusterBatch,
    Entropy,
    Margin,
    Random,
    StochasticBatch,
)
from skal.scores import kl_divergence  # noqa: E402
from skal.selectors.base import embeddings  # noqa: E402


# the paper's score (the class drift kept), as "disal" in compare_fashion_mnist.py
PAPER = DISAL(drift="keep", balance="none")

def _spread(labels, n_classes=10):
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(n_classes)), counts.astype(int).tolist()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as in the comparison's worker processes: same float sums
    size, pool_size, initial, query, epochs = 14, 10000, 500, 250, 15
    if args.quick:
        pool_size, initial, query, epochs = 1000, 100, 50, 3
    settings = type("Args", (), dict(epochs=epochs, lr=0.05, model="smallcnn", device="cpu"))
    X, y, X_test, y_test = compare.load(size)
    pool_idx = np.random.default_rng(args.seed).choice(len(y), pool_size, replace=False)
    X, y = X[pool_idx], y[pool_idx]
    # the initial set and learner seed of compare's repeat 0 (active_learning_curve's draws)
    rng = np.random.RandomState(args.seed)
    seeds = rng.randint(np.iinfo(np.int32).max, size=(3, 2))
    first = np.random.default_rng(seeds[0][0]).choice(len(y), initial, replace=False)
    learner_seed = int(seeds[0][1])
    rest = np.setdiff1d(np.arange(len(y)), first)
    X_pool, y_pool = X[rest], y[rest]

    net = compare.make_net(settings)
    learner = ActiveLearner(clone(net), PAPER,
                            random_state=learner_seed, classes=np.arange(10))
    learner.fit(X[first], y[first])
    fitted = learner.estimator_
    report = {"test_accuracy": float(learner.score(X_test, y_test))}
    results = Path(__file__).parent / "results" / "fashion_mnist.json"
    if not args.quick and results.exists():
        compared = json.loads(results.read_text())
        expected = compared["scores"][compared["names"].index("disal")][0][0]
        report["same_model_as_comparison"] = report["test_accuracy"] == expected
        print(f"test accuracy {report['test_accuracy']:.4f}; the comparison's DISAL repeat 0, "
              f"cycle 0: {expected:.4f}", file=sys.stderr)
    query_seed = _derive_seed(learner._state().seed, 0, _QUERY)  # what learner.query uses at cycle 0

    # 1. implementation checks
    lrs = fitted.history[:, "event_lr"]
    report["lr_first_last"] = [float(lrs[0]), float(lrs[-1])]
    shorter = ActiveLearner(clone(net).set_params(max_epochs=epochs - 1),
                            PAPER, random_state=learner_seed, classes=np.arange(10))
    # the learner seeds training from random_state and the cycle; a run stopped one epoch
    # earlier must end on the weights DISAL keeps as epoch T-1 (same data order up to then)
    shorter.fit(X[first], y[first])
    state = shorter.estimator_.module_.state_dict()
    snapshot = fitted.parts_["snapshot"].state_
    report["snapshot_max_abs_diff"] = float(max(
        (snapshot[k].float() - v.float()).abs().max().item() for k, v in state.items()))
    kl = PAPER.score_pool(fitted, X_pool).numpy()
    kl_again = PAPER.score_pool(fitted, X_pool).numpy()
    report["scores_repeatable"] = bool(np.array_equal(kl, kl_again))
    report["modules_in_eval_mode"] = not any(m.training for m in fitted.module_.modules())
    entropy = Entropy().score_pool(fitted, X_pool).numpy()
    margin = Margin().score_pool(fitted, X_pool).numpy()
    report["spearman_kl_entropy"] = float(spearmanr(kl, entropy).statistic)
    report["spearman_kl_margin"] = float(spearmanr(kl, margin).statistic)
    # where does the T-1 -> T change come from: the weights' last epoch of SGD, or the
    # BatchNorm running statistics that moved during it?
    current = fitted.module_.state_dict()
    buffers = {name for name, _ in fitted.module_.named_buffers()}
    mixed = {
        "weights only": {k: (v if k in buffers else snapshot[k]) for k, v in current.items()},
        "BN statistics only": {k: (snapshot[k] if k in buffers else v) for k, v in current.items()},
    }
    for label, state in mixed.items():
        module = fitted.parts_["snapshot"].module(fitted)  # a copy of the module, given that state
        module.load_state_dict(state)
        part = torch.cat([kl_divergence(fitted.logits(Xb, module=module), fitted.logits(Xb))
                          for Xb in fitted.iter_pool(X_pool)]).numpy()
        report[f"kl_{label.replace(' ', '_')}"] = {
            "mean": float(part.mean()), "spearman_with_full_kl": float(spearmanr(part, kl).statistic),
            "spearman_with_entropy": float(spearmanr(part, entropy).statistic)}

    # 2. what each rule picks
    pred = fitted.predict(X_pool)
    emb = embeddings(fitted, X_pool)
    nn_pool = torch.cdist(emb[:2000], emb).topk(2, largest=False).values[:, 1]
    near = float(nn_pool.median())
    rows = {}
    for name, selector in {
        "random": Random(), "entropy": Entropy(), "margin": Margin(), "disal": PAPER,
        "disal drift removed": DISAL(drift="remove", balance="none"),
        "disal + stochastic": DISAL(batch=StochasticBatch(), drift="keep", balance="none"),
        "disal + cluster": DISAL(batch=ClusterBatch(), drift="keep", balance="none"),
    }.items():
        picks, _ = selector.select(fitted, X_pool, query, random_state=query_seed)
        spread, counts = _spread(y_pool[picks])
        dist = torch.cdist(emb[picks], emb[picks])
        dist.fill_diagonal_(float("inf"))
        rows[name] = {
            "accuracy_on_picks": float((pred[picks] == y_pool[picks]).mean()),
            "pick_spread": spread, "class_counts": counts,
            "near_duplicates": float((dist.min(1).values < near).float().mean()),
            "mean_kl": float(kl[picks].mean()), "mean_entropy": float(entropy[picks].mean()),
        }
    report["disal_picks_equal_learner_query"] = bool(
        set(learner.query(X_pool, query).tolist())
        == set(PAPER.select(fitted, X_pool, query, random_state=query_seed)[0].tolist()))
    report["picks"] = rows
    report["median_pool_nn_distance"] = near

    lines = ["| picks (n=%d) | model accuracy on picks | pick spread | near-duplicates | "
             "mean KL | mean entropy | largest class share |" % query,
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {100 * r['accuracy_on_picks']:.1f}% | {r['pick_spread']:.3f} | "
                     f"{100 * r['near_duplicates']:.0f}% | {r['mean_kl']:.2e} | "
                     f"{r['mean_entropy']:.3f} | {max(r['class_counts']) / query:.2f} |")
    print("\n".join(lines))
    print(json.dumps({k: v for k, v in report.items() if k != "picks"}, indent=1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "diagnose_disal_quick.json" if args.quick else "diagnose_disal.json"
    (out / name).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
