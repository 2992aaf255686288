"""``skal simulate`` given hostile files (issue 20): each case a crafted file or command.

Every one ends as ``skal simulate: error: ...`` with exit status 2, before anything trains,
in little time: fifos and devices are refused before they are opened (a fifo would block
for ever, /dev/zero never end), reads are capped, nesting and huge declared arrays are
refused before anything is built, and features that overflow float32 are refused instead of
diverging into a FloatingPointError traceback.
"""

import io
import os
import re
import socket
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from skal import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def no_training(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "_preflight", lambda *args, **kwargs: calls.append("preflight"))
    monkeypatch.setattr(cli, "active_learning_curve", lambda *args, **kwargs: calls.append("campaign"))
    yield calls
    assert calls == []  # refused before anything trained


def _usage_error(argv, capsys):
    """Run ``skal simulate ARGV`` in this process: exit status 2 and the error line (< 1 kB)."""
    tracemalloc.start()
    start = time.process_time()
    try:
        with pytest.raises(SystemExit) as info:
            cli.main(["simulate", "--quiet", *map(str, argv)])
        elapsed = time.process_time() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("skal simulate: error: ") and len(line) < 1000, line
    assert elapsed < 5 and peak < 100 << 20, (elapsed, peak)
    return line[len("skal simulate: error: "):]


def _npy_header(shape, descr):
    text = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def _npz(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


Y = np.arange(60) % 3


# --- --config ----------------------------------------------------------------------------------


def test_config_dev_zero_is_refused_before_reading(tmp_path, capsys, no_training):
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    assert _usage_error(["--config", tmp_path / "zero.json"], capsys) == (
        f"--config {tmp_path / 'zero.json'}: is a character device, not a regular file")


def test_config_directory_and_socket_are_refused(tmp_path, capsys, no_training):
    (tmp_path / "dir.json").mkdir()
    assert _usage_error(["--config", tmp_path / "dir.json"], capsys) == (
        f"--config {tmp_path / 'dir.json'}: is a directory, not a regular file")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "s.json"))
        assert _usage_error(["--config", tmp_path / "s.json"], capsys) == (
            f"--config {tmp_path / 's.json'}: is a socket, not a regular file")
    finally:
        server.close()


def test_config_larger_than_the_cap_is_refused(tmp_path, capsys, no_training):
    (tmp_path / "big.json").write_bytes(b" " * (cli.CONFIG_LIMIT + 1))
    assert _usage_error(["--config", tmp_path / "big.json"], capsys) == (
        f"--config {tmp_path / 'big.json'}: larger than 16777216 bytes, more than such a file holds")


@pytest.mark.parametrize("name, text, message", [
    ("deep.json", '{"a":' * 5000 + "1" + "}" * 5000, r"nested (too deeply to be a configuration|deeper than 64 levels)"),
    ("deep.toml", "a = " + "[" * 5000 + "]" * 5000, r"nested too deeply to be a configuration"),
    ("wide.json", "[" + "0," * 2_000_000 + "0]", r"holds about 2000002 values, over the limit of 1048576"),
], ids=["json-5000-levels", "toml-5000-levels", "json-2M-values"])
def test_config_bombs_are_refused(tmp_path, capsys, no_training, name, text, message):
    (tmp_path / name).write_text(text)
    line = _usage_error(["--config", tmp_path / name], capsys)
    assert line.startswith(f"--config {tmp_path / name}: ") and re.search(message, line), line


