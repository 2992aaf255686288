"""The `skal` command and the data it reads."""

import csv
import io
import json
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from skal import ActiveLearner, ActiveNet
from skal._cli_data import CommandError
from skal.cli import _one_torch_thread, build_learners, build_parser, main, model_for, simulate
from skal.datasets import FASHION_MNIST_DEBIAN, load_digits_images, load_fashion_mnist
from skal.model_selection import active_learning_curve
from skal.models import MLP, SmallCNN
from skal.selectors import DISAL, Entropy, Margin

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


TINY = ["--initial", "20", "--query", "10", "--cycles", "1", "--epochs", "2", "--repeats", "2"]


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
    # random and coreset train alike (no dynamic loss) from the same initial set and seed
    np.testing.assert_array_equal(result.scores[1, :, 0], result.scores[2, :, 0])
    with open(tmp_path / "results.csv") as f:
        records = list(csv.DictReader(f))
    assert len(records) == 3 * 2 * 3
    assert {r["selector"] for r in records} == {"disal", "random", "coreset"}
    data = json.loads((tmp_path / "results.json").read_text())
    np.testing.assert_allclose(data["scores"], result.scores)
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_is_reproducible(tmp_path):
    argv = ["simulate", *TINY, "--quiet"]
    first = _run(argv, tmp_path / "a")[1]
    second = _run(argv, tmp_path / "b")[1]
    strip = [line for line in first.splitlines() if not line.startswith("| time")]
    assert strip == [line for line in second.splitlines() if not line.startswith("| time")]


def test_the_default_job_runs_at_least_three_repeats_of_an_mlp_on_standardised_digits():
    args = build_parser().parse_args(["simulate"])
    assert (args.dataset, args.model, args.repeats, args.initial, args.query, args.cycles,
            args.epochs, args.standardize, args.n_jobs) == ("digits", "auto", 5, 150, 100, 5, 30, True, 1)
    assert [spec.text for spec in args.selectors] == ["margin", "disal", "random"]
    X, _ = load_digits_images(return_X_y=True)
    assert model_for("auto", X) == "mlp"  # 8x8 images are below CNN_MIN_SIDE
    assert model_for("auto", np.zeros((2, 1, 28, 28))) == "cnn"
    assert model_for("auto", np.zeros((2, 5))) == "mlp"
    learners = build_learners(args.selectors, "mlp", X.reshape(len(X), -1), np.arange(10),
                              epochs=30, device="cpu")
    net = learners["disal"].estimator
    assert net.module is MLP and net.module__in_features == 64 and net.module__hidden_sizes == (128,)
    assert (net.optimizer, net.lr, net.optimizer__momentum, net.batch_size) == (torch.optim.SGD, 0.05, 0.9, 32)
    # one net for both; only DISAL's selector declares the dynamic loss (and the snapshot)
    assert learners["random"].estimator is net
    assert [name for name, _ in learners["disal"].selector.training_needs().parts] == [
        "dynamics", "dynamic_loss", "snapshot"]
    assert learners["random"].selector.training_needs().parts == ()


def test_the_digits_path_is_warning_free(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result, _ = _run(["simulate", *TINY, "--selectors", "disal,random,coreset", "--quiet"], tmp_path)
    assert result.n_labeled.tolist() == [20, 30]


def test_a_disal_campaign_of_one_epoch_runs_on_tabular_data(tmp_path):
    # the MLP is built with its input width, so epoch T-1's snapshot exists after one epoch
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6)).astype(np.float32)
    np.savez(tmp_path / "data.npz", X=X, y=(X[:, 0] > 0).astype(int))
    result, _ = _run(["simulate", "--dataset", str(tmp_path / "data.npz"), "--initial", "10",
                      "--query", "10", "--cycles", "2", "--epochs", "1", "--repeats", "1",
                      "--selectors", "disal", "--quiet"], tmp_path)
    assert result.n_labeled.tolist() == [10, 20, 30]
    assert result.class_counts[0, 0, 1:].sum() == 20


