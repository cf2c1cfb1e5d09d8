"""Numbers in a chapter's prose come from its run: ``glue`` hands a computed value to the text.

In a chapter::

    from dlcourse.glue import glue

    accuracy = ...                      # computed by the cell
    glue("lstm_accuracy", 100 * accuracy)

and in the Markdown below it::

    The LSTM reaches {glue:text}`lstm_accuracy:.1f`%.

When the book is built, myst-nb puts the number the run produced into the sentence, so the text
cannot state a number its run did not produce.

Where myst-nb is not installed (Colab, a student's own JupyterLab) ``glue`` still works: it
keeps the value (``glued()`` returns every value glued so far) and shows nothing, so a chapter
runs the same everywhere. The student then reads the number in the cell's printed output.
"""

from __future__ import annotations

from typing import Any

_GLUED: dict[str, Any] = {}


def glue(name: str, value: Any, display: bool = False) -> None:
    """Make ``value`` available to the chapter's text under ``name`` (myst-nb's ``glue:text`` role).

    Returns nothing, so a cell that ends with a ``glue`` call shows no ``Out[]`` value under it.

    Args:
        name: the key the Markdown refers to (letters, digits and ``_``).
        value: a number (or a short string) computed by the cell.
        display: also show the value under the cell (myst-nb's default is to show it).

    Raises:
        ValueError: ``name`` is not an identifier-like key.
    """
    if not isinstance(name, str) or not name.replace("_", "a").isalnum():
        raise ValueError(f"glue: name must be letters, digits and '_', got {name!r}")
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()  # a 0-d tensor or array: glue the Python number
    _GLUED[name] = value
    try:
        from myst_nb import glue as _myst_glue
    except ImportError:  # Colab, a plain JupyterLab: nothing to hand the value to
        if display:
            print(f"{name} = {value}")
        return
    _myst_glue(name, value, display=display)


def glued() -> dict[str, Any]:
    """Every value glued in this process so far, by name (a copy)."""
    return dict(_GLUED)
