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

A check can also be given the exercise's known mistakes (:class:`Mistake`, ``mistakes=``): a
failing value that matches one gets a message that names the mistake in one sentence, without
any value of the reference, and the error carries the mistake's id (``CheckError.mistake``).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["CheckError", "ForbiddenCallError", "Mistake", "close", "equal", "shape", "forbid", "shortcuts",
           "check_function", "derivative", "random_tensor", "passed", "vjp", "time_limit", "torch_calls"]

# Default tolerances per dtype: loose enough for a different but correct formula, tight enough
# that an off-by-a-term bug fails.
_TOLERANCES = {
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
    torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-7, 1e-7),
}


class CheckError(AssertionError):
    """A check failed; the message says what was expected and what was found.

    In a notebook (JupyterLab, Colab: IPython kernels) a failed check reads as its one sentence,
    ``CheckError: relu(x): wrong shape: expected (2, 4), got (2, 3)``, and the cell is still marked
    failed: the traceback through this module would only hide the sentence. Anywhere else (plain
    Python, pytest) it is an ordinary ``AssertionError`` with its full traceback.
    """

    #: The id of the known mistake the failed check recognised (see :class:`Mistake`), else None.
    mistake: str | None = None

    def _render_traceback_(self) -> list[str]:
        # IPython's hook: the lines it shows for this exception instead of the traceback.
        return [f"{type(self).__name__}: {self}"]


class ForbiddenCallError(CheckError):
    """The checked code called a library shortcut the exercise asks you to write yourself."""


class Mistake:
    """A known wrong answer to an exercise: what the mistake computes, and a one-sentence hint.

    ``compute`` gives the value a student who makes the mistake would get: for :func:`close` and
    :func:`equal`, the value itself or a function of no arguments that computes it (lazily, only
    when the check fails); for :func:`check_function`, a function of the same inputs as the
    reference. Write it from the reference where you can (the flipped-kernel mistake of ``corr2d``
    is the reference computed with the flipped kernel), so a catalogue shown to students does not
    spell out the answer. With ``shape_only=True`` the mistake is recognised by its shape alone
    (``compute`` may then give a shape): an output one row too large, say.

    When a value fails a check and matches a mistake within the check's tolerance (and the mistake's
    value does not match the reference), the check's message is ``"<name>: <hint>"`` and the
    :class:`CheckError` carries ``.mistake = id``. The hint never shows a reference value.

    Example::

        flipped = Mistake("kernel_flipped", lambda: reference(x, k.flip(0, 1)),
                          "you computed a true convolution (kernel flipped); deep-learning layers "
                          "compute the cross-correlation")
        close(corr2d(x, k), reference(x, k), name="corr2d(x, k)", mistakes=[flipped])
    """

    __slots__ = ("id", "compute", "hint", "shape_only")

    def __init__(self, id: str, compute: Any, hint: str, *, shape_only: bool = False) -> None:
        if not isinstance(id, str) or not id.isidentifier():
            raise ValueError(f"Mistake: expected an id such as 'kernel_flipped', got {id!r}")
        if not isinstance(hint, str) or not hint.strip():
            raise ValueError(f"Mistake {id!r}: expected a one-sentence hint, got {hint!r}")
        self.id, self.compute, self.hint, self.shape_only = id, compute, hint.strip(), bool(shape_only)

    def __repr__(self) -> str:
        return f"Mistake({self.id!r}, hint={self.hint!r})"

    def value(self, *inputs: Any) -> Any:
        """The mistake's value: ``compute(*inputs)`` if it is a function, else ``compute`` itself."""
        return self.compute(*inputs) if callable(self.compute) else self.compute


def mistake_error(name: str, mistake: Mistake) -> CheckError:
    """The :class:`CheckError` naming ``mistake``: ``"<name>: <hint>"``, with ``.mistake = id``."""
    err = CheckError(f"{name}: {mistake.hint}")
    err.mistake = mistake.id
    return err


