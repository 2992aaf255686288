"""Tests of skal.scores against independent float64 numpy references."""

import numpy as np
import pytest
import torch

from skal.scores import entropy, kl_divergence, least_confidence, margin, top_n

# --- float64 numpy references -------------------------------------------------


def _np(logits):
    """Logits (any torch dtype) as a float64 numpy array, exactly as stored."""
    return logits.detach().to(torch.float64).cpu().numpy()


def ref_log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def ref_softmax(z):
    return np.exp(ref_log_softmax(z))


def ref_entropy(z):
    log_p = ref_log_softmax(z)
    return -(np.exp(log_p) * log_p).sum(axis=1)


def ref_margin(z):
    p = np.sort(ref_softmax(z), axis=1)
    return p[:, -1] - p[:, -2]


def ref_least_confidence(z):
    return 1.0 - ref_softmax(z).max(axis=1)


def ref_kl(zp, zq):
    log_p = ref_log_softmax(zp)
    log_q = ref_log_softmax(zq)
    return (np.exp(log_p) * (log_p - log_q)).sum(axis=1)


# (n_samples, n_classes, scale) of the random float32 logits.
SHAPES = [(1, 2, 1.0), (50, 2, 3.0), (64, 10, 1.0), (33, 10, 5.0), (40, 10, 30.0), (7, 100, 2.0)]


def _logits(shape, seed, dtype=torch.float32):
    n, c, scale = shape
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).to(dtype)


# --- entropy, margin, least confidence -----------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_entropy_matches_reference(shape):
    z = _logits(shape, seed=1)
    out = entropy(z)
    assert out.shape == (shape[0],)
    assert out.dtype == torch.float32
    ref = ref_entropy(_np(z))
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)
    assert np.all(out.numpy() >= -1e-6)
    assert np.all(out.numpy() <= np.log(shape[1]) + 1e-5)


def test_entropy_uniform_is_log_c():
    out = entropy(torch.zeros(3, 7))
    np.testing.assert_allclose(out.numpy(), np.full(3, np.log(7.0)), rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(20, 2, 2.0), (30, 10, 3.0), (10, 10, 30.0)])
def test_entropy_half_precision_input_computed_in_float32(dtype, shape):
    z = _logits(shape, seed=2, dtype=dtype)
    out = entropy(z)
    assert out.dtype == torch.float32
    # Reference from the half-precision values actually stored, in float64.
    np.testing.assert_allclose(out.numpy(), ref_entropy(_np(z)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_margin_matches_reference(shape):
    z = _logits(shape, seed=3)
    out = margin(z)
    assert out.shape == (shape[0],)
    np.testing.assert_allclose(out.numpy(), ref_margin(_np(z)), rtol=1e-5, atol=1e-6)
    assert np.all((out.numpy() >= 0) & (out.numpy() <= 1 + 1e-6))


def test_margin_known_value():
    out = margin(torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.25, 0.5, 0.25]])))
    np.testing.assert_allclose(out.numpy(), [0.3, 0.25], rtol=1e-5, atol=1e-6)


def test_margin_single_class_is_one():
    out = margin(torch.randn(5, 1))
    assert out.shape == (5,)
    np.testing.assert_array_equal(out.numpy(), np.ones(5, dtype=np.float32))


@pytest.mark.parametrize("shape", SHAPES)
def test_least_confidence_matches_reference(shape):
    z = _logits(shape, seed=4)
    out = least_confidence(z)
    assert out.shape == (shape[0],)
    np.testing.assert_allclose(out.numpy(), ref_least_confidence(_np(z)), rtol=1e-5, atol=1e-6)
    assert np.all(out.numpy() <= 1 - 1 / shape[1] + 1e-6)


def test_least_confidence_known_value():
    out = least_confidence(torch.log(torch.tensor([[0.7, 0.2, 0.1]])))
    np.testing.assert_allclose(out.numpy(), [0.3], rtol=1e-5, atol=1e-6)


# --- KL divergence ------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_kl_matches_reference(shape):
    zp = _logits(shape, seed=5)
    zq = _logits(shape, seed=6)
    out = kl_divergence(zp, zq)
    assert out.shape == (shape[0],)
    assert out.dtype == torch.float32
    ref = ref_kl(_np(zp), _np(zq))
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)
    assert np.all(out.numpy() >= 0)


def test_kl_known_value():
    p = torch.log(torch.tensor([[0.5, 0.5]]))
    q = torch.log(torch.tensor([[0.9, 0.1]]))
    expected = 0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1)
    np.testing.assert_allclose(kl_divergence(p, q).numpy(), [expected], rtol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_kl_of_identical_logits_is_zero(shape):
    z = _logits(shape, seed=7)
    out = kl_divergence(z, z)
    np.testing.assert_allclose(out.numpy(), np.zeros(shape[0]), rtol=0, atol=1e-7)


@pytest.mark.parametrize("shape", [(200, 2, 3.0), (200, 10, 3.0), (100, 10, 30.0)])
def test_kl_nearly_equal_float64_input(shape):
    # float64 logits stay float64, so divergences of ~1e-7 keep full precision.
    zp = _logits(shape, seed=8, dtype=torch.float64)
    g = torch.Generator().manual_seed(9)
    zq = zp + 1e-3 * torch.randn(zp.shape, generator=g, dtype=torch.float64)
    out = kl_divergence(zp, zq)
    assert out.dtype == torch.float64
    ref = ref_kl(_np(zp), _np(zq))
    assert ref.max() < 1e-5  # really nearly equal distributions
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-6, atol=1e-12)
    assert np.all(out.numpy() >= 0)


