"""One learner used from several threads (issue 13, deliverable 8).

The learner serialises its own calls (one lock per learner): queries from two
threads give exactly the single-threaded results, and a prediction issued
while a DISAL query runs waits for it and sees only the trained weights.
"""

import threading
import time

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from skal import ActiveLearner, ActiveNet
from skal.models import MLP
from skal.selectors import DISAL, CoreSet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

rng = np.random.default_rng(0)
X = rng.normal(size=(2040, 6)).astype(np.float32)
Y = X[:, :3].argmax(1).astype(np.int64)
POOL = X[40:]
# 12 different queries: pool slices and batch sizes
QUERIES = [(slice(start, start + 800), n) for start in (0, 300, 600, 900, 1200, 1500)
           for n in (3, 10)]


def _fitted(selector):
    net = ActiveNet(MLP, module__hidden_sizes=(16,), max_epochs=3, batch_size=16, lr=0.1, verbose=0,
                    iterator_valid__batch_size=64)
    return ActiveLearner(net, selector, random_state=0).fit(X[:40], Y[:40])


def _run_together(*jobs):
    """Run the jobs in threads released at once; re-raise the first error."""
    barrier, errors = threading.Barrier(len(jobs)), []

    def run(job):
        barrier.wait()
        try:
            job()
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck"
    if errors:
        raise errors[0]


@pytest.mark.parametrize("selector", [DISAL, CoreSet], ids=["DISAL", "CoreSet"])
def test_two_threads_querying_one_learner_get_the_single_threaded_results(selector):
    learner = _fitted(selector())
    expected = [learner.query(POOL[rows], n, return_scores=True) for rows, n in QUERIES]
    results = {0: [], 1: []}

    def queries(thread):
        order = QUERIES if thread == 0 else QUERIES[::-1]  # the two threads ask in different orders
        results[thread] = [learner.query(POOL[rows], n, return_scores=True) for rows, n in order]

    _run_together(lambda: queries(0), lambda: queries(1))
    for thread, got in results.items():
        if thread == 1:
            got = got[::-1]
        right = sum(np.array_equal(g[0], e[0]) and np.array_equal(g[1], e[1]) for g, e in zip(got, expected))
        assert right == len(QUERIES) == 12, (thread, right)


class _SignallingDISAL(DISAL):
    """DISAL that, while armed, lets the other thread call inside its scoring, and lingers."""

    armed = False
    inside, other_called = threading.Event(), threading.Event()
    scored_at = []

    def score_pool(self, net, X_pool, *, random_state=None, labeled=None):
        if _SignallingDISAL.armed:
            _SignallingDISAL.inside.set()
            assert _SignallingDISAL.other_called.wait(timeout=10)
            _SignallingDISAL.other_called.clear()
            time.sleep(0.05)  # an unserialised prediction would run now, during the scoring
        scores = super().score_pool(net, X_pool, random_state=random_state, labeled=labeled)
        _SignallingDISAL.scored_at.append(time.perf_counter())
        return scores


@pytest.fixture
def signalling():
    _SignallingDISAL.armed = False
    _SignallingDISAL.scored_at = []
    _SignallingDISAL.inside.clear(), _SignallingDISAL.other_called.clear()
    yield _SignallingDISAL
    _SignallingDISAL.armed = False


def test_predict_proba_during_a_disal_query_waits_and_returns_the_right_probabilities(signalling):
    learner = _fitted(signalling())
    expected_proba = learner.predict_proba(POOL)
    expected_query = [learner.query(POOL[rows], n, return_scores=True) for rows, n in QUERIES]
    signalling.armed, signalling.scored_at = True, []
    queries, probas, returned_at = [], [], []

    predicted = threading.Event()

    def query():
        for rows, n in QUERIES:
            queries.append(learner.query(POOL[rows], n, return_scores=True))
            # the lock is not fair: without waiting, the next query could take it first
            assert predicted.wait(timeout=10)
            predicted.clear()

    def predict():
        for _ in QUERIES:
            assert signalling.inside.wait(timeout=10)
            signalling.inside.clear()
            signalling.other_called.set()  # the query's scoring goes on now
            probas.append(learner.predict_proba(POOL))
            returned_at.append(time.perf_counter())
            predicted.set()

    _run_together(query, predict)
    for got, expected in zip(queries, expected_query):
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
    assert len(probas) == 12
    for proba in probas:
        np.testing.assert_array_equal(proba, expected_proba)
    # serialised: each prediction called during a query's scoring returned after that scoring
    assert len(signalling.scored_at) == 12
    assert all(returned > scored for returned, scored in zip(returned_at, signalling.scored_at))


def test_predictions_and_queries_leave_torch_global_random_state_alone():
    # torch's DataLoader draws a seed from the global state at every pass; a prediction in one
    # thread would then move the seeded state another thread's training draws from
    learner = _fitted(DISAL())
    dataset = TensorDataset(torch.from_numpy(POOL[:300]), torch.from_numpy(Y[40:340]))
    for call in (lambda: learner.predict_proba(POOL), lambda: learner.predict_proba(dataset),
                 lambda: learner.score(dataset, Y[40:340]), lambda: learner.query(dataset, 5),
                 lambda: learner.query(POOL, 5), lambda: learner.estimator_.predict_proba(dataset)):
        state = torch.get_rng_state()
        call()
        assert torch.equal(torch.get_rng_state(), state)


def _threads_in_campaign(estimator, X, y):
    """A scorer that reports the threads the campaign trained with: torch's x 1000 + BLAS's."""
    from threadpoolctl import threadpool_info

    blas = max([pool["num_threads"] for pool in threadpool_info()] or [1])
    return float(torch.get_num_threads() * 1000 + blas)


def test_parallel_campaigns_never_oversubscribe_the_cores():
    import joblib

    from skal.model_selection import active_learning_curve
    from skal.selectors import Random

    cores = joblib.cpu_count()
    net = ActiveNet(MLP, module__hidden_sizes=(4,), max_epochs=1, batch_size=16, verbose=0)
    learners = {"random": ActiveLearner(net, Random()), "random 2": ActiveLearner(net, Random())}
    before = torch.get_num_threads()
    torch.set_num_threads(cores)  # a user who gave torch every core
    try:
        with joblib.parallel_config(backend="threading"):
            result = active_learning_curve(learners, X[:200], Y[:200], X_test=X[200:260], y_test=Y[200:260],
                                           initial_size=20, query_size=10, n_cycles=1, n_repeats=1,
                                           n_jobs=2, scoring=_threads_in_campaign, random_state=0)
        assert torch.get_num_threads() == cores  # restored after the campaigns
    finally:
        torch.set_num_threads(before)
    torch_threads, blas_threads = np.divmod(result.scores.astype(int), 1000)
    assert np.all(torch_threads * 2 <= max(cores, 2)) and np.all(torch_threads == max(1, cores // 2))
    assert np.all(blas_threads <= max(1, cores // 2))
