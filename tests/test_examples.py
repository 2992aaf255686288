"""The examples run and do what their text says."""

import runpy
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_runs_the_loop(capsys):
    main = runpy.run_path(str(EXAMPLES / "quickstart.py"))["main"]
    learner = main(n_cycles=2, query_size=50)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["100", "150", "200"]
    np.testing.assert_array_equal(np.bincount(learner.labeled_cycle_), [100, 50, 50])
    accuracies = [float(line.split()[-1]) for line in lines]
    assert accuracies[-1] > 0.8  # 200 digit labels train a small CNN well past chance (0.1)
