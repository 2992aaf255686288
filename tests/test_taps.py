"""Feature taps of ActiveNet: ResNet-18 for 32x32, multi-level features, embeddings, hooks."""

import pickle

import numpy as np
import pytest
import torch
import torchvision
from sklearn.base import clone
from torch import nn

from skal import ActiveLearner, ActiveNet
from skal.models import MLP, SmallCNN, resnet18_cifar
from skal.parts import DynamicsHeadTraining, LossPredictionHeadTraining
from skal.selectors import LL4AL

RESNET_LEVEL_SHAPES = [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
pytestmark = pytest.mark.usefixtures("one_torch_thread")
LOSS_HEAD = ("loss_head", LossPredictionHeadTraining())
DYNAMICS_HEAD = ("dynamics_head", DynamicsHeadTraining())


def _images(n=12, k=3, seed=0, shape=(1, 8, 8)):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, *shape)).astype(np.float32)
    y = (np.arange(n) % k).astype(np.int64)
    return X, y


def _small_cnn_net(**kwargs):
    params = dict(module__width=4, classes=[0, 1, 2], max_epochs=1, batch_size=4, lr=0.05, verbose=0)
    params.update(kwargs)
    return ActiveNet(SmallCNN, **params)


def _assert_no_hooks(*modules):
    for module in modules:
        for name, sub in module.named_modules():
            assert len(sub._forward_hooks) == 0, f"forward hook left on {name!r}"
            assert len(sub._forward_pre_hooks) == 0, f"forward pre-hook left on {name!r}"


def _resnet_by_hand(m, x):
    """Eval-mode ResNet forward by hand: (levels, embedding, logits)."""
    with torch.no_grad():
        h = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        levels = []
        for layer in (m.layer1, m.layer2, m.layer3, m.layer4):
            h = layer(h)
            levels.append(h)
        emb = torch.flatten(m.avgpool(h), 1)
        return levels, emb, m.fc(emb)


# --- resnet18_cifar ----------------------------------------------------------------------


def test_resnet18_cifar_has_torchvision_keys_and_cifar_stem():
    torch.manual_seed(0)
    model = resnet18_cifar()
    reference = torchvision.models.resnet18()
    assert list(model.state_dict().keys()) == list(reference.state_dict().keys())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ref_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    differing = {k for k in shapes if shapes[k] != ref_shapes[k]}
    assert differing == {"conv1.weight", "fc.weight", "fc.bias"}
    assert shapes["conv1.weight"] == (64, 3, 3, 3)
    assert shapes["fc.weight"] == (10, 512)
    assert model.conv1.kernel_size == (3, 3)
    assert model.conv1.stride == (1, 1)
    assert model.conv1.padding == (1, 1)
    assert model.conv1.bias is None
    assert isinstance(model.maxpool, nn.Identity)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet18_cifar_levels_via_forward_tapped():
    torch.manual_seed(0)
    net = ActiveNet(resnet18_cifar, module__num_classes=10, verbose=0).initialize()
    assert net.feature_layers_ == ("layer1", "layer2", "layer3", "layer4")
    x = torch.randn(2, 3, 32, 32)
    logits, feats = net.forward_tapped(x, levels=True, embedding=True)
    assert logits.shape == (2, 10)
    assert [tuple(f.shape[1:]) for f in feats["levels"]] == RESNET_LEVEL_SHAPES
    assert all(f.shape[0] == 2 for f in feats["levels"])
    # numerically the same maps as a hand-run forward, and the embedding is flatten(avgpool)
    levels, emb, ref_logits = _resnet_by_hand(net.module_, x)
    for got, ref in zip(feats["levels"], levels):
        torch.testing.assert_close(got, ref)
    assert feats["embedding"].shape == (2, 512)
    torch.testing.assert_close(feats["embedding"], emb)
    torch.testing.assert_close(logits, ref_logits)
    # an explicit embedding_layer="avgpool" is the same embedding
    net.set_params(embedding_layer="avgpool")
    _, feats2 = net.forward_tapped(x, embedding=True)
    torch.testing.assert_close(feats2["embedding"], emb)


def test_resnet18_cifar_grey_scale_input():
    torch.manual_seed(0)
    model = resnet18_cifar(num_classes=3, in_channels=1).eval()
    assert model.conv1.in_channels == 1
    assert tuple(model.conv1.weight.shape) == (64, 1, 3, 3)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)


# --- embeddings --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cnn_net():
    X, y = _images(n=12)
    torch.manual_seed(0)
    # trained one epoch so that BatchNorm's running statistics are not the defaults
    return _small_cnn_net(callbacks=[LOSS_HEAD, DYNAMICS_HEAD]).fit(X, y)