def _mistake_list(mistakes: Any) -> list[Mistake]:
    """Mistakes from ``None``, a list of :class:`Mistake` or a dict ``{id: (compute, hint)}``."""
    if mistakes is None:
        return []
    if isinstance(mistakes, Mistake):
        return [mistakes]
    if isinstance(mistakes, dict):
        out = []
        for key, spec in mistakes.items():
            if isinstance(spec, Mistake):
                out.append(spec)
            elif isinstance(spec, tuple) and len(spec) == 2:
                out.append(Mistake(key, spec[0], spec[1]))
            else:
                raise ValueError(f"mistakes[{key!r}]: expected (compute, hint) or a Mistake, got {type(spec).__name__}")
        return out
    out = list(mistakes)
    for m in out:
        if not isinstance(m, Mistake):
            raise ValueError(f"mistakes: expected Mistake objects, got {type(m).__name__}")
    return out


def _shape_of(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, (torch.Size, tuple)) and all(isinstance(d, int) for d in value):
        return tuple(value)
    if isinstance(value, (Tensor, np.ndarray)):
        return tuple(value.shape)
    return None


def _recognise(actual: Any, expected: Any, mistakes: list[Mistake], inputs: tuple[Any, ...],
               matches: Callable[[Any, Any], bool]) -> Mistake | None:
    """The first mistake whose value ``actual`` matches (and the reference does not), if any."""
    for m in mistakes:
        try:
            wrong = m.value(*inputs)
            if m.shape_only:
                want, got, ref = _shape_of(wrong), _shape_of(actual), _shape_of(expected)
                if want is not None and got == want and ref != want:
                    return m
                continue
            if wrong is None or matches(expected, wrong) or not matches(actual, wrong):
                continue
        except Exception:  # noqa: BLE001 (a mistake that does not apply to these inputs)
            continue
        return m
    return None


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


def shape(actual: Any, expected: Iterable[int | None], name: str = "value", *, mistakes: Any = None) -> None:
    """Check that ``actual`` has the ``expected`` shape; ``None`` in ``expected`` matches any size.

    Example: ``shape(y, (None, 8, 16, 16), name="conv output")``. With ``mistakes`` (as for
    :func:`close`), a wrong shape that is the shape of a known mistake's value gets its hint.
    """
    t = _as_tensor(actual, name)
    expected = tuple(expected)
    got = tuple(t.shape)
    ok = len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got))
    if not ok:
        for m in _mistake_list(mistakes):
            try:
                wrong = _shape_of(m.value())
            except Exception:  # noqa: BLE001 (a mistake that does not apply to these inputs)
                continue
            if wrong == got:
                raise mistake_error(name, m)
        shown = "(" + ", ".join("N" if e is None else str(e) for e in expected) + ")"
        raise CheckError(f"{name}: wrong shape: expected {shown}, got {_fmt_shape(got)}")


def close(actual: Any, expected: Any, name: str = "value", *, rtol: float | None = None,
          atol: float | None = None, check_dtype: bool = True, check_device: bool = True,
          quiet: bool = True, mistakes: Any = None) -> None:
    """Check that ``actual`` equals ``expected`` up to a tolerance, element by element.

    In order it checks: that there is a value at all, its type, shape, dtype, device, then
    the values (NaN matches NaN only where the expected value is NaN too). The failure
    message names the largest difference and where it is.

    Args:
        actual: the student's value (tensor, array, number or nested list).
        expected: the reference, computed at run time (a tensor sets the device and dtype).
        name: how the value is called in messages, e.g. ``"sigmoid(x)"``.
        rtol, atol: tolerances; by default chosen from the expected dtype (from the less
            precise of the two dtypes when they differ, e.g. with ``check_dtype=False``).
        check_dtype: also require the same dtype as ``expected`` (for tensors).
        check_device: also require the same device as ``expected`` (for tensors).
        quiet: if ``False``, print a one-line confirmation when the check passes.
        mistakes: the exercise's known mistakes (:class:`Mistake` objects, or a dict
            ``{id: (value or function of no arguments, hint)}``): when ``actual`` fails the check
            and matches one of them, the message is that mistake's hint and the error carries
            ``.mistake``. Only wrong shapes and values are recognised (not a missing value, a
            wrong type, dtype or device).

    Raises:
        CheckError: an ``AssertionError`` whose message says what is wrong.
    """
    found = _mistake_list(mistakes)
    try:
        _close(actual, expected, name, rtol, atol, check_dtype, check_device, quiet)
    except ForbiddenCallError:
        raise
    except CheckError:
        if not found or not _comparable(actual, expected, check_dtype, check_device):
            raise
        m = _recognise(actual, expected, found, (),
                       lambda a, b: _passes(_close, a, b, name, rtol, atol, False, False, True))
        if m is None:
            raise
        raise mistake_error(name, m) from None


