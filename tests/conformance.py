"""The engine of the conformance suite (tests/test_conformance.py): run dlcourse and its PyTorch
twin on one sample from PyTorch's own test samples and say how it ended.

Each sample ends as one of

* ``passed``: the same values and gradients as PyTorch (or, where PyTorch raises, a clear error of ours);
* ``refused``: PyTorch computes it, dlcourse raises a clear error: one of our errors (it names our
  function or module) that names the unsupported argument when the sample passed one;
* ``wrong``: a different value, gradient, shape or dtype, or an answer where PyTorch raises;
* ``crashed``: any other exception (PyTorch's internal errors, IndexError, ...).

The suite fails on any ``wrong`` or ``crashed``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

OUTCOMES = ("passed", "refused", "wrong", "crashed")
_CLEAR = (TypeError, ValueError, NotImplementedError)

# Every outcome of the session, by (op or module, dtype): the tally the closing note reports.
TALLY: dict[str, Counter] = {}


@dataclass
class Outcome:
    kind: str
    detail: str = ""


@dataclass
class Report:
    """The outcomes of one group of samples; ``failures`` lists the wrong and crashed ones."""

    name: str
    counts: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def add(self, outcome: Outcome, what: str) -> None:
        self.counts[outcome.kind] += 1
        TALLY.setdefault(self.name, Counter())[outcome.kind] += 1
        if outcome.kind in ("wrong", "crashed"):
            self.failures.append(f"{outcome.kind}: {what}: {outcome.detail}")

    def check(self) -> None:
        assert self.counts["passed"] + self.counts["refused"] > 0, f"{self.name}: no samples ran"
        assert not self.failures, f"{self.name}: {len(self.failures)} samples wrong or crashed:\n" + "\n".join(
            self.failures[:20])


def describe(value: Any) -> str:
    """A short description of a sample's argument (tensors by shape and dtype)."""
    if isinstance(value, Tensor):
        return f"Tensor{tuple(value.shape)}:{str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(describe(v) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={describe(v)}" for k, v in value.items()) + "}"
    return repr(value)


def fresh(value: Any) -> Any:
    """A copy of a sample's arguments: new leaf tensors (same values, same requires_grad)."""
    if isinstance(value, Tensor):
        copy = value.detach().clone()
        return copy.requires_grad_(value.requires_grad) if copy.is_floating_point() or copy.is_complex() else copy
    if isinstance(value, tuple):
        return tuple(fresh(v) for v in value)
    if isinstance(value, list):
        return [fresh(v) for v in value]
    if isinstance(value, dict):
        return {k: fresh(v) for k, v in value.items()}
    return value


def leaves(value: Any) -> list[Tensor]:
    """The tensors in a (nested) argument that require gradients, in order."""
    if isinstance(value, Tensor):
        return [value] if value.requires_grad else []
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in leaves(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in leaves(v)]
    return []


