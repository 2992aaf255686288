"""BALD: the mutual information against float64 numpy, MC dropout against torch's own dropout."""

import copy

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError
from torch import nn
from torch.utils.data import TensorDataset

from skal import ActiveLearner, ActiveNet
from skal.models import MLP, SmallCNN
from skal.scores import mutual_information
from skal.selectors import BADGE, BALD, Random
from skal.selectors.bald import _batch_seed, _dropped, _mc_dropout, _purpose_seed


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ref_mutual_information(logits):
    """H[mean_t p_t] - mean_t H[p_t] in float64 numpy, from logits (T, B, C)."""
    z = np.asarray(logits, dtype=np.float64)
    p = np.exp(z - z.max(axis=2, keepdims=True))
    p /= p.sum(axis=2, keepdims=True)
    mean = p.mean(axis=0)
    entropy_of_mean = -(mean * np.log(mean)).sum(axis=1)
    mean_entropy = -(p * np.log(p)).sum(axis=2).mean(axis=0)
    return entropy_of_mean - mean_entropy


# --- the score ----------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 1, 2), (5, 7, 3), (20, 13, 10), (3, 4, 1)])
def test_mutual_information_matches_float64_reference(shape):
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    np.testing.assert_allclose(mutual_information(logits).numpy(),
                               np.maximum(ref_mutual_information(logits.numpy()), 0),
                               rtol=1e-10, atol=1e-14)


def test_mutual_information_known_values():
    # two draws, each sure of a different class: H[mean] = log 2, mean H = 0
    sure = torch.tensor([[[30.0, -30.0]], [[-30.0, 30.0]]], dtype=torch.float64)
    assert mutual_information(sure).item() == pytest.approx(np.log(2), abs=1e-12)
    # identical draws: no disagreement, exactly 0 after the clamp
    same = torch.randn(1, 6, 4, generator=torch.Generator().manual_seed(1)).repeat(8, 1, 1)
    assert torch.equal(mutual_information(same), torch.zeros(6))
    # uniform mean of C one-hot draws: log C
    onehots = torch.eye(5, dtype=torch.float64)[:, None, :] * 50
    assert mutual_information(onehots).item() == pytest.approx(np.log(5), abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mutual_information_of_half_precision_is_computed_in_float32(dtype):
    logits = torch.randn(6, 9, 4, generator=torch.Generator().manual_seed(2)).to(dtype)
    out = mutual_information(logits)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref_mutual_information(logits.float().numpy()),
                               rtol=1e-5, atol=1e-6)


def test_mutual_information_refuses_a_2d_input():
    with pytest.raises(ValueError, match=r"logits must have shape \(n_draws, n_samples, n_classes\), "
                                         r"got \(4, 3\)"):
        mutual_information(torch.zeros(4, 3))


# --- the masks ----------------------------------------------------------------------

LAYERS = [(nn.Dropout, (4, 5, 3)), (nn.Dropout1d, (4, 5, 3)), (nn.Dropout1d, (5, 3)),
          (nn.Dropout2d, (4, 5, 3, 3)), (nn.Dropout2d, (4, 5, 3)), (nn.Dropout3d, (4, 5, 2, 2, 2)),
          (nn.Dropout3d, (5, 2, 2, 2)), (nn.AlphaDropout, (40, 5)),
          (nn.FeatureAlphaDropout, (4, 5, 3, 3))]


@pytest.mark.filterwarnings("ignore:dropout2d")
@pytest.mark.parametrize("p", [0.3, 0.9, 1.0])
@pytest.mark.parametrize("layer_cls, shape", LAYERS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_each_dropout_type_matches_torch_in_training_mode_with_the_same_draws(layer_cls, shape, p):
    # On CPU torch's dropout draws its mask with bernoulli_(1 - p) from the global generator;
    # ours draws the same from a private generator, so equal seeds give the exact same output.
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    layer = layer_cls(p).train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        expected = layer(x)
    np.testing.assert_array_equal(_dropped(layer, x, torch.Generator().manual_seed(5)).numpy(),
                                  expected.numpy())


class _DropoutNet(nn.Module):
    """x -> Linear -> ReLU -> BatchNorm1d -> Dropout -> Linear (BN makes eval mode observable)."""

    def __init__(self, num_classes=3, in_features=4, width=16, p=0.5):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.BatchNorm1d(width))
        self.drop = nn.Dropout(p)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.drop(self.hidden(x)))


