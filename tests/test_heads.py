"""The auxiliary heads (LL4AL's LossNet, TiDAL's TD head) and their losses, against hand computations."""

import numpy as np
import pytest
import torch

from skal.heads import LossPredictionHead, TrainingDynamicsHead
from skal.losses import dynamics_prediction_loss, loss_ranking_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


RESNET18_LEVELS = [(64, 32), (128, 16), (256, 8), (512, 4)]  # (channels, spatial size)


def _resnet18_levels(batch, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, s, s, generator=gen) for c, s in RESNET18_LEVELS]


def head_reference(head, levels):
    """The head by hand in float64: GAP per level -> Linear+ReLU per level -> concat -> out Linear."""
    hidden = []
    for level, f in zip(head.levels, levels):
        linear = level[0]
        pooled = f.detach().double().numpy()
        if pooled.ndim > 2:
            pooled = pooled.reshape(pooled.shape[0], pooled.shape[1], -1).mean(axis=2)
        w = linear.weight.detach().double().numpy()
        b = linear.bias.detach().double().numpy()
        hidden.append(np.maximum(pooled @ w.T + b, 0.0))
    concat = np.concatenate(hidden, axis=1)
    w_out = head.out.weight.detach().double().numpy()
    b_out = head.out.bias.detach().double().numpy()
    return concat @ w_out.T + b_out


def _n_params(module):
    return sum(p.numel() for p in module.parameters())


# --- heads --------------------------------------------------------------------------


def test_loss_predictor_has_ll4al_parameter_count_on_resnet18_levels():
    torch.manual_seed(0)
    head = LossPredictionHead(n_levels=4, hidden=128)
    levels = _resnet18_levels(3)
    out = head(levels)
    # LL4AL's LossNet: 4 x Linear(C_i, 128) + Linear(512, 1)
    assert _n_params(head) == 123_905
    assert _n_params(head) == sum(c * 128 + 128 for c, _ in RESNET18_LEVELS) + 512 + 1
    assert out.shape == (3,)
    assert [level[0].in_features for level in head.levels] == [64, 128, 256, 512]
    assert head.out.in_features == 512 and head.out.out_features == 1


def test_loss_predictor_equals_hand_computation():
    torch.manual_seed(1)
    head = LossPredictionHead(n_levels=4, hidden=128)
    levels = _resnet18_levels(5, seed=1)
    out = head(levels)
    ref = head_reference(head, levels)
    assert ref.shape == (5, 1)
    np.testing.assert_allclose(out.detach().double().numpy(), ref[:, 0], rtol=1e-5, atol=1e-6)
    # the outputs are not all the same (the hand computation is not trivially satisfied)
    assert np.ptp(ref) > 1e-4


def test_dynamics_predictor_shape_params_and_hand_computation():
    torch.manual_seed(2)
    head = TrainingDynamicsHead(num_classes=10, n_levels=4, hidden=128)
    levels = _resnet18_levels(4, seed=2)
    out = head(levels)
    assert out.shape == (4, 10)
    assert _n_params(head) == sum(c * 128 + 128 for c, _ in RESNET18_LEVELS) + 512 * 10 + 10
    ref = head_reference(head, levels)
    np.testing.assert_allclose(out.detach().double().numpy(), ref, rtol=1e-5, atol=1e-6)


def test_head_hidden_width_and_pooled_2d_levels():
    torch.manual_seed(3)
    head = TrainingDynamicsHead(num_classes=3, n_levels=2, hidden=16)
    maps = [torch.randn(6, 4, 4, 4), torch.randn(6, 8, 2, 2)]
    out = head(maps)
    assert [level[0].out_features for level in head.levels] == [16, 16]
    assert head.out.in_features == 32
    # already pooled (2-d) features give the same output as the maps
    pooled = [f.mean(dim=(2, 3)) for f in maps]
    torch.testing.assert_close(head(pooled), out)
    np.testing.assert_allclose(out.detach().double().numpy(), head_reference(head, maps), rtol=1e-5, atol=1e-6)


def test_head_rejects_wrong_number_of_levels():
    head = LossPredictionHead(n_levels=4)
    with pytest.raises(ValueError, match="expected 4 feature levels, got 2"):
        head([torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)])


# --- LL4AL's ranking loss -------------------------------------------------------------


def ranking_reference(pred, tgt, margin):
    """Loss and subgradient wrt pred of LL4AL's hinge, pairs (i, m-1-i) for i < m/2."""
    pred = np.asarray(pred, dtype=np.float64)
    tgt = np.asarray(tgt, dtype=np.float64)
    m = len(pred) // 2 * 2
    grad = np.zeros_like(pred)
    if m == 0:
        return 0.0, grad
    n_pairs = m // 2
    total = 0.0
    for i in range(n_pairs):
        j = m - 1 - i
        s = 1.0 if tgt[i] > tgt[j] else -1.0
        h = margin - s * (pred[i] - pred[j])
        if h > 0:
            total += h
            grad[i] += -s / n_pairs
            grad[j] += s / n_pairs
    return total / n_pairs, grad