def tensors(value: Any) -> list[Tensor]:
    """Every tensor of an output (nested tuples flattened)."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors(v)]
    return []


def tolerances(dtype: torch.dtype) -> dict[str, float]:
    # float32: sums in another order (a closed-form backward, a Winograd convolution) differ by a few ulps
    # of the largest term, up to ~5e-5 on gradients of size ~5
    return {"rtol": 1e-7, "atol": 1e-7} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}


def clear_refusal(err: BaseException, names: tuple[str, ...], unsupported: tuple[str, ...] = ()) -> bool:
    """One of our errors: a TypeError, ValueError or NotImplementedError whose message names our
    function or module (every dlcourse error starts with it) and, when the sample passed
    arguments dlcourse does not implement, names one of them."""
    message = str(err)
    if not isinstance(err, _CLEAR) or not any(n in message for n in names):
        return False
    return not unsupported or any(u in message for u in unsupported)


def _close(got: Tensor, want: Tensor, tol: dict[str, float]) -> str:
    """'' if ``got`` matches ``want`` (shape, dtype, values with NaN == NaN), else what differs."""
    if got.shape != want.shape:
        return f"shape {tuple(got.shape)} instead of {tuple(want.shape)}"
    if got.dtype != want.dtype:
        return f"dtype {got.dtype} instead of {want.dtype}"
    if got.numel() == 0:
        return ""
    g, w = got.detach().cpu(), want.detach().cpu()
    if not (g.is_floating_point() or g.is_complex()):
        return "" if torch.equal(g, w) else "different integer values"
    if torch.allclose(g, w, equal_nan=True, **tol):
        return ""
    diff = (g - w).abs().nan_to_num(nan=math.inf).max().item()
    return f"max abs difference {diff:.3g}"


def compare(run_ours: Callable[[], Any], run_torch: Callable[[], Any], names: tuple[str, ...],
            unsupported: tuple[str, ...], dtype: torch.dtype, seed: int,
            check: Callable[[Any, list[Tensor], list[Tensor | None], list[Tensor]], str] | None = None) -> Outcome:
    """Run both sides, each on its own fresh copy of the sample; compare values and gradients.

    ``run_*`` return ``(output, leaves)``: the output and the tensors to differentiate with respect
    to (inputs and parameters, in matching order). ``check`` replaces the comparison with torch for
    random functions (dropout): it gets our output, our leaves, our gradients and the upstream gradients.
    """
    try:
        want, want_leaves = run_torch()
        torch_error = None
    except Exception as err:  # noqa: BLE001 - torch refusing the sample is an answer too
        torch_error = err
    try:
        got, got_leaves = run_ours()
    except Exception as err:  # noqa: BLE001 - classified below
        if clear_refusal(err, names, () if torch_error is not None else unsupported):
            return Outcome("passed" if torch_error is not None else "refused", str(err)[:200])
        return Outcome("crashed", f"{type(err).__name__}: {str(err)[:300]}")
    if torch_error is not None:
        return Outcome("wrong", f"PyTorch raises ({type(torch_error).__name__}: {str(torch_error)[:150]}) "
                                "but dlcourse returns a result")
    got_t, want_t = tensors(got), tensors(want)
    if len(got_t) != len(want_t):
        return Outcome("wrong", f"{len(got_t)} output tensors instead of {len(want_t)}")
    gen = torch.Generator().manual_seed(seed)
    upstream = [torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device)
                if w.requires_grad and (w.is_floating_point() or w.is_complex()) else None for w in want_t]
    if check is None:
        for i, (g, w) in enumerate(zip(got_t, want_t)):
            problem = _close(g, w, tolerances(dtype))
            if problem:
                return Outcome("wrong", f"output {i}: {problem}")
    # gradients: the same upstream gradient on both sides, w.r.t. the matching leaves
    pairs = [(g, u) for g, u in zip(got_t, upstream) if u is not None]
    if not want_leaves or not pairs:
        if check is not None:
            problem = check(got, got_leaves, [None] * len(got_leaves), [])
            return Outcome("wrong", problem) if problem else Outcome("passed")
        return Outcome("passed")
    if any(not g.requires_grad for g, _ in pairs):
        return Outcome("wrong", "an output does not require grad where PyTorch's does")
    got_grads = torch.autograd.grad([g for g, _ in pairs], got_leaves, [u for _, u in pairs], allow_unused=True)
    if check is not None:
        problem = check(got, got_leaves, list(got_grads), [u for _, u in pairs])
        return Outcome("wrong", problem) if problem else Outcome("passed")
    want_pairs = [(w, u) for w, u in zip(want_t, upstream) if u is not None]
    want_grads = torch.autograd.grad([w for w, _ in want_pairs], want_leaves, [u for _, u in want_pairs],
                                     allow_unused=True)
    for i, (gg, wg, leaf) in enumerate(zip(got_grads, want_grads, want_leaves)):
        gg = torch.zeros_like(leaf) if gg is None else gg
        wg = torch.zeros_like(leaf) if wg is None else wg
        problem = _close(gg, wg, tolerances(dtype))
        if problem:
            return Outcome("wrong", f"gradient {i}: {problem}")
    return Outcome("passed")
