"""Tests of skal.influence against per-sample autograd loops and dense float64 algebra."""

import itertools
import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.functional import hessian
from torch.func import functional_call

from skal.influence import (
    hvp,
    influence_scores,
    influence_scores_vmap,
    lissa,
    reference_gradient,
    select_params,
)

# --- fixtures and float64 references ------------------------------------------


def _mlp(n_out=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, n_out)).double()


def _bn_net(seed=0):
    """MLP with BatchNorm, non-trivial running statistics, left in train mode."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)).double()
    with torch.no_grad():
        net[1].running_mean.copy_(torch.linspace(-0.5, 0.5, 5))
        net[1].running_var.copy_(torch.linspace(0.5, 2.0, 5))
        net[1].weight.copy_(torch.linspace(0.8, 1.2, 5))
        net[1].bias.copy_(torch.linspace(-0.1, 0.1, 5))
    return net.train()


@pytest.fixture(params=["mlp", "bn"])
def net(request):
    return _mlp() if request.param == "mlp" else _bn_net()


def _data(n, n_classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return x, y


def _random_like(params, seed=2):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in params.items()}


def _flat(d):
    return torch.cat([t.reshape(-1) for t in d.values()])


def _unflat(flat, like):
    out, i = {}, 0
    for n, t in like.items():
        out[n] = flat[i:i + t.numel()].reshape(t.shape)
        i += t.numel()
    return out


def _dense_hessian(net, params, x, y):
    """Explicit Hessian of the mean CE wrt the flattened selected params (eval mode)."""
    fixed = {n: p.detach() for n, p in net.named_parameters() if n not in params}
    fixed.update(dict(net.named_buffers()))
    like = {n: p.detach() for n, p in params.items()}
    training = net.training
    net.eval()
    try:
        def loss(flat):
            logits = functional_call(net, {**fixed, **_unflat(flat, like)}, (x,))
            return F.cross_entropy(logits, y)

        return hessian(loss, _flat(like), vectorize=True)
    finally:
        net.train(training)


def _eval_per_sample_grads(net, params, x, targets_and_weights):
    """Per-sample gradients of sum_c w_c CE(f(x_i), c), by a Python loop of autograd.grad."""
    names = list(params)
    net.eval()
    grads = []
    for i in range(x.shape[0]):
        logits = net(x[i:i + 1])
        classes, weights = targets_and_weights(logits.detach())
        loss = sum(w * F.cross_entropy(logits, torch.tensor([c])) for c, w in zip(classes, weights))
        grads.append(dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names]))))
    return grads


def _hard(logits):
    return [int(logits.argmax())], [1.0]


def _expected(top_k):
    def pick(logits):
        p = torch.softmax(logits[0], dim=0)
        order = torch.argsort(p, descending=True)[:top_k]
        return [int(c) for c in order], [p[c] for c in order]

    return pick


def _dot(a, b):
    return float(sum((a[n] * b[n]).sum() for n in a))


def _state(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def _assert_untouched(net, before, training=True):
    after = net.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert all(p.grad is None for p in net.parameters())
    assert all(m.training is training for m in net.modules())


# --- select_params ------------------------------------------------------------


class _Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten())
        self.mid = nn.Linear(2, 4)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(4, 3))
        self.scale = nn.Parameter(torch.ones(1))


def test_select_params_all_weights_excludes_biases_and_norms():
    net = _Nested()
    selected = select_params(net)
    assert list(selected) == ["body.0.weight", "mid.weight", "head.1.weight"]
    assert selected["body.0.weight"] is net.body[0].weight
    assert list(select_params(_bn_net())) == ["0.weight", "3.weight"]


def test_select_params_last_layer():
    net = _Nested()
    selected = select_params(net, "last layer")
    assert list(selected) == ["head.1.weight", "head.1.bias"]
    assert selected["head.1.bias"] is net.head[1].bias
    assert list(select_params(_mlp(), "last layer")) == ["2.weight", "2.bias"]
    assert list(select_params(nn.Linear(2, 2), "last layer")) == ["weight", "bias"]
    no_bias = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 2, bias=False))
    assert list(select_params(no_bias, "last layer")) == ["1.weight"]


def test_select_params_callable():
    net = _Nested()
    selected = select_params(net, lambda name, p: name.endswith("bias") and p.numel() > 2)
    assert set(selected) == {"mid.bias", "head.1.bias"}


@pytest.mark.parametrize("params, match", [
    ("all", "params must be 'all weights', 'last layer' or a callable"),
    (None, "params must be 'all weights', 'last layer' or a callable"),
    (["0.weight"], "params must be 'all weights', 'last layer' or a callable"),
    (lambda name, p: False, "selects no parameter of the module"),
])
def test_select_params_errors(params, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        select_params(_mlp(), params)


def test_select_params_empty_selections_raise():
    with pytest.raises(ValueError, match=r"params='all weights' selects no parameter"):
        select_params(nn.Sequential(nn.BatchNorm1d(3)))
    with pytest.raises(ValueError, match=r"params='last layer' needs a torch.nn.Linear"):
        select_params(nn.Sequential(nn.Conv2d(1, 1, 1)), "last layer")


def test_unknown_parameter_names_raise():
    net = _mlp()
    x, y = _data(2)
    with pytest.raises(ValueError, match=r"params names \['9.weight'\] are not parameters"):
        reference_gradient(net, {"9.weight": torch.zeros(2)}, [(x, y)])


# --- reference_gradient -------------------------------------------------------


@pytest.mark.parametrize("spec", ["all weights", "last layer"])
def test_reference_gradient_is_sum_of_per_sample_gradients(net, spec):
    params = select_params(net, spec)
    x, y = _data(7)
    before = _state(net)
    v = reference_gradient(net, spec, [(x[:4], y[:4]), (x[4:], y[4:])])
    _assert_untouched(net, before)

    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    net.eval()
    for i in range(7):
        loss = F.cross_entropy(net(x[i:i + 1]), y[i:i + 1])
        for n, g in zip(params, torch.autograd.grad(loss, list(params.values()))):
            expected[n] += g
    assert list(v) == list(params)
    for n in params:
        torch.testing.assert_close(v[n], expected[n], rtol=0, atol=1e-12)
    # A sum, not a mean: twice the data gives twice the gradient.
    v2 = reference_gradient(net, params, [(x, y), (x, y)])
    for n in params:
        torch.testing.assert_close(v2[n], 2 * expected[n], rtol=0, atol=1e-12)


def test_reference_gradient_empty_batches_raise():
    with pytest.raises(ValueError, match="batches is empty"):
        reference_gradient(_mlp(), "all weights", [])


# --- hvp ----------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["all weights", "last layer",
                                  lambda name, p: name.startswith("0.")])
def test_hvp_equals_dense_hessian_times_vector(net, spec):
    params = select_params(net, spec)
    x, y = _data(6)
    vec = _random_like(params)
    before = _state(net)
    result = hvp(net, params, x, y, vec)
    _assert_untouched(net, before)

    expected = _dense_hessian(net, params, x, y) @ _flat(vec)
    assert list(result) == list(params)
    np.testing.assert_allclose(_flat(result).numpy(), expected.numpy(), rtol=0, atol=1e-10)
    assert float(expected.abs().max()) > 1e-3  # not trivially zero


# --- lissa --------------------------------------------------------------------


def _hand_lissa(hessians, v, *, damping, scale, depth, repeats, restart_at=()):
    """The recursion of METHODS.md section 4 step 2 on flat vectors, dense Hessians."""
    estimates, h = [], v
    for j, H in enumerate(hessians):
        h = v if j in restart_at else v + (1 - damping) * h - (H @ h) / scale
        if (j + 1) % depth == 0:
            estimates.append(h)
            h = v
        if len(estimates) == repeats:
            break
    return torch.stack(estimates).mean(dim=0)


class _Counting:
    """Yields (x, y) forever and counts how many were drawn."""

    def __init__(self, batch):
        self.batch, self.drawn = batch, 0

    def __iter__(self):
        while True:
            self.drawn += 1
            yield self.batch


@pytest.mark.parametrize("spec", ["last layer", "all weights"])
def test_lissa_converges_to_damped_inverse_hvp(spec):
    net = _mlp()
    params = select_params(net, spec)
    x, y = _data(8)
    v = _random_like(params, seed=3)
    # Contraction |1 - damping - eig / scale| <= 0.78 here, so 0.78**100 ~ 1e-11.
    damping, scale, depth = 0.3, 5.0, 100
    H = _dense_hessian(net, params, x, y).numpy()
    eig = np.linalg.eigvalsh(H)
    # Convergence needs -damping * scale < eig < (2 - damping) * scale.
    assert -damping * scale < eig.min() and eig.max() < scale
    batches = _Counting((x, y))
    s = lissa(net, params, v, batches, damping=damping, scale=scale, depth=depth, repeats=2)
    assert batches.drawn == 2 * depth  # stops after repeats * depth, never draws more
    expected = scale * np.linalg.solve(H + damping * scale * np.eye(len(H)), _flat(v).numpy())
    assert list(s) == list(params)
    np.testing.assert_allclose(_flat(s).numpy(), expected, rtol=1e-7, atol=1e-8)


def _distinct_batches(n, nan_at=()):
    batches = []
    for j in range(n):
        x, y = _data(2, seed=10 + j)
        if j in nan_at:
            x = x.clone()
            x[0, 0] = float("nan")
        batches.append((x, y))
    return batches


def test_lissa_equals_hand_written_recursion():
    net = _bn_net()
    params = select_params(net)
    v = _random_like(params, seed=4)
    # The 7th batch would poison the result (NaN) if it were consumed.
    batches = _distinct_batches(7, nan_at=(6,))
    hessians = [_dense_hessian(net, params, x, y) for x, y in batches[:6]]
    before = _state(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        s = lissa(net, params, v, batches, damping=0.1, scale=3.0, depth=3, repeats=2)
    _assert_untouched(net, before)
    expected = _hand_lissa(hessians, _flat(v), damping=0.1, scale=3.0, depth=3, repeats=2)
    np.testing.assert_allclose(_flat(s).numpy(), expected.numpy(), rtol=0, atol=1e-12)
    # Not trivially v: the recursion did something.
    assert float((_flat(s) - _flat(v)).abs().max()) > 1e-2


@pytest.mark.parametrize("nan_at", [1, 2, 4])
def test_lissa_nan_hvp_warns_and_restarts(nan_at):
    net = _mlp()
    params = select_params(net)
    v = _random_like(params, seed=5)
    batches = _distinct_batches(6, nan_at=(nan_at,))
    hessians = [_dense_hessian(net, params, x, y) for x, y in batches]
    msg = (f"lissa: the Hessian-vector product was NaN or infinite at step(s) [{nan_at}] "
           "(0-based) of 6; the recursion was restarted from h = v there.")
    with pytest.warns(RuntimeWarning, match=re.escape(msg)):
        s = lissa(net, params, v, batches, damping=0.1, scale=3.0, depth=3, repeats=2)
    expected = _hand_lissa(hessians, _flat(v), damping=0.1, scale=3.0, depth=3, repeats=2,
                           restart_at=(nan_at,))
    assert torch.isfinite(_flat(s)).all()
    np.testing.assert_allclose(_flat(s).numpy(), expected.numpy(), rtol=0, atol=1e-12)


def test_lissa_too_few_batches_raise():
    net = _mlp()
    v = _random_like(select_params(net))
    msg = ("lissa needs repeats * depth = 6 batches (samples at the reference's batch size 1), "
           "but batches gave only 5.")
    with pytest.raises(ValueError, match=re.escape(msg)):
        lissa(net, "all weights", v, _distinct_batches(5), depth=3, repeats=2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(damping=1.0), "damping must be in [0, 1); got 1.0."),
    (dict(damping=-0.1), "damping must be in [0, 1); got -0.1."),
    (dict(scale=0.0), "scale must be > 0; got 0.0."),
    (dict(depth=0), "depth must be a positive int; got 0."),
    (dict(repeats=2.0), "repeats must be a positive int; got 2.0."),
    (dict(repeats=True), "repeats must be a positive int; got True."),
])
def test_lissa_bad_hyperparameters_raise(kwargs, match):
    net = _mlp()
    v = _random_like(select_params(net))
    with pytest.raises(ValueError, match=re.escape(match)):
        lissa(net, "all weights", v, itertools.repeat(_data(2)), **kwargs)


# --- influence_scores ---------------------------------------------------------


@pytest.mark.parametrize("pseudo_label, top_k, n_out", [
    ("hard", 10, 3),
    ("expected", 10, 3),   # fewer than 10 classes: all of them
    ("expected", 2, 3),
    ("expected", 10, 12),  # the default truncation to the top 10 classes
])
@pytest.mark.parametrize("spec", ["all weights", "last layer"])
def test_influence_scores_equal_per_sample_loop(pseudo_label, top_k, n_out, spec):
    net = _mlp(n_out=n_out).train()
    params = select_params(net, spec)
    x, _ = _data(9)
    s = _random_like(params, seed=6)
    before = _state(net)
    fast = influence_scores(net, params, x, s, pseudo_label=pseudo_label, top_k=top_k)
    _assert_untouched(net, before)
    mapped = influence_scores_vmap(net, params, x, s, pseudo_label=pseudo_label, top_k=top_k)
    chunked = influence_scores_vmap(net, spec, x, s, pseudo_label=pseudo_label, top_k=top_k,
                                    chunk_size=4)
    _assert_untouched(net, before)

    pick = _hard if pseudo_label == "hard" else _expected(top_k)
    grads = _eval_per_sample_grads(net, params, x, pick)
    expected = np.array([-_dot(g, s) for g in grads])
    assert fast.shape == (9,) and fast.dtype == torch.float64
    np.testing.assert_allclose(fast.numpy(), expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(mapped.numpy(), expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(chunked.numpy(), expected, rtol=0, atol=1e-10)
    if pseudo_label == "expected" and top_k >= n_out:
        # Over all classes sum_c p_c grad CE_c = E_{c~p}[-grad log p_c] = 0 exactly.
        assert np.abs(expected).max() < 1e-12 and float(fast.abs().max()) < 1e-12
    else:
        assert np.abs(expected).max() > 1e-3


def test_influence_scores_with_batchnorm_in_eval_mode():
    net = _bn_net()
    params = select_params(net)
    x, _ = _data(5)
    s = _random_like(params, seed=7)
    before = _state(net)
    for fn in (influence_scores, influence_scores_vmap):
        for pseudo_label, pick in (("hard", _hard), ("expected", _expected(10))):
            scores = fn(net, params, x, s, pseudo_label=pseudo_label)
            _assert_untouched(net, before)
            expected = [-_dot(g, s) for g in _eval_per_sample_grads(net, params, x, pick)]
            net.train()
            np.testing.assert_allclose(scores.numpy(), expected, rtol=0, atol=1e-10)
    # Eval mode makes each score independent of the rest of the batch.
    parts = torch.cat([influence_scores(net, params, x[:2], s),
                       influence_scores(net, params, x[2:], s)])
    np.testing.assert_allclose(parts.numpy(), influence_scores(net, params, x, s).numpy(),
                               rtol=0, atol=1e-12)


def test_influence_scores_bad_arguments_raise():
    net = _mlp()
    x, _ = _data(2)
    s = _random_like(select_params(net))
    msg = "pseudo_label must be 'hard' or 'expected'; got 'soft'."
    with pytest.raises(ValueError, match=re.escape(msg)):
        influence_scores(net, "all weights", x, s, pseudo_label="soft")
    with pytest.raises(ValueError, match=re.escape("top_k must be a positive int; got 0.")):
        influence_scores_vmap(net, "all weights", x, s, pseudo_label="expected", top_k=0)


def test_eval_mode_restored_after_error():
    net = _bn_net()
    x, _ = _data(2)
    s = {"0.weight": torch.zeros(5, 3, dtype=torch.float64),
         "3.weight": torch.zeros(2, 2, dtype=torch.float64)}  # wrong shape
    with pytest.raises(RuntimeError):
        influence_scores(net, "all weights", x, s)
    assert all(m.training for m in net.modules())
