"""dlcourse.nn.Linear against torch.nn.Linear: same parameters, same outputs and gradients after
loading each other's state dict, the same initial distribution, factory kwargs and bias=False."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dlcourse.nn import Linear


def pair(in_features=6, out_features=4, bias=True, **factory):
    """(ours, torch's) with ours holding torch's parameters."""
    theirs = nn.Linear(in_features, out_features, bias=bias, **factory)
    mine = Linear(in_features, out_features, bias=bias, **factory)
    mine.load_state_dict(theirs.state_dict())
    return mine, theirs


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_same_parameter_names_shapes_and_state_dict_keys(bias):
    mine, theirs = Linear(6, 4, bias=bias), nn.Linear(6, 4, bias=bias)
    assert [(n, p.shape) for n, p in mine.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]
    assert list(mine.state_dict()) == list(theirs.state_dict())
    assert (mine.bias is None) == (not bias)
    assert sum(p.numel() for p in mine.parameters()) == 6 * 4 + (4 if bias else 0)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_state_dicts_load_both_ways(bias):
    theirs = nn.Linear(6, 4, bias=bias)
    mine = Linear(6, 4, bias=bias)
    mine.load_state_dict(theirs.state_dict())  # strict: same keys and shapes
    for (name, p), (_, q) in zip(mine.named_parameters(), theirs.named_parameters()):
        assert torch.equal(p, q), name
    back = nn.Linear(6, 4, bias=bias)
    back.load_state_dict(Linear(6, 4, bias=bias).state_dict())


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("batch", [(), (5,), (2, 3)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_identical_outputs_and_gradients_after_loading_torch_weights(bias, batch, dtype, device, supported):
    supported(device, dtype)
    mine, theirs = pair(bias=bias, device=device, dtype=dtype)
    x = torch.randn(*batch, 6, dtype=dtype, device=device)
    upstream = torch.randn(*batch, 4, dtype=dtype, device=device)
    results = []
    for layer in (mine, theirs):
        xi = x.clone().requires_grad_(True)
        y = layer(xi)
        y.backward(upstream)
        results.append((y.detach(), xi.grad, {n: p.grad for n, p in layer.named_parameters()}))
    (y, dx, grads), (y_ref, dx_ref, grads_ref) = results
    assert y.shape == (*batch, 4)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(dx, dx_ref)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], msg=name)


def test_init_follows_torch_uniform_bound():
    # torch.nn.Linear draws weight and bias from U(-1/sqrt(in), 1/sqrt(in)); so must we.
    in_features, out_features = 400, 100
    bound = 1 / math.sqrt(in_features)
    layer = Linear(in_features, out_features)
    for name, p in (("weight", layer.weight.detach()), ("bias", layer.bias.detach())):
        assert p.abs().max() <= bound, f"{name} exceeds the bound {bound}"
    w = layer.weight.detach().double().flatten()  # 40,000 draws from U(-b, b)
    n = w.numel()
    # Each statistic within ~5 standard errors of its value under U(-b, b):
    # mean 0 (sd b/sqrt(3n)), variance b^2/3 (sd of the sample variance ~ b^2 * sqrt(4/45 / n)).
    assert abs(w.mean()) < 5 * bound / math.sqrt(3 * n)
    assert abs(w.var() - bound**2 / 3) < 5 * bound**2 * math.sqrt(4 / 45 / n)
    assert w.min() < -0.99 * bound and w.max() > 0.99 * bound  # fills the interval, edge to edge
    # Bias: 100 draws, so only check that it is spread out (not a constant).
    assert layer.bias.detach().std() > bound / 4


def test_init_depends_on_the_torch_seed():
    torch.manual_seed(0)
    a = Linear(8, 3)
    torch.manual_seed(0)
    b = Linear(8, 3)
    c = Linear(8, 3)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert not torch.equal(b.weight, c.weight)


def test_reset_parameters_redraws():
    layer = Linear(8, 3)
    before = layer.weight.detach().clone()
    layer.reset_parameters()
    assert not torch.equal(before, layer.weight)
    assert layer.weight.abs().max() <= 1 / math.sqrt(8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_factory_kwargs_set_device_and_dtype(dtype, device, supported):
    supported(device, dtype)
    layer = Linear(5, 2, device=device, dtype=dtype)
    for p in layer.parameters():
        assert p.device.type == device.type and p.dtype == dtype
    y = layer(torch.ones(3, 5, device=device, dtype=dtype))
    assert y.device.type == device.type and y.dtype == dtype


def test_meta_device_builds_without_memory():
    layer = Linear(10_000, 10_000, device="meta")
    assert layer.weight.is_meta and layer.bias.is_meta
    assert layer(torch.empty(2, 10_000, device="meta")).shape == (2, 10_000)


def test_bias_false_has_no_bias_and_computes_x_w_transpose():
    layer = Linear(3, 2, bias=False)
    assert layer.bias is None
    assert "bias" not in dict(layer.named_parameters())
    x = torch.randn(4, 3)
    torch.testing.assert_close(layer(x), x @ layer.weight.T)


def test_extra_repr_matches_torch():
    for bias in (True, False):
        assert Linear(3, 2, bias=bias).extra_repr() == nn.Linear(3, 2, bias=bias).extra_repr()


def test_trains_inside_a_sequential_with_a_torch_optimizer():
    torch.manual_seed(0)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3  # a linear target the layer can fit exactly
    layer = Linear(3, 1)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    first = None
    for _ in range(200):
        loss = torch.nn.functional.mse_loss(layer(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 1e-3 * first


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3", None])
def test_bad_feature_counts_raise(bad):
    with pytest.raises(ValueError, match="positive int"):
        Linear(bad, 2)
    with pytest.raises(ValueError, match="positive int"):
        Linear(2, bad)


def test_wrong_input_width_is_a_clear_error():
    with pytest.raises(ValueError, match="in_features=4"):
        Linear(4, 2)(torch.zeros(3, 5))
