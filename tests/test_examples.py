"""The gallery examples: each is a sphinx-gallery script, and the quickstart does what it says.

The docs build (``sphinx-build`` in ``.ci/run``) executes every ``examples/plot_*.py`` with
``abort_on_example_error``, so a broken example already fails CI there. Here, to keep the test
suite fast, every example is only checked to compile and to be made of ``# %%`` cells under a
title docstring, and the quickstart, the loop the docs start from, is run in full.
"""

import ast
import runpy
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(EXAMPLES.glob("plot_*.py"))


def test_gallery_has_the_documented_examples():
    assert {p.name for p in SCRIPTS} >= {
        "plot_quickstart.py", "plot_disal_vs_random.py", "plot_pipeline_grid_search.py",
        "plot_compare_selectors.py", "plot_fashion_mnist_resnet.py", "plot_save_resume.py",
    }
    assert (EXAMPLES / "GALLERY_HEADER.rst").is_file()


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_example_is_a_gallery_script(path):
    source = path.read_text()
    compile(source, str(path), "exec")
    docstring = ast.get_docstring(ast.parse(source))
    assert docstring is not None, "sphinx-gallery needs a title docstring"
    title, underline = docstring.splitlines()[:2]
    assert title and set(underline) == {"="} and len(underline) >= len(title)
    assert source.count("\n# %%\n") >= 3, "examples are split into # %% cells"


def test_quickstart_runs_the_loop(capsys):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.close("all")
    namespace = runpy.run_path(str(EXAMPLES / "plot_quickstart.py"), run_name="__main__")
    lines = [line for line in capsys.readouterr().out.splitlines() if " labels: test accuracy " in line]
    assert [line.split()[0] for line in lines] == ["100", "200", "300", "400"]
    learner = namespace["learner"]
    np.testing.assert_array_equal(np.bincount(learner.labeled_cycle_), [100, 100, 100, 100])
    accuracies = [float(line.split()[-1]) for line in lines]
    assert accuracies[-1] > 0.8  # 400 digit labels train a small CNN well past chance (0.1)
    assert len(plt.get_fignums()) == 2  # the accuracy curve and the next queries
    plt.close("all")