def _data(n=90, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)


@pytest.fixture(scope="module")
def fitted():
    X, y = _data()
    torch.manual_seed(0)
    net = ActiveNet(_DropoutNet, max_epochs=3, batch_size=16, lr=0.1, verbose=0,
                    iterator_valid__batch_size=11).fit(X[:40], y[:40])
    return net, X[40:]


def _reference_scores(net, X, T, random_state, batch_size=11):
    """MI of torch's own dropout in train mode (same draws), everything else in eval mode."""
    module = net.module_
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    module.drop.train()
    out = []
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            for start in range(0, len(X), batch_size):  # the pool batches
                # each pool batch's masks come from a seed keyed by the batch's position
                torch.manual_seed(_batch_seed(_purpose_seed(random_state), start // batch_size))
                batch = X[start:start + batch_size]
                piece = max(1, len(batch) // T)
                for first in range(0, len(batch), piece):  # groups of B // T samples
                    Xb = torch.from_numpy(batch[first:first + piece])
                    logits = module(Xb.repeat(T, 1)).double()
                    out.append(ref_mutual_information(logits.view(T, len(Xb), -1).numpy()))
    finally:
        for m, training in flags:
            m.training = training
    return np.maximum(np.concatenate(out), 0)


def test_scores_equal_torch_dropout_with_batch_norm_in_eval_mode(fitted):
    net, pool = fitted
    scores = BALD(n_samples=7).score_pool(net, pool, random_state=3)
    np.testing.assert_allclose(scores.numpy(), _reference_scores(net, pool, 7, 3), rtol=1e-4,
                               atol=1e-6)
    assert scores.min() >= 0 and scores.max() > 1e-3


def test_batch_norm_in_training_mode_would_change_the_scores(fitted):
    # the reference above is sensitive to the BN mode: with batch statistics the scores move
    net, pool = fitted
    scores = BALD(n_samples=7).score_pool(net, pool, random_state=3).numpy()
    bn = net.module_.hidden[2]
    bn.train()
    bn.momentum = 0.0  # batch statistics, running ones left as they are
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(_batch_seed(_purpose_seed(3), 0))
            net.module_.drop.train()
            Xb = torch.from_numpy(pool[:11]).repeat(7, 1)
            logits = net.module_(Xb).double().view(7, 11, -1).numpy()
    finally:
        net.module_.eval()
        bn.momentum = 0.1
    assert np.abs(ref_mutual_information(logits) - scores[:11]).max() > 1e-3


def test_select_takes_the_largest_scores(fitted):
    net, pool = fitted
    reference = _reference_scores(net, pool, 6, 11)
    idx, scores = BALD(n_samples=6).select(net, pool, 8, random_state=11)
    np.testing.assert_array_equal(idx, np.argsort(-reference, kind="stable")[:8])
    np.testing.assert_allclose(scores, reference[idx], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("T, full, last", [
    # 50 pool samples in batches of 11 (the last of 6): groups of max(1, B // T) samples,
    # each group's T copies in one forward pass
    (5, [10] * 5 + [5], [5] * 6),
    (11, [11] * 11, [11] * 6),
    (20, [20] * 11, [20] * 6),
])
def test_the_draws_of_a_group_run_as_one_forward_pass_of_about_a_batch(fitted, T, full, last):
    net, pool = fitted
    seen = []
    handle = net.module_.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    try:
        BALD(n_samples=T).score_pool(net, pool, random_state=0)
    finally:
        handle.remove()
    assert seen == full * 4 + last


def test_scores_are_seeded_and_global_random_state_is_untouched(fitted):
    net, pool = fitted
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    a = BALD(n_samples=4).score_pool(net, pool, random_state=1)
    b = BALD(n_samples=4).score_pool(net, pool, random_state=1)
    c = BALD(n_samples=4).score_pool(net, pool, random_state=2)
    assert torch.equal(torch.rand(3), expected_draw)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("training", [True, False])
def test_flags_are_restored_and_hooks_removed_also_on_error(fitted, training):
    net, pool = fitted
    module = net.module_
    module.train(training)
    module.hidden[2].train(not training)  # a mixed state, restored as it was
    before = [(name, m.training) for name, m in module.named_modules()]
    BALD(n_samples=3).score_pool(net, pool, random_state=0)
    assert [(name, m.training) for name, m in module.named_modules()] == before

    def failing(Xb):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with _mc_dropout(module, torch.Generator()):
            module.eval()
            net.map_pool(failing, pool)
    assert [(name, m.training) for name, m in module.named_modules()] == before
    assert not module.drop._forward_hooks
    module.eval()


def test_a_module_without_dropout_is_a_clear_error():
    X, y = _data(40)
    for module_params in ({}, {"module__dropout": 0.0}):
        net = ActiveNet(MLP, max_epochs=1, verbose=0, **module_params)
        learner = ActiveLearner(net, BALD(), random_state=0).fit(X[:20], y[:20])
        with pytest.raises(ValueError, match=r"^BALD needs dropout: the module has no torch.nn "
                                             r"dropout layer with p > 0"):
            learner.query(X[20:], 3)
    net = ActiveNet(_DropoutNet, module__p=0.0, max_epochs=1, verbose=0).fit(X[:20], y[:20])
    with pytest.raises(ValueError, match=r"^BALD needs dropout"):
        BALD().select(net, X[20:], 3, random_state=0)


def test_an_unknown_dropout_subclass_is_refused_by_name(fitted):
    class MyDropout(nn.modules.dropout._DropoutNd):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match=r"BALD cannot sample masks for the dropout layer type "
                                        r"MyDropout"):
        with _mc_dropout(nn.Sequential(nn.Linear(2, 2), MyDropout(0.5)), torch.Generator()):
            pass


@pytest.mark.parametrize("params, match", [
    ({"n_samples": 1}, r"'n_samples' parameter of BALD must be an int in the range \[2, inf\)"),
    ({"n_samples": 2.5}, r"'n_samples' parameter of BALD"),
    ({"subset": 0}, r"'subset' parameter of BALD"),
])
def test_invalid_parameters_are_refused_by_name(fitted, params, match):
    net, pool = fitted
    with pytest.raises(InvalidParameterError, match=match):
        BALD(**params).select(net, pool, 3, random_state=0)
    X, y = _data(40)
    learner = ActiveLearner(ActiveNet(_DropoutNet, max_epochs=1, verbose=0), BALD(**params))
    with pytest.raises(InvalidParameterError, match=match):
        learner.fit(X, y)
    assert not hasattr(learner, "estimator_")


def test_sklearn_contract():
    selector = BALD(n_samples=50, subset=100, batch="stochastic")
    assert selector.get_params() == {"n_samples": 50, "subset": 100, "batch": "stochastic"}
    assert clone(selector).get_params() == selector.get_params()
    assert BALD().training_needs().parts == ()  # no training part: the net trains plainly


def _learner(X, y, **selector_params):
    net = ActiveNet(SmallCNN, module__width=4, module__dropout=0.5, max_epochs=2, batch_size=8,
                    lr=0.05, iterator_valid__batch_size=9, verbose=0)
    return ActiveLearner(net, BALD(n_samples=4, **selector_params), random_state=0).fit(X, y)


def _images(n, seed):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 8, 8), dtype=np.float32), np.arange(n) % 3


def test_dataset_pool_queries_equal_the_array_pool():
    X, y = _images(30, 0)
    pool, y_pool = _images(40, 1)
    learner = _learner(X, y)
    idx, scores = learner.query(pool, 6, return_scores=True)
    dataset = TensorDataset(torch.from_numpy(pool), torch.from_numpy(y_pool))
    ds_idx, ds_scores = learner.query(dataset, 6, return_scores=True)
    np.testing.assert_array_equal(ds_idx, idx)
    np.testing.assert_array_equal(ds_scores, scores)
    assert len(set(idx.tolist())) == 6 and np.all(np.diff(scores) <= 0)


def test_subset_scores_only_candidates_drawn_from_the_query_seed():
    X, y = _images(30, 0)
    pool, _ = _images(60, 2)
    learner = _learner(X, y, subset=15)
    net, selector = learner.estimator_, learner.selector_
    idx, scores = selector.select(net, pool, 5, random_state=4)
    candidates = selector._draw_subset(len(pool), 5, 4)
    assert len(candidates) == 15 and set(idx.tolist()) <= set(candidates.tolist())
    # the same as scoring the candidates alone, mapped back
    sub_idx, sub_scores = BALD(n_samples=4).select(net, pool[candidates], 5, random_state=4)
    np.testing.assert_array_equal(idx, candidates[sub_idx])
    np.testing.assert_array_equal(scores, sub_scores)
    with pytest.raises(ValueError, match=r"n=16 exceeds BALD's subset=15"):
        learner.query(pool, 16)


def test_nan_outputs_are_refused_not_ranked():
    X, y = _images(30, 0)
    learner = _learner(X, y)
    with torch.no_grad():
        learner.estimator_.module_.fc.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"BALD produced NaN scores; .*did training diverge\?"):
        learner.query(_images(20, 3)[0], 3)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bald_on_cuda_is_seeded_and_leaves_the_cuda_random_state_alone():
    X, y = _images(60, 0)
    net = ActiveNet(SmallCNN, module__width=8, module__dropout=0.5, max_epochs=2, batch_size=16,
                    iterator_valid__batch_size=64, device="cuda", verbose=0)
    learner = ActiveLearner(net, BALD(n_samples=8), random_state=0).fit(X[:30], y[:30])
    pool = _images(500, 1)[0]
    state = torch.cuda.get_rng_state()
    scores = BALD(n_samples=8).score_pool(learner.estimator_, pool, random_state=3)
    assert scores.device.type == "cuda" and scores.shape == (500,)
    assert torch.equal(torch.cuda.get_rng_state(), state)
    assert torch.equal(scores, BALD(n_samples=8).score_pool(learner.estimator_, pool, random_state=3))
    idx, picked = learner.query(pool, 20, return_scores=True)
    assert len(set(idx.tolist())) == 20 and np.all(np.diff(picked) <= 0)
    assert scores.min() >= 0 and scores.max() > 0  # the masks vary between the draws
    # the same weights on the CPU (other masks): the same scale of disagreement
    cpu = copy.deepcopy(learner.estimator_)
    cpu.device = "cpu"
    cpu.module_.to("cpu")
    cpu_scores = BALD(n_samples=8).score_pool(cpu, pool, random_state=3)
    assert 0.5 < float(cpu_scores.mean() / scores.mean().cpu()) < 2