def _capture_campaign(monkeypatch):
    """Record the arrays skal simulate hands to active_learning_curve."""
    import skal.cli

    seen = {}
    real = skal.cli.active_learning_curve

    def spy(learners, X, y, **kwargs):
        seen.update(learners=learners, X=X, y=y, **kwargs)
        return real(learners, X, y, **kwargs)

    monkeypatch.setattr(skal.cli, "active_learning_curve", spy)
    return seen


def test_tabular_data_is_standardised_with_the_pools_statistics_only(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(100, 3)) * [1.0, 1e3, 1e-3] + [0.0, 5e3, 7e-3]).astype(np.float32)
    X_test = (X[:40] * 3 + 11).astype(np.float32)  # other statistics than the pool's
    y = (X[:, 0] > 0).astype(int)
    np.savez(tmp_path / "data.npz", X=X, y=y, X_test=X_test, y_test=y[:40])
    seen = _capture_campaign(monkeypatch)
    _run(["simulate", "--dataset", str(tmp_path / "data.npz"), *TINY, "--quiet"], tmp_path / "a")
    mean, std = X.astype(np.float64).mean(0), X.astype(np.float64).std(0)
    np.testing.assert_allclose(seen["X"], (X - mean) / std, atol=1e-5)
    np.testing.assert_allclose(seen["X_test"], (X_test - mean) / std, atol=1e-4)
    assert seen["X"].dtype == seen["X_test"].dtype == np.float32
    _run(["simulate", "--dataset", str(tmp_path / "data.npz"), *TINY, "--quiet", "--no-standardize"],
         tmp_path / "b")
    np.testing.assert_array_equal(seen["X"], X)
    np.testing.assert_array_equal(seen["X_test"], X_test)


def test_images_for_the_cnn_are_used_as_given(tmp_path, monkeypatch):
    seen = _capture_campaign(monkeypatch)
    _run(["simulate", *TINY, "--model", "cnn", "--quiet"], tmp_path)
    X, _ = load_digits_images(return_X_y=True)
    assert seen["X"].shape[1:] == (1, 8, 8)
    assert set(map(bytes, seen["X"])) <= set(map(bytes, X))  # rows of the images, unscaled
    assert next(iter(seen["learners"].values())).estimator.module is SmallCNN


def test_selector_specs_name_the_columns_and_configure_the_selectors(tmp_path, monkeypatch):
    seen = _capture_campaign(monkeypatch)
    result, text = _run(["simulate", *TINY, "--quiet", "--selectors",
                         "margin, entropy( batch = cluster ),disal(mode=literal,batch=stochastic)"],
                        tmp_path)
    names = ["margin", "entropy(batch=cluster)", "disal(mode=literal,batch=stochastic)"]
    assert result.names == names
    assert text.splitlines()[0] == "| cycle | labeled | " + " | ".join(names) + " |"
    with open(tmp_path / "results.csv") as f:
        assert {r["selector"] for r in csv.DictReader(f)} == set(names)
    selectors = [seen["learners"][name].selector for name in names]
    assert [type(s) for s in selectors] == [Margin, Entropy, DISAL]
    assert selectors[1].get_params() == {"batch": "cluster"}
    assert selectors[2].get_params() == {"weight": 1.0, "mode": "literal", "batch": "stochastic",
                                         "transitions": 1, "drift": "remove", "target_decay": None, "ramp_up": 0,
                                         "balance": "predicted", "snapshot_buffers": "previous"}


def test_a_spec_runs_the_campaign_the_same_learner_built_in_python_runs(tmp_path):
    """The command is active_learning_curve on its documented recipe, nothing hidden."""
    result, _ = _run(["simulate", *TINY, "--quiet", "--selectors", "entropy(batch=stochastic)"], tmp_path)
    X, y = load_digits_images(return_X_y=True)
    X, X_test, y, y_test = train_test_split(X.reshape(len(X), -1), y, test_size=0.3, stratify=y,
                                            random_state=0)
    scaler = StandardScaler().fit(X)
    net = ActiveNet(MLP, module__in_features=64, module__hidden_sizes=(128,), max_epochs=2,
                    batch_size=32, optimizer=torch.optim.SGD, lr=0.05, optimizer__momentum=0.9,
                    optimizer__weight_decay=5e-4, verbose=0)
    learner = ActiveLearner(net, Entropy(batch="stochastic"), classes=np.arange(10))
    with _one_torch_thread(1):
        expected = active_learning_curve(
            learner, scaler.transform(X).astype(np.float32), y,
            X_test=scaler.transform(X_test).astype(np.float32), y_test=y_test, initial_size=20,
            query_size=10, n_cycles=1, n_repeats=2, random_state=0)
    np.testing.assert_array_equal(result.scores, expected.scores)


