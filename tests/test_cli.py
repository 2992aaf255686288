"""The `skal` command and the embedded data."""

import io
import re
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits

from skal.cli import build_parser, main, simulate
from skal.datasets import load_digits_images


def test_load_digits_images_is_sklearn_digits_as_scaled_images():
    X, y = load_digits_images(return_X_y=True)
    digits = load_digits()
    assert X.shape == (1797, 1, 8, 8) and X.dtype == np.float32
    np.testing.assert_array_equal(X[:, 0], (digits.images / 16).astype(np.float32))
    np.testing.assert_array_equal(y, digits.target)
    bunch = load_digits_images()
    np.testing.assert_array_equal(bunch.data, X)
    assert list(bunch.target_names) == list(range(10))


def _table_rows(text):
    return [line for line in text.splitlines() if re.match(r"^\| \d+ \| \d+ \|", line)]


def test_simulate_prints_a_table_per_cycle_and_selector():
    out = io.StringIO()
    args = build_parser().parse_args(
        ["simulate", "--initial", "20", "--query", "15", "--cycles", "2", "--epochs", "2",
         "--selectors", "disal,random,entropy", "--quiet"])
    results = simulate(args, out=out)
    text = out.getvalue()
    assert text.splitlines()[0] == "| cycle | labeled | disal | random | entropy |"
    rows = _table_rows(text)
    assert [tuple(r.split("|")[1:3]) for r in rows] == [(" 0 ", " 20 "), (" 1 ", " 35 "), (" 2 ", " 50 ")]
    for name, records in results.items():
        assert [r["n_labeled"] for r in records] == [20, 35, 50]
        column = [float(r.split("|")[3 + list(results).index(name)]) for r in rows]
        np.testing.assert_allclose(column, [r["score"] for r in records], atol=5e-5)
    # every selector starts from the same initial set, hence the same first model
    assert len({records[0]["score"] for records in results.values()}) == 1


def test_simulate_is_reproducible():
    argv = ["simulate", "--initial", "20", "--query", "10", "--cycles", "1", "--epochs", "2", "--quiet"]
    outs = []
    for _ in range(2):
        out = io.StringIO()
        simulate(build_parser().parse_args(argv), out=out)
        outs.append(out.getvalue())
    assert outs[0] == outs[1]


def test_unknown_selector_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--selectors", "disal,bogus"])
    assert exc.value.code == 2
    assert "unknown selector(s) ['bogus']" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--initial", "--query", "--cycles", "--epochs"])
def test_non_positive_sizes_are_usage_errors(flag, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", flag, "0"])
    assert exc.value.code == 2
    assert "must be a positive integer, got 0" in capsys.readouterr().err


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "skal.cli", "simulate", "--help"],
                            capture_output=True, text=True, check=True)
    for option in ["--dataset", "--selectors", "--initial", "--query", "--cycles", "--epochs",
                   "--device", "--seed", "--quiet"]:
        assert option in result.stdout
