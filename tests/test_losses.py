"""Losses and dropout (dlcourse.losses) against torch.nn.functional: values, gradients, edge cases.

The cross-entropy tests run on both of its paths (the ``path`` fixture): the readable log-sum-exp
and the tuned kernel of ``dlcourse._fast.losses``."""

from __future__ import annotations

import math
import re
import zlib
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from fast_paths import path  # noqa: F401  (the fixture)

from dlcourse.losses import binary_cross_entropy, cross_entropy, dropout, huber_loss, l1_loss, mse_loss

DTYPES = [torch.float32, torch.float64]


# Tiny tensors: one torch thread (the shared fixture in conftest.py) is faster and steadier.
pytestmark = pytest.mark.usefixtures("one_thread")
SHAPES = [(7,), (4, 3), (2, 3, 5)]


def _gen(*key: object) -> torch.Generator:
    """A CPU generator seeded from the test's parameters (inputs are drawn on the CPU, then moved).

    Each parameter combination gets its own inputs, the same on every run and machine.
    """
    return torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))


def _skip_unsupported(device: str, dtype: torch.dtype) -> None:
    if torch.device(device).type == "mps" and dtype == torch.float64:
        pytest.skip("MPS has no float64")


def _leaf(t: torch.Tensor, device: str, dtype: torch.dtype) -> torch.Tensor:
    return t.to(device=device, dtype=dtype).requires_grad_(True)


def _compare(ours, theirs, inputs, grad_of=None):
    """Values and gradients (w.r.t. ``inputs[i]`` for ``i`` in ``grad_of``) of ``ours`` vs ``theirs``."""
    grad_of = range(len(inputs)) if grad_of is None else grad_of
    a = [x.detach().clone().requires_grad_(i in grad_of and x.is_floating_point()) for i, x in enumerate(inputs)]
    b = [x.detach().clone().requires_grad_(i in grad_of and x.is_floating_point()) for i, x in enumerate(inputs)]
    out, ref = ours(*a), theirs(*b)
    assert out.shape == ref.shape == ()
    assert out.dtype == ref.dtype and out.device == ref.device
    torch.testing.assert_close(out, ref)
    out.backward()
    ref.backward()
    for i in grad_of:
        torch.testing.assert_close(a[i].grad, b[i].grad, msg=lambda m: f"gradient w.r.t. input {i}: {m}")


# ---------------------------------------------------------------------------------------------
# Regression losses
# ---------------------------------------------------------------------------------------------

REGRESSION = {
    "mse_loss": (mse_loss, F.mse_loss),
    "l1_loss": (l1_loss, F.l1_loss),
    "huber_loss": (huber_loss, F.huber_loss),
    "huber_loss(delta=0.3)": (partial(huber_loss, delta=0.3), partial(F.huber_loss, delta=0.3)),
    "huber_loss(delta=2.5)": (partial(huber_loss, delta=2.5), partial(F.huber_loss, delta=2.5)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(REGRESSION))
def test_regression_losses_match_torch(name, shape, dtype, device):
    _skip_unsupported(device, dtype)
    ours, theirs = REGRESSION[name]
    g = _gen(name, shape)
    pred = 2 * torch.randn(shape, generator=g)
    target = torch.randn(shape, generator=g)
    _compare(ours, theirs, [pred.to(device, dtype), target.to(device, dtype)])


@pytest.mark.parametrize("name", list(REGRESSION))
def test_regression_losses_gradcheck(name, device):
    _skip_unsupported(device, torch.float64)
    ours, _ = REGRESSION[name]
    g = _gen("gradcheck", name)
    pred = _leaf(2 * torch.randn(3, 4, generator=g, dtype=torch.float64), device, torch.float64)
    target = _leaf(torch.randn(3, 4, generator=g, dtype=torch.float64), device, torch.float64)
    assert torch.autograd.gradcheck(ours, (pred, target))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("delta", [1.0, 0.5, 3.0])
def test_huber_loss_at_the_delta_boundary(delta, dtype, device):
    _skip_unsupported(device, dtype)
    d = torch.tensor(delta, dtype=dtype)
    below = torch.nextafter(d, torch.tensor(0.0, dtype=dtype))
    above = torch.nextafter(d, torch.tensor(math.inf, dtype=dtype))
    errors = torch.stack([d, -d, below, -below, above, -above, d * (1 - 1e-3), d * (1 + 1e-3)])
    target = torch.linspace(-1, 1, len(errors), dtype=dtype)
    pred = target + errors
    for i in range(len(errors)):  # one element at a time, so each gradient is checked on its own
        _compare(partial(huber_loss, delta=delta), partial(F.huber_loss, delta=delta),
                 [pred[i:i + 1].to(device), target[i:i + 1].to(device)])


def test_l1_loss_gradient_is_zero_where_pred_equals_target():
    pred = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    l1_loss(pred, torch.tensor([1.0, 0.0, 5.0])).backward()
    torch.testing.assert_close(pred.grad, torch.tensor([0.0, 1.0, -1.0]) / 3)


# ---------------------------------------------------------------------------------------------
# Binary cross-entropy
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_binary_cross_entropy_matches_torch(shape, dtype, device):
    _skip_unsupported(device, dtype)
    g = _gen("bce", shape)
    prob = torch.sigmoid(2 * torch.randn(shape, generator=g))
    soft_target = torch.rand(shape, generator=g)
    hard_target = (torch.rand(shape, generator=g) < 0.5).float()
    for target in (soft_target, hard_target):
        _compare(binary_cross_entropy, F.binary_cross_entropy, [prob.to(device, dtype), target.to(device, dtype)])


def test_binary_cross_entropy_gradcheck(device):
    _skip_unsupported(device, torch.float64)
    g = _gen("bce-gradcheck")
    prob = _leaf(torch.rand(3, 4, generator=g, dtype=torch.float64) * 0.9 + 0.05, device, torch.float64)
    target = _leaf(torch.rand(3, 4, generator=g, dtype=torch.float64), device, torch.float64)
    assert torch.autograd.gradcheck(binary_cross_entropy, (prob, target))


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_at_zero_and_one(dtype, device):
    _skip_unsupported(device, dtype)
    # p exactly 0 or 1 (right and wrong), tiny p whose log is clamped, p just below 1.
    prob = torch.tensor([0.0, 0.0, 1.0, 1.0, 1e-30, 1e-30, 1 - 1e-6, 0.5], dtype=dtype)
    target = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.3], dtype=dtype)
    _compare(binary_cross_entropy, F.binary_cross_entropy, [prob.to(device), target.to(device)])
    ours = binary_cross_entropy(prob.to(device), target.to(device))
    assert torch.isfinite(ours)
    # A confidently wrong prediction (p = 0 for y = 1, p = 1 for y = 0) costs exactly 100: the clamp.
    wrong = binary_cross_entropy(torch.tensor([0.0, 1.0], dtype=dtype), torch.tensor([1.0, 0.0], dtype=dtype))
    assert wrong.item() == 100.0


