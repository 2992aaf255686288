"""Helpers shared by the hostile-save tests (test_hostile_saves.py, test_hostile_values.py)."""

import re
import time
import tracemalloc
import zipfile

import pytest

from skal import ActiveLearner


def members(path):
    """The save's members: ``{name: (bytes, compress_type)}``."""
    with zipfile.ZipFile(path) as archive:
        return {i.filename: (archive.read(i), i.compress_type) for i in archive.infolist()}


def write(path, members):
    """Write ``members`` (as :func:`members` returns them) as the zip archive ``path``."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, (data, method) in members.items():
            archive.writestr(name, data, compress_type=method)
    return path


def refused_cheaply(path, pattern):
    """Load ``path``: a ValueError matching ``pattern`` in < 2 s of CPU time (the machine may be
    shared), < 100 MiB peak, message < 1 kB.

    Returns the message.
    """
    tracemalloc.start()
    start = time.process_time()
    try:
        with pytest.raises(ValueError) as info:
            ActiveLearner.load(path)
        elapsed = time.process_time() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert re.search(pattern, message), message
    assert len(message.encode()) < 1000, len(message)
    assert elapsed < 2.0, f"{elapsed:.2f} s"
    assert peak < 100 << 20, f"peak {peak / 2**20:.1f} MiB"
    return message
