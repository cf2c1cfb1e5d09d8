"""The one checking API of the labs: compare a student's value with a reference, clearly.

The same calls give instant feedback in a student's notebook (JupyterLab or Colab, nothing to
install) and decide the points under nbgrader autograding. A check passes silently (or prints
a short confirmation) and fails with an ``AssertionError`` whose message is one sentence:

    >>> import torch
    >>> close(torch.zeros(2, 3), torch.zeros(2, 4), name="relu(x)")
    Traceback (most recent call last):
    ...
    dlcourse.check.CheckError: relu(x): wrong shape: expected (2, 4), got (2, 3)

The reference is always computed at run time, on the student's device and dtype, so a check
never depends on numbers produced by one seed on one machine.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["CheckError", "ForbiddenCallError", "close", "equal", "shape", "forbid", "check_function", "passed"]

# Default tolerances per dtype: loose enough for a different but correct formula, tight enough
# that an off-by-a-term bug fails.
_TOLERANCES = {
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
    torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-7, 1e-7),
}


class CheckError(AssertionError):
    """A check failed; the message says what was expected and what was found."""


class ForbiddenCallError(CheckError):
    """The checked code called a library shortcut the exercise asks you to write yourself."""


def _fmt_shape(s: Iterable[int]) -> str:
    s = tuple(s)
    return "(" + ", ".join(str(d) for d in s) + ("," if len(s) == 1 else "") + ")"


def _as_tensor(value: Any, name: str, like: Tensor | None = None) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray) or isinstance(value, (int, float, np.number, list, tuple)):
        try:
            t = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError) as err:
            raise CheckError(f"{name}: expected numbers, got {type(value).__name__} that is not numeric") from err
        return t if like is None else t.to(like.device)
    if value is None:
        raise CheckError(f"{name}: expected a value, got None (did the function forget to return?)")
    raise CheckError(f"{name}: expected a tensor or numbers, got {type(value).__name__}")


def shape(actual: Any, expected: Iterable[int | None], name: str = "value") -> None:
    """Check that ``actual`` has the ``expected`` shape; ``None`` in ``expected`` matches any size.

    Example: ``shape(y, (None, 8, 16, 16), name="conv output")``.
    """
    t = _as_tensor(actual, name)
    expected = tuple(expected)
    got = tuple(t.shape)
    ok = len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got))
    if not ok:
        shown = "(" + ", ".join("N" if e is None else str(e) for e in expected) + ")"
        raise CheckError(f"{name}: wrong shape: expected {shown}, got {_fmt_shape(got)}")


def close(actual: Any, expected: Any, name: str = "value", *, rtol: float | None = None,
          atol: float | None = None, check_dtype: bool = True, check_device: bool = True,
          quiet: bool = True) -> None:
    """Check that ``actual`` equals ``expected`` up to a tolerance, element by element.

    In order it checks: that there is a value at all, its type, shape, dtype, device, then
    the values (NaN matches NaN only where the expected value is NaN too). The failure
    message names the largest difference and where it is.

    Args:
        actual: the student's value (tensor, array, number or nested list).
        expected: the reference, computed at run time (a tensor sets the device and dtype).
        name: how the value is called in messages, e.g. ``"sigmoid(x)"``.
        rtol, atol: tolerances; by default chosen from the expected dtype.
        check_dtype: also require the same dtype as ``expected`` (for tensors).
        check_device: also require the same device as ``expected`` (for tensors).
        quiet: if ``False``, print a one-line confirmation when the check passes.

    Raises:
        CheckError: an ``AssertionError`` whose message says what is wrong.
    """
    exp_is_tensor = isinstance(expected, Tensor)
    e = _as_tensor(expected, f"{name} (reference)")
    if exp_is_tensor and not isinstance(actual, Tensor):
        if actual is None:
            raise CheckError(f"{name}: expected a tensor, got None (did the function forget to return?)")
        raise CheckError(f"{name}: expected a torch.Tensor, got {type(actual).__name__}")
    a = _as_tensor(actual, name, like=e)
    if tuple(a.shape) != tuple(e.shape):
        raise CheckError(f"{name}: wrong shape: expected {_fmt_shape(e.shape)}, got {_fmt_shape(a.shape)}")
    if exp_is_tensor and check_dtype and a.dtype != e.dtype:
        raise CheckError(f"{name}: wrong dtype: expected {e.dtype}, got {a.dtype}")
    if exp_is_tensor and check_device and a.device != e.device:
        raise CheckError(f"{name}: on the wrong device: expected {e.device}, got {a.device}")
    a = a.detach()
    e = e.detach()
    if e.dtype == torch.bool or not (e.is_floating_point() or e.is_complex()):
        mism = (a.to(e.device) != e)
        if mism.any():
            idx = _index(mism)
            raise CheckError(f"{name}: values differ at index {idx}: expected {e[idx].item()}, got {a[idx].item()}")
        _ok(name, quiet)
        return
    default_rtol, default_atol = _TOLERANCES.get(e.dtype, (1e-7, 1e-7))
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    a64 = a.to(device="cpu", dtype=torch.float64)
    e64 = e.to(device="cpu", dtype=torch.float64)
    a_nan, e_nan = torch.isnan(a64), torch.isnan(e64)
    if (a_nan & ~e_nan).any():
        idx = _index(a_nan & ~e_nan)
        raise CheckError(f"{name}: got NaN at index {idx} where {e64[idx].item():.6g} was expected")
    if (e_nan & ~a_nan).any():
        idx = _index(e_nan & ~a_nan)
        raise CheckError(f"{name}: expected NaN at index {idx}, got {a64[idx].item():.6g}")
    both_inf = torch.isinf(a64) & torch.isinf(e64) & (torch.sign(a64) == torch.sign(e64))
    diff = torch.where(e_nan | both_inf, torch.zeros_like(a64), (a64 - e64).abs())
    bound = atol + rtol * e64.abs().nan_to_num(posinf=0.0)
    bad = diff > bound
    if bad.any():
        excess = (diff - bound).nan_to_num(nan=math.inf)
        idx = tuple(int(i) for i in np.unravel_index(int(excess.argmax()), tuple(e64.shape)))
        n_bad = int(bad.sum())
        where = f" at index {idx}" if e64.dim() else ""
        raise CheckError(
            f"{name}: values off by up to {diff[idx].item():.3g}{where} (expected "
            f"{e64[idx].item():.6g}, got {a64[idx].item():.6g}; {n_bad} of {e64.numel()} "
            f"entries outside rtol={rtol:g}, atol={atol:g})"
        )
    _ok(name, quiet)


def equal(actual: Any, expected: Any, name: str = "value") -> None:
    """Check exact equality: for integers (parameter counts, shapes, labels) and other plain values."""
    if isinstance(expected, (Tensor, np.ndarray)):
        close(actual, expected, name, rtol=0.0, atol=0.0)
        return
    if isinstance(expected, bool) or not isinstance(expected, (int, float, np.number)):
        if actual != expected:
            raise CheckError(f"{name}: expected {expected!r}, got {actual!r}")
        return
    if actual is None:
        raise CheckError(f"{name}: expected {expected!r}, got None (did the function forget to return?)")
    if isinstance(actual, Tensor) and actual.numel() == 1:
        actual = actual.item()
    if isinstance(actual, bool) or not isinstance(actual, (int, float, np.number)):
        raise CheckError(f"{name}: expected a number, got {type(actual).__name__}")
    if actual != expected:
        raise CheckError(f"{name}: expected {expected!r}, got {actual!r}")


def passed(message: str) -> None:
    """Print a one-line confirmation (visible tests end with it, so students see progress)."""
    print(f"\u2714 {message}")


def _index(mask: Tensor) -> tuple[int, ...]:
    nz = mask.nonzero()
    return tuple(int(i) for i in nz[0]) if len(nz) else ()


def _ok(name: str, quiet: bool) -> None:
    if not quiet:
        passed(f"{name} matches the reference")


# ---------------------------------------------------------------------------------------------
# Forbidding shortcuts
# ---------------------------------------------------------------------------------------------

def _resolve(target: Any) -> tuple[Any, str]:
    """A callable from an object or a dotted name such as ``"torch.nn.functional.conv2d"``."""
    if not isinstance(target, str):
        name = getattr(target, "__qualname__", None) or getattr(target, "__name__", repr(target))
        module = getattr(target, "__module__", None)
        return target, f"{module}.{name}" if module else name
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError as err:
            raise ValueError(f"forbid: {target!r} does not name an existing function") from err
        return obj, target
    raise ValueError(f"forbid: cannot import a module from {target!r}")


@contextlib.contextmanager
def forbid(*targets: Any, reason: str = "write it yourself from the formula") -> Iterator[None]:
    """Fail if the code run inside the ``with`` block calls any of ``targets``.

    Targets are functions or dotted names (``"torch.nn.functional.conv2d"``,
    ``"dlcourse.functional.conv2d"``, ``"torch.Tensor.sigmoid"``). Calls are recognised by
    the function object itself, so aliases (``from torch import sigmoid as s``) and tensor
    methods (``x.sigmoid()`` for ``"torch.Tensor.sigmoid"``) are caught too.

    Example::

        with forbid("torch.sigmoid", "torch.Tensor.sigmoid", "torch.nn.functional.sigmoid"):
            y = sigmoid(x)   # the student's function

    Raises:
        ForbiddenCallError: after the block, naming the first forbidden call made inside it.
    """
    if not targets:
        raise ValueError("forbid: name at least one function to forbid")
    builtins: dict[int, str] = {}   # id of a C function -> its name
    codes: dict[Any, str] = {}      # code object of a Python function -> its name
    methods: dict[str, str] = {}    # tensor method name -> its name (for x.method())
    keep_alive = []
    for target in targets:
        obj, label = _resolve(target)
        keep_alive.append(obj)
        code = getattr(obj, "__code__", None) or getattr(getattr(obj, "__func__", None), "__code__", None)
        if code is not None:
            codes[code] = label
        else:
            builtins[id(obj)] = label
            if getattr(obj, "__objclass__", None) is not None or label.startswith("torch.Tensor."):
                methods[label.rsplit(".", 1)[-1]] = label
    found: list[str] = []

    def profiler(frame: Any, event: str, arg: Any) -> None:
        if found:
            return
        if event == "call":
            label = codes.get(frame.f_code)
            if label:
                found.append(label)
        elif event == "c_call":
            label = builtins.get(id(arg))
            if label is None and methods and isinstance(getattr(arg, "__self__", None), Tensor):
                label = methods.get(getattr(arg, "__name__", ""))
            if label:
                found.append(label)

    previous = sys.getprofile()
    sys.setprofile(profiler)
    try:
        yield
    finally:
        sys.setprofile(previous)
    if found:
        raise ForbiddenCallError(f"your code calls {found[0]}, which this exercise forbids: {reason}")


def check_function(student: Callable[..., Any], reference: Callable[..., Any], *inputs: Any,
                   name: str | None = None, grad: bool = False, **kwargs: Any) -> None:
    """Call ``student`` and ``reference`` on the same inputs and :func:`close`-check the outputs.

    With ``grad=True`` the floating-point tensor inputs also get their gradients compared
    (of the sum of the output), so a formula that matches in value but not in slope fails.
    """
    label = name or getattr(student, "__name__", "function")
    if grad:
        s_in = [x.detach().clone().requires_grad_(True) if isinstance(x, Tensor) and x.is_floating_point() else x for x in inputs]
        r_in = [x.detach().clone().requires_grad_(True) if isinstance(x, Tensor) and x.is_floating_point() else x for x in inputs]
    else:
        s_in, r_in = list(inputs), list(inputs)
    out = student(*s_in)
    ref = reference(*r_in)
    close(out, ref, f"{label}(...)", **kwargs)
    if grad:
        if not isinstance(out, Tensor) or not out.requires_grad:
            raise CheckError(f"{label}: the output carries no gradient; use torch operations on the input so autograd can follow them")
        out.sum().backward()
        ref.sum().backward()
        for i, (s, r) in enumerate(zip(s_in, r_in)):
            if isinstance(r, Tensor) and r.grad is not None:
                close(s.grad, r.grad, f"gradient of {label} with respect to argument {i}", **kwargs)