def test_auto_embedding_is_input_of_last_linear_smallcnn(cnn_net):
    X, _ = _images(n=5, seed=1)
    x = torch.as_tensor(X)
    logits, feats = cnn_net.forward_tapped(x, embedding=True)
    m = cnn_net.module_
    with torch.no_grad():
        pooled = m.pool(m.layer2(m.layer1(x)))
        ref_logits = m.fc(pooled)
    assert feats["embedding"].shape == (5, 8)  # 2 * width
    torch.testing.assert_close(feats["embedding"], pooled)
    torch.testing.assert_close(logits, ref_logits)
    assert "levels" not in feats

    explicit = clone(cnn_net).set_params(embedding_layer="pool")
    explicit.initialize()
    explicit.module_.load_state_dict(cnn_net.module_.state_dict())
    _, feats_explicit = explicit.forward_tapped(x, embedding=True)
    torch.testing.assert_close(feats_explicit["embedding"], pooled)


def test_auto_embedding_of_mlp_is_last_hidden_activation():
    torch.manual_seed(0)
    net = ActiveNet(MLP, module__num_classes=3, module__in_features=4, module__hidden_sizes=(6, 5),
                    verbose=0).initialize()
    x = torch.randn(7, 4)
    _, feats = net.forward_tapped(x, embedding=True)
    layers = net.module_.layers  # Flatten, Linear, ReLU, Linear, ReLU, Linear
    with torch.no_grad():
        hidden = layers[:5](x)
    assert feats["embedding"].shape == (7, 5)
    torch.testing.assert_close(feats["embedding"], hidden)


def _check_missing_embedding_message(message):
    assert "'penultimate'" in message
    assert "embedding_layer" in message
    assert "available" in message
    for name in ("'layer1'", "'layer2'", "'pool'", "'fc'"):
        assert name in message


def test_missing_embedding_layer_names_it_and_lists_available():
    X, y = _images(n=6)
    # a wrong name fails when the net is built (at fit), not only at query time
    with pytest.raises(ValueError, match="'penultimate'") as info:
        _small_cnn_net(embedding_layer="penultimate").fit(X, y)
    _check_missing_embedding_message(str(info.value))
    # and when it is asked for on a net built with another name
    net = _small_cnn_net().initialize()
    net.embedding_layer = "penultimate"
    with pytest.raises(ValueError, match="'penultimate'") as info:
        net.forward_tapped(torch.zeros(2, 1, 8, 8), embedding=True)
    _check_missing_embedding_message(str(info.value))
    _assert_no_hooks(net.module_)
    # without embedding=True the name is not needed
    logits, feats = net.forward_tapped(torch.zeros(2, 1, 8, 8))
    assert logits.shape == (2, 3) and feats == {}


def test_auto_embedding_needs_a_linear():
    # a 1x1-output convolution as the classifier: no torch.nn.Linear anywhere
    module = nn.Sequential(nn.Conv2d(1, 3, 8), nn.Flatten())
    net = ActiveNet(module, verbose=0).initialize()
    logits, _ = net.forward_tapped(torch.zeros(2, 1, 8, 8))
    assert logits.shape == (2, 3)
    with pytest.raises(ValueError, match="embedding_layer='auto' needs a torch.nn.Linear"):
        net.forward_tapped(torch.zeros(2, 1, 8, 8), embedding=True)
    # naming the layer works
    net.set_params(embedding_layer="0")
    net.initialize()
    _, feats = net.forward_tapped(torch.zeros(2, 1, 8, 8), embedding=True)
    assert feats["embedding"].shape == (2, 3)


def test_levels_of_smallcnn_and_explicit_layers(cnn_net):
    x = torch.as_tensor(_images(n=3, seed=2)[0])
    assert cnn_net.feature_layers_ == ("layer1", "layer2")
    _, feats = cnn_net.forward_tapped(x, levels=True)
    m = cnn_net.module_
    with torch.no_grad():
        l1 = m.layer1(x)
        l2 = m.layer2(l1)
    assert [tuple(f.shape) for f in feats["levels"]] == [(3, 4, 4, 4), (3, 8, 4, 4)]
    torch.testing.assert_close(feats["levels"][0], l1)
    torch.testing.assert_close(feats["levels"][1], l2)

    net = ActiveNet(MLP, module__num_classes=3, module__in_features=4, module__hidden_sizes=(6, 5),
                    feature_layers=("layers.2", "layers.4"), verbose=0).initialize()
    assert net.feature_layers_ == ("layers.2", "layers.4")
    x = torch.randn(4, 4)
    _, feats = net.forward_tapped(x, levels=True)
    with torch.no_grad():
        h1 = net.module_.layers[:3](x)
        h2 = net.module_.layers[3:5](h1)
    torch.testing.assert_close(feats["levels"][0], h1)
    torch.testing.assert_close(feats["levels"][1], h2)


# --- hooks never outlive a call -----------------------------------------------------------


