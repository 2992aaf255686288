"""Save / load: the time of a round trip, and the memory that refusing a bomb takes.

Round trip: a DISAL learner on a SmallCNN (width 32) fitted on 1,000 of the 8x8 digits
(float32, plus 200 taught in one cycle: snapshot, training dynamics and Adam state all saved),
saved and loaded `--repeats` times; the median is reported, next to joblib.dump / joblib.load
(pickle) of the same learner in the same process as the baseline.

Bomb: the issue's case, a save of under 1 MB whose X_labeled.npy inflates to 800 MB (a deflate
stream of zeros behind a consistent npy header), refused by ActiveLearner.load; the peak of
Python allocations during the refusal (tracemalloc) and the time it takes.

Hostile files of issue 20, built from the same valid save, each refused by ActiveLearner.load:
the time, the peak of Python allocations (tracemalloc: nothing is allocated by torch before
they are refused) and the error. The worst of them is reported as such.

    python benchmarks/bench_persistence.py            # 5 repeats
    python benchmarks/bench_persistence.py --quick    # 2 repeats, 600 digits

Writes benchmarks/results/persistence[_quick].json (with the CPU model and thread count).
"""

import argparse
import json
import os
import statistics
import struct
import sys
import tempfile
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import joblib
import numpy as np
import torch
from numpy.lib import format as npy_format

from skal import ActiveLearner, ActiveNet
from skal.datasets import load_digits_images
from skal.models import SmallCNN
from skal.selectors import DISAL
from skal._provenance import machine

BOMB_ROWS, BOMB_FEATURES = 40_000_000, 5  # x float32 = 800 MB


def fitted_learner(n):
    X, y = load_digits_images(return_X_y=True)
    net = ActiveNet(SmallCNN, module__width=32, max_epochs=2, batch_size=64, lr=1e-3,
                    optimizer=torch.optim.Adam, verbose=0)
    learner = ActiveLearner(net, DISAL(), classes=np.arange(10), random_state=0).fit(X[:n], y[:n])
    idx = learner.query(X[n:], 200)
    return learner.teach(X[n:][idx], y[n:][idx])


def _timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def round_trip(learner, folder, repeats):
    path, pickled = os.path.join(folder, "run.skal"), os.path.join(folder, "run.joblib")
    X = learner.X_labeled_[:50]
    learner.save(path)
    loaded = ActiveLearner.load(path)
    assert np.array_equal(loaded.predict_proba(X), learner.predict_proba(X))
    result = {"save_s": _timed(lambda: learner.save(path), repeats),
              "load_s": _timed(lambda: ActiveLearner.load(path), repeats),
              "file_mb": os.path.getsize(path) / 1e6,
              "joblib_dump_s": _timed(lambda: joblib.dump(learner, pickled), repeats),
              "joblib_load_s": _timed(lambda: joblib.load(pickled), repeats),
              "joblib_file_mb": os.path.getsize(pickled) / 1e6,
              "n_labeled": len(learner.y_labeled_)}
    result["round_trip_s"] = result["save_s"] + result["load_s"]
    result["ratio_to_joblib"] = result["round_trip_s"] / (result["joblib_dump_s"] + result["joblib_load_s"])
    return result