@pytest.mark.parametrize("shape", [(200, 2, 3.0), (200, 10, 3.0), (200, 10, 30.0)])
@pytest.mark.parametrize("noise", [1e-2, 1e-3, 1e-4])
def test_kl_nearly_equal_float32_input(shape, noise):
    # The textbook sum p (log p - log q) has a float32 error floor of a few
    # ulps of log p (~3e-7), above DISAL's late-epoch divergences; kl_divergence
    # works with the logit difference, so its error scales with |d| instead.
    zp = _logits(shape, seed=10)
    g = torch.Generator().manual_seed(11)
    zq = zp + noise * torch.randn(zp.shape, generator=g)
    out = kl_divergence(zp, zq)
    assert out.dtype == torch.float32
    ref = ref_kl(_np(zp), _np(zq))
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-3, atol=1e-9)
    assert np.all(out.numpy() >= -1e-9)
    # DISAL's ranking is the float64 ranking wherever values differ by > 1e-8
    order = np.argsort(-out.numpy(), kind="stable")
    assert np.all(np.diff(ref[order]) <= 1e-8)


def test_kl_of_very_different_logits_falls_back_to_the_plain_form():
    zp = torch.tensor([[200.0, -200.0, 0.0]])
    zq = torch.tensor([[-200.0, 200.0, 0.0]])
    out = kl_divergence(zp, zq)
    assert torch.isfinite(out).all()
    np.testing.assert_allclose(out.numpy(), ref_kl(_np(zp), _np(zq)), rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_kl_half_precision_input_computed_in_float32(dtype):
    zp = _logits((40, 10, 3.0), seed=12, dtype=dtype)
    zq = _logits((40, 10, 3.0), seed=13, dtype=dtype)
    out = kl_divergence(zp, zq)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref_kl(_np(zp), _np(zq)), rtol=1e-5, atol=1e-6)
    # Nearly equal half-precision logits: the difference survives the upcast.
    zq2 = (zp.float() + 0.05).to(dtype)  # a constant shift: same distribution
    np.testing.assert_allclose(
        kl_divergence(zp, zq2).numpy(), ref_kl(_np(zp), _np(zq2)), rtol=0, atol=1e-6
    )


def test_kl_is_asymmetric():
    zp = _logits((30, 5, 2.0), seed=14)
    zq = _logits((30, 5, 2.0), seed=15)
    pq = kl_divergence(zp, zq).numpy()
    qp = kl_divergence(zq, zp).numpy()
    np.testing.assert_allclose(qp, ref_kl(_np(zq), _np(zp)), rtol=1e-5, atol=1e-6)
    assert np.abs(pq - qp).max() > 1e-2


# --- top_n ----------------------------------------------------------------------


@pytest.mark.parametrize("n_samples, n", [(1, 1), (10, 3), (103, 17), (500, 500)])
def test_top_n_distinct_scores(n_samples, n):
    rng = np.random.default_rng(n_samples)
    scores = rng.permutation(n_samples).astype(np.float32) / n_samples  # distinct
    out = top_n(torch.from_numpy(scores), n, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.int64
    assert out.shape == (n,)
    expected = np.argsort(-scores.astype(np.float64), kind="stable")[:n]
    np.testing.assert_array_equal(out.numpy(), expected)
    assert set(out.tolist()) == set(expected.tolist())


def test_top_n_without_generator():
    out = top_n(torch.tensor([0.1, 0.9, 0.5]), 2)
    np.testing.assert_array_equal(out.numpy(), [1, 2])


def test_top_n_with_partial_ties():
    scores = torch.tensor([1.0, 2.0, 2.0, 2.0, 3.0, 0.0, 0.0, 2.0])
    for seed in range(20):
        out = top_n(scores, 3, generator=torch.Generator().manual_seed(seed)).tolist()
        assert len(out) == 3 and len(set(out)) == 3
        assert out[0] == 4
        assert set(out[1:]) <= {1, 2, 3, 7}
    # n covering all of the ties and one more: the tied block, then the 1.0.
    out = top_n(scores, 6, generator=torch.Generator().manual_seed(0)).tolist()
    assert out[0] == 4
    assert set(out[1:5]) == {1, 2, 3, 7}
    assert out[5] == 0


def test_top_n_all_ties_deterministic_per_seed():
    scores = torch.zeros(100)
    outs = []
    for seed in range(5):
        a = top_n(scores, 10, generator=torch.Generator().manual_seed(seed))
        b = top_n(scores, 10, generator=torch.Generator().manual_seed(seed))
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert a.shape == (10,)
        assert len(set(a.tolist())) == 10
        assert all(0 <= i < 100 for i in a.tolist())
        outs.append(tuple(a.tolist()))
    assert len(set(outs)) >= 2
    full = top_n(scores, 100, generator=torch.Generator().manual_seed(0))
    assert sorted(full.tolist()) == list(range(100))
    assert full.tolist() != list(range(100))  # ties really are shuffled


def test_top_n_tie_breaking_is_uniform():
    scores = torch.zeros(5)
    counts = np.zeros(5)
    n_seeds = 2000
    for seed in range(n_seeds):
        (i,) = top_n(scores, 1, generator=torch.Generator().manual_seed(seed)).tolist()
        counts[i] += 1
    freq = counts / n_seeds
    np.testing.assert_allclose(freq, np.full(5, 0.2), rtol=0, atol=0.04)