def test_no_hooks_left_after_training_with_heads_and_forward_tapped(cnn_net):
    _assert_no_hooks(cnn_net.module_, cnn_net.loss_predictor_, cnn_net.dynamics_predictor_)
    x = torch.as_tensor(_images(n=3)[0])
    cnn_net.forward_tapped(x, levels=True, embedding=True)
    _assert_no_hooks(cnn_net.module_)
    cnn_net.set_params(embedding_layer="pool")
    try:
        cnn_net.forward_tapped(x, levels=True, embedding=True)
        _assert_no_hooks(cnn_net.module_)
    finally:
        cnn_net.set_params(embedding_layer="auto")
    # a forward pass that raises inside the tapped block removes its hooks too
    with pytest.raises(RuntimeError):
        cnn_net.forward_tapped(torch.zeros(2, 5, 8, 8), levels=True, embedding=True)
    _assert_no_hooks(cnn_net.module_)


def test_taps_survive_clone_pickle_and_reinitialize(cnn_net):
    x = torch.as_tensor(_images(n=4, seed=3)[0])
    logits, feats = cnn_net.forward_tapped(x, levels=True, embedding=True)

    restored = pickle.loads(pickle.dumps(cnn_net))
    assert restored.feature_layers_ == ("layer1", "layer2")
    _assert_no_hooks(restored.module_, restored.loss_predictor_, restored.dynamics_predictor_)
    logits2, feats2 = restored.forward_tapped(x, levels=True, embedding=True)
    assert torch.equal(logits2, logits)
    assert torch.equal(feats2["embedding"], feats["embedding"])
    for a, b in zip(feats2["levels"], feats["levels"]):
        assert torch.equal(a, b)
    # the unpickled net still trains with its heads, and leaves no hooks
    X, y = _images(n=8, seed=4)
    restored.partial_fit(X, y)
    _assert_no_hooks(restored.module_, restored.loss_predictor_, restored.dynamics_predictor_)

    explicit = _small_cnn_net(feature_layers=("layer2.0", "layer1"), embedding_layer="pool")
    cloned = clone(explicit)
    assert cloned.get_params()["feature_layers"] == ("layer2.0", "layer1")
    assert cloned.get_params()["embedding_layer"] == "pool"
    cloned.initialize()
    assert cloned.feature_layers_ == ("layer2.0", "layer1")
    _, f = cloned.forward_tapped(x, levels=True, embedding=True)
    assert [tuple(t.shape) for t in f["levels"]] == [(4, 8, 4, 4), (4, 4, 4, 4)]
    assert f["embedding"].shape == (4, 8)

    again = pickle.loads(pickle.dumps(cloned)).initialize()
    assert again.feature_layers_ == ("layer2.0", "layer1")
    cloned.initialize()  # a second initialize() resolves the same taps
    assert cloned.feature_layers_ == ("layer2.0", "layer1")
    _, f = cloned.forward_tapped(x, levels=True, embedding=True)
    assert [tuple(t.shape) for t in f["levels"]] == [(4, 8, 4, 4), (4, 4, 4, 4)]
    _assert_no_hooks(cloned.module_)


# --- feature_layers errors at fit ----------------------------------------------------------


def test_heads_on_a_module_without_layers_raise_at_fit():
    X = np.zeros((6, 4), dtype=np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    net = ActiveNet(MLP, callbacks=[LOSS_HEAD], classes=[0, 1, 2], max_epochs=1, verbose=0)
    with pytest.raises(ValueError, match="layer1") as info:
        net.fit(X, y)
    message = str(info.value)
    assert "feature_layers" in message
    for name in ("'layers'", "'layers.0'", "'layers.1'"):
        assert name in message
    # same for the dynamics head
    net = ActiveNet(MLP, callbacks=[DYNAMICS_HEAD], classes=[0, 1, 2], max_epochs=1, verbose=0)
    with pytest.raises(ValueError, match="layer1"):
        net.fit(X, y)


def test_unknown_feature_layer_raises_naming_it():
    X, y = _images(n=6)
    net = _small_cnn_net(feature_layers=("layer1", "nope"), callbacks=[LOSS_HEAD])
    with pytest.raises(ValueError, match="'nope'") as info:
        net.fit(X, y)
    message = str(info.value)
    assert "feature_layers" in message and "available" in message
    for name in ("'layer1'", "'layer2'", "'pool'", "'fc'"):
        assert name in message
    # also without any head: a wrong name is an error, not silently ignored
    with pytest.raises(ValueError, match="'nope'"):
        _small_cnn_net(feature_layers=("nope",)).fit(X, y)


def test_feature_layer_error_through_learner_happens_at_fit():
    X = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    learner = ActiveLearner(ActiveNet(MLP, max_epochs=1, verbose=0), selector=LL4AL(), random_state=0)
    with pytest.raises(ValueError, match="layer1") as info:
        learner.fit(X, y)
    assert "'layers.0'" in str(info.value)
    assert not hasattr(learner, "estimator_")

    X_img, y_img = _images(n=6)
    learner = ActiveLearner(_small_cnn_net(feature_layers=("nope",)), selector=LL4AL(), random_state=0)
    with pytest.raises(ValueError, match="'nope'"):
        learner.fit(X_img, y_img)
    assert not hasattr(learner, "estimator_")
