"""dlcourse.functional.scaled_dot_product_attention against PyTorch's: values and gradients for
random shapes, boolean, additive and causal masks, broadcasting, fully masked rows, float64
gradcheck, dtypes and devices, clear errors, and no call to torch's attention."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as TF

from dlcourse import functional as F
from dlcourse.attention import causal_mask
from dlcourse.check import forbid

TORCH_ATTENTION = ("torch.nn.functional.scaled_dot_product_attention", "torch.softmax",
                   "torch.Tensor.softmax", "torch.nn.functional.softmax")


def run_both(q, k, v, **kwargs):
    """Outputs and gradients (q, k, v and a float mask) of ours and of torch's, for one upstream gradient."""
    results = []
    upstream = None
    for fn in (F.scaled_dot_product_attention, TF.scaled_dot_product_attention):
        leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
        kw = dict(kwargs)
        mask = kw.get("attn_mask")
        if mask is not None and mask.is_floating_point():
            kw["attn_mask"] = mask.detach().clone().requires_grad_(True)
            leaves.append(kw["attn_mask"])
        out = fn(*leaves[:3], **kw)
        if upstream is None:
            upstream = torch.randn_like(out)
        grads = torch.autograd.grad(out, leaves, upstream)
        results.append((out, grads))
    return results


def assert_same(q, k, v, **kwargs):
    (out, grads), (ref, ref_grads) = run_both(q, k, v, **kwargs)
    tol = {"rtol": 1e-5, "atol": 1e-5} if q.dtype == torch.float32 else {}
    torch.testing.assert_close(out, ref, **tol)
    for name, g, r in zip(("q", "k", "v", "attn_mask"), grads, ref_grads):
        torch.testing.assert_close(g, r, **tol, msg=lambda m, n=name: f"grad of {n}: {m}")