def _passes(check: Callable[..., Any], *args: Any) -> bool:
    """Whether ``check(*args)`` passes (raises no :class:`CheckError`): is a value a known mistake's?"""
    try:
        check(*args)
    except CheckError:
        return False
    return True


def _comparable(actual: Any, expected: Any, check_dtype: bool, check_device: bool) -> bool:
    """Whether a failed :func:`close` failed on shape or values (where a mistake can be recognised)."""
    if isinstance(expected, Tensor):
        if not isinstance(actual, Tensor):
            return False
        if (check_dtype and actual.dtype != expected.dtype) or (check_device and actual.device != expected.device):
            return False
        return True
    try:
        _as_tensor(actual, "value")
    except CheckError:
        return False
    return True


def _close(actual: Any, expected: Any, name: str, rtol: float | None, atol: float | None,
           check_dtype: bool, check_device: bool, quiet: bool) -> None:
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
            raise CheckError(f"{name}: values differ{_at(idx)}: expected {e[idx].item()}, got {a[idx].item()}")
        _ok(name, quiet)
        return
    default_rtol, default_atol = _tolerance(e.dtype)
    if (a.is_floating_point() or a.is_complex()) and a.dtype != e.dtype:
        # Different dtypes (check_dtype=False, or a plain-number reference): a float32 result
        # carries float32's rounding, so it gets float32's tolerance, not float64's.
        a_rtol, a_atol = _tolerance(a.dtype)
        default_rtol, default_atol = max(default_rtol, a_rtol), max(default_atol, a_atol)
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    # Compare in double precision on the CPU; complex values as complex (|a - e| is their distance).
    work = torch.complex128 if a.is_complex() or e.is_complex() else torch.float64
    a64 = a.to(device="cpu", dtype=work)
    e64 = e.to(device="cpu", dtype=work)
    a_nan, e_nan = torch.isnan(a64), torch.isnan(e64)
    if (a_nan & ~e_nan).any():
        idx = _index(a_nan & ~e_nan)
        raise CheckError(f"{name}: got NaN{_at(idx)} where {e64[idx].item():.6g} was expected")
    if (e_nan & ~a_nan).any():
        idx = _index(e_nan & ~a_nan)
        raise CheckError(f"{name}: expected NaN{_at(idx)}, got {a64[idx].item():.6g}")
    same = a64 == e64  # covers equal infinities, whose difference would be NaN
    diff = torch.where(e_nan | same, torch.zeros((), dtype=torch.float64), (a64 - e64).abs())
    bound = atol + rtol * e64.abs().nan_to_num(posinf=0.0)
    bad = diff > bound
    if bad.any():
        excess = (diff - bound).nan_to_num(nan=math.inf)
        idx = tuple(int(i) for i in np.unravel_index(int(excess.argmax()), tuple(e64.shape)))
        n_bad = int(bad.sum())
        raise CheckError(
            f"{name}: values off by up to {diff[idx].item():.3g}{_at(idx)} (expected "
            f"{e64[idx].item():.6g}, got {a64[idx].item():.6g}; {n_bad} of {e64.numel()} "
            f"entries outside rtol={rtol:g}, atol={atol:g})"
        )
    _ok(name, quiet)


def equal(actual: Any, expected: Any, name: str = "value", *, mistakes: Any = None) -> None:
    """Check exact equality: for integers (parameter counts, shapes, labels) and other plain values.

    Tensors and arrays are compared entry by entry (with a list or tuple of numbers too), with
    :func:`close` at zero tolerance; anything else with ``==``. ``mistakes`` as for :func:`close`:
    a wrong value equal to a known mistake's gets that mistake's hint.
    """
    found = _mistake_list(mistakes)
    try:
        _equal(actual, expected, name)
    except ForbiddenCallError:
        raise
    except CheckError:
        if not found or actual is None or isinstance(actual, bool) != isinstance(expected, bool):
            raise
        m = _recognise(actual, expected, found, (), lambda a, b: _passes(_equal, a, b, name))
        if m is None:
            raise
        raise mistake_error(name, m) from None


