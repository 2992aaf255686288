"""Every refusal of `skal simulate` is `skal simulate: error: ...` with exit status 2, before training."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from skal.cli import main

rng = np.random.default_rng(0)
X = rng.normal(size=(80, 4)).astype(np.float32)
Y = X[:, :2].argmax(1)
GOOD = dict(X=X, y=Y)


def _with(array, index, value):
    array = array.astype(np.result_type(array, type(value)))
    array[index] = value
    return array


# (id, argv after "simulate", arrays of an .npz passed as --dataset (or None), regex of the message).
# "OUT" stands for the test's output directory, "FILE" for an existing regular file.
CASES = [
    # --out is checked (created and test-written) before anything trains
    ("out-is-a-file", ["--out", "FILE"], None, r"--out .*file\.txt: exists and is not a directory$"),
    ("out-under-a-file", ["--out", "FILE/sub"], None, r"--out .*file\.txt/sub: cannot write there: Not a directory$"),
    ("out-cannot-be-created", ["--out", "/sys/skal-simulate-out"], None,
     r"--out /sys/skal-simulate-out: cannot write there: (Operation not permitted|Permission denied|"
     r"Read-only file system)$"),
    ("out-read-only", ["--out", "/sys"], None,
     r"--out /sys: cannot write there: (Operation not permitted|Permission denied|Read-only file system)$"),
    # devices
    ("device-meta", ["--device", "meta"], None,
     r"argument --device: meta: skal simulate trains on cpu, cuda, cuda:N or mps, not on 'meta'$"),
    ("device-unknown", ["--device", "bogus"], None,
     r"argument --device: unknown device 'bogus'; use cpu, cuda, cuda:N or mps$"),
    ("device-missing-gpu", ["--device", "cuda:99"], None,
     r"argument --device: cuda:99: (this machine has \d+ CUDA device\(s\)|CUDA is not available on this machine)$"),
    pytest.param("device-mps", ["--device", "mps"], None,
                 r"argument --device: mps: MPS is not available on this machine$", id="device-mps",
                 marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")),
    # counts are bounded, and the bound is said
    ("repeats-huge", ["--repeats", str(10**30)], None, rf"argument --repeats: must be at most 1,000, got {10**30}$"),
    ("cycles-huge", ["--cycles", str(10**30)], None, rf"argument --cycles: must be at most 10,000, got {10**30}$"),
    ("epochs-huge", ["--epochs", "100001"], None, r"argument --epochs: must be at most 100,000, got 100001$"),
    ("initial-huge", ["--initial", str(10**10)], None,
     r"argument --initial: must be at most 1,000,000,000, got 10000000000$"),
    ("n-jobs-zero", ["--n-jobs", "0"], None, r"argument --n-jobs: must be -1 \(all CPUs\) or an integer in \[1, 1024\], got 0$"),
    ("n-jobs-float", ["--n-jobs", "1.5"], None, r"argument --n-jobs: must be -1 .*, got 1\.5$"),
    ("budget", ["--initial", "1000", "--query", "100", "--cycles", "3"], None,
     r"--initial \+ --cycles \* --query = 1000 \+ 3 \* 100 = 1300 exceeds the pool of 1257 samples$"),
    # files that are not .npz archives of usable arrays
    ("npy-renamed", ["--dataset", "NPY"], None,
     r"cannot read .*renamed\.npz: it holds a single array \(an \.npy file\), not an \.npz archive; "
     r"write one with np\.savez\(path, X=X, y=y\)$"),
    ("npz-junk", ["--dataset", "JUNK"], None, r"cannot read .*junk\.npz: "),
    ("npz-empty-file", ["--dataset", "EMPTY"], None, r"cannot read .*empty\.npz: "),
    ("y-continuous", [], dict(X=X, y=Y + 0.5), r"\.npz: y must hold class labels \(integers or strings\), "
                                               r"got non-integer values such as [01]\.5$"),
    ("y-nan", [], dict(X=X, y=_with(Y, 3, np.nan)), r"\.npz: y contains NaN$"),
    ("y-inf", [], dict(X=X, y=_with(Y, 3, np.inf)), r"\.npz: y contains infinity$"),
    ("y-complex", [], dict(X=X, y=Y + 1j), r"\.npz: y must hold class labels \(integers or strings\), got dtype complex128$"),
    ("y_test-nan", [], dict(GOOD, X_test=X[:20], y_test=_with(Y[:20], 2, np.nan)), r"\.npz: y_test contains NaN$"),
    ("y_test-continuous", [], dict(GOOD, X_test=X[:20], y_test=Y[:20] * 0.3),
     r"\.npz: y_test must hold class labels .*non-integer values such as 0\.3$"),
    ("y_test-unseen-label", [], dict(GOOD, X_test=X[:20], y_test=_with(Y[:20], 0, 7)),
     r"\.npz: y_test has labels that y lacks: \[7\]$"),
    ("y_test-strings", [], dict(GOOD, X_test=X[:20], y_test=np.array(["a", "b"])[Y[:20]]),
     r"\.npz: y_test holds strings but y holds numbers$"),
    ("X-complex", [], dict(X=X.astype(np.complex128) + 1j, y=Y), r"\.npz: X holds complex numbers \(complex128\); pass real features"),
    ("X_test-complex", [], dict(GOOD, X_test=X[:20] * 1j, y_test=Y[:20]), r"\.npz: X_test holds complex numbers"),
    ("X-strings", [], dict(X=X.astype(str), y=Y), r"\.npz: X must hold numbers, got dtype <U\d+$"),
    ("X-overflows-float32", [], dict(X=_with(X.astype(np.float64), (3, 1), 1e300), y=Y),
     r"\.npz: X contains NaN or infinity \(after conversion to float32\)$"),
    ("y-one-class", [], dict(X=X, y=np.zeros(80, dtype=int)), r"y has a single class \(0\); a campaign needs at least 2$"),
    ("y-class-of-one", [], dict(X=X, y=_with(Y, 5, 2)),
     r"y: class 2 has a single sample; a stratified test split needs at least 2 per class"),
    ("test-size-too-small", ["--test-size", "0.001"], None,
     r"--test-size 0\.001: cannot split off a stratified test set: The test_size = 2 should be"),
    # options that do not fit the data
    ("data-path-without-fashion", ["--data-path", "OUT"], None,
     r"--data-path is only read with --dataset fashion-mnist .*, not with --dataset digits$"),
    ("data-path-not-a-directory", ["--dataset", "fashion-mnist", "--data-path", "FILE"], None,
     r"--data-path .*file\.txt: not a directory$"),
    ("model-cnn-on-a-table", ["--model", "cnn"], GOOD,
     r"--model cnn needs images of shape \(n_samples, C, H, W\); the data has samples of shape \(4,\)$"),
    ("model-unknown", ["--model", "resnet"], None, r"argument --model: invalid choice: 'resnet'"),
    # selectors that cannot work with the net, found by the preflight or before it
    ("tidal-on-the-mlp", ["--selectors", "random,tidal"], None,
     r"--selectors tidal: TiDAL trains a head on the multi-level features of a convolutional net"),
    ("coreset-subset-below-query", ["--selectors", "coreset(subset=5)", "--query", "10"], None,
     r"--selectors coreset\(subset=5\): n=10 exceeds CoreSet's subset=5: raise subset"),
]


@pytest.mark.parametrize("name, argv, arrays, match", [
    c if isinstance(c, type(pytest.param())) else pytest.param(*c, id=c[0]) for c in CASES])
def test_the_command_refuses_with_a_usage_error_before_training(name, argv, arrays, match, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("not a directory")
    out = tmp_path / "out"
    np.save(tmp_path / "arr.npy", X)
    (tmp_path / "renamed.npz").write_bytes((tmp_path / "arr.npy").read_bytes())
    (tmp_path / "junk.npz").write_bytes(b"hello, world")
    (tmp_path / "empty.npz").write_bytes(b"")
    places = {"FILE": str(tmp_path / "file.txt"), "NPY": str(tmp_path / "renamed.npz"),
              "JUNK": str(tmp_path / "junk.npz"), "EMPTY": str(tmp_path / "empty.npz"), "OUT": str(out)}
    argv = [re.sub(r"^(FILE|NPY|JUNK|EMPTY|OUT)", lambda m: places[m.group()], a) for a in argv]
    if arrays is not None:
        np.savez(tmp_path / "data.npz", **arrays)
        argv = ["--dataset", str(tmp_path / "data.npz"), *argv]
    for flag, value in {"--initial": "10", "--query": "5", "--cycles": "1", "--epochs": "2",
                        "--repeats": "1", "--out": str(out)}.items():
        if flag not in argv:
            argv += [flag, value]
    with pytest.raises(SystemExit) as info:
        main(["simulate", *argv, "--quiet"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    message = err.strip().splitlines()[-1]
    assert message.startswith("skal simulate: error: "), err
    assert re.search(match, message), message
    assert "Traceback" not in err
    assert not out.exists()  # nothing was trained or written


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits; the /sys cases cover it")
def test_a_directory_without_write_permission_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--initial", "10", "--query", "5", "--cycles", "1", "--out", str(locked / "out")])
    assert info.value.code == 2
    assert re.search(r"--out .*locked/out: cannot write there: Permission denied$",
                     capsys.readouterr().err.strip().splitlines()[-1])


def test_a_result_file_that_is_a_directory_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "results.json").mkdir()
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--initial", "10", "--query", "5", "--cycles", "1", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"skal simulate: error: --out {tmp_path}: results.json exists and is not a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_missing_fashion_mnist_files_advise_the_commands_option(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr("skal.datasets.FASHION_MNIST_DEBIAN", empty / "debian")
    monkeypatch.setenv("HOME", str(empty))
    monkeypatch.delenv("TORCHVISION_ROOT", raising=False)
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--dataset", "fashion-mnist", "--data-path", str(empty), "--out", str(tmp_path / "out")])
    assert info.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("skal simulate: error: --dataset fashion-mnist: Fashion-MNIST train files "
                              f"(train-images-idx3-ubyte, train-labels-idx1-ubyte, optionally .gz) not "
                              f"found in: {empty}, {empty}/FashionMNIST/raw, ")
    assert message.endswith("Install Debian's package (apt-get install dataset-fashion-mnist), or pass "
                            "--data-path DIR: a directory holding the IDX files, or a torchvision root "
                            "(as torchvision.datasets.FashionMNIST(root, download=True) fills it)")
    assert "path=root" not in message


def test_a_failing_campaign_is_reported_not_raised(tmp_path, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr("skal.cli.active_learning_curve", fail)
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--initial", "10", "--query", "5", "--cycles", "1", "--quiet", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "skal simulate: error: the campaign failed: CUDA out of memory")


def test_the_console_script_exits_2_with_the_message_and_no_traceback(tmp_path):
    np.save(tmp_path / "arr.npy", X)
    (tmp_path / "arr.npz").write_bytes((tmp_path / "arr.npy").read_bytes())
    done = subprocess.run([sys.executable, "-m", "skal.cli", "simulate", "--dataset", str(tmp_path / "arr.npz"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith(f"skal simulate: error: cannot read {tmp_path / 'arr.npz'}: "
                                                   "it holds a single array")
    assert "Traceback" not in done.stderr and done.stdout == ""
