"""Oracle tests of dlcourse.functional: every function against its torch twin, forward and backward,
on random inputs of any shape, on every available device, in every floating dtype, at the extremes."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from dlcourse import functional as F

# name -> (ours, torch's). Keyword arguments other than the defaults get their own entries.
ELEMENTWISE = {
    "sigmoid": (F.sigmoid, torch.sigmoid),
    "tanh": (F.tanh, torch.tanh),
    "relu": (F.relu, TF.relu),
    "leaky_relu": (F.leaky_relu, TF.leaky_relu),
    "leaky_relu(0.2)": (partial(F.leaky_relu, negative_slope=0.2), partial(TF.leaky_relu, negative_slope=0.2)),
    "elu": (F.elu, TF.elu),
    "elu(alpha=0.5)": (partial(F.elu, alpha=0.5), partial(TF.elu, alpha=0.5)),
    "elu(alpha=2)": (partial(F.elu, alpha=2.0), partial(TF.elu, alpha=2.0)),
}
SOFTMAX = {
    "softmax(dim=-1)": (partial(F.softmax, dim=-1), partial(TF.softmax, dim=-1)),
    "softmax(dim=0)": (partial(F.softmax, dim=0), partial(TF.softmax, dim=0)),
}
ALL = {**ELEMENTWISE, **SOFTMAX}
SHAPES = [(), (7,), (4, 5), (2, 3, 4, 5)]
KINKED = ("relu", "leaky_relu", "elu")  # not differentiable at 0: keep gradcheck inputs away from it


def randn(shape, gen, dtype=torch.float64, device="cpu", scale=3.0):
    """Normal random numbers drawn on the CPU (the same on every device), then moved."""
    return (scale * torch.randn(shape, generator=gen, dtype=torch.float64)).to(device=device, dtype=dtype)


def forward_backward(fn, x, upstream):
    """fn(x) and d<fn(x), upstream>/dx for a fresh leaf copy of x."""
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    y.backward(upstream)
    return y.detach(), x.grad


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_forward_and_gradient_match_torch(name, shape, dtype, device, gen, supported):
    supported(device, dtype)
    ours, theirs = ALL[name]
    x = randn(shape, gen, dtype, device)
    upstream = randn(shape, gen, dtype, device, scale=1.0)  # a random direction, not just ones
    y, dx = forward_backward(ours, x, upstream)
    y_ref, dx_ref = forward_backward(theirs, x, upstream)
    # assert_close also requires the same dtype, device and shape.
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(dx, dx_ref)


@pytest.mark.parametrize("name", ALL)
def test_gradcheck_float64(name, device, gen, supported):
    supported(device, torch.float64)
    ours, _ = ALL[name]
    x = randn((3, 4), gen, torch.float64, device)
    if name.startswith(KINKED):
        x = x + 0.1 * torch.sign(x)  # |x| >= 0.1: finite differences never straddle the kink
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(ours, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "elu", "softmax(dim=-1)", "softmax(dim=0)"])
def test_gradgradcheck_of_smooth_functions(name, gen):
    ours, _ = ALL[name]
    x = randn((3, 4), gen).requires_grad_(True)
    assert torch.autograd.gradgradcheck(ours, (x,))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_values_match_torch(name, dtype, gen):
    ours, theirs = ALL[name]
    x = randn((64, 16), gen, dtype)
    try:
        y_ref = theirs(x)
    except (RuntimeError, NotImplementedError) as err:
        pytest.skip(f"torch has no CPU {dtype} kernel for {name}: {err}")
    y = ours(x)
    assert y.dtype == dtype
    eps = torch.finfo(dtype).eps  # a few units in the last place of the dtype
    torch.testing.assert_close(y, y_ref, atol=eps, rtol=2 * eps)


EXTREMES = [-1e4, -50.0, -20.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 20.0, 50.0, 1e4]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_extreme_inputs_give_finite_values_and_gradients_equal_to_torch(name, dtype, device, supported):
    supported(device, dtype)
    ours, theirs = ALL[name]
    x = torch.tensor(EXTREMES, dtype=dtype, device=device)
    upstream = torch.linspace(-1, 1, len(EXTREMES), dtype=dtype, device=device)
    y, dx = forward_backward(ours, x, upstream)
    y_ref, dx_ref = forward_backward(theirs, x, upstream)
    assert torch.isfinite(y).all(), f"{name} overflows: {y}"
    assert torch.isfinite(dx).all(), f"the gradient of {name} overflows: {dx}"
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(dx, dx_ref)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_infinite_inputs_match_torch(name, device):
    ours, theirs = ALL[name]
    x = torch.tensor([-math.inf, -1.0, 1.0, math.inf], device=device)
    y, dx = forward_backward(ours, x, torch.ones_like(x))
    y_ref, dx_ref = forward_backward(theirs, x, torch.ones_like(x))
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(dx, dx_ref)


@pytest.mark.parametrize("name", ALL)
def test_nan_propagates_like_torch(name, device):
    # A NaN that silently becomes a number would hide a diverging training run.
    ours, theirs = ALL[name]
    x = torch.tensor([[1.0, math.nan, -2.0], [0.5, -0.5, 3.0]], device=device)
    y, y_ref = ours(x), theirs(x)
    assert torch.isnan(y_ref).any()
    assert torch.equal(torch.isnan(y), torch.isnan(y_ref)), f"{name}: NaN at {torch.isnan(y)}, torch has {torch.isnan(y_ref)}"
    torch.testing.assert_close(y, y_ref, equal_nan=True)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "leaky_relu", "leaky_relu(0.2)", "elu", "elu(alpha=0.5)", "elu(alpha=2)"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_value_and_gradient_at_zero_equal_torch(name, dtype, device, supported):
    supported(device, dtype)
    ours, theirs = ALL[name]
    x = torch.zeros(3, dtype=dtype, device=device)
    y, dx = forward_backward(ours, x, torch.ones_like(x))
    y_ref, dx_ref = forward_backward(theirs, x, torch.ones_like(x))
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(dx, dx_ref, rtol=0, atol=1e-7)


def test_gradients_at_zero_are_the_documented_ones():
    # Independent of torch: relu'(0) = 0, leaky_relu'(0) = slope, elu'(0) = alpha, sigmoid'(0) = 1/4, tanh'(0) = 1.
    cases = [(F.relu, 0.0), (partial(F.leaky_relu, negative_slope=0.3), 0.3), (partial(F.elu, alpha=2.0), 2.0),
             (F.sigmoid, 0.25), (F.tanh, 1.0)]
    for fn, slope in cases:
        x = torch.zeros((), dtype=torch.float64, requires_grad=True)
        fn(x).backward()
        assert x.grad.item() == pytest.approx(slope), fn


@pytest.mark.parametrize("dim", [-4, -3, -2, -1, 0, 1, 2, 3])
@pytest.mark.parametrize("scale", [1.0, 1e4], ids=["logits~N(0,1)", "logits~1e4"])
def test_softmax_any_dim_and_large_logits(dim, scale, device, gen):
    x = randn((2, 3, 4, 5), gen, torch.float32, device, scale=scale)
    upstream = randn((2, 3, 4, 5), gen, torch.float32, device, scale=1.0)
    y, dx = forward_backward(partial(F.softmax, dim=dim), x, upstream)
    y_ref, dx_ref = forward_backward(partial(TF.softmax, dim=dim), x, upstream)
    assert torch.isfinite(y).all() and torch.isfinite(dx).all()
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(dx, dx_ref)
    torch.testing.assert_close(y.sum(dim), torch.ones_like(y.sum(dim)))


def test_softmax_is_shift_invariant_with_huge_common_offset(gen):
    x = randn((5, 6), gen)
    torch.testing.assert_close(F.softmax(x + 1e5), F.softmax(x))


@pytest.mark.parametrize("dim", [2, -3, 5])
def test_softmax_rejects_a_dim_out_of_range(dim):
    with pytest.raises(ValueError, match="dim"):
        F.softmax(torch.zeros(2, 3), dim=dim)


def test_softmax_rejects_a_non_integer_dim():
    with pytest.raises(TypeError, match="dim"):
        F.softmax(torch.zeros(2, 3), dim=1.0)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad", [[0.5, -1.0], np.array([0.5, -1.0]), 0.5, None], ids=["list", "ndarray", "float", "None"])
def test_non_tensor_input_raises_type_error_naming_what_was_expected(name, bad):
    ours, _ = ALL[name]
    with pytest.raises(TypeError, match=r"expected a torch\.Tensor, got"):
        ours(bad)


# --------------------------------------------------------------------------------------------
# linear
# --------------------------------------------------------------------------------------------

IN, OUT = 5, 3


@pytest.mark.parametrize("batch", [(), (4,), (2, 3), (2, 3, 2)], ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_linear_forward_and_gradients_match_torch(batch, bias, dtype, device, gen, supported):
    supported(device, dtype)
    x = randn((*batch, IN), gen, dtype, device)
    w = randn((OUT, IN), gen, dtype, device, scale=0.5)
    b = randn((OUT,), gen, dtype, device) if bias else None
    upstream = randn((*batch, OUT), gen, dtype, device, scale=1.0)

    def run(fn):
        leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in (x, w, b)]
        y = fn(*leaves)
        y.backward(upstream)
        return y.detach(), [t.grad if t is not None else None for t in leaves]

    y, grads = run(F.linear)
    y_ref, grads_ref = run(TF.linear)
    assert y.shape == (*batch, OUT)
    torch.testing.assert_close(y, y_ref)
    for g, g_ref in zip(grads, grads_ref):
        if g_ref is None:
            assert g is None
        else:
            torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_linear_gradcheck_float64(bias, device, gen, supported):
    supported(device, torch.float64)
    x = randn((2, 3, IN), gen, torch.float64, device).requires_grad_(True)
    w = randn((OUT, IN), gen, torch.float64, device).requires_grad_(True)
    inputs = (x, w, randn((OUT,), gen, torch.float64, device).requires_grad_(True)) if bias else (x, w)
    assert torch.autograd.gradcheck(F.linear, inputs)


def test_linear_computes_x_w_transpose_plus_b():
    # The formula itself, on numbers small enough to check by hand.
    x = torch.tensor([[1.0, 2.0]])
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = torch.tensor([0.5, -0.5, 0.0])
    torch.testing.assert_close(F.linear(x, w, b), torch.tensor([[1.5, 1.5, 3.0]]))


@pytest.mark.parametrize(
    ("x", "w", "b", "error", "match"),
    [
        ([[1.0, 2.0]], torch.zeros(3, 2), None, TypeError, r"expected a torch\.Tensor"),
        (torch.zeros(4, 2), [[0.0, 0.0]] * 3, None, TypeError, r"weight.*torch\.Tensor"),
        (torch.zeros(4, 2), torch.zeros(3, 2), [0.0] * 3, TypeError, r"bias.*torch\.Tensor"),
        (torch.zeros(4, 2), torch.zeros(6), None, ValueError, r"2-D weight"),
        (torch.zeros(4, 5), torch.zeros(3, 2), None, ValueError, r"in_features=2.*\(4, 5\)"),
        (torch.zeros(()), torch.zeros(3, 2), None, ValueError, r"in_features=2"),
        (torch.zeros(4, 2), torch.zeros(3, 2), torch.zeros(2), ValueError, r"bias of shape \(3,\)"),
    ],
    ids=["x-list", "weight-list", "bias-list", "weight-1d", "in-mismatch", "x-scalar", "bias-shape"],
)
def test_linear_clear_errors(x, w, b, error, match):
    with pytest.raises(error, match=match):
        F.linear(x, w, b)


def test_softmax_accepts_numpy_integer_dim(gen):
    x = randn((3, 4), gen)
    torch.testing.assert_close(F.softmax(x, dim=np.int64(0)), TF.softmax(x, dim=0))
