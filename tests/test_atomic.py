"""All-or-nothing state changes (issue 13, deliverable 3).

An exception is injected at every step of ``fit``, ``teach``, ``refit`` and
``ActiveLearner.load``: a trace function counts the 'line' events in skal's own
frames and, at the first run of each distinct line of skal that the call runs
(and also at the last run of each line of skal/learner.py and skal/_state.py,
where the state changes), raises an ordinary error or delivers Ctrl-C (it calls the SIGINT
handler in place, as a signal arriving on that line would), one injection per
call. After each, the learner must be exactly as before (its pickle, which
holds every fitted attribute, the weights, optimizer state, training parts and
history, is byte-identical) or exactly as after an uninterrupted call (by
value, when the injection came after the one assignment that commits, or an
error was caught and the call went on); ``teach`` may also stop between its
two steps, holding the new labels with the previous model, marked stale, and
``refit()`` then gives exactly the uninterrupted result. Torch's global
random state, the SIGINT handler and the locks are left as they were, and a
failed ``load`` returns nothing, leaves its ``like=`` template alone and
closes the file.
"""

import dis
import gc
import linecache
import os
import pickle
import signal
import sys
import threading

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback, EarlyStopping

import skal
from skal import ActiveLearner, ActiveNet
from skal._training import TORCH_RNG_LOCK as _TORCH_RNG_LOCK
from skal.model_selection import active_learning_curve
from skal.models import MLP
from skal.selectors import DISAL, Entropy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

_SKAL = os.path.dirname(skal.__file__) + os.sep
# the files whose lines change the learner's state: each line's last run is also an injection point
_STATE_FILES = {os.path.join(_SKAL, "learner.py"), os.path.join(_SKAL, "_state.py")}