@pytest.mark.parametrize("option, name", [("--config", "fifo.json"), ("--dataset", "fifo.npz")])
def test_a_fifo_is_refused_without_blocking(tmp_path, option, name):
    os.mkfifo(tmp_path / name)
    done = subprocess.run([sys.executable, "-m", "skal.cli", "simulate", option, str(tmp_path / name),
                           "--out", ""], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2
    expected = (f"--config {tmp_path / name}: is a fifo, not a regular file" if option == "--config" else
                f"cannot read {tmp_path / name}: it is a fifo, not a regular file")
    assert done.stderr.splitlines()[-1] == f"skal simulate: error: {expected}"


# --- --dataset ---------------------------------------------------------------------------------


def test_dataset_device_and_directory_are_refused(tmp_path, capsys, no_training):
    (tmp_path / "zero.npz").symlink_to("/dev/zero")
    assert _usage_error(["--dataset", tmp_path / "zero.npz"], capsys) == (
        f"cannot read {tmp_path / 'zero.npz'}: it is a character device, not a regular file")
    (tmp_path / "dir.npz").mkdir()
    assert _usage_error(["--dataset", tmp_path / "dir.npz"], capsys) == (
        f"cannot read {tmp_path / 'dir.npz'}: it is a directory, not a regular file")


@pytest.mark.parametrize("x_member, message", [
    (lambda: _npy_header((10**12, 4), "<f8") + bytes(64),
     r"X: its header describes 32000000000128 bytes \(shape \(1000000000000, 4\), dtype float64\), but the "
     r"member holds 192"),
    (lambda: _npy_header((-60, -4), "<f8") + bytes(8 * 240), r"X: its header declares the shape \(-60, -4\)"),
    (lambda: _npy_header((10**12,), "<U0"), r"X: has dtype <U0; pass arrays of numbers or strings"),
    (lambda: _npy_header((10**12,), "|S0"), r"X: has dtype \|S0; pass arrays of numbers or strings"),
], ids=["rows-1e12", "negative-shape", "U0", "S0"])
def test_npz_headers_are_checked_before_allocating(tmp_path, capsys, no_training, x_member, message):
    path = _npz(tmp_path / "odd.npz", {"X.npy": x_member(), "y.npy": _npy(Y)})
    line = _usage_error(["--dataset", path], capsys)
    assert re.fullmatch(rf"cannot read {re.escape(str(path))}: " + message, line), line


def test_features_that_overflow_float32_are_refused_before_training(tmp_path, capsys, no_training):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "huge.npz", X=rng.normal(size=(300, 4)) * 1e30, y=np.arange(300) % 2)
    line = _usage_error(["--dataset", tmp_path / "huge.npz", "--no-standardize", "--initial", 20,
                         "--query", 10, "--cycles", 1, "--repeats", 1, "--out", ""], capsys)
    assert line.startswith("--no-standardize: features reach ") and "float32 sums of squares overflow" in line


@pytest.mark.parametrize("error, message", [
    (FloatingPointError("Training diverged: the training loss is nan in epoch 2."),
     "the data's numbers overflow: Training diverged: the training loss is nan in epoch 2."),
    (MemoryError("Unable to allocate 3.64 TiB"), "the data is too large for this machine's memory: Unable to "
                                                 "allocate 3.64 TiB"),
    (RecursionError("maximum recursion depth exceeded"), "the data is nested too deeply: maximum recursion depth "
                                                         "exceeded"),
], ids=["floating-point", "memory", "recursion"])
def test_errors_from_bad_data_are_usage_errors_not_tracebacks(monkeypatch, capsys, error, message):
    def fail(args, out=None):
        raise error

    monkeypatch.setattr(cli, "simulate", fail)
    assert _usage_error([], capsys) == message


# --- --out -------------------------------------------------------------------------------------


def test_out_and_result_files_that_are_fifos_are_refused(tmp_path, capsys, no_training):
    os.mkfifo(tmp_path / "fifo")
    assert _usage_error(["--out", tmp_path / "fifo", "--initial", 20, "--query", 10, "--cycles", 1,
                         "--repeats", 1], capsys) == f"--out {tmp_path / 'fifo'}: exists and is not a directory (a fifo)"
    (tmp_path / "out").mkdir()
    os.mkfifo(tmp_path / "out" / "results.csv")
    assert _usage_error(["--out", tmp_path / "out", "--initial", 20, "--query", 10, "--cycles", 1,
                         "--repeats", 1], capsys) == (
        f"--out {tmp_path / 'out'}: results.csv exists and is not a file (a fifo)")
