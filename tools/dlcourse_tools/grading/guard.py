"""Kernel-side guard: undo a submission's tampering before each test cell, detect it after.

The autograder inserts small cells around the lab's cells (see
:mod:`dlcourse_tools.grading.execute`): ``start`` first, ``record`` after each locked instructor cell
(the set-up cell), ``before_test`` before and ``after_test`` after each test cell.
``before_test`` puts back what student code may have replaced so that the tests run with the
real ``dlcourse.check``, the real PyTorch references and the set-up cell's own names
(``check``, ``dtypes``, ``derivative``...), removes IPython input/AST transformers, event hooks
and trace functions added since, and draws fresh random seeds (so a seed fixed by the
submission cannot make the hidden tests' inputs predictable). ``after_test`` reports what was
changed *while* the test ran (by the student's functions it called); the grader then gives
that test 0 points. Findings are printed on one line starting with :data:`MARK`.

This is a guard inside the process that runs the tests, as nbgrader designs autograding: it
stops the realistic attacks, not code written against the guard itself.
"""

from __future__ import annotations

import builtins
import importlib
import json
import os
import random
import sys
from typing import Any

MARK = "[dlcourse-guard] "  # plain ASCII: control characters split lines
MODULES = ("builtins", "math", "numpy", "numpy.testing", "torch", "torch.nn", "torch.nn.functional",
           "torch.autograd", "torch.testing", "dlcourse", "dlcourse.check", "dlcourse.functional")
# Names that IPython itself rebinds between cells.
_VOLATILE = {"builtins": {"_", "__", "___", "exit", "quit", "get_ipython", "display", "__IPYTHON__",
                          "input", "raw_input"}}  # ipykernel swaps input() per request
_HOOK_LISTS = ("ast_transformers", "input_transformers_post", "input_transformers_cleanup")

_state: dict[str, Any] = {}


def _watched(name: str, attr: str) -> bool:
    if name.startswith("dlcourse"):
        return not attr.startswith("__")  # private helpers of the checks count too
    return not attr.startswith("_") and attr not in _VOLATILE.get(name, ())


def _copy(value: Any) -> Any:
    return type(value)(value) if type(value) in (list, dict, set) else value


def start(ip: Any) -> None:
    """Snapshot the modules, classes and IPython hooks before any submission code runs."""
    objects: dict[str, Any] = {}
    for name in MODULES:
        try:
            objects[name] = importlib.import_module(name)
        except ImportError:
            continue
    import torch

    snap = {name: (obj, {k: v for k, v in vars(obj).items() if _watched(name, k)}) for name, obj in objects.items()}
    for cls in (torch.Tensor, torch.nn.Module, torch.nn.Linear, torch.nn.Sequential):
        # Operators count here (a patched Tensor.__sub__ changes every reference value).
        snap[f"{cls.__module__}.{cls.__qualname__}"] = (cls, {k: v for k, v in vars(cls).items()
                                                             if k not in ("__dict__", "__doc__", "__weakref__")})
    _state["objects"] = snap
    _state["modules"] = {name: sys.modules[name] for name in MODULES if name in sys.modules}
    _state["hooks"] = {h: list(getattr(ip, h, [])) for h in _HOOK_LISTS}
    _state["events"] = {e: list(cbs) for e, cbs in ip.events.callbacks.items()}
    _state["names"] = {}


def record(ip: Any, names: list[str]) -> None:
    """Remember the values an instructor cell gave to ``names`` in the notebook's namespace."""
    for name in names:
        if name in ip.user_ns:
            _state["names"][name] = _copy(ip.user_ns[name])


def _changes(ip: Any) -> list[str]:
    found = []
    for name, (obj, saved) in _state["objects"].items():
        now = vars(obj)
        found += [f"{name}.{k}" for k, v in saved.items() if now.get(k, _state) is not v]
    found += [f"sys.modules[{n!r}]" for n, m in _state["modules"].items() if sys.modules.get(n) is not m]
    for name, saved in _state["names"].items():
        now = ip.user_ns.get(name, _state)
        same = now == saved if type(saved) in (list, dict, set) and type(now) is type(saved) else now is saved
        if not same:
            found.append(f"the set-up cell's name {name!r}")
    found += [f"IPython's {h}" for h, saved in _state["hooks"].items() if list(getattr(ip, h, [])) != saved]
    if {e: list(c) for e, c in ip.events.callbacks.items()} != _state["events"]:
        found.append("IPython's event callbacks")
    if sys.gettrace() is not None or sys.getprofile() is not None:
        found.append("a trace or profile function")
    return found


def _restore(ip: Any) -> None:
    for name, (obj, saved) in _state["objects"].items():
        for k, v in saved.items():
            if vars(obj).get(k, _state) is not v:
                try:
                    setattr(obj, k, v)
                except (AttributeError, TypeError):  # a read-only attribute: the C slot is intact
                    pass
    sys.modules.update(_state["modules"])
    for name, saved in _state["names"].items():
        ip.user_ns[name] = _copy(saved)
    for h, saved in _state["hooks"].items():
        if hasattr(ip, h):
            getattr(ip, h)[:] = saved  # some are read-only properties: change the list in place
    for e, cbs in _state["events"].items():
        ip.events.callbacks[e] = list(cbs)
    sys.settrace(None)
    sys.setprofile(None)


def _reseed() -> None:
    import numpy
    import torch

    seed = int.from_bytes(os.urandom(4), "little")
    random.seed(seed)
    numpy.random.seed(seed)
    torch.manual_seed(seed)


def _report(grade_id: str, when: str, changes: list[str]) -> None:
    if changes:
        builtins.print(MARK + json.dumps({"grade_id": grade_id, "when": when, "changed": changes}), flush=True)


def before_test(ip: Any, grade_id: str) -> None:
    """Undo what the submission changed since the set-up, then reseed the random generators."""
    changes = _changes(ip)
    _restore(ip)
    _reseed()
    _report(grade_id, "before", changes)


def after_test(ip: Any, grade_id: str) -> None:
    """Report (and undo) what changed while the test ran: the grader zeroes that test."""
    changes = _changes(ip)
    _restore(ip)
    _report(grade_id, "during", changes)