def random_case(seed: int, dtype: torch.dtype, device) -> tuple[tuple, dict]:
    """Random (..., L, E) inputs with 0-2 batch dimensions and one of five kinds of mask."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    batch = tuple(rng.randint(1, 3) for _ in range(rng.randint(0, 2)))
    L, S, E, Ev = (rng.randint(1, 9) for _ in range(4))
    q, k, v = (torch.randn(*batch, n, e, generator=gen, dtype=torch.float64).to(device, dtype)
               for n, e in ((L, E), (S, E), (S, Ev)))
    kind = rng.choice(["none", "causal", "bool", "float", "float-inf"])
    kwargs: dict = {}
    mask_shape = (*batch[rng.randint(0, len(batch)):], L, S)  # broadcast over some batch dims
    if kind == "causal":
        kwargs["is_causal"] = True
    elif kind == "bool":
        kwargs["attn_mask"] = (torch.rand(mask_shape, generator=gen) > 0.3).to(device)
    elif kind.startswith("float"):
        mask = torch.randn(mask_shape, generator=gen, dtype=torch.float64)
        if kind == "float-inf":
            mask[torch.rand(mask_shape, generator=gen) < 0.3] = -math.inf
        kwargs["attn_mask"] = mask.to(device, dtype)
    return (q, k, v), kwargs


@pytest.mark.parametrize("seed", range(40))
def test_matches_torch_on_random_cases(seed, device):
    (q, k, v), kwargs = random_case(seed, torch.float64 if device.type != "mps" else torch.float32, device)
    assert_same(q, k, v, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_benchmark_shape_and_causal(dtype, device, supported, gen):
    supported(device, dtype)
    q, k, v = (torch.randn(2, 4, 32, 16, generator=gen, dtype=dtype).to(device) for _ in range(3))
    assert_same(q, k, v)
    assert_same(q, k, v, is_causal=True)


def test_causal_equals_a_lower_triangular_bool_mask(gen):
    q, k, v = (torch.randn(3, 6, 5, generator=gen, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, is_causal=True),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(6)))
    # the first query sees only the first key: its output is the first value
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, is_causal=True)[:, 0], v[:, 0])
    assert causal_mask(3, 4).tolist() == [[True, False, False, False], [True, True, False, False],
                                          [True, True, True, False]]


def test_rectangular_causal_and_broadcast_batches(gen):
    q = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    k = torch.randn(1, 3, 7, 5, generator=gen, dtype=torch.float64)
    v = torch.randn(3, 7, 2, generator=gen, dtype=torch.float64)
    assert_same(q, k, v, is_causal=True)
    assert_same(q, k, v, attn_mask=torch.randn(7, generator=gen, dtype=torch.float64))


def test_fully_masked_rows_give_zeros_like_torch(gen):
    q, k, v = (torch.randn(2, 4, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[2] = False
    assert_same(q, k, v, attn_mask=mask)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.all(out[:, 2] == 0)
    additive = torch.zeros(4, 4, dtype=torch.float64)
    additive[1] = -math.inf
    assert_same(q, k, v, attn_mask=additive)


def test_the_formula_by_hand(gen):
    q, k, v = (torch.randn(5, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    weights = torch.softmax(q @ k.T / math.sqrt(3), dim=-1)  # (5, 5)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v), weights @ v)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, scale=0.5),
                               torch.softmax(0.5 * q @ k.T, dim=-1) @ v)


def test_gradcheck_float64(gen):
    q, k, v = (torch.randn(2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.randn(3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c, m: F.scaled_dot_product_attention(a, b, c, attn_mask=m),
                                    (q, k, v, mask))
    assert torch.autograd.gradcheck(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True),
                                    (q, k, v))


def test_low_precision_and_no_grad(gen):
    q, k, v = (torch.randn(2, 8, 16, generator=gen) for _ in range(3))
    out = F.scaled_dot_product_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), is_causal=True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), TF.scaled_dot_product_attention(q, k, v, is_causal=True),
                               rtol=0.05, atol=0.05)
    with torch.no_grad():
        assert not F.scaled_dot_product_attention(q, k, v).requires_grad


def test_inputs_are_not_modified(gen):
    q, k, v = (torch.randn(2, 5, 4, generator=gen) for _ in range(3))
    mask = torch.randn(5, 5, generator=gen)
    copies = [t.clone() for t in (q, k, v, mask)]
    F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    for t, c in zip((q, k, v, mask), copies):
        assert torch.equal(t, c)


def test_does_not_call_torch_attention(gen):
    q, k, v = (torch.randn(2, 5, 4, generator=gen, requires_grad=True) for _ in range(3))
    with forbid(*TORCH_ATTENTION):
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()


@pytest.mark.parametrize("args, kwargs, message", [
    ((torch.randn(4, 3), torch.randn(4, 2), torch.randn(4, 2)), {}, "same feature size"),
    ((torch.randn(4, 3), torch.randn(5, 3), torch.randn(4, 2)), {}, "same length S"),
    ((torch.randn(3), torch.randn(4, 3), torch.randn(4, 2)), {}, "got 1-D"),
    ((torch.randn(4, 3), torch.randn(5, 3), torch.randn(5, 2)), {"attn_mask": torch.ones(4, 4, dtype=torch.bool)},
     "does not broadcast"),
    ((torch.randn(4, 3), torch.randn(5, 3), torch.randn(5, 2)),
     {"attn_mask": torch.ones(4, 5, dtype=torch.bool), "is_causal": True}, "not both"),
    ((torch.randn(4, 3), torch.randn(5, 3).double(), torch.randn(5, 2)), {}, "one floating dtype"),
    ((torch.randn(4, 3), torch.randn(5, 3), torch.randn(5, 2)), {"attn_mask": torch.ones(4, 5, dtype=torch.long)},
     "bool attn_mask"),
])
def test_clear_errors(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        F.scaled_dot_product_attention(*args, **kwargs)


def test_type_error_for_non_tensors():
    with pytest.raises(TypeError, match="expected q to be a torch.Tensor"):
        F.scaled_dot_product_attention([[1.0]], torch.randn(1, 1), torch.randn(1, 1))