def write_bomb(valid, target):
    """``valid`` with X_labeled.npy replaced by 800 MB of deflated zeros (written by hand)."""
    header = _npy_header((BOMB_ROWS, BOMB_FEATURES))
    chunk, total = 8 << 20, BOMB_ROWS * BOMB_FEATURES * 4
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    # a full flush resets the compressor: every chunk of zeros deflates to the same bytes
    stream = compressor.compress(header) + compressor.flush(zlib.Z_FULL_FLUSH)
    piece = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    stream += piece * (total // chunk) + compressor.flush()
    crc, zeros = zlib.crc32(header), bytes(chunk)
    for _ in range(total // chunk):
        crc = zlib.crc32(zeros, crc)
    entries = []
    with zipfile.ZipFile(valid) as archive:
        for info in archive.infolist():
            data = archive.read(info)
            if info.filename == "X_labeled.npy":
                entries.append((info.filename, zipfile.ZIP_DEFLATED, stream, crc, len(header) + total))
            else:
                payload = zlib.compress(data)[2:-4] if info.compress_type == zipfile.ZIP_DEFLATED else data
                entries.append((info.filename, info.compress_type, payload, zlib.crc32(data), len(data)))
    _raw_zip(target, entries)
    return len(header) + total


def _npy_header(shape):
    import io

    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def refuse_bomb(valid, folder):
    target = os.path.join(folder, "bomb.skal")
    inflated = write_bomb(valid, target)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        ActiveLearner.load(target)
    except ValueError as error:
        message = str(error)
    else:
        raise AssertionError("the bomb loaded")
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"file_mb": os.path.getsize(target) / 1e6, "inflated_mb": inflated / 1e6,
            "peak_traced_mib": peak / 2**20, "seconds": seconds, "error": message.split(": ", 1)[1]}


def _raw_zip(path, entries):
    """A zip written by hand: entries (name, method, payload, crc, declared size)."""
    with open(path, "wb") as f:
        central = []
        for name, method, payload, crc, size in entries:
            offset, raw = f.tell(), name.encode()
            f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(payload), size,
                                len(raw), 0) + raw + payload)
            central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc,
                                       len(payload), size, len(raw), 0, 0, 0, 0, 0, offset) + raw)
        start = f.tell()
        f.write(b"".join(central))
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), f.tell() - start, start, 0))


def _entries(valid, **replace):
    out = []
    with zipfile.ZipFile(valid) as archive:
        for info in archive.infolist():
            data = archive.read(info)
            if info.filename in replace:
                out.append((info.filename, *replace.pop(info.filename)))
            elif info.compress_type == zipfile.ZIP_DEFLATED:
                out.append((info.filename, 8, zlib.compress(data)[2:-4], zlib.crc32(data), len(data)))
            else:
                out.append((info.filename, 0, data, zlib.crc32(data), len(data)))
    return out + [(name, *entry) for name, entry in replace.items()]


def _json_edit(valid, edit):
    with zipfile.ZipFile(valid) as archive:
        meta = json.loads(archive.read("learner.json"))
    edit(meta["params"]["estimator"]["params"])
    text = json.dumps(meta).encode()
    return (0, text, zlib.crc32(text), len(text))