def test_the_cli_runs_bald_with_dropout_and_badge(tmp_path):
    import io

    from skal.cli import _net_for, build_parser, simulate

    args = build_parser().parse_args(["simulate", "--initial", "20", "--query", "10", "--cycles",
                                      "1", "--epochs", "2", "--pool-size", "300",
                                      "--selectors", "bald,badge,random", "--quiet",
                                      "--out", str(tmp_path)])
    result = simulate(args, out=io.StringIO())
    assert result.names == ["bald", "badge", "random"]
    assert result.scores.shape == (3, args.repeats, 2) and np.isfinite(result.scores).all()
    net = ActiveNet(SmallCNN)
    assert _net_for(net, BALD()).get_params()["module__dropout"] == 0.5
    assert _net_for(net, Random()) is net
    assert _net_for(net, BADGE()) is net  # BADGE needs no dropout


def test_a_saved_bald_campaign_resumes_with_the_same_queries(tmp_path):
    X, y = _images(30, 0)
    pool, _ = _images(25, 1)
    learner = _learner(X, y)
    learner.save(tmp_path / "bald.skal")
    loaded = ActiveLearner.load(tmp_path / "bald.skal")
    assert loaded.estimator_.module_.dropout.p == 0.5
    np.testing.assert_array_equal(loaded.query(pool, 5, return_scores=True)[1],
                                  learner.query(pool, 5, return_scores=True)[1])
