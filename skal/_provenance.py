"""What a campaign result records about its run: data checksums, parameters, seeds, software, machine."""

import datetime
import hashlib
import json
import os
import platform
import sys
import warnings

import numpy as np

from ._data import is_dataset, sample_shape
from ._training import final_net

# SIMD and matrix extensions that change which kernels torch and numpy run (and so the last
# bits of a result): x86 from /proc/cpuinfo "flags", Arm from "Features"
_CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2")


def campaign_record(data, learners, random_state, seeds, initial_sets):
    """``meta["provenance"]`` of active_learning_curve: what a rerun of the campaigns needs."""
    records = {}
    for name, learner in learners.items():  # a loop, not a comprehension: the warning's stacklevel
        records[name] = learner_record(name, learner)
    return {
        "data": data,
        "learners": records,
        "seeds": {"random_state": random_state_record(random_state),
                  "repeats": np.asarray(seeds).tolist(),
                  "initial_sets": [np.asarray(idx).tolist() for idx in initial_sets],
                  "note": "repeats: [initial-set seed, learner random_state] per repeat; "
                          "initial_sets: indices into the pool (X after any held-out split)"},
        "devices": {name: str(final_net(learner.estimator).device) for name, learner in learners.items()},
        "versions": versions(),
        "machine": machine(),
        "created": now(),
    }


def describe(data):
    """Shape, dtype and sha256 of an array's bytes (a torch Dataset: its length and sample shape)."""
    if data is None:
        return None
    if is_dataset(data):
        return {"type": f"{type(data).__module__}.{type(data).__qualname__}", "length": len(data),
                "sample_shape": list(sample_shape(data)), "sha256": None,
                "note": "a torch Dataset is not read to checksum it"}
    array = np.asarray(data)
    return {"shape": list(array.shape), "dtype": array.dtype.str, "sha256": checksum(array)}


def checksum(array):
    """sha256 of the array's C-order bytes; object arrays by the JSON of their values."""
    array = np.asarray(array)
    if array.dtype == object:
        return hashlib.sha256(json.dumps(array.tolist(), default=str).encode()).hexdigest()
    return hashlib.sha256(np.ascontiguousarray(array).view(np.uint8).reshape(-1)).hexdigest()


def learner_record(name, learner):
    """A learner's parameters as the save format encodes them (or why they cannot be).

    Arrays in the parameters (e.g. ISAL's reference set) larger than the save format writes
    inline are recorded by their shape, dtype and sha256 under ``"arrays"``, each named where
    the parameters refer to it (``{"__npy__": "params.<i>.npy"}``), not written out as JSON.
    """
    from ._persistence import encode

    arrays = []
    try:
        record = encode(learner, f"learner[{name!r}]", arrays=arrays)
        if arrays:
            record = {**record, "arrays": {f"params.{i}.npy": describe(a) for i, a in enumerate(arrays)}}
        return record
    except TypeError as error:
        warnings.warn(f"learner {name!r}: its parameters cannot be recorded in meta['provenance'] "
                      f"({error}); the result records its repr only.", UserWarning, stacklevel=4)  # the caller of active_learning_curve
        return {"repr": repr(learner), "not_encoded": str(error)}


def random_state_record(random_state):
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return None if random_state is None else int(random_state)
    return {"instance": type(random_state).__name__,
            "note": "a random-state instance cannot be recorded; the drawn seeds below can"}


def versions():
    import joblib
    import scipy
    import sklearn
    import skorch
    import torch

    import skal

    return {"skal": skal.__version__, "torch": torch.__version__, "scikit-learn": sklearn.__version__,
            "skorch": skorch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "joblib": joblib.__version__, "python": sys.version.split()[0],
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}


def machine():
    """CPU model, its SIMD flags, cores, torch threads and GPUs, where the system tells."""
    import torch

    info = {"platform": platform.platform(), "architecture": platform.machine(),
            "cpu": platform.processor() or None, "cpu_flags": [], "logical_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}
    if hasattr(os, "sched_getaffinity"):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    model, flags = _cpuinfo()
    if model:
        info["cpu"] = model
    info["cpu_flags"] = [flag for flag in _CPU_FLAGS if flag in flags]
    info["gpus"] = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                    if torch.cuda.is_available() else [])
    return info


def _cpuinfo(path="/proc/cpuinfo"):
    """The first processor's model name and flags from ``/proc/cpuinfo`` (Linux)."""
    model, flags = None, set()
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "cpu model") and model is None:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
                elif not line.strip() and model and flags:
                    break
    except OSError:
        pass
    return model, flags


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