def test_binary_cross_entropy_extreme_float64(device):
    _skip_unsupported(device, torch.float64)
    prob = torch.tensor([1e-50, 1 - 1e-13, 1e-300, 0.0, 1.0], dtype=torch.float64)
    target = torch.tensor([1.0, 0.0, 0.25, 0.5, 0.5], dtype=torch.float64)
    _compare(binary_cross_entropy, F.binary_cross_entropy, [prob.to(device), target.to(device)])


# ---------------------------------------------------------------------------------------------
# Cross-entropy
# ---------------------------------------------------------------------------------------------

CE_SHAPES = [((6, 4), (6,)), ((3, 5, 7), (3, 7)), ((2, 3, 4, 5), (2, 4, 5)), ((5,), ())]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", CE_SHAPES, ids=str)
def test_cross_entropy_matches_torch(shapes, dtype, device, path):
    _skip_unsupported(device, dtype)
    logit_shape, target_shape = shapes
    C = logit_shape[0] if len(logit_shape) == 1 else logit_shape[1]
    g = _gen("ce", shapes)
    logits = 3 * torch.randn(logit_shape, generator=g)
    target = torch.randint(0, C, target_shape, generator=g)
    _compare(cross_entropy, F.cross_entropy, [logits.to(device, dtype), target.to(device)], grad_of=[0])


@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_cross_entropy_ignore_index_matches_torch(ignore_index, device, path):
    g = _gen("ce-ignore", ignore_index)
    logits = torch.randn(10, 4, generator=g)
    target = torch.randint(0, 4, (10,), generator=g)
    target[::3] = ignore_index
    _compare(partial(cross_entropy, ignore_index=ignore_index), partial(F.cross_entropy, ignore_index=ignore_index),
             [logits.to(device), target.to(device)], grad_of=[0])


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_cross_entropy_many_classes_and_int32_targets(scale, device, path):
    """Many classes, large logits: as accurate as torch's in float32 (the fast path computes the
    exponentials as powers of 2)."""
    g = _gen("ce-wide", scale)
    logits = scale * torch.randn(64, 100, generator=g)
    target = torch.randint(0, 100, (64,), generator=g, dtype=torch.int32)
    torch_ce = lambda x, t: F.cross_entropy(x, t.long())  # noqa: E731 (torch wants int64 indices)
    _compare(cross_entropy, torch_ce, [logits.to(device), target.to(device)], grad_of=[0])


