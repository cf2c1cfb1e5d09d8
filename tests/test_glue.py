"""dlcourse.glue: a chapter hands a computed value to its text; without myst-nb it keeps it."""

from __future__ import annotations

import sys

import pytest
import torch

from dlcourse.glue import glue, glued


def test_glue_keeps_the_value_and_returns_nothing(monkeypatch):
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # as on Colab: importing myst_nb fails
    # None: a cell that ends with glue(...) shows no Out[] value under it
    assert glue("test_accuracy", 0.973) is None
    assert glue("test_loss", torch.tensor(1.25)) is None  # a 0-d tensor becomes a Python number
    values = glued()
    assert values["test_accuracy"] == 0.973
    assert values["test_loss"] == 1.25 and isinstance(values["test_loss"], float)
    values["test_accuracy"] = 0  # a copy
    assert glued()["test_accuracy"] == 0.973


def test_glue_display_prints_without_myst_nb(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "myst_nb", None)
    glue("test_shown", 3, display=True)
    assert capsys.readouterr().out == "test_shown = 3\n"


@pytest.mark.parametrize("name", ["with space", "dash-ed", "", 3])
def test_glue_refuses_keys_the_markdown_cannot_name(name):
    with pytest.raises(ValueError, match="name must be letters, digits and '_'"):
        glue(name, 1.0)
