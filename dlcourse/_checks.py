"""Argument checks shared by the functions and modules that have a PyTorch twin.

The rule they enforce: *same as PyTorch, or a clear refusal*. A call written for PyTorch either
works the same or fails with a message that names what dlcourse does not support; it never
runs with an argument silently dropped or read as a different one.

:func:`torch_signature` wraps a function (or a module's ``__init__``/``forward``) whose own
signature keeps only the positional parameters it shares with its PyTorch twin, in PyTorch's
order; everything after them is keyword-only. The wrapper then

* refuses extra positional arguments, naming the PyTorch parameters they would have been, so
  ``scaled_dot_product_attention(q, k, v, None, 0.0, True)`` is an error that says to write
  ``dropout_p=`` and ``is_causal=`` by keyword, never a silent non-causal attention;
* accepts a keyword argument PyTorch has and dlcourse lacks only when its value is the one
  dlcourse computes anyway (``reduction="mean"``, ``groups=1``, ``ceil_mode=False``), and
  otherwise refuses it by name (:class:`Unsupported`).
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable
from typing import Any

from torch import Tensor

__all__ = ["Unsupported", "same_value", "torch_signature", "require_bool", "require_tensor", "check_int", "int_pair",
           "check_class_indices"]


class Unsupported(NotImplementedError):
    """A PyTorch feature (an argument or one of its values) that dlcourse does not implement."""


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def same_value(value: object, accepted: object) -> bool:
    """Whether ``value`` asks for exactly what ``accepted`` asks for (no tensor ever does)."""
    if isinstance(value, Tensor) or isinstance(accepted, Tensor):
        return False
    if accepted is None or isinstance(accepted, bool) or isinstance(value, bool):
        return value is accepted
    if isinstance(accepted, numbers.Real) and isinstance(value, numbers.Real):
        return value == accepted
    if isinstance(accepted, tuple) and isinstance(value, (tuple, list)):
        return len(value) == len(accepted) and all(same_value(v, a) for v, a in zip(value, accepted))
    if isinstance(accepted, int) and isinstance(value, (tuple, list)):  # dilation=(1, 1) is dilation=1
        return all(same_value(v, accepted) for v in value) and len(value) in (1, 2)
    return type(value) is type(accepted) and value == accepted


def torch_signature(*torch_rest: tuple[str, Any], name: str | None = None) -> Callable:
    """Make a function refuse, by name, the PyTorch arguments it does not implement.

    Args:
        torch_rest: the parameters PyTorch's twin takes *after* the positional ones the wrapped
            function shares with it, in PyTorch's order, each as ``(name, accepted)``: the one
            value dlcourse computes the same result for (usually PyTorch's default). A name the
            wrapped function has itself (keyword-only) is passed through.
        name: how errors name the function (default: its ``__name__``; for ``__init__``, the class).
    """

    def wrap(f: Callable) -> Callable:
        params = inspect.signature(f).parameters
        positional = [p for p in params if params[p].kind in _POSITIONAL]
        shown = [p for p in positional if p != "self"]
        own = set(params)
        accepted = dict(torch_rest)
        fn = name or (f.__qualname__.split(".")[0] if f.__name__ == "__init__" else f.__qualname__)

        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if len(args) > len(positional):
                extra = len(args) - len(positional)
                names = [n for n, _ in torch_rest[:extra]]
                given = len(args) - len(positional) + len(shown)
                if len(names) < extra:  # more than PyTorch's twin takes, too
                    raise TypeError(f"{fn}: expected at most {len(shown)} positional arguments "
                                    f"({', '.join(shown)}), got {given}")
                raise TypeError(
                    f"{fn}: expected at most {len(shown)} positional arguments ({', '.join(shown)}), "
                    f"got {given}; in PyTorch the next ones are {', '.join(names)}: pass them by keyword "
                    f"({', '.join(f'{n}={a!r}' for n, a in zip(names, args[len(positional):]))})"
                )
            for key in [k for k in kwargs if k not in own]:
                value = kwargs[key]
                if key not in accepted:
                    raise TypeError(f"{fn}: got an unexpected keyword argument {key!r}")
                if not same_value(value, accepted[key]):
                    shown_value = f"a {type(value).__name__}" if isinstance(value, Tensor) else repr(value)
                    raise Unsupported(
                        f"{fn}: dlcourse does not support {key}={shown_value} (PyTorch's {key}); "
                        f"expected {key}={accepted[key]!r} or leave it out"
                    )
                del kwargs[key]  # the value dlcourse computes anyway
            return f(*args, **kwargs)

        wrapper.torch_rest = tuple(torch_rest)  # type: ignore[attr-defined]
        return wrapper

    return wrap


def require_bool(value: object, name: str, fn: str) -> bool:
    """``value`` if it is a bool, else a clear error (``"False"`` is a true string, not ``False``)."""
    if not isinstance(value, bool):
        raise TypeError(f"{fn}: expected {name} to be a bool (True or False), got {type(value).__name__} {value!r}")
    return value


def require_tensor(value: object, name: str, fn: str) -> None:
    """A clear error unless ``value`` is a tensor."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{fn}: expected {name} to be a torch.Tensor, got {type(value).__name__}")


def check_int(value: object, name: str, fn: str, minimum: int) -> int:
    """``value`` as an int at least ``minimum``, or a clear error naming ``name``."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{fn}: expected an int {name}, got {type(value).__name__} {value!r}")
    value = int(value)  # also accepts NumPy integers
    if value < minimum:
        what = "positive" if minimum == 1 else f"at least {minimum}"
        raise ValueError(f"{fn}: expected {name} to be {what}, got {value}")
    return value


def int_pair(value: object, name: str, fn: str, minimum: int) -> tuple[int, int]:
    """An int or an ``(h, w)`` pair as ``(h, w)``, each checked like :func:`check_int`."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{fn}: expected {name} to be an int or an (h, w) pair, got {value!r}")
        return (check_int(value[0], name, fn, minimum), check_int(value[1], name, fn, minimum))
    v = check_int(value, name, fn, minimum)
    return v, v


def check_class_indices(target: Tensor, keep: Tensor, num_classes: int, fn: str) -> None:
    """A clear error if a counted target (``keep``) is not a class index in ``[0, num_classes)``."""
    bad = keep & ((target < 0) | (target >= num_classes))  # counted targets out of range
    if bad.any():
        raise ValueError(f"{fn}: expected class indices in [0, {num_classes}), got {target[bad][0].item()}")
