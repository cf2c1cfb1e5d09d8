"""A failed check as a student sees it in a notebook: executed by a real IPython kernel (the
kernel JupyterLab and Colab run), its error output is the check's one sentence, not a traceback
through dlcourse/check.py, and the cell is marked failed."""

from __future__ import annotations

import re

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

CELLS = [
    "import torch\nfrom dlcourse import check",
    'check.close(torch.zeros(3), torch.zeros(2, 4), name="relu(x)")',
    "with check.forbid(torch.sigmoid):\n    torch.sigmoid(torch.zeros(2))",
    "def f(x):\n    return x.reshape(5)\n\nf(torch.zeros(3))",
    'print("still runs")',
]


@pytest.fixture(scope="module")
def executed() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True).execute()
    return nb


def error_of(cell) -> dict:
    (error,) = [o for o in cell.outputs if o.output_type == "error"]
    return error


def test_a_failed_check_reads_as_one_sentence(executed):
    error = error_of(executed.cells[1])
    assert error.ename == "CheckError"
    assert error.traceback == ["CheckError: relu(x): wrong shape: expected (2, 4), got (3,)"]
    assert "check.py" not in "".join(error.traceback)


def test_a_forbidden_call_reads_as_one_sentence_too(executed):
    error = error_of(executed.cells[2])
    assert error.ename == "ForbiddenCallError" and len(error.traceback) <= 2
    assert error.traceback[0].startswith("ForbiddenCallError: ") and "torch.sigmoid" in error.traceback[0]


def test_other_errors_keep_their_traceback(executed):
    # A bug in the student's own code: the traceback shows where it is.
    error = error_of(executed.cells[3])
    assert error.ename == "RuntimeError" and len(error.traceback) > 2
    plain = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error.traceback))  # without its colours
    assert "return x.reshape(5)" in plain


def test_the_failed_check_still_fails_the_cell():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS[:2] + CELLS[-1:]])
    with pytest.raises(CellExecutionError, match="relu"):
        NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    assert nb.cells[2].outputs == []  # execution stopped at the failed check