def test_budget_larger_than_the_pool_is_refused_before_training(tmp_path):
    with pytest.raises(CommandError, match=r"--initial \+ --cycles \* --query = 150 \+ 20 \* 100 = 2150 "
                                          r"exceeds the pool of 1257 samples"):
        _run(["simulate", "--cycles", "20"], tmp_path)
    assert not any(tmp_path.iterdir())


def test_npz_dataset(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    np.savez(tmp_path / "data.npz", X=X, y=y)
    result, _ = _run(["simulate", "--dataset", str(tmp_path / "data.npz"), "--initial", "10",
                      "--query", "10", "--cycles", "1", "--epochs", "2", "--quiet"], tmp_path)
    assert result.n_labeled.tolist() == [10, 20]


def test_integral_float_and_string_labels_are_class_labels(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    runs = {}
    for name, labels in {"int": y, "float": y.astype(np.float64), "str": np.array(["a", "b"])[y]}.items():
        np.savez(tmp_path / f"{name}.npz", X=X, y=labels)
        runs[name] = _run(["simulate", "--dataset", str(tmp_path / f"{name}.npz"), *TINY, "--quiet"],
                          tmp_path / name)[0]
    np.testing.assert_array_equal(runs["float"].scores, runs["int"].scores)
    np.testing.assert_array_equal(runs["str"].scores, runs["int"].scores)
    assert runs["str"].classes.tolist() == ["a", "b"]


def test_unknown_selector_and_dataset_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--selectors", "disal,bogus"])
    assert exc.value.code == 2
    assert ("argument --selectors: unknown selector 'bogus'; choose from disal, tidal"
            in capsys.readouterr().err)
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
    for option in ["--dataset", "--data-path", "--selectors", "--model", "--initial", "--query",
                   "--cycles", "--repeats", "--epochs", "--pool-size", "--test-limit",
                   "--no-standardize", "--device", "--n-jobs", "--seed", "--out", "--quiet",
                   "--config"]:
        assert option in result.stdout


def test_parallel_campaigns_give_the_same_table(tmp_path):
    argv = ["simulate", *TINY, "--quiet"]
    one = _run(argv, tmp_path / "a")[0]
    two = _run([*argv, "--n-jobs", "2"], tmp_path / "b")[0]
    np.testing.assert_array_equal(one.scores, two.scores)


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
                         "--epochs", "10", "--repeats", "1", "--quiet"], tmp_path)
    assert result.n_labeled.tolist() == [50, 100]
    assert np.all(result.scores[:, :, -1] > 0.2)  # 10 classes: above chance with 100 labels