def test_cross_entropy_with_every_target_ignored_is_nan_like_torch(device, path):
    logits = torch.randn(3, 4, device=device, requires_grad=True)
    target = torch.full((3,), -100, device=device)
    loss = cross_entropy(logits, target)
    assert torch.isnan(loss) and torch.isnan(F.cross_entropy(logits, target))
    loss.backward()
    assert logits.grad is not None and logits.grad.shape == (3, 4)
    assert not logits.grad.any()  # nothing counts: gradient 0, as torch's


def test_cross_entropy_gradcheck(device, path):
    _skip_unsupported(device, torch.float64)
    g = _gen("ce-gradcheck")
    logits = _leaf(3 * torch.randn(4, 5, 2, generator=g, dtype=torch.float64), device, torch.float64)
    target = torch.randint(0, 5, (4, 2), generator=g).to(device)
    assert torch.autograd.gradcheck(lambda x: cross_entropy(x, target), (logits,))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_with_huge_logits(dtype, device, path):
    _skip_unsupported(device, dtype)
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, 0.0], [1e4, 1e4 - 1, -1e4]], dtype=dtype)
    target = torch.tensor([1, 0, 2, 1])
    _compare(cross_entropy, F.cross_entropy, [logits.to(device), target.to(device)], grad_of=[0])
    loss = cross_entropy(logits.to(device).requires_grad_(), target.to(device))
    assert torch.isfinite(loss)


# ---------------------------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_statistics(p, dtype, device):
    _skip_unsupported(device, dtype)
    torch.manual_seed(0)
    n = 1_000_000
    x = torch.ones(1000, n // 1000, dtype=dtype, device=device)
    y = dropout(x, p)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    zeroed = (y == 0).double().mean().item()
    # Bounds of 6 standard deviations: a correct implementation fails about once in 10^9 runs.
    assert abs(zeroed - p) < 6 * math.sqrt(p * (1 - p) / n), f"fraction zeroed {zeroed}, expected {p}"
    assert abs(y.double().mean().item() - 1) < 6 * math.sqrt(p / (1 - p) / n), "mean not preserved"
    kept = y[y != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - p)))


def test_dropout_gradient_is_the_scaled_mask(device):
    torch.manual_seed(1)
    p = 0.3
    x = torch.randn(200, 50, device=device).requires_grad_(True)
    y = dropout(x, p)
    y.sum().backward()
    mask = (y != 0).to(x.dtype)
    torch.testing.assert_close(x.grad, mask / (1 - p))
    torch.testing.assert_close(y, x.detach() * mask / (1 - p))


def test_dropout_identity_and_all_zero_cases(device):
    x = torch.randn(50, 20, device=device)
    assert torch.equal(dropout(x, 0.5, training=False), x)
    assert torch.equal(dropout(x, 0.0), x)
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    masks = [dropout(x, 0.5) != 0 for _ in range(2)]
    assert not torch.equal(masks[0], masks[1]), "two calls drew the same mask: dropout must be random"


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [mse_loss, l1_loss, huber_loss, binary_cross_entropy], ids=lambda f: f.__name__)
def test_shape_mismatch_is_a_clear_error(fn):
    a, b = torch.full((4, 3), 0.5), torch.full((4,), 0.5)
    first = "prob" if fn is binary_cross_entropy else "pred"
    expected = f"{fn.__name__}: {first} and target must have the same shape, got (4, 3) and (4,)"
    with pytest.raises(ValueError, match=re.escape(expected)):
        fn(a, b)


def test_other_errors():
    with pytest.raises(TypeError, match="mse_loss: expected pred to be a torch.Tensor, got list"):
        mse_loss([1.0], torch.ones(1))
    with pytest.raises(ValueError, match="huber_loss: expected a positive delta, got 0"):
        huber_loss(torch.ones(2), torch.ones(2), delta=0)
    with pytest.raises(ValueError, match=r"binary_cross_entropy: expected probabilities in \[0, 1\]"):
        binary_cross_entropy(torch.tensor([1.5, 0.5]), torch.ones(2))
    message = "cross_entropy: for logits (N, C) = (4, 3) the target must have shape (4,), got (4, 1)"
    with pytest.raises(ValueError, match=re.escape(message)):
        cross_entropy(torch.randn(4, 3), torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="integer class indices"):
        cross_entropy(torch.randn(4, 3), torch.zeros(4))
    with pytest.raises(ValueError, match=re.escape("class indices in [0, 3), got 3")):
        cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))


@pytest.mark.parametrize("p", [-0.1, 1.5, math.nan])
def test_dropout_rejects_p_outside_0_1(p):
    with pytest.raises(ValueError, match=r"dropout: expected a probability p in \[0, 1\]"):
        dropout(torch.ones(3), p)


def test_dropout_rejects_non_numbers_and_non_tensors():
    with pytest.raises(TypeError, match="dropout: expected p to be a number, got str"):
        dropout(torch.ones(3), "0.5")
    with pytest.raises(TypeError, match="dropout: expected x to be a torch.Tensor"):
        dropout([1.0, 2.0], 0.5)