def _equal(actual: Any, expected: Any, name: str) -> None:
    if isinstance(expected, (Tensor, np.ndarray)) or (
            isinstance(actual, (Tensor, np.ndarray)) and isinstance(expected, (list, tuple))):
        close(actual, expected, name, rtol=0.0, atol=0.0)
        return
    if isinstance(expected, bool) or not isinstance(expected, (int, float, np.number)):
        try:
            same = bool(actual == expected)
        except (TypeError, ValueError, RuntimeError):  # e.g. an array compared with a string
            same = False
        if not same:
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


def _tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """Default (rtol, atol) of a dtype; a complex dtype gets that of its real part."""
    real = dtype.to_real() if dtype.is_complex else dtype
    return _TOLERANCES.get(real, (1e-7, 1e-7))


def _at(idx: tuple[int, ...]) -> str:
    """`` at index (i, j)`` for an entry of a tensor; nothing for a 0-d value."""
    return f" at index {idx}" if idx else ""


def _index(mask: Tensor) -> tuple[int, ...]:
    nz = mask.nonzero()
    return tuple(int(i) for i in nz[0]) if len(nz) else ()


def _ok(name: str, quiet: bool) -> None:
    if not quiet:
        passed(f"{name} matches the reference")


# ---------------------------------------------------------------------------------------------
# Forbidding shortcuts
# ---------------------------------------------------------------------------------------------

def _label(obj: Any) -> str:
    """How a forbidden function is named in messages: ``torch.sigmoid``, ``torch.Tensor.sigmoid``."""
    objclass = getattr(obj, "__objclass__", None)  # a method of a C class, e.g. of torch.Tensor
    if objclass is not None:
        owner = "torch.Tensor" if issubclass(Tensor, objclass) else f"{objclass.__module__}.{objclass.__qualname__}"
        return f"{owner}.{obj.__name__}"
    module = getattr(obj, "__module__", None)
    # A C function's qualified name is an implementation detail (torch._VariableFunctionsClass.sigmoid).
    name = getattr(obj, "__name__", None) if not hasattr(obj, "__code__") else None
    name = name or getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)
    return f"{module}.{name}" if module else name


def _resolve(target: Any) -> tuple[Any, str]:
    """A callable from an object or a dotted name such as ``"torch.nn.functional.conv2d"``."""
    if not isinstance(target, str):
        if not callable(target):
            raise ValueError(f"forbid: expected a function or a dotted name, got {type(target).__name__} {target!r}")
        return target, _label(target)
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        except ValueError:  # an empty module name, as in "torch..sigmoid"
            break
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError as err:
            raise ValueError(f"forbid: {target!r} does not name an existing function") from err
        if not callable(obj):
            raise ValueError(f"forbid: {target!r} is a {type(obj).__name__}, not a function")
        return obj, target
    raise ValueError(f"forbid: cannot import a module from {target!r}")


_MISSING = object()


def _same_closure(frame: Any, func: Any) -> bool:
    """Whether ``frame`` runs ``func`` itself and not a sibling sharing its code object.

    Functions made by one factory (a decorator's wrapper, torch's ``boolean_dispatch``) share
    a code object and differ only in their closure cells, whose values the frame holds too.
    """
    cells = getattr(func, "__closure__", None)
    if not cells:
        return True
    f_locals = frame.f_locals
    for var, cell in zip(func.__code__.co_freevars, cells):
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell: nothing to compare
            continue
        if f_locals.get(var, _MISSING) is not value:
            return False
    return True


