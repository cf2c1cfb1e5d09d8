"""dlcourse.functional.max_pool2d and avg_pool2d against PyTorch: the lecture's worked example,
values and gradients on many random configurations (ties, -inf, padding, overlapping windows),
gradcheck in float64, clear errors, and no call to torch's pooling. The oracle tests run on both
paths (the ``path`` fixture): the readable ``unfold`` and the offset-by-offset kernels of
``dlcourse._fast.pool``."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as TF
from fast_paths import path  # noqa: F401  (the fixture)

from dlcourse import functional as F
from dlcourse.check import ForbiddenCallError, forbid

TORCH_POOLING = ("torch.nn.functional.max_pool2d", "torch.nn.functional.max_pool2d_with_indices",
                 "torch.max_pool2d", "torch.nn.functional.avg_pool2d",
                 "torch.nn.functional.adaptive_max_pool2d", "torch.nn.functional.adaptive_avg_pool2d",
                 "torch.nn.functional.lp_pool2d", "torch.nn.functional.unfold")
POOLS = {"max_pool2d": (F.max_pool2d, TF.max_pool2d), "avg_pool2d": (F.avg_pool2d, TF.avg_pool2d)}


def test_max_pool_on_the_lecture_000_example():
    x = torch.tensor([[1, 3, 5, 3],
                      [4, 2, 3, 1],
                      [3, 1, 1, 3],
                      [0, 1, 0, 4]], dtype=torch.float32)
    y = F.max_pool2d(x[None, None], kernel_size=2, stride=2)[0, 0]
    torch.testing.assert_close(y, torch.tensor([[4.0, 5.0], [3.0, 4.0]]))
    # average pooling of the same matrix, checked against torch rather than typed in
    torch.testing.assert_close(F.avg_pool2d(x[None, None], 2), TF.avg_pool2d(x[None, None], 2))


def random_config(seed: int) -> dict:
    """A random pooling: shapes, window, stride (None, int or pair), padding up to half the window."""
    rng = random.Random(seed)
    kH, kW = rng.randint(1, 4), rng.randint(1, 4)
    if rng.random() < 0.5:
        kernel, stride = (kH, kW), rng.choice([None, (rng.randint(1, 4), rng.randint(1, 4))])
        padding = (rng.randint(0, kH // 2), rng.randint(0, kW // 2))
        pH, pW = padding
    else:
        kH = kW
        kernel, stride, padding = kH, rng.choice([None, rng.randint(1, 4)]), rng.randint(0, kH // 2)
        pH = pW = padding
    return {
        "shape": (rng.randint(1, 3), rng.randint(1, 4), rng.randint(max(1, kH - 2 * pH), 11),
                  rng.randint(max(1, kW - 2 * pW), 11))[rng.random() < 0.2:],  # sometimes unbatched (C, H, W)
        "kernel_size": kernel, "stride": stride, "padding": padding,
        "values": rng.choice(["normal", "ties", "with -inf"]),
    }


def make_input(cfg: dict, gen: torch.Generator, dtype: torch.dtype, device) -> torch.Tensor:
    x = torch.randn(cfg["shape"], generator=gen, dtype=torch.float64)
    if cfg["values"] == "ties":  # few distinct values: many windows hold their maximum twice
        x = x.round()
    elif cfg["values"] == "with -inf":
        x[x < -0.3] = float("-inf")
    return x.to(device=device, dtype=dtype)


@pytest.mark.parametrize("name", POOLS)
@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_pooling_values_and_gradients_match_torch(name, seed, dtype, device, supported, path):
    supported(device, dtype)
    ours, theirs = POOLS[name]
    cfg = random_config(seed)
    gen = torch.Generator().manual_seed(2000 + seed)
    x = make_input(cfg, gen, dtype, device)
    kwargs = {k: cfg[k] for k in ("kernel_size", "stride", "padding")}
    results = []
    for fn in (ours, theirs):
        leaf = x.clone().requires_grad_(True)
        y = fn(leaf, **kwargs)
        upstream = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        y.backward(upstream.to(device=device, dtype=dtype))
        results.append((y.detach(), leaf.grad))
    (y, dx), (y_ref, dx_ref) = results
    assert y.shape == y_ref.shape and y.dtype == dtype and y.device == y_ref.device
    if name == "max_pool2d":
        assert torch.equal(y, y_ref), cfg  # a maximum is one of the inputs: exactly equal
    else:
        torch.testing.assert_close(y, y_ref, msg=lambda m: f"{cfg}: {m}")
    # Max pooling: the gradient lands on the same entry as torch's (ties: the first maximum).
    torch.testing.assert_close(dx, dx_ref, msg=lambda m: f"gradient, {cfg}: {m}")


def test_max_pool_ties_send_the_gradient_to_the_first_maximum(path):
    x = torch.ones(1, 1, 4, 6, requires_grad=True)  # every entry ties
    F.max_pool2d(x, (2, 3)).sum().backward()
    expected = torch.zeros(1, 1, 4, 6)
    expected[0, 0, 0::2, 0::3] = 1  # the top-left entry of each window
    torch.testing.assert_close(x.grad, expected)
    ref = torch.ones(1, 1, 4, 6, requires_grad=True)
    TF.max_pool2d(ref, (2, 3)).sum().backward()
    torch.testing.assert_close(x.grad, ref.grad)


def test_max_pool_propagates_nan_like_torch(path):
    x = torch.randn(2, 3, 6, 6)
    x[0, 1, 2, 3] = float("nan")
    torch.testing.assert_close(F.max_pool2d(x, 3, 1, 1), TF.max_pool2d(x, 3, 1, 1), equal_nan=True)


def test_max_pool_without_gradients_gives_the_same_values(device, path):
    x = torch.randn(2, 3, 9, 7, device=device)
    with torch.no_grad():
        for args in [(2,), (3, 2, 1), ((2, 3), (1, 2), (1, 0)), (1,)]:
            assert torch.equal(F.max_pool2d(x, *args), TF.max_pool2d(x, *args)), args


def test_a_one_by_one_window_copies_rather_than_aliases(path):
    x = torch.randn(1, 2, 3, 3, requires_grad=True)
    for fn in (F.max_pool2d, F.avg_pool2d):
        y = fn(x, 1)
        assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("name", POOLS)
@pytest.mark.parametrize("args", [(2,), (3, 2, 1), ((3, 2), (1, 2), (1, 1)), (2, 1)], ids=str)
def test_pooling_passes_gradcheck_in_float64(name, args, device, supported, path):
    supported(device, torch.float64)
    gen = torch.Generator().manual_seed(3)
    # distinct values a good distance apart, so no two in a window are within gradcheck's eps
    x = torch.randperm(2 * 3 * 7 * 6, generator=gen).view(2, 3, 7, 6).to(device, torch.float64).div(10).requires_grad_()
    ours = POOLS[name][0]
    assert torch.autograd.gradcheck(lambda t: ours(t, *args), (x,))


def test_pooling_keeps_the_memory_layout_out_of_the_values(device, path):
    """A channels-last or strided input gives the same results."""
    x = torch.randn(2, 3, 8, 10, device=device)
    for fn, ref in POOLS.values():
        for variant in (x.contiguous(memory_format=torch.channels_last), x.transpose(2, 3)):
            torch.testing.assert_close(fn(variant, 2), ref(variant, 2))


def test_pooling_calls_no_torch_pooling(path):
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    with forbid(*TORCH_POOLING):
        for args in [(2,), (3, 2, 1), (3, 1)]:
            (F.max_pool2d(x, *args).sum() + F.avg_pool2d(x, *args).sum()).backward()
    assert x.grad is not None


def test_the_forbid_check_would_catch_torch_pooling():
    for ref in (TF.max_pool2d, TF.avg_pool2d):
        with pytest.raises(ForbiddenCallError, match="pool2d"):
            with forbid(*TORCH_POOLING):
                ref(torch.randn(1, 1, 4, 4), 2)


@pytest.mark.parametrize("name", POOLS)
@pytest.mark.parametrize("call, error, match", [
    (lambda f: f(torch.randn(1, 1, 4, 4), 2, padding=2), ValueError, "at most half"),
    (lambda f: f(torch.randn(1, 1, 2, 4), 3), ValueError, "does not fit"),
    (lambda f: f(torch.randn(1, 1, 4, 4), 2, stride=0), ValueError, "stride"),
    (lambda f: f(torch.randn(1, 1, 4, 4), 0), ValueError, "kernel_size"),
    (lambda f: f(torch.randn(4, 4), 2), ValueError, "4-D input"),
    (lambda f: f(torch.ones(1, 1, 4, 4, dtype=torch.long), 2), TypeError, "floating-point"),
    (lambda f: f(torch.randn(1, 1, 4, 4), 2.0), TypeError, "kernel_size"),
], ids=["padding too large", "window too large", "stride 0", "kernel 0", "2-D input", "integer input", "float kernel"])
def test_pooling_errors_say_what_was_expected(name, call, error, match):
    with pytest.raises(error, match=match):
        call(POOLS[name][0])