RANKING_CASES = [
    # (predicted, target, margin)
    ([0.0, 3.0], [2.0, 1.0], 1.0),
    ([0.3, -0.2], [0.5, 1.5], 0.5),
    ([0.1, 0.9, -0.4, 2.0, 7.0], [1.0, 0.2, 0.7, 0.3, 9.0], 1.0),  # odd: last sample left out
    ([0.5, 0.1, 1.3, -0.7, 0.2, 2.1], [0.4, 0.4, 1.0, 2.0, 0.4, 0.3], 0.5),  # ties -> sign -1
    ([1.2, 0.4, 2.0, 0.0, -1.0, 0.1], [2.0, 0.1, 0.3, 0.3, 0.1, 0.5], 1.0),  # some hinges inactive
    ([0.7], [1.0], 1.0),  # single sample: zero
]


@pytest.mark.parametrize("pred, tgt, margin", RANKING_CASES)
def test_loss_ranking_loss_value_and_gradient_match_hand_computation(pred, tgt, margin):
    predicted = torch.tensor(pred, dtype=torch.float64, requires_grad=True)
    target = torch.tensor(tgt, dtype=torch.float64, requires_grad=True)
    loss = loss_ranking_loss(predicted, target, margin)
    ref_loss, ref_grad = ranking_reference(pred, tgt, margin)
    assert loss.ndim == 0
    np.testing.assert_allclose(loss.item(), ref_loss, rtol=1e-12, atol=1e-12)
    g_pred, g_tgt = torch.autograd.grad(loss, (predicted, target), allow_unused=True)
    np.testing.assert_allclose(g_pred.numpy(), ref_grad, rtol=1e-12, atol=1e-12)
    # the true losses are a target only: no gradient reaches them
    assert g_tgt is None or not g_tgt.any()


def test_loss_ranking_loss_pairs_are_first_with_last():
    # batch of 5: pairs (0,3) and (1,2); sample 4 does not count
    pred = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0])
    tgt = torch.tensor([1.0, 0.0, 1.0, 0.0, 5.0])
    # pair (0,3): s=+1, pair (1,2): s=-1; both hinges = margin
    assert loss_ranking_loss(pred, tgt, margin=0.5).item() == pytest.approx(0.5)
    pred = torch.tensor([2.0, -2.0, 0.0, 0.0, 100.0], requires_grad=True)
    # pair (0,3): 0.5 - (2 - 0) < 0; pair (1,2): 0.5 + (-2 - 0) < 0 -> zero loss
    loss = loss_ranking_loss(pred, tgt, margin=0.5)
    assert loss.item() == 0.0
    loss.backward()
    assert pred.grad.tolist() == [0.0] * 5


def test_loss_ranking_loss_hand_values():
    # batch of 6, margin 0.5, ties: pairs (0,5),(1,4),(2,3)
    pred = torch.tensor([1.0, 0.0, 0.5, 0.5, 0.2, 0.0])
    tgt = torch.tensor([3.0, 1.0, 2.0, 2.0, 1.0, 0.0])
    # (0,5): s=+1, 0.5-(1-0)=-0.5 -> 0; (1,4): tie s=-1, 0.5+(0-0.2)=0.3; (2,3): tie s=-1, 0.5+0=0.5
    assert loss_ranking_loss(pred, tgt, margin=0.5).item() == pytest.approx((0.0 + 0.3 + 0.5) / 3)
    # default margin 1: (0,5): 0; (1,4): 0.8; (2,3): 1.0
    assert loss_ranking_loss(pred, tgt).item() == pytest.approx((0.0 + 0.8 + 1.0) / 3)


def test_loss_ranking_loss_single_sample_keeps_graph():
    pred = torch.tensor([0.4], requires_grad=True)
    loss = loss_ranking_loss(pred, torch.tensor([1.0]))
    assert loss.item() == 0.0
    loss.backward()
    assert pred.grad.tolist() == [0.0]


# --- TiDAL's dynamics loss --------------------------------------------------------------


def test_dynamics_prediction_loss_is_kl_pbar_to_softmax_over_batch():
    rng = np.random.default_rng(0)
    B, C = 5, 4
    q_logits = rng.normal(size=(B, C)) * 2
    p_bar = rng.dirichlet(np.ones(C), size=B)
    p_bar[1] = [0.0, 0.3, 0.7, 0.0]  # zeros: 0 log 0 = 0
    log_q = q_logits - np.log(np.exp(q_logits).sum(axis=1, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p_bar > 0, p_bar * (np.log(p_bar) - log_q), 0.0)
    ref = terms.sum() / B

    logits = torch.tensor(q_logits, dtype=torch.float64, requires_grad=True)
    target = torch.tensor(p_bar, dtype=torch.float64, requires_grad=True)
    loss = dynamics_prediction_loss(logits, target)
    np.testing.assert_allclose(loss.item(), ref, rtol=1e-6)
    g_logits, g_target = torch.autograd.grad(loss, (logits, target), allow_unused=True)
    # d/dz KL(p || softmax z) / B = (softmax(z) - p) / B; the target is detached
    np.testing.assert_allclose(g_logits.numpy(), (np.exp(log_q) - p_bar) / B, rtol=1e-5, atol=1e-7)
    assert g_target is None or not g_target.any()


def test_dynamics_prediction_loss_zero_when_q_equals_pbar():
    p = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.2, 0.2]])
    loss = dynamics_prediction_loss(torch.log(p), p)
    assert abs(loss.item()) < 1e-6
    assert dynamics_prediction_loss(torch.zeros(2, 3), p).item() > 0.05