def _write_idx(directory, stem, array):
    import gzip

    header = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    with gzip.open(directory / f"{stem}.gz", "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_data_path_points_simulate_at_fashion_mnist_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = {split: rng.integers(0, 256, size=(n, 28, 28)) for split, n in (("train", 60), ("t10k", 30))}
    labels = {"train": np.arange(60) % 3, "t10k": np.arange(30) % 3}
    for split in ("train", "t10k"):
        _write_idx(tmp_path, f"{split}-images-idx3-ubyte", images[split])
        _write_idx(tmp_path, f"{split}-labels-idx1-ubyte", labels[split])
    seen = _capture_campaign(monkeypatch)
    _run(["simulate", "--dataset", "fashion-mnist", "--data-path", str(tmp_path), *TINY, "--quiet"],
         tmp_path / "out")
    np.testing.assert_allclose(seen["X"][:, 0], images["train"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(seen["y"], labels["train"])
    np.testing.assert_allclose(seen["X_test"][:, 0], images["t10k"] / 255.0, rtol=1e-6)
    assert next(iter(seen["learners"].values())).estimator.module is SmallCNN  # 28x28: the CNN


def test_progress_bars_for_epochs_and_pool_passes(tmp_path):
    from skal.callbacks import ProgressBars

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


SIM = [sys.executable, "-m", "skal.cli", "simulate", *TINY]


def test_a_redirected_stderr_gets_no_bars_and_a_closed_stdout_no_traceback(tmp_path):
    import shlex

    # stderr to a file, stdout into `head`, which closes it after the first line
    command = " ".join(map(shlex.quote, [*SIM, "--out", str(tmp_path / "out")]))
    done = subprocess.run(["bash", "-c", f"{command} 2>{tmp_path / 'stderr.txt'} | head -n 1"],
                          capture_output=True, text=True, check=True)
    written = (tmp_path / "stderr.txt").read_text()
    assert "\r" not in written and "\x1b" not in written
    assert written == ""  # no bars, no traceback (BrokenPipeError) either
    assert done.stdout == "skal simulate: digits (mlp), pool 1257, test 540, selectors margin, disal, random, 2 repeat(s)\n"
    # the results were written before the table met the closed pipe
    assert json.loads((tmp_path / "out" / "results.json").read_text())["names"] == ["margin", "disal", "random"]


def test_a_terminal_stderr_gets_the_bars(tmp_path):
    import fcntl
    import pty
    import struct
    import termios
    import threading

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # tqdm needs a width
    chunks = []

    def drain():
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:  # EIO once the child has closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        subprocess.run([*SIM, "--out", str(tmp_path / "out")], stderr=follower,
                       stdout=subprocess.DEVNULL, check=True)
    finally:
        os.close(follower)
        reader.join(timeout=30)
        os.close(leader)
    shown = b"".join(chunks).decode()
    assert "training" in shown and "campaigns" in shown and "\r" in shown


def test_wine_trains_to_chance_unless_standardised(tmp_path):
    from sklearn.datasets import load_wine

    X, y = load_wine(return_X_y=True)
    np.savez(tmp_path / "wine.npz", X=X, y=y)
    argv = ["simulate", "--dataset", str(tmp_path / "wine.npz"), "--initial", "20", "--query", "10",
            "--cycles", "1", "--repeats", "2", "--selectors", "random", "--quiet"]
    standardised = _run(argv, tmp_path / "a")[0].scores
    raw = _run([*argv, "--no-standardize"], tmp_path / "b")[0].scores
    assert standardised.min() > 0.9  # raw columns span 0.1 to 1,680: the net sees only the largest
    assert raw.max() < 0.5


def test_quiet_prints_only_the_table_and_nothing_on_stderr(tmp_path, capsys):
    _run(["simulate", *TINY, "--quiet"], tmp_path)
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""  # _run prints into its own buffer


def test_the_step_recipe_cuts_the_rate_at_80_percent_and_augments_the_cnn_images():
    from skal._cli_spec import parse_selectors
    from skal.cli import SELECTORS, build_learners

    X = np.random.default_rng(0).normal(size=(40, 1, 16, 16)).astype(np.float32)
    y = np.arange(40) % 4
    specs = parse_selectors("random", SELECTORS)
    plain = build_learners(specs, "cnn", X, np.arange(4), epochs=5, device="cpu")["random"].estimator
    step = build_learners(specs, "cnn", X, np.arange(4), epochs=5, device="cpu",
                          recipe="step")["random"].estimator
    assert plain.train_transform is None and plain.callbacks is None
    net = step.fit(X, y)
    np.testing.assert_allclose(net.history[:, "event_lr"], [0.05] * 4 + [0.005])
    crop, flip = step.train_transform.transforms
    assert (list(crop.size), crop.padding, flip.p) == ([16, 16], [2, 2, 2, 2], 0.5)
    mlp = build_learners(specs, "mlp", X.reshape(40, -1), np.arange(4), epochs=10, device="cpu",
                         recipe="step")["random"].estimator
    assert mlp.train_transform is None and dict(mlp.callbacks)["lr"].kwargs["milestones"] == [8]
