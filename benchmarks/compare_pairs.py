"""Paired differences between any two methods of a committed compare_selectors run.

Reads benchmarks/results/<name>_<setting>.json (written by compare_selectors.py) and prints,
per setting, each method's paired AUC (and final-accuracy) difference to a reference method
with its 95% paired t interval over the repeats. Nothing is retrained.

    python benchmarks/compare_pairs.py --reference margin --methods "disal drift removed,badge"
    python benchmarks/compare_pairs.py --name followup --reference "disal drift removed"
    python benchmarks/compare_pairs.py --name i22 --settings text-section --reference disal
"""

import argparse
from pathlib import Path

import numpy as np

from skal.model_selection import ActiveLearningCurve

HERE = Path(__file__).parent
SETTINGS = ["digits-low", "digits-papers", "fashion-low", "fashion-papers", "text-section", "text-outlet"]


def cell(diff, j):
    """Method ``j``'s paired difference in points: ``mean [low, high]``, `` *`` when it excludes zero."""
    if diff.n < 2 or diff.no_spread[j] or not np.isfinite(diff.low[j]):
        return f"{100 * diff.mean[j]:+.1f} (no interval)"
    mark = " *" if diff.excludes_zero[j] else ""
    return f"{100 * diff.mean[j]:+.1f} [{100 * diff.low[j]:+.1f}, {100 * diff.high[j]:+.1f}]{mark}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="compare", help="stem of the result files")
    parser.add_argument("--reference", default="random")
    parser.add_argument("--methods", default=None, help="comma-separated (default: all)")
    parser.add_argument("--metric", choices=["auc", "final"], default="auc")
    parser.add_argument("--results", default=str(HERE / "results"), help="directory of the result files")
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help="comma-separated settings whose files are read (default: all that exist)")
    args = parser.parse_args(argv)
    settings = args.settings.split(",")
    rows = {}
    for setting in settings:
        path = Path(args.results) / f"{args.name}_{setting}.json"
        if not path.exists():
            continue
        d = ActiveLearningCurve.from_json(path).paired_differences(args.metric, args.reference)
        for n in (args.methods.split(",") if args.methods else d.names):
            if n in d.names:
                rows.setdefault(n, {})[setting] = cell(d, d.names.index(n))
    present = [s for s in settings if any(s in r for r in rows.values())]
    print(f"Δ {args.metric} vs {args.reference} (points, 95% paired t interval, * excludes zero)\n")
    print("| method | " + " | ".join(present) + " |")
    print("|---|" + "---:|" * len(present))
    for n, cells in rows.items():
        print(f"| {n} | " + " | ".join(cells.get(s, "") for s in present) + " |")


if __name__ == "__main__":
    main()
