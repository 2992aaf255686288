"""The `skal` command and the data it reads."""

import csv
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits

from skal.cli import build_parser, main, simulate
from skal.datasets import FASHION_MNIST_DEBIAN, load_digits_images, load_fashion_mnist

# CI installs Debian's dataset-fashion-mnist and sets this, so the tests run there, never skip.
_REQUIRE = os.environ.get("SKAL_REQUIRE_FASHION_MNIST") == "1"
needs_fashion = pytest.mark.skipif(
    not _REQUIRE and not (FASHION_MNIST_DEBIAN / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed",
)


def test_load_digits_images_is_sklearn_digits_as_scaled_images():
    X, y = load_digits_images(return_X_y=True)
    digits = load_digits()
    assert X.shape == (1797, 1, 8, 8) and X.dtype == np.float32
    np.testing.assert_array_equal(X[:, 0], (digits.images / 16).astype(np.float32))
    np.testing.assert_array_equal(y, digits.target)
    bunch = load_digits_images()
    np.testing.assert_array_equal(bunch.data, X)
    assert list(bunch.target_names) == list(range(10))


def _run(argv, tmp_path):
    out = io.StringIO()
    args = build_parser().parse_args([*argv, "--out", str(tmp_path)])
    return simulate(args, out=out), out.getvalue()


def _table_rows(text):
    return [line for line in text.splitlines() if re.match(r"^\| \d+ \| \d+ \|", line)]


def test_simulate_prints_the_table_and_writes_csv_json_and_plot(tmp_path):
    result, text = _run(["simulate", "--initial", "20", "--query", "15", "--cycles", "2",
                         "--epochs", "2", "--repeats", "2", "--selectors", "disal,random,coreset",
                         "--quiet"], tmp_path)
    lines = text.splitlines()
    assert lines[0] == "| cycle | labeled | disal | random | coreset |"
    rows = _table_rows(text)
    assert [tuple(r.split("|")[1:3]) for r in rows] == [(" 0 ", " 20 "), (" 1 ", " 35 "), (" 2 ", " 50 ")]
    for i, name in enumerate(result.names):
        shown = [float(r.split("|")[3 + i].split("±")[0]) for r in rows]
        np.testing.assert_allclose(shown, result.mean[i], atol=5e-5)
    assert any(line.startswith("| AUC |") for line in lines)
    # every selector starts each repeat from the same initial set and seed
    np.testing.assert_array_equal(result.scores[0, :, 0], result.scores[1, :, 0])
    with open(tmp_path / "results.csv") as f:
        records = list(csv.DictReader(f))
    assert len(records) == 3 * 2 * 3
    assert {r["selector"] for r in records} == {"disal", "random", "coreset"}
    data = json.loads((tmp_path / "results.json").read_text())
    np.testing.assert_allclose(data["scores"], result.scores)
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_is_reproducible(tmp_path):
    argv = ["simulate", "--initial", "20", "--query", "10", "--cycles", "1", "--epochs", "2", "--quiet"]
    first = _run(argv, tmp_path / "a")[1]
    second = _run(argv, tmp_path / "b")[1]
    strip = [line for line in first.splitlines() if not line.startswith("| time")]
    assert strip == [line for line in second.splitlines() if not line.startswith("| time")]


def test_budget_larger_than_the_pool_is_refused_before_training(tmp_path):
    with pytest.raises(SystemExit, match=r"--initial \+ --cycles \* --query = 100 \+ 20 \* 100 = 2100 "
                                         r"exceeds the pool of 1257 samples"):
        _run(["simulate", "--cycles", "20"], tmp_path)


def test_npz_dataset(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    np.savez(tmp_path / "data.npz", X=X, y=y)
    result, _ = _run(["simulate", "--dataset", str(tmp_path / "data.npz"), "--initial", "10",
                      "--query", "10", "--cycles", "1", "--epochs", "2", "--quiet"], tmp_path)
    assert result.n_labeled.tolist() == [10, 20]


def test_unknown_selector_and_dataset_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--selectors", "disal,bogus"])
    assert exc.value.code == 2
    assert "unknown selector(s) ['bogus']; choose from disal, tidal" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--dataset", "cifar"])
    assert exc.value.code == 2
    assert "unknown dataset 'cifar'; choose from digits, fashion-mnist" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--initial", "--query", "--cycles", "--epochs", "--repeats"])
def test_non_positive_sizes_are_usage_errors(flag, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", flag, "0"])
    assert exc.value.code == 2
    assert "must be a positive integer, got 0" in capsys.readouterr().err


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "skal.cli", "simulate", "--help"],
                            capture_output=True, text=True, check=True)
    for option in ["--dataset", "--selectors", "--initial", "--query", "--cycles", "--repeats",
                   "--epochs", "--pool-size", "--test-limit", "--device", "--seed", "--out", "--quiet"]:
        assert option in result.stdout


@needs_fashion
def test_load_fashion_mnist_reads_the_debian_idx_files():
    X, y = load_fashion_mnist(subset="test", return_X_y=True)
    assert X.shape == (10000, 1, 28, 28) and X.dtype == np.float32
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y), [1000] * 10)  # the test split is balanced
    bunch = load_fashion_mnist(subset="train")
    assert bunch.data.shape == (60000, 1, 28, 28) and bunch.target_names[9] == "Ankle boot"


