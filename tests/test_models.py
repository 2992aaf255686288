"""The built-in models' dropout option: 0 leaves the module as it was, > 0 adds nn.Dropout
before the classifier (on its input, the penultimate embedding)."""

import numpy as np
import pytest
import torch
from torch import nn

from skal import ActiveNet
from skal.models import MLP, SmallCNN, resnet18_cifar

MODELS = [
    (lambda **kw: MLP(num_classes=3, in_features=6, hidden_sizes=(8,), **kw), (4, 6)),
    (lambda **kw: SmallCNN(num_classes=3, width=4, **kw), (4, 1, 8, 8)),
    (lambda **kw: resnet18_cifar(num_classes=3, **kw), (2, 3, 32, 32)),
]
IDS = ["MLP", "SmallCNN", "resnet18_cifar"]


def _build(factory, seed, **kwargs):
    torch.manual_seed(seed)
    return factory(**kwargs)


@pytest.mark.parametrize("factory, shape", MODELS, ids=IDS)
def test_dropout_zero_is_the_module_without_the_option(factory, shape):
    plain, zero = _build(factory, 0), _build(factory, 0, dropout=0.0)
    assert [name for name, _ in zero.named_modules()] == [name for name, _ in plain.named_modules()]
    assert not any(isinstance(m, nn.Dropout) for m in zero.modules())
    a, b = plain.state_dict(), zero.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[key], b[key]) for key in a)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    plain.train(), zero.train()
    assert torch.equal(plain(x), zero(x))


@pytest.mark.parametrize("factory, shape", MODELS, ids=IDS)
def test_dropout_acts_on_the_classifiers_input_and_keeps_the_weights(factory, shape):
    plain, dropped = _build(factory, 0), _build(factory, 0, dropout=0.5)
    a, b = plain.state_dict(), dropped.state_dict()
    # the same weights (building a dropout layer draws nothing); SmallCNN and ResNet keep their
    # state_dict keys, MLP's Sequential numbers its layers past each dropout
    assert len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(a.values(), b.values()))
    if not isinstance(plain, MLP):
        assert list(a) == list(b)
    layers = [m for m in dropped.modules() if isinstance(m, nn.Dropout)]
    assert layers and all(m.p == 0.5 for m in layers)
    # the classifier's input: in eval mode that of the plain module; in training mode (batch
    # norm aside) zeros and 1/(1-p) = 2 times it, the output of a dropout layer
    seen = {}
    for name, module in (("plain", plain), ("dropped", dropped)):
        classifier = [m for m in module.modules() if isinstance(m, nn.Linear)][-1]
        classifier.register_forward_pre_hook(
            lambda m, args, name=name: seen.__setitem__(name, args[0]))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain.eval()(x)
        dropped.eval()(x)
        torch.testing.assert_close(seen["dropped"], seen["plain"])
        dropped.train()
        for m in dropped.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        torch.manual_seed(2)
        dropped(x)
    kept = seen["plain"] != 0
    ratios = set(np.round((seen["dropped"][kept] / seen["plain"][kept]).numpy(), 5).tolist())
    assert ratios == {0.0, 2.0}


def test_smallcnn_with_dropout_keeps_the_pooled_embedding_for_the_selectors():
    # ActiveNet's embedding (the input of the last Linear) is the pooled features either way
    X = np.random.default_rng(0).random((10, 1, 8, 8), dtype=np.float32)
    embeddings = []
    for dropout in (0.0, 0.5):
        torch.manual_seed(0)
        net = ActiveNet(SmallCNN, module__num_classes=3, module__width=4, module__dropout=dropout,
                        batch_size=4).initialize()
        embeddings.append(net.map_pool(
            lambda Xb, net=net: net.forward_tapped(Xb, embedding=True)[1]["embedding"], X))
        module = net.module_
        with torch.no_grad():
            expected = module.pool(module.layer2(module.layer1(torch.from_numpy(X))))
        torch.testing.assert_close(embeddings[-1], expected)
    torch.testing.assert_close(embeddings[0], embeddings[1])
    assert embeddings[0].shape == (10, 8)
