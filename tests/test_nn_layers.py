"""The CNN layers of dlcourse.nn (Conv2d, MaxPool2d, AvgPool2d, Flatten, Dropout) against their
torch.nn twins: parameter names and shapes, identical outputs and gradients after loading each
other's state dict, the initial distribution, reprs, and dropout in training and evaluation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dlcourse.nn import AvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d

CONV_CONFIGS = [
    dict(in_channels=3, out_channels=8, kernel_size=3),
    dict(in_channels=1, out_channels=4, kernel_size=5, stride=2, padding=2),
    dict(in_channels=2, out_channels=3, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), bias=False),
]
CONV_IDS = ["3to8k3", "1to4k5s2p2", "2to3k(3,2)-no-bias"]


def conv_pair(cfg: dict, **factory) -> tuple[Conv2d, nn.Conv2d]:
    """(ours, torch's) with ours holding torch's parameters."""
    theirs = nn.Conv2d(**cfg, **factory)
    mine = Conv2d(**cfg, **factory)
    mine.load_state_dict(theirs.state_dict())
    return mine, theirs


@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=CONV_IDS)
def test_conv2d_has_torchs_parameter_names_shapes_and_attributes(cfg):
    mine, theirs = Conv2d(**cfg), nn.Conv2d(**cfg)
    assert [(n, p.shape) for n, p in mine.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]
    assert list(mine.state_dict()) == list(theirs.state_dict())
    for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding"):
        assert getattr(mine, attr) == getattr(theirs, attr), attr
    assert (mine.bias is None) == (theirs.bias is None)
    assert repr(mine) == repr(theirs)
    back = nn.Conv2d(**cfg)
    back.load_state_dict(mine.state_dict())  # and the other way round


@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=CONV_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_conv2d_gives_torchs_outputs_and_gradients_after_loading_its_weights(cfg, dtype, device, supported):
    supported(device, dtype)
    mine, theirs = conv_pair(cfg, device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, cfg["in_channels"], 9, 8, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    results = []
    for layer in (mine, theirs):
        xi = x.clone().requires_grad_(True)
        y = layer(xi)
        (y * torch.linspace(-1, 1, y.numel(), dtype=dtype, device=device).view(y.shape)).sum().backward()
        results.append((y.detach(), xi.grad, {n: p.grad for n, p in layer.named_parameters()}))
    (y, dx, grads), (y_ref, dx_ref, grads_ref) = results
    tol = {} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(y, y_ref, **tol)
    torch.testing.assert_close(dx, dx_ref, **tol)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], **tol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=CONV_IDS)
def test_conv2d_initialisation_is_torchs(cfg):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias, drawn in torch's order."""
    kH, kW = (cfg["kernel_size"],) * 2 if isinstance(cfg["kernel_size"], int) else cfg["kernel_size"]
    bound = 1 / math.sqrt(cfg["in_channels"] * kH * kW)
    for seed in (0, 1):
        torch.manual_seed(seed)
        theirs = nn.Conv2d(**cfg)
        torch.manual_seed(seed)
        mine = Conv2d(**cfg)
        for (name, p), (_, q) in zip(mine.named_parameters(), theirs.named_parameters()):
            torch.testing.assert_close(p, q, msg=lambda m: f"{name}: {m}")  # the same draws
            assert p.abs().max() <= bound, name


def test_conv2d_weights_fill_their_interval():
    """A large layer: the weights spread over the whole interval, centred, with the uniform variance."""
    layer = Conv2d(16, 64, 3)
    bound = 1 / math.sqrt(16 * 9)
    w = layer.weight.detach()
    assert w.abs().max() <= bound
    assert w.abs().max() > 0.99 * bound
    assert abs(w.mean().item()) < 0.05 * bound
    assert w.var().item() == pytest.approx(bound**2 / 3, rel=0.05)


def test_conv2d_factory_kwargs_and_errors():
    layer = Conv2d(2, 3, 3, dtype=torch.float64, device="cpu")
    assert layer.weight.dtype == torch.float64 and layer.bias.device.type == "cpu"
    with pytest.raises(ValueError, match="in_channels"):
        Conv2d(0, 3, 3)
    with pytest.raises(ValueError, match="kernel_size"):
        Conv2d(1, 3, 0)
    with pytest.raises(ValueError, match="stride"):
        Conv2d(1, 3, 3, stride=0)


@pytest.mark.parametrize("mine, theirs", [
    (MaxPool2d(2), nn.MaxPool2d(2)),
    (MaxPool2d(3, stride=2, padding=1), nn.MaxPool2d(3, stride=2, padding=1)),
    (MaxPool2d((2, 3), stride=(1, 2)), nn.MaxPool2d((2, 3), stride=(1, 2))),
    (AvgPool2d(2), nn.AvgPool2d(2)),
    (AvgPool2d(3, stride=1, padding=1), nn.AvgPool2d(3, stride=1, padding=1)),
], ids=["max2", "max3s2p1", "max(2,3)", "avg2", "avg3s1p1"])
def test_pooling_layers_match_their_twins(mine, theirs, device):
    assert mine.stride == theirs.stride and mine.kernel_size == theirs.kernel_size
    assert list(mine.state_dict()) == [] and list(mine.parameters()) == []
    x = torch.randn(2, 3, 9, 8, device=device)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    ys = [layer(xi) for layer, xi in zip((mine, theirs), xs)]
    torch.testing.assert_close(ys[0], ys[1])
    for y in ys:
        (y * y).sum().backward()
    torch.testing.assert_close(xs[0].grad, xs[1].grad)


def test_pooling_reprs():
    assert repr(AvgPool2d(3, 2, 1)) == repr(nn.AvgPool2d(3, 2, 1)) == "AvgPool2d(kernel_size=3, stride=2, padding=1)"
    assert repr(MaxPool2d(2)) == "MaxPool2d(kernel_size=2, stride=2, padding=0)"
    assert repr(nn.MaxPool2d(2)).startswith(repr(MaxPool2d(2))[:-1])  # torch adds dilation and ceil_mode
    with pytest.raises(ValueError, match="kernel_size"):
        MaxPool2d(0)
    with pytest.raises(ValueError, match="stride"):
        AvgPool2d(2, stride=0)


@pytest.mark.parametrize("dims", [(1, -1), (0, -1), (1, 2), (2, 3), (-2, -1), (0, 0)], ids=str)
def test_flatten_matches_torch(dims):
    x = torch.randn(2, 3, 4, 5)
    mine, theirs = Flatten(*dims), nn.Flatten(*dims)
    assert torch.equal(mine(x), theirs(x)) and mine(x).shape == theirs(x).shape
    assert repr(mine) == repr(theirs)


def test_flatten_a_channels_last_tensor_in_channel_order():
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    assert torch.equal(Flatten()(x), x.contiguous().view(2, -1))


def test_dropout_in_training_and_evaluation():
    torch.manual_seed(0)
    layer = Dropout(0.25)
    x = torch.rand(200_000) + 1  # no zeros of its own
    y = layer(x)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - 0.25) < 0.01
    torch.testing.assert_close(y[~dropped], x[~dropped] / 0.75)
    layer.eval()
    assert torch.equal(layer(x), x)
    layer.train()
    assert (layer(x) == 0).any()
    assert torch.equal(Dropout(0.0)(x), x)
    assert torch.equal(Dropout(1.0)(x), torch.zeros_like(x))
    assert repr(Dropout(0.2)) == "Dropout(p=0.2)"
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="p in"):
            Dropout(bad)


def test_a_small_cnn_of_our_layers_matches_the_same_cnn_of_torchs():
    """Conv -> ReLU -> MaxPool -> Conv -> AvgPool -> Flatten -> Dropout (eval) -> Linear, end to end."""
    def cnn(conv, maxpool, avgpool, flatten, dropout, linear):
        return nn.Sequential(conv(1, 4, 3, padding=1), nn.ReLU(), maxpool(2), conv(4, 6, 3, stride=2),
                             avgpool(2, 1), flatten(), dropout(0.5), linear(6 * 2 * 2, 3))

    theirs = cnn(nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Dropout, nn.Linear).eval()
    mine = cnn(Conv2d, MaxPool2d, AvgPool2d, Flatten, Dropout, Linear).eval()
    mine.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 1, 16, 16)  # 16 -> conv 16 -> pool 8 -> conv 3 -> pool 2: 6 * 2 * 2 features
    y, y_ref = mine(x), theirs(x)
    assert y.shape == (5, 3)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    for (name, p), (_, q) in zip(mine.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")