@contextlib.contextmanager
def forbid(*targets: Any, reason: str = "write it yourself from the formula") -> Iterator[None]:
    """Fail if the code run inside the ``with`` block calls any of ``targets``.

    Targets are functions or dotted names (``"torch.nn.functional.conv2d"``,
    ``"dlcourse.functional.conv2d"``, ``"torch.Tensor.sigmoid"``). Calls are recognised by
    the function object itself, so aliases (``from torch import sigmoid as s``) and tensor
    methods (``x.sigmoid()`` for ``"torch.Tensor.sigmoid"``) are caught too, however deep in
    the call stack they happen. Operators (``x @ w``) are not calls and cannot be forbidden.

    Blocks nest (the calls inside count for every enclosing block), and a profiler that was
    installed before (``sys.setprofile``) keeps receiving its events and is restored after.

    Example::

        with forbid("torch.sigmoid", "torch.Tensor.sigmoid", "torch.nn.functional.sigmoid"):
            y = sigmoid(x)   # the student's function

    Raises:
        ValueError: a target that is not a function, or a name that does not resolve to one.
        ForbiddenCallError: after the block, naming the first forbidden call made inside it.
    """
    if not targets:
        raise ValueError("forbid: name at least one function to forbid")
    builtins: dict[int, str] = {}   # id of a C function -> its name
    codes: dict[Any, list[tuple[Any, str]]] = {}  # code object of a Python function -> [(function, name)]
    methods: dict[str, str] = {}    # tensor method name -> its name (for x.method())
    keep_alive = []
    for target in targets:
        obj, label = _resolve(target)
        keep_alive.append(obj)
        func = getattr(obj, "__func__", obj)  # a bound or class method -> its function
        code = getattr(func, "__code__", None)
        if code is not None:
            codes.setdefault(code, []).append((func, label))
        else:
            builtins[id(obj)] = label
            if getattr(obj, "__objclass__", None) is not None or label.startswith("torch.Tensor."):
                methods[label.rsplit(".", 1)[-1]] = label
    found: list[str] = []
    previous = sys.getprofile()
    chained = previous if callable(previous) else None  # e.g. an enclosing forbid()

    def profiler(frame: Any, event: str, arg: Any) -> None:
        if chained is not None:
            chained(frame, event, arg)
        if found:
            return
        if event == "call":
            for func, label in codes.get(frame.f_code, ()):
                if _same_closure(frame, func):
                    found.append(label)
                    break
        elif event == "c_call":
            label = builtins.get(id(arg))
            if label is None and methods and isinstance(getattr(arg, "__self__", None), Tensor):
                label = methods.get(getattr(arg, "__name__", ""))
            if label:
                found.append(label)

    sys.setprofile(profiler)
    try:
        yield
    finally:
        sys.setprofile(previous)
    if found:
        raise ForbiddenCallError(f"your code calls {found[0]}, which this exercise forbids: {reason}")


def check_function(student: Callable[..., Any], reference: Callable[..., Any], *inputs: Any,
                   name: str | None = None, grad: bool = False, mistakes: Any = None, **kwargs: Any) -> None:
    """Call ``student`` and ``reference`` on the same inputs and :func:`close`-check the outputs.

    Each function gets its own copy of the tensor inputs, so one that changes its input in
    place cannot change what the other sees (or the caller's tensors).

    With ``grad=True`` the floating-point tensor inputs also get their gradients compared: the
    gradients of ``(output * w).sum()`` for one fixed random ``w`` shared by both functions
    (not of the plain sum, whose gradient is zero for a softmax whatever the formula), so a
    formula that matches in value but not in slope fails.

    Args:
        student, reference: the functions to compare.
        inputs: their positional arguments; tensors are copied, anything else passed as is.
        name: how the function is called in messages (default: ``student.__name__``).
        grad: also compare the gradients with respect to every floating-point tensor input.
        mistakes: known mistakes (:class:`Mistake` objects or ``{id: (function, hint)}``) whose
            ``compute`` is a function of the same inputs as ``reference``: an output that fails
            and matches one gets its hint (see :func:`close`).
        kwargs: passed on to :func:`close` (``rtol``, ``atol``, ``check_dtype``, ...).
    """
    found = _mistake_list(mistakes)
    label = name or getattr(student, "__name__", "function")

    def copy(x: Any) -> Any:
        if not isinstance(x, Tensor):
            return x
        x = x.detach().clone()
        return x.requires_grad_(True) if grad and x.is_floating_point() else x

    s_in = [copy(x) for x in inputs]
    r_in = [copy(x) for x in inputs]
    ref = reference(*r_in)
    out = student(*s_in)
    # Each mistake computes from its own copy of the inputs, lazily (only if the output fails).
    bound = [Mistake(m.id, (lambda m=m: m.value(*[x.detach().clone() if isinstance(x, Tensor) else x
                                                    for x in inputs])) if callable(m.compute) else m.compute,
                     m.hint, shape_only=m.shape_only) for m in found]
    close(out, ref, f"{label}(...)", mistakes=bound or None, **kwargs)
    if grad:
        if not isinstance(out, Tensor) or not out.requires_grad:
            raise CheckError(f"{label}: the output carries no gradient; use torch operations on the input so autograd can follow them")
        # The same random weights for both outputs, drawn without touching the global RNG.
        g = torch.Generator().manual_seed(0)
        w = torch.empty(ref.shape, dtype=torch.float64).uniform_(-1.0, 1.0, generator=g)
        (out * w.to(device=out.device, dtype=out.dtype)).sum().backward()
        (ref * w.to(device=ref.device, dtype=ref.dtype)).sum().backward()
        for i, (s, r) in enumerate(zip(s_in, r_in)):
            if isinstance(r, Tensor) and r.grad is not None:
                if s.grad is None:
                    raise CheckError(
                        f"gradient of {label} with respect to argument {i}: got no gradient (None); "
                        "is it detached or unused?"
                    )
                close(s.grad, r.grad, f"gradient of {label} with respect to argument {i}", **kwargs)


