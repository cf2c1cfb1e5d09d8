"""Lab 3's speed check (the test cell `test_conv2d_speed`), run in a real kernel on the instructor
notebook's own cells with different `conv2d`s: the solution passes; a Python loop, over every
entry or only over output positions, fails at once with a sentence that says to vectorize and how,
without running the large input; slow code is stopped at the 10 s limit instead of running on
(a loop-based conv2d once ran 7 min 54 s and took 7 GB before failing)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # a kernel per case, and one case runs into the 10 s limit: about 2 minutes
LAB = ROOT / "solutions" / "lab03_convolution" / "lab03_convolution.ipynb"

LOOP_EVERYWHERE = '''
def conv2d(x, weight, bias=None, stride=1, padding=0):
    C_out, C_in, kH, kW = weight.shape
    xp = F.pad(x, (padding, padding, padding, padding))
    H_out, W_out = (xp.shape[2] - kH) // stride + 1, (xp.shape[3] - kW) // stride + 1
    y = torch.zeros(x.shape[0], C_out, H_out, W_out, dtype=x.dtype, device=x.device)
    for n in range(x.shape[0]):
        for o in range(C_out):
            for i in range(H_out):
                for j in range(W_out):
                    window = xp[n, :, i * stride:i * stride + kH, j * stride:j * stride + kW]
                    y[n, o, i, j] = (window * weight[o]).sum() + (0 if bias is None else bias[o])
    return y
'''

LOOP_OVER_POSITIONS = '''
def conv2d(x, weight, bias=None, stride=1, padding=0):
    C_out, C_in, kH, kW = weight.shape
    xp = F.pad(x, (padding, padding, padding, padding))
    H_out, W_out = (xp.shape[2] - kH) // stride + 1, (xp.shape[3] - kW) // stride + 1
    rows = []
    for i in range(H_out):
        row = [torch.einsum("ncuv,ocuv->no", xp[:, :, i * stride:i * stride + kH, j * stride:j * stride + kW], weight)
               for j in range(W_out)]
        rows.append(torch.stack(row, dim=-1))
    y = torch.stack(rows, dim=-2)
    return y if bias is None else y + bias.reshape(1, -1, 1, 1)
'''

SLOW = '''
_solution = conv2d
def conv2d(x, weight, bias=None, stride=1, padding=0):
    time.sleep({seconds})
    return _solution(x, weight, bias, stride, padding)
'''

SLOW_ON_LARGE_INPUTS = '''
_solution = conv2d
def conv2d(x, weight, bias=None, stride=1, padding=0):
    time.sleep(0.01 if x.shape[0] * x.shape[-1] < 1000 else 60)  # only the 16 x 8 x 64 x 64 batch is slow
    return _solution(x, weight, bias, stride, padding)
'''


def lab_cells() -> dict[str, str]:
    """The instructor notebook's cells by grade_id, and its set-up cell as "dlcourse-setup"."""
    nb = json.loads(LAB.read_text(encoding="utf-8"))
    cells = {}
    for cell in nb["cells"]:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") or cell.get("id")
        cells[grade_id] = "".join(cell["source"])
    return cells


def run(conv2d_source: str | None) -> tuple[dict | None, float, str]:
    """Run the lab's set-up, its solution conv2d, ``conv2d_source`` (replacing it), the check's set-up
    and the speed check in one kernel: (the speed check's error output or None, its seconds, its text)."""
    cells = lab_cells()
    sources = [cells["setup"], cells["conv2d"], *([conv2d_source] if conv2d_source else []),
               cells["setup_conv2d"], cells["test_conv2d_speed"]]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    client = NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True)
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells[:-1]):
            client.execute_cell(cell, index)
            assert not [o for o in cell.outputs if o.output_type == "error"], cell.outputs
        start = time.perf_counter()
        client.execute_cell(nb.cells[-1], len(nb.cells) - 1)
        seconds = time.perf_counter() - start
    outputs = nb.cells[-1].outputs
    errors = [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    return (errors[0] if errors else None), seconds, text


def test_the_solution_passes():
    error, seconds, text = run(None)
    assert error is None, error
    assert "conv2d is vectorized and fast enough" in text


@pytest.mark.parametrize("source", [LOOP_EVERYWHERE, LOOP_OVER_POSITIONS], ids=["every-entry", "output-positions"])
def test_a_python_loop_fails_at_once_saying_how_to_vectorize(source):
    error, seconds, _ = run(source)
    assert error is not None and error.ename == "CheckError", error
    (line,) = error.traceback  # one sentence, no traceback
    assert "conv2d is not vectorized" in line and "unfold" in line and "einsum" in line
    assert seconds < 20, f"the check ran {seconds:.0f} s before failing"


def test_slow_code_fails_from_the_small_batch_without_running_the_large_one():
    error, seconds, _ = run(SLOW.format(seconds=1.0))  # 1 s on 4 images: about 16 s predicted for 16
    assert error is not None and error.ename == "CheckError", error
    assert "would take about" in error.evalue and "vectorize" in error.evalue
    assert seconds < 8


def test_slow_code_is_stopped_at_the_limit():
    error, seconds, _ = run(SLOW_ON_LARGE_INPUTS)
    assert error is not None and error.ename == "CheckError", error
    assert error.evalue.startswith("conv2d: stopped after 10 s, its time limit: vectorize it")
    assert 10 <= seconds < 20, f"stopped after {seconds:.1f} s"