def test_load_fashion_mnist_from_a_directory_and_its_errors(tmp_path, monkeypatch):
    import gzip

    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    header = bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(header + images.tobytes())
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + (2).to_bytes(4, "big") + bytes([3, 7]))
    X, y = load_fashion_mnist(tmp_path, subset="test", return_X_y=True)
    np.testing.assert_allclose(X[:, 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, [3, 7])
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([3, 7]))
    with pytest.raises(ValueError, match="truncated or corrupted"):
        load_fashion_mnist(tmp_path, subset="test")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr("skal.datasets.FASHION_MNIST_DEBIAN", empty / "debian")
    monkeypatch.setenv("HOME", str(empty))
    monkeypatch.delenv("TORCHVISION_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match=r"train files .* not found in: .*apt-get install "
                                                r"dataset-fashion-mnist"):
        load_fashion_mnist(empty, subset="train")
    with pytest.raises(ValueError, match="subset must be 'train', 'test' or 'all'"):
        load_fashion_mnist(subset="val")


@needs_fashion
def test_simulate_on_fashion_mnist_with_small_settings(tmp_path):
    result, text = _run(["simulate", "--dataset", "fashion-mnist", "--pool-size", "600",
                         "--test-limit", "300", "--initial", "50", "--query", "50", "--cycles", "1",
                         "--epochs", "10", "--quiet"], tmp_path)
    assert result.n_labeled.tolist() == [50, 100]
    assert np.all(result.scores[:, :, -1] > 0.2)  # 10 classes: above chance with 100 labels


def test_progress_bars_for_epochs_and_pool_passes_and_quiet_has_none(tmp_path, capsys):
    from skal import ActiveNet
    from skal.callbacks import ProgressBars
    from skal.models import MLP

    X = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    stream = io.StringIO()
    net = ActiveNet(MLP, max_epochs=3, batch_size=16, iterator_valid__batch_size=10, verbose=0,
                    callbacks=[("progress", ProgressBars(file=stream))]).fit(X, y)
    assert "training: 100%" in stream.getvalue() and "3/3" in stream.getvalue()
    list(net.iter_logits(X))
    assert "scoring pool: 100%" in stream.getvalue() and "5/5" in stream.getvalue()
    import pickle
    pickle.loads(pickle.dumps(net))  # the live bar is not pickled
    _run(["simulate", "--initial", "20", "--query", "10", "--cycles", "1", "--epochs", "2"], tmp_path)
    assert "training" in capsys.readouterr().err
    _run(["simulate", "--initial", "20", "--query", "10", "--cycles", "1", "--epochs", "2", "--quiet"],
         tmp_path)
    assert capsys.readouterr().err == ""