def _data(n=40, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    return X, X[:, :3].argmax(1).astype(np.int64)


X, Y = _data()


def _net(**kwargs):
    params = dict(module__hidden_sizes=(4,), max_epochs=2, batch_size=32, lr=0.1, verbose=0)
    params.update(kwargs)
    return ActiveNet(MLP, **params)


# --- the injection ------------------------------------------------------------------------


class _Injected(RuntimeError):
    pass


def _start_tracing(local):
    def start(frame, event, arg):
        return local if frame.f_code.co_filename.startswith(_SKAL) else None

    sys.settrace(start)


def _line_events(call):
    """The (file, line) of every 'line' event in skal's frames while ``call()`` runs."""
    events = []

    def local(frame, event, arg):
        if event == "line":
            events.append((frame.f_code.co_filename, frame.f_lineno))
        return local

    _start_tracing(local)
    try:
        call()
    finally:
        sys.settrace(None)
    return events


def _injection_points(events):
    """1-based positions of the first run of each distinct line, and the last one in _STATE_FILES."""
    first, last = {}, {}
    for k, where in enumerate(events, start=1):
        first.setdefault(where, k)
        if where[0] in _STATE_FILES:
            last[where] = k
    return sorted(set(first.values()) | set(last.values()))


def _is_with_exit(frame):
    """Whether this line event is a ``with`` statement's exit, just before ``__exit__`` is called.

    Only a tracer can raise there: the interpreter handles no signal between a
    with block's end and the call of a C ``__exit__`` (a lock's), so a lock
    left held by an injection at that point is an artefact of the injection.
    """
    ahead = [(i.opname, i.argval) for i in dis.get_instructions(frame.f_code)
             if i.offset >= frame.f_lasti][:5]
    return ahead in _WITH_EXITS


# the bytecode that calls a with statement's __exit__(None, None, None), by CPython version
_WITH_EXITS = [
    [("LOAD_CONST", None)] * 3 + [("PRECALL", 2), ("CALL", 2)],                   # 3.11
    [("LOAD_CONST", None)] * 3 + [("CALL", 2), ("POP_TOP", None)],                # 3.12+
    [("LOAD_CONST", None), ("DUP_TOP", None), ("DUP_TOP", None), ("CALL_FUNCTION", 3),
     ("POP_TOP", None)],                                                          # 3.10
]


def _inject(call, k, kind):
    """Run ``call()``, failing at its ``k``-th line event in skal.

    Returns ``(the exception raised or None, the source line, whether that line
    event was a with statement's exit)``.
    """
    count, where = [0], [None, False]

    def local(frame, event, arg):
        if event == "line":
            count[0] += 1
            if count[0] == k:
                where[:] = [linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip(),
                            _is_with_exit(frame)]
                if kind == "error":
                    raise _Injected(f"injected at {frame.f_code.co_filename}:{frame.f_lineno}")
                # Ctrl-C on this line: what the interpreter does when SIGINT arrives
                signal.getsignal(signal.SIGINT)(signal.SIGINT, frame)
        return local

    _start_tracing(local)
    try:
        call()
    except (Exception, KeyboardInterrupt) as error:
        # load reports any failure inside a trusted class as a ValueError naming the member
        assert any(isinstance(cause, (_Injected, KeyboardInterrupt)) for cause in _chain(error)), error
        return error, *where
    finally:
        sys.settrace(None)
    return None, *where


def _chain(error):
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def _lock_is_free(lock):
    """Whether another thread could take ``lock`` now (an RLock is always free to its owner)."""
    free = []

    def take():
        if lock.acquire(timeout=0):
            lock.release()
            free.append(True)

    thread = threading.Thread(target=take)
    thread.start()
    thread.join()
    return free == [True]


def _release_all(lock):
    while True:
        try:
            lock.release()
        except RuntimeError:  # not held by this thread any more
            return


def _check_process_state(kind, rng, line, with_exit, locks, k):
    """Torch's random state, the SIGINT handler and the locks are as they were."""
    assert line is not None, f"the call ran fewer than {k} lines: nothing was injected"
    assert torch.equal(torch.get_rng_state(), rng), (k, line)
    # An ordinary error can also land on the very line that restores the SIGINT handler
    # (signal.signal, which never raises one); a Ctrl-C there finds the handler
    # already restored, because the learner's handler uninstalls itself first.
    if kind == "ctrl-c" or "signal.signal(" not in line:
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, (k, line)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for lock in filter(None, locks):
        if not with_exit:
            assert _lock_is_free(lock), (k, line)
        _release_all(lock)
    # torch's grad mode too (an error injected at a with-statement's exit skips its __exit__,
    # as it skips a lock's release: an artefact of the injection, restored here)
    if not with_exit:
        assert torch.is_grad_enabled(), (k, line)
    torch.set_grad_enabled(True)


@pytest.fixture
def default_sigint():
    """Ctrl-C raises KeyboardInterrupt, as in a plain Python process."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


# --- what "exactly as before / after" compares ----------------------------------------------


def _history(net):
    # durations differ between two runs of the same training, nothing else does
    return [{key: value for key, value in epoch.items() if key not in ("dur", "batches")}
            | {"batches": [{k: v for k, v in b.items() if k != "dur"} for b in epoch["batches"]]}
            for epoch in net.history]


def _values(learner):
    """Every fitted attribute, weight and training state by value (no durations, no identity)."""
    if "_fitted" not in learner.__dict__:
        return None
    state = learner._state()
    net = learner.estimator_
    return {
        "X_labeled": learner.X_labeled_.copy(),
        "y_labeled": learner.y_labeled_.copy(),
        "cycle": learner.labeled_cycle_.copy(),
        "reference": state.labeled.reference.copy(),
        "classes": learner.classes_.copy(),
        "seed": state.seed,
        "stale": learner.stale_,
        "n_features_in": learner.n_features_in_,
        "selector": repr(learner.selector_),
        "template": repr(state.template),
        "weights": {k: v.clone() for k, v in net.module_.state_dict().items()},
        "optimizer": _optimizer_state(net.optimizer_),
        "optimizer_groups": repr(net.optimizer_.state_dict()["param_groups"]),
        "parts": {f"{name}.{key}": value.clone() for name, part in net.parts_.items()
                  for key, value in part.state_dict().items()},
        "history": _history(net),
    }


def _optimizer_state(optimizer):
    """The optimizer's per-parameter state (momentum buffers, steps) as named tensors."""
    return {f"{index}.{key}": torch.as_tensor(value).clone()
            for index, entries in optimizer.state_dict()["state"].items() for key, value in entries.items()}


def _assert_values_equal(a, b):
    assert (a is None) == (b is None)
    if a is None:
        return
    assert a.keys() == b.keys()
    for key in a:
        if key in ("weights", "parts", "optimizer"):
            assert a[key].keys() == b[key].keys()
            for name in a[key]:
                assert torch.equal(a[key][name], b[key][name]), name
        elif isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
            assert a[key].dtype == b[key].dtype, key
        else:
            assert a[key] == b[key], key


def _same_labels_new_stale(learner, before, after):
    """teach's first step only: the new labels are in, the previous model kept and marked stale."""
    values = _values(learner)
    if values is None or not values["stale"] or len(values["y_labeled"]) != len(after["y_labeled"]):
        return False
    for key in ("X_labeled", "y_labeled", "cycle", "reference"):
        np.testing.assert_array_equal(values[key], after[key])
    labels = ("X_labeled", "y_labeled", "cycle", "reference", "stale")
    _assert_values_equal({k: v for k, v in values.items() if k not in labels},
                         {k: v for k, v in before.items() if k not in labels})
    return True


# --- the sweeps ---------------------------------------------------------------------------------


def _fitted(selector, warm_start):
    return ActiveLearner(_net(), selector, warm_start=warm_start, random_state=0).fit(X[:20], Y[:20])


def _stale(selector, warm_start):
    """A learner whose last teach diverged (lr=inf), its lr then set back: refit() recovers it."""
    learner = _fitted(selector, warm_start).set_params(estimator__lr=float("inf"))
    with pytest.raises(FloatingPointError, match="Training diverged"):
        learner.teach(X[20:26], Y[20:26])
    assert learner.stale_
    return learner.set_params(estimator__lr=0.1)


_CALLS = {
    # name: (the learner before the call, the call)
    "fit": (_fitted, lambda learner: learner.fit(X[10:34], Y[10:34])),
    "teach": (_fitted, lambda learner: learner.teach(X[20:28], Y[20:28])),
    "refit": (lambda selector, warm: _fitted(selector, warm).teach(X[20:26], Y[20:26]),
              lambda learner: learner.refit()),
    "refit a stale model": (_stale, lambda learner: learner.refit()),
}


def _sweep(make, call, kind, allow_teach_step=False):
    """Inject at every point; count the injections that left each outcome."""
    blob = pickle.dumps(make())  # each run starts from a copy: unpickling is faster than training
    reference = pickle.loads(blob)
    before = _values(reference)
    events = _line_events(lambda: call(reference))
    after = _values(reference)
    points = _injection_points(events)
    outcomes = {"before": 0, "after": 0, "raised after the change": 0, "teach step": 0}
    for k in points:
        learner = pickle.loads(blob)
        before_bytes = pickle.dumps(learner)  # deterministic for one object (its tensors' storages)
        rng = torch.get_rng_state()
        error, line, with_exit = _inject(lambda: call(learner), k, kind)
        _check_process_state(kind, rng, line, with_exit, [learner.__dict__.get("_lock"), _TORCH_RNG_LOCK], k)
        if error is None:  # an injected error that skal caught, and the call went on
            _assert_values_equal(_values(learner), after)
            outcomes["after"] += 1
        elif pickle.dumps(learner) == before_bytes:  # every fitted attribute, weight and record
            outcomes["before"] += 1
        elif not _values(learner)["stale"]:  # the change was committed, then the error came
            _assert_values_equal(_values(learner), after)
            outcomes["raised after the change"] += 1
        else:
            assert allow_teach_step and _same_labels_new_stale(learner, before, after), (k, line, error)
            if outcomes["teach step"] % 4 == 0:  # equal states by value: a quarter of them suffices
                learner.refit()
                _assert_values_equal(_values(learner), after)
            outcomes["teach step"] += 1
    return len(points), outcomes


@pytest.mark.parametrize("kind", ["error", "ctrl-c"])
@pytest.mark.parametrize("name, selector, warm_start", [
    ("fit", DISAL, False), ("teach", DISAL, True), ("refit", DISAL, True),
    ("refit a stale model", Entropy, False),
])
def test_an_exception_at_any_step_leaves_the_learner_before_or_after(default_sigint, name, selector,
                                                                     warm_start, kind):
    make, call = _CALLS[name]
    n_points, outcomes = _sweep(lambda: make(selector(), warm_start), call, kind,
                                allow_teach_step=name == "teach")
    assert n_points > 200, n_points
    # only the last lines, after the one assignment that commits, see the change made
    assert outcomes["raised after the change"] <= 4, outcomes
    if kind == "ctrl-c":
        assert outcomes["after"] == 0, outcomes  # nothing in skal swallows a KeyboardInterrupt
    if name == "teach":
        assert outcomes["teach step"] > n_points / 2, outcomes  # most of teach is its training
    else:
        assert outcomes["teach step"] == 0 and outcomes["before"] >= n_points - 6, outcomes


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    learner = _fitted(DISAL(), True).teach(X[20:26], Y[20:26])
    path = tmp_path_factory.mktemp("atomic") / "run.skal"
    learner.save(path)
    return path, _values(learner)


def _open_paths():
    return {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}


@pytest.mark.parametrize("kind, like", [("error", False), ("ctrl-c", False), ("ctrl-c", True)])
def test_a_load_failing_at_any_step_returns_nothing_and_changes_nothing(default_sigint, saved, kind, like):
    path, original = saved
    template = ActiveLearner(_net(), DISAL(), warm_start=True)

    def load():
        loaded.append(ActiveLearner.load(path, like=template if like else None))

    loaded = []
    load()  # a first load fills the caches (trust look-ups, imports): later ones run the same lines
    points = _injection_points(_line_events(load))
    loaded.pop()
    _assert_values_equal(_values(loaded.pop()), original)
    template_bytes, outcomes = pickle.dumps(template), {"none": 0, "whole": 0}
    for k in points:
        rng = torch.get_rng_state()
        error, line, with_exit = _inject(load, k, kind)
        _check_process_state(kind, rng, line, with_exit, [_TORCH_RNG_LOCK], k)  # load builds nets seeded
        assert pickle.dumps(template) == template_bytes, (k, line)
        if error is None:
            _assert_values_equal(_values(loaded.pop()), original)
            outcomes["whole"] += 1
        else:
            assert not loaded, (k, line)  # load returned nothing
            outcomes["none"] += 1
        # The file is closed once the exception is dropped: an error on the line right after the
        # file is opened leaves it to the traceback, which holds the frame that opened it.
        del error
        if str(path) in _open_paths():
            gc.collect()
            assert str(path) not in _open_paths(), (k, line)
    assert len(points) > (250 if like else 500), len(points)
    if kind == "ctrl-c":
        assert outcomes["whole"] == 0, outcomes
    else:  # errors inside a fallback that load tries first, and the load went on
        assert outcomes["none"] > len(points) - 70, outcomes


# --- real Ctrl-C, and the KeyboardInterrupt by which EarlyStopping stops ------------------------------


class _CtrlC(Callback):
    """Sends this process SIGINT after a training batch, once, while armed (through the class:
    warm starts train a deep copy of the callback)."""

    armed = False

    def on_batch_end(self, net, training=False, **kwargs):
        if training and _CtrlC.armed:
            _CtrlC.armed = False
            signal.raise_signal(signal.SIGINT)


@pytest.fixture
def ctrl_c(default_sigint):
    _CtrlC.armed = False
    yield _CtrlC
    _CtrlC.armed = False


def _ctrl_c_learner(warm_start):
    return ActiveLearner(_net(callbacks=[("ctrl_c", _CtrlC())]), DISAL(), warm_start=warm_start,
                         random_state=0)


@pytest.mark.parametrize("warm_start", [False, True], ids=["cold", "warm"])
def test_a_real_ctrl_c_during_training_keeps_the_old_model(ctrl_c, warm_start):
    uninterrupted = _ctrl_c_learner(warm_start).fit(X[:20], Y[:20]).teach(X[20:28], Y[20:28])

    learner = _ctrl_c_learner(warm_start)
    ctrl_c.armed = True
    with pytest.raises(KeyboardInterrupt,
                       match=r"Training was interrupted \(Ctrl-C\); the learner was not fitted"):
        learner.fit(X[:20], Y[:20])
    assert not ctrl_c.armed and "_fitted" not in learner.__dict__  # still unfitted
    learner.fit(X[:20], Y[:20])

    before, before_bytes = _values(learner), pickle.dumps(learner)
    ctrl_c.armed = True
    with pytest.raises(KeyboardInterrupt, match=r"Training was interrupted \(Ctrl-C\); the previous model "
                                                r"is kept, marked stale; call refit\(\) to train again"):
        learner.teach(X[20:28], Y[20:28])
    assert not ctrl_c.armed
    assert _same_labels_new_stale(learner, before, _values(uninterrupted))
    with pytest.raises(RuntimeError, match="The model is stale"):
        learner.query(X[28:], 2)

    stale_bytes = pickle.dumps(learner)
    ctrl_c.armed = True
    with pytest.raises(KeyboardInterrupt, match=r"Training was interrupted \(Ctrl-C\)"):
        learner.refit()
    assert pickle.dumps(learner) == stale_bytes  # a failed refit of a stale model: as before
    learner.refit()
    _assert_values_equal(_values(learner), _values(uninterrupted))
    np.testing.assert_array_equal(learner.query(X[28:], 4), uninterrupted.query(X[28:], 4))

    fresh_bytes = pickle.dumps(learner)
    ctrl_c.armed = True
    with pytest.raises(KeyboardInterrupt, match=r"Training was interrupted \(Ctrl-C\)"):
        learner.refit()
    assert pickle.dumps(learner) == fresh_bytes and not learner.stale_  # a fresh model stays fresh
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert before_bytes != fresh_bytes


def _early_stopping(**kwargs):
    # a 99% drop of the training loss is asked for each epoch: every fit stops after 3 epochs
    return _net(max_epochs=10, callbacks=[("early", EarlyStopping(monitor="train_loss", patience=2,
                                                                  threshold=0.99))], **kwargs)


@pytest.mark.parametrize("warm_start", [False, True, "continue"], ids=["cold", "warm", "continue"])
def test_early_stopping_inside_fit_teach_and_refit_gives_an_accepted_model(default_sigint, warm_start):
    stopped = ActiveLearner(_early_stopping(), Entropy(), warm_start=warm_start, random_state=0)
    three = ActiveLearner(_net(max_epochs=3), Entropy(), warm_start=warm_start, random_state=0)
    steps = (lambda learner: learner.fit(X[:20], Y[:20]),
             lambda learner: learner.teach(X[20:28], Y[20:28]),
             lambda learner: learner.refit())
    # warm_start="continue" continues the history: 3 more epochs per training
    for step, epochs in zip(steps, [3, 6, 9] if warm_start == "continue" else [3, 3, 3]):
        step(stopped), step(three)
        assert not stopped.stale_
        assert len(stopped.estimator_.history) == len(three.estimator_.history) == epochs
        # stopped after 3 epochs = trained for 3: the same weights, bit for bit
        for key, value in three.estimator_.module_.state_dict().items():
            assert torch.equal(stopped.estimator_.module_.state_dict()[key], value), key
        np.testing.assert_array_equal(stopped.query(X[28:], 3), three.query(X[28:], 3))


def test_early_stopping_inside_active_learning_curve_gives_accepted_models(default_sigint):
    def curve(net):
        return active_learning_curve({"entropy": ActiveLearner(net, Entropy())}, X, Y, initial_size=8,
                                     query_size=4, n_cycles=3, n_repeats=2, random_state=0)

    stopped, three = curve(_early_stopping()), curve(_net(max_epochs=3))
    assert np.isfinite(stopped.scores).all()
    np.testing.assert_array_equal(stopped.scores, three.scores)


_ARCHIVE = os.path.join(_SKAL, "_archive.py")


@pytest.mark.parametrize("kind", ["error", "ctrl-c"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "over-a-save"])
def test_a_save_interrupted_at_any_line_leaves_no_temporary_file(default_sigint, tmp_path, kind, existing):
    # issue 20: an interrupt between creating the temporary file and the try that removes it
    # left .NAME.skal.HEX.tmp beside the target. Injected at every line event of the archive
    # writer (each run of each line, loops included) and at the first run of every other line.
    learner = _fitted(Entropy(), False)
    target = tmp_path / "campaign.skal"
    old = None
    if existing:
        _fitted(DISAL(), False).save(target)
        old = target.read_bytes()
    events = _line_events(lambda: learner.save(tmp_path / "probe.skal"))
    new = (tmp_path / "probe.skal").read_bytes()  # the same learner gives the same bytes
    (tmp_path / "probe.skal").unlink()
    points = sorted(set(_injection_points(events)) | {k for k, where in enumerate(events, start=1)
                                                      if where[0] == _ARCHIVE})
    assert sum(where[0] == _ARCHIVE for where in events) > 20
    outcomes = {"old": 0, "new": 0, "none": 0}
    for k in points:
        error, line, _ = _inject(lambda: learner.save(target), k, kind)
        left = sorted(os.listdir(tmp_path))
        assert not [name for name in left if name.endswith(".tmp")], (k, line, left)
        assert left == (["campaign.skal"] if existing or target.exists() else []), (k, line, left)
        if target.exists():
            data = target.read_bytes()
            assert data in (old, new), (k, line)  # never a partial file
            outcomes["old" if data == old else "new"] += 1
            if not existing:
                target.unlink()  # start the next injection from no file again
        else:
            outcomes["none"] += 1
        del error
    # both outcomes were reached: interrupted before the replace and after it
    assert outcomes["new"] > 0 and outcomes["old" if existing else "none"] > 0, outcomes
    assert ActiveLearner.load(tmp_path / "campaign.skal") if existing else True
