"""Hard-coded submissions, one module per lab, named like its folder in ``solutions/``.

Each module defines ``replacements() -> dict[str, str]``: for every solution cell's grade id,
a source that returns the answers the lab's *visible* tests expect as constants (computed
with PyTorch from the visible inputs, as a student might copy them from a printout). Such a
submission must pass every visible test and still lose every point to the hidden tests, which
draw fresh random cases; ``tests/test_grading.py`` grades one for every lab with a module here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path


def hardcoded_builders() -> dict[str, Callable[[], dict[str, str]]]:
    """lab folder name -> its ``replacements`` function, for every module in this package."""
    here = Path(__file__).parent
    return {p.stem: importlib.import_module(f"{__name__}.{p.stem}").replacements
            for p in sorted(here.glob("lab*.py"))}