# ---------------------------------------------------------------------------------------------
# Helpers for writing tests: every form of a shortcut, fresh random inputs, derivatives
# ---------------------------------------------------------------------------------------------

_SHORTCUT_HOMES = ("torch.{}", "torch.Tensor.{}", "torch.Tensor.{}_", "torch.{}_", "torch.nn.functional.{}",
                   "torch.special.{}", "dlcourse.functional.{}")


def shortcuts(*names: str) -> list[str]:
    """Every existing form of the library functions called ``names``, ready for :func:`forbid`.

    ``shortcuts("sigmoid")`` gives ``torch.sigmoid``, ``torch.Tensor.sigmoid``,
    ``torch.Tensor.sigmoid_``, ``torch.sigmoid_``, ``torch.nn.functional.sigmoid`` and
    ``dlcourse.functional.sigmoid`` (those that exist), so a test need not list them by hand::

        with forbid(*shortcuts("sigmoid", "expit")):
            y = sigmoid(x)
    """
    found = []
    for name in names:
        if not name.isidentifier():
            raise ValueError(f"shortcuts: expected a function name such as 'sigmoid', got {name!r}")
        for home in _SHORTCUT_HOMES:
            dotted = home.format(name)
            try:
                _resolve(dotted)
            except (ValueError, ImportError):
                continue
            found.append(dotted)
    if not found:
        raise ValueError(f"shortcuts: no torch or dlcourse function is called {' or '.join(names)}")
    return found


def random_tensor(*shape: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                  scale: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Fresh normal random values times ``scale``: the inputs of hidden tests.

    Drawn anew on every call (unless a ``generator`` is given), so an answer hard-coded for
    the numbers a student saw cannot pass.
    """
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
        raise ValueError(f"random_tensor: expected non-negative int sizes, got {shape}")
    x = torch.randn(*shape, dtype=torch.float64, generator=generator) * scale
    return x.to(device=device or "cpu", dtype=dtype)


def derivative(f: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """The elementwise derivative ``f'(x)`` of an elementwise function, by autograd.

    The reference for a student's hand-derived ``f_grad(x)``: same shape, dtype and device
    as ``x``.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"derivative: expected a floating-point tensor, got {type(x).__name__}")
    xr = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = f(xr)
        if not isinstance(y, Tensor) or y.shape != x.shape:
            raise ValueError("derivative: f must map a tensor to a tensor of the same shape (elementwise)")
        (grad,) = torch.autograd.grad(y.sum(), xr)
    return grad


