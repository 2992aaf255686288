"""Tests of skal.losses against float64 numpy references."""

import numpy as np
import pytest
import torch

from skal.losses import dynamic_kl_loss


def ref_log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def ref_dynamic_kl(z, t):
    """(1/B) sum_i sum_c t_ic (log t_ic - log softmax(z_i)_c), with 0 log 0 = 0."""
    z = np.asarray(z, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    log_t = np.log(np.where(t > 0, t, 1.0))
    terms = np.where(t > 0, t * (log_t - ref_log_softmax(z)), 0.0)
    return terms.sum() / z.shape[0]


def _data(batch, n_classes, seed, scale=2.0, one_hot_rows=0):
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(batch, n_classes)) * scale).astype(np.float32)
    t = rng.dirichlet(np.ones(n_classes), size=batch)
    for i in range(one_hot_rows):
        t[i] = 0.0
        t[i, i % n_classes] = 1.0
    return z, t.astype(np.float32)


@pytest.mark.parametrize(
    "batch, n_classes, scale, one_hot_rows",
    [(1, 2, 1.0, 0), (16, 3, 2.0, 0), (32, 10, 3.0, 4), (8, 10, 20.0, 2)],
)
def test_dynamic_kl_loss_value(batch, n_classes, scale, one_hot_rows):
    z, t = _data(batch, n_classes, seed=batch, scale=scale, one_hot_rows=one_hot_rows)
    loss = dynamic_kl_loss(torch.from_numpy(z), torch.from_numpy(t))
    assert loss.ndim == 0
    np.testing.assert_allclose(loss.item(), ref_dynamic_kl(z, t), rtol=1e-5, atol=1e-6)


def test_dynamic_kl_loss_zero_when_target_is_prediction():
    z, _ = _data(12, 5, seed=0)
    zt = torch.from_numpy(z)
    loss = dynamic_kl_loss(zt, torch.softmax(zt.double(), dim=1).float())
    np.testing.assert_allclose(loss.item(), 0.0, atol=1e-6)
    assert dynamic_kl_loss(torch.zeros(2, 2), torch.full((2, 2), 0.5)).item() == 0.0


def test_dynamic_kl_loss_is_batch_mean_not_element_mean():
    z, t = _data(4, 10, seed=1)
    loss = dynamic_kl_loss(torch.from_numpy(z), torch.from_numpy(t)).item()
    per_row = [ref_dynamic_kl(z[i : i + 1], t[i : i + 1]) for i in range(4)]
    np.testing.assert_allclose(loss, np.mean(per_row), rtol=1e-5, atol=1e-6)
    # An element-wise mean would be 10 times smaller.
    assert abs(loss - np.mean(per_row) / 10) > 1e-3


@pytest.mark.parametrize("batch, n_classes", [(1, 2), (16, 3), (32, 10)])
def test_dynamic_kl_loss_gradient(batch, n_classes):
    z, t = _data(batch, n_classes, seed=100 + batch, one_hot_rows=1)
    logits = torch.from_numpy(z).requires_grad_(True)
    target = torch.from_numpy(t).requires_grad_(True)
    dynamic_kl_loss(logits, target).backward()
    p = np.exp(ref_log_softmax(z))
    expected = (p - t.astype(np.float64)) / batch
    np.testing.assert_allclose(logits.grad.numpy(), expected, rtol=1e-5, atol=1e-7)
    assert target.grad is None  # the target is detached


def test_dynamic_kl_loss_gradient_nonzero_only_through_logits():
    # Same target, gradient sums to zero per row (softmax - t with sum t = 1).
    z, t = _data(8, 4, seed=7)
    logits = torch.from_numpy(z).requires_grad_(True)
    dynamic_kl_loss(logits, torch.from_numpy(t)).backward()
    np.testing.assert_allclose(logits.grad.sum(dim=1).numpy(), np.zeros(8), atol=1e-7)
    assert logits.grad.abs().max().item() > 1e-3