def _zeros_stream(prefix, total):
    chunk = 8 << 20
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    piece = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc, zeros = zlib.crc32(prefix), bytes(chunk)
    for _ in range(total // chunk):
        crc = zlib.crc32(zeros, crc)
    return head + piece * (total // chunk) + compressor.flush(), crc


def hostile_files(valid, folder):
    """name -> path of each hostile file of issue 20."""
    import bz2

    gib, gib_crc = _zeros_stream(b"[", 1 << 30)
    objects = b"[" + b"{}," * 10_000_000 + b"{}]"
    u0 = _npy_raw((10**12,), "<U0")

    def drop_hidden(params):
        params.pop("module__hidden_sizes", None)

    cases = {
        "learner.json bzip2, 256 MiB declared 1,000 B": _entries(valid, **{"learner.json": (
            12, bz2.compress(bytes(256 << 20), 9), 0, 1000)}),
        "learner.json deflate, 1 GiB declared 1,000 B": _entries(valid, **{"learner.json": (8, gib, gib_crc, 1000)}),
        "learner.json deflate, 1 GiB declared 30 MiB": _entries(valid, **{"learner.json": (8, gib, gib_crc, 30 << 20)}),
        "learner.json of 10 million {} (29 MiB, stored)": _entries(valid, **{"learner.json": (
            0, objects, zlib.crc32(objects), len(objects))}),
        "hidden_sizes of 2 million entries": _entries(valid, **{"learner.json": _json_edit(
            valid, lambda p: p.update(module__hidden_sizes={"__tuple__": [1] * 2_000_000}))}),
        "a 4 MB dotted name": _entries(valid, **{"learner.json": _json_edit(
            valid, lambda p: p.update(module={"__type__": "a." * 2_000_000 + "b:C"}))}),
        "40,000 members": _entries(valid, **{f"x{i}.npy": (0, b"", 0, 0) for i in range(40_000)}),
        "y_labeled.npy <U0 of 10**12 items": _entries(valid, **{"y_labeled.npy": (0, u0, zlib.crc32(u0), len(u0))}),
        "nn.Transformer num_encoder_layers=10**8": _entries(valid, **{"learner.json": _json_edit(
            valid, lambda p: (drop_hidden(p), p.update(module={"__type__": "torch.nn.modules.transformer:Transformer"},
                                                       module__num_encoder_layers=10**8)))}),
        "compile=True, compile__options cpp.cxx shell command": _entries(valid, **{"learner.json": _json_edit(
            valid, lambda p: p.update(compile=True, compile__options={"__dict__": {"cpp.cxx": {"__tuple__": [
                "sh -c 'touch PWNED'"]}}}))}),
        "resnet18_cifar weights=IMAGENET1K_V1": _entries(valid, **{"learner.json": _json_edit(
            valid, lambda p: (drop_hidden(p), p.update(module={"__function__": "skal.models:resnet18_cifar"},
                                                       module__weights="IMAGENET1K_V1")))}),
    }
    paths = {}
    for i, (name, entries) in enumerate(cases.items()):
        paths[name] = os.path.join(folder, f"hostile{i}.skal")
        _raw_zip(paths[name], entries)
    return paths


def _npy_raw(shape, descr):
    text = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def refuse_hostile(valid, folder):
    from skal import _trust

    _trust.default_lookup("sklearn.pipeline.Pipeline")  # scikit-learn's list, imported once
    rows = []
    for name, path in hostile_files(valid, folder).items():
        tracemalloc.start()
        start, cpu = time.perf_counter(), time.process_time()
        try:
            ActiveLearner.load(path)
        except ValueError as error:
            message = str(error)
        else:
            raise AssertionError(f"{name} loaded")
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append({"file": name, "file_mb": os.path.getsize(path) / 1e6, "seconds": seconds, "cpu_seconds": cpu,
                     "peak_traced_mib": peak / 2**20, "message_bytes": len(message.encode()),
                     "error": message.split(": ", 1)[1][:160]})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    repeats = args.repeats or (2 if args.quick else 5)
    n = 600 if args.quick else 1000
    learner = fitted_learner(n)
    with tempfile.TemporaryDirectory() as folder:
        trip = round_trip(learner, folder, repeats)
        bomb = refuse_bomb(os.path.join(folder, "run.skal"), folder)
        hostile = refuse_hostile(os.path.join(folder, "run.skal"), folder)
    print(f"| learner | labeled | file | save | load | round trip | joblib dump + load | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| SmallCNN(32), DISAL, Adam | {trip['n_labeled']} | {trip['file_mb']:.2f} MB | "
          f"{trip['save_s'] * 1e3:.0f} ms | {trip['load_s'] * 1e3:.0f} ms | {trip['round_trip_s'] * 1e3:.0f} ms | "
          f"{(trip['joblib_dump_s'] + trip['joblib_load_s']) * 1e3:.0f} ms | {trip['ratio_to_joblib']:.2f} |")
    print()
    print("| bomb | file | inflates to | peak Python memory refusing it | time | error |")
    print("|---|---:|---:|---:|---:|---|")
    print(f"| deflated X_labeled.npy | {bomb['file_mb']:.2f} MB | {bomb['inflated_mb']:.0f} MB | "
          f"{bomb['peak_traced_mib']:.2f} MiB | {bomb['seconds'] * 1e3:.0f} ms | {bomb['error']} |")
    print()
    print("| hostile file (issue 20) | file | time (wall) | CPU time | peak Python memory | message | error |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for row in hostile:
        print(f"| {row['file']} | {row['file_mb']:.2f} MB | {row['seconds'] * 1e3:.0f} ms | "
              f"{row['cpu_seconds'] * 1e3:.0f} ms | "
              f"{row['peak_traced_mib']:.1f} MiB | {row['message_bytes']} B | {row['error']} |")
    worst_time = max(hostile, key=lambda row: row["seconds"])
    worst_memory = max(hostile, key=lambda row: row["peak_traced_mib"])
    print(f"slowest: {worst_time['file']} ({worst_time['seconds'] * 1e3:.0f} ms); largest peak: "
          f"{worst_memory['file']} ({worst_memory['peak_traced_mib']:.1f} MiB)")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    name = "persistence_quick.json" if args.quick else "persistence.json"
    (out / name).write_text(json.dumps({
        "round_trip": trip, "bomb": bomb, "hostile": hostile, "repeats": repeats, "machine": machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": sys.version.split()[0], "load_average": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