def vjp(f: Callable[..., Any], *inputs: Any, upstream: Tensor | None = None, wrt: Iterable[int] | None = None,
        **kwargs: Any) -> tuple[Any, tuple[Tensor | None, ...]]:
    """``f(*inputs, **kwargs)`` and the gradients autograd gives its inputs: ``(output, grads)``.

    The gradients are those of ``(output * upstream).sum()`` (of ``output.sum()`` without
    ``upstream``) with respect to ``inputs[i]`` for each ``i`` in ``wrt`` (default: every tensor
    input that requires a gradient); ``None`` for an input the output does not depend on. When
    ``f`` is the student's function under autograding, both are computed in the student's
    process, where the function lives; the caller compares them with its reference.

    Raises:
        CheckError: the output is not a tensor, or carries no gradient.
    """
    if wrt is None:
        wrt = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    wrt = list(wrt)
    remote = getattr(type(f), "__dlcourse_vjp__", None)
    if remote is not None:  # the grader's proxy of a function in the student's process
        output, grads = remote(f, inputs, kwargs, upstream, wrt)
    else:
        output = f(*inputs, **kwargs)
        if not isinstance(output, Tensor) or not output.requires_grad:
            grads = None
        elif upstream is not None and output.shape != upstream.shape:
            raise CheckError(f"{getattr(f, '__name__', 'the function')}: wrong shape: expected "
                             f"{_fmt_shape(upstream.shape)}, got {_fmt_shape(output.shape)}")
        else:
            target = output.sum() if upstream is None else output
            grads = torch.autograd.grad(target, [inputs[i] for i in wrt], upstream, allow_unused=True)
    name = getattr(f, "__name__", "the function")
    if not isinstance(output, Tensor):
        raise CheckError(f"{name} returned {type(output).__name__}, expected a tensor")
    if grads is None:
        raise CheckError(f"{name}: the output carries no gradient; use torch operations on the inputs so "
                         "autograd can follow them")
    return output, tuple(grads)


@contextlib.contextmanager
def time_limit(seconds: float, name: str = "the code", hint: str = "") -> Iterator[None]:
    """Stop the code inside the ``with`` block when it runs longer than ``seconds``.

    The block is interrupted at its limit (a ``SIGALRM`` timer, on the main thread of a Unix
    process, which is where JupyterLab's and Colab's kernels run a cell), so a slow solution fails
    within the limit instead of running for minutes. Elsewhere (Windows, another thread) the block
    runs to its end and its time is checked after. A timer that was already set (e.g. a test
    runner's timeout) is set again afterwards with the time it had left.

    Example::

        with check.time_limit(10, name="conv2d", hint="vectorize it"):
            y = conv2d(x, weight)

    Raises:
        CheckError: ``"<name>: stopped after <seconds> s, its time limit: <hint>"``.
        ValueError: ``seconds`` is not a positive number.
    """
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not seconds > 0:
        raise ValueError(f"time_limit: expected a positive number of seconds, got {seconds!r}")
    message = f"{name}: stopped after {seconds:g} s, its time limit" + (f": {hint}" if hint else "")

    def expired(signum: int, frame: Any) -> None:
        raise CheckError(message)

    alarm = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    start = time.monotonic()
    if alarm:
        previous_handler = signal.signal(signal.SIGALRM, expired)
        outer_left, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous_handler)
            if outer_left > 0:  # give the outer timer back the time it had left (at least a moment)
                signal.setitimer(signal.ITIMER_REAL, max(outer_left - (time.monotonic() - start), 1e-3))
    if time.monotonic() - start > seconds:  # no timer here: the block ran to its end
        raise CheckError(message)


class _CountCalls(torch.overrides.TorchFunctionMode):
    """Counts the torch functions and tensor methods called from Python (not those they call)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def torch_calls(f: Callable[..., Any], *inputs: Any, **kwargs: Any) -> tuple[Any, int]:
    """``f(*inputs, **kwargs)`` and the number of torch operations it called: ``(output, calls)``.

    Every call of a torch function or tensor method made by ``f``'s Python code counts once
    (indexing ``x[i]`` and ``y[i] = v`` included; what torch does inside a call does not). A
    vectorized function makes the same number of calls whatever the sizes of its inputs; a Python
    loop over their entries makes more calls for larger inputs. Compare two sizes to tell them apart.
    """
    remote = getattr(type(f), "__dlcourse_torch_calls__", None)
    if remote is not None:  # the grader's proxy of a function in the student's process
        return remote(f, inputs, kwargs)
    with _CountCalls() as counter:
        output = f(*inputs, **kwargs)
    return output, counter.calls
