"""The readable functions and the fast kernels behind them (``dlcourse._fast``): each readable
function fits on a screen and hands over in one visible line, ``DLCOURSE_FAST`` really switches
the path (and refuses values it does not know), and the kernels leave no setting behind.

Whether both paths compute what PyTorch computes is tested where each operation is tested
(test_conv.py, test_rnn.py, test_losses.py, test_pool.py: the ``path`` fixture of fast_paths.py)."""

from __future__ import annotations

import ast
import inspect
import os
import textwrap

import pytest
import torch

from dlcourse import _fast, conv, losses, pool, rnn
from dlcourse import functional as F

READABLE = {  # the readable function, the fast kernel it hands over to, and a call of it
    "conv2d": (conv.conv2d, "conv2d", lambda: F.conv2d(torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3), padding=1)),
    "lstm": (rnn.lstm, "lstm", lambda: F.lstm(torch.randn(5, 2, 3), (torch.zeros(2, 4), torch.zeros(2, 4)),
                                               torch.randn(16, 3), torch.randn(16, 4))),
    "cross_entropy": (losses.cross_entropy, "cross_entropy",
                      lambda: F.cross_entropy(torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0]))),
    "max_pool2d": (pool.max_pool2d, "max_pool2d", lambda: F.max_pool2d(torch.randn(2, 3, 6, 6), 2)),
    "avg_pool2d": (pool.avg_pool2d, "avg_pool2d", lambda: F.avg_pool2d(torch.randn(2, 3, 6, 6), 3, 2, 1)),
}
SCREEN = 40  # lines a student reads at once


def body_lines(fn) -> list[str]:
    """The lines of ``fn``'s body, without its signature, decorators and docstring, blank lines and comments."""
    fn = inspect.unwrap(fn)
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    node = tree.body[0]
    body = node.body[1:] if ast.get_docstring(node) is not None else node.body
    source = textwrap.dedent(inspect.getsource(fn)).splitlines()
    lines = source[body[0].lineno - 1:body[-1].end_lineno]
    return [line for line in lines if line.strip() and not line.strip().startswith("#")]


@pytest.mark.parametrize("name", READABLE)
def test_the_readable_function_fits_on_a_screen_and_hands_over_in_one_line(name):
    fn, kernel, _ = READABLE[name]
    lines = body_lines(fn)
    assert len(lines) <= SCREEN, f"{name}: {len(lines)} lines"
    handover = [line for line in lines if "_fast." in line]
    assert len(handover) == 2, handover  # `if _fast.enabled():` and the `return _fast.<kernel>(...)` under it
    assert handover[0].strip().startswith("if _fast.enabled()")
    assert handover[1].strip().startswith(f"return _fast.{kernel}(")


def test_the_readable_cross_entropy_is_the_formula():
    source = "\n".join(body_lines(losses.cross_entropy))
    assert "exp2" not in source and ".exp()" in source and ".log()" in source


@pytest.mark.parametrize("name", READABLE)
@pytest.mark.parametrize("setting, used", [("1", True), ("0", False), (None, True)], ids=["on", "off", "unset"])
def test_the_switch_chooses_the_path(name, setting, used, monkeypatch):
    """A recorder in place of the kernel shows whether the readable function handed over to it."""
    _, kernel, call = READABLE[name]
    if setting is None:
        monkeypatch.delenv(_fast.ENV, raising=False)
    else:
        monkeypatch.setenv(_fast.ENV, setting)
    real, calls = getattr(_fast, kernel), []

    def recorder(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(_fast, kernel, recorder)
    call()
    assert bool(calls) == used


@pytest.mark.parametrize("value", ["yes", "true", "2", "off"])
def test_an_unknown_setting_is_a_clear_error(value, monkeypatch):
    monkeypatch.setenv(_fast.ENV, value)
    with pytest.raises(ValueError, match=f"DLCOURSE_FAST to be 0 .* or 1 .*got '{value}'"):
        READABLE["conv2d"][2]()


def test_switched_restores_the_setting(monkeypatch):
    monkeypatch.delenv(_fast.ENV, raising=False)
    with _fast.switched(False):
        assert not _fast.enabled() and os.environ[_fast.ENV] == "0"
        with _fast.switched(True):
            assert _fast.enabled()
        assert not _fast.enabled()
    assert _fast.ENV not in os.environ and _fast.enabled()
    with pytest.raises(TypeError, match="True or False"):
        with _fast.switched("0"):
            pass
