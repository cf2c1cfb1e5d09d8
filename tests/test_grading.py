"""The nbgrader round trip of every lab: solutions/ -> labs/ -> submissions -> autograded scores.

nbgrader runs as an instructor would run it, in a scratch copy of the course (``nbgrader_config.py``
and ``solutions/``), with the interpreter that runs pytest. Once per test session:

1. ``nbgrader generate_assignment`` writes the student version of each lab. Its output is
   deterministic, so it must equal the committed ``labs/`` byte for byte (``make labs`` rewrites
   it), and no line of a solution or of a hidden test may leak into it.
2. ``nbgrader autograde`` grades three submissions of each lab in one call, so each notebook
   executes once: ``solution``, the released notebook with the instructor's solution code in
   every solution cell, must get full marks; ``untouched``, the released notebook as is, must
   get 0 without crashing nbgrader; ``hardcoded`` (labs with a builder in ``HARDCODED``), solution cells that return the
   answers the visible tests expect as constants, must pass every visible test and still lose
   every point to the hidden tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
LABS = sorted(p.name for p in (ROOT / "solutions").glob("*") if p.is_dir() and any(p.glob("*.ipynb")))
COURSE_ID = "dlcourse"  # c.CourseDirectory.course_id in nbgrader_config.py
PASSED_MARK = "\u2714"  # what dlcourse.check.passed prints at the end of a visible test

SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")
HIDDEN_MARKERS = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
MARKER_WORDS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")

slow = pytest.mark.slow


# ---------------------------------------------------------------------------------------------
# Notebook helpers
# ---------------------------------------------------------------------------------------------

def read_nb(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def write_nb(nb: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def source(cell: dict[str, Any]) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def nbgrader_meta(cell: dict[str, Any]) -> dict[str, Any]:
    return cell.get("metadata", {}).get("nbgrader", {})


def notebooks(lab: str) -> list[str]:
    """The notebook names (without .ipynb) of one lab in solutions/."""
    return sorted(p.stem for p in (ROOT / "solutions" / lab).glob("*.ipynb"))


def split_blocks(src: str, markers: tuple[str, str]) -> tuple[list[str], list[str]]:
    """(lines outside the marked blocks, lines inside them); the marker lines themselves in neither."""
    outside: list[str] = []
    inside: list[str] = []
    depth = 0
    for line in src.splitlines():
        if line.strip() == markers[0]:
            depth += 1
        elif line.strip() == markers[1]:
            depth -= 1
        else:
            (inside if depth else outside).append(line)
    assert depth == 0, f"unbalanced {markers[0]!r} / {markers[1]!r} in:\n{src}"
    return outside, inside


def solution_code(src: str) -> str:
    """An instructor's solution cell as a student who solved it would submit it: markers dropped."""
    return "\n".join(line for line in src.splitlines() if line.strip() not in SOLUTION_MARKERS)


def max_points(nb: dict[str, Any]) -> float:
    return sum(float(nbgrader_meta(c).get("points", 0)) for c in nb["cells"] if nbgrader_meta(c).get("grade"))


def cell_outputs(cell: dict[str, Any]) -> tuple[str, list[str]]:
    """(the text a code cell printed, the names of the errors it raised)."""
    outputs = cell.get("outputs", [])
    text = "".join("".join(o["text"]) for o in outputs if o["output_type"] == "stream")
    errors = [f"{o['ename']}: {o['evalue']}" for o in outputs if o["output_type"] == "error"]
    return text, errors


# ---------------------------------------------------------------------------------------------
# Submissions
# ---------------------------------------------------------------------------------------------

# The input of lab 1's visible activation tests.
_X = [-50.0, -4.0, -1.0, 0.0, 0.5, 3.0, 50.0]


def _hardcoded_lab01() -> dict[str, str]:
    """Lab 1's solution cells rewritten to return what the visible tests expect, as constants.

    The constants are computed here with PyTorch in float64 (as a student would copy them from
    a printout); the visible tests then pass in float32 and float64, and the hidden tests, with
    other shapes, values and parameters, fail.
    """
    import torch
    import torch.nn.functional as F

    f64 = torch.float64
    x = torch.tensor(_X, dtype=f64)

    def const(t: torch.Tensor) -> str:
        return f"torch.tensor({t.tolist()!r}, dtype=x.dtype, device=x.device)"

    def grad(f: Any) -> torch.Tensor:
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(xg).sum(), xg)
        return g

    def elementwise(name: str, f: Any, param: str = "", values: tuple[float, ...] = ()) -> str:
        if not param:
            return (f"def {name}(x):\n    return {const(f(x))}\n\n"
                    f"def {name}_grad(x):\n    return {const(grad(f))}\n")
        default, other = values
        fd, fo = (lambda t, v=v: f(t, v) for v in values)
        return (f"def {name}(x, {param}={default}):\n"
                f"    return {const(fd(x))} if {param} == {default} else {const(fo(x))}\n\n"
                f"def {name}_grad(x, {param}={default}):\n"
                f"    return {const(grad(fd))} if {param} == {default} else {const(grad(fo))}\n")

    lecture_x = torch.tensor([0.5, 0.8], dtype=f64)
    batch_x = torch.tensor([[0.5, 0.8], [1.0, -1.0], [0.0, 0.0], [-2.0, 3.0]], dtype=f64)
    w = torch.tensor([0.2, 0.4], dtype=f64)
    dense_x = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]], dtype=f64)
    weight = torch.tensor([[0.1, 0.2, 0.3], [-0.5, 0.0, 0.5]], dtype=f64)
    bias = torch.tensor([0.01, -0.02], dtype=f64)
    w1 = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.5], [-1.0, 2.0, 0.0], [0.0, 0.0, 1.0]], dtype=f64)
    b1 = torch.tensor([0.0, -1.0, 0.5, 0.0], dtype=f64)
    w2 = torch.tensor([[1.0, -1.0, 0.5, 2.0], [0.0, 1.0, 1.0, -1.0]], dtype=f64)
    b2 = torch.tensor([0.1, -0.1], dtype=f64)
    two_layer = F.linear(F.relu(F.linear(dense_x, w1, b1)), w2, b2)
    return {
        "sigmoid": elementwise("sigmoid", torch.sigmoid),
        "tanh": elementwise("tanh", torch.tanh),
        "relu": elementwise("relu", torch.relu),
        "leaky_relu": elementwise("leaky_relu", F.leaky_relu, "negative_slope", (0.01, 0.2)),
        "elu": elementwise("elu", F.elu, "alpha", (1.0, 2.0)),
        "perceptron": (
            "def perceptron(x, w, b):\n"
            f"    if x.dim() == 1:\n        return {const(torch.sigmoid(lecture_x @ w + 0.1))}\n"
            f"    return {const(torch.sigmoid(batch_x @ w + 0.1))}\n"
        ),
        "dense": (
            "def dense(x, weight, bias=None):\n"
            f"    if bias is None:\n        return {const(F.linear(dense_x, weight))}\n"
            f"    if x.dim() == 3:\n        return {const(F.linear(dense_x, weight, bias)[None])}\n"
            f"    return {const(F.linear(dense_x, weight, bias))}\n"
        ),
        "two_layer": f"def two_layer(x, w1, b1, w2, b2):\n    return {const(two_layer)}\n",
        "param_counts": (
            "def dense_params(n_in, n_out, bias=True):\n"
            "    return {(4, 4, True): 20, (4, 1, True): 5, (3, 2, False): 6,\n"
            "            (480_000, 1_000, True): 480_001_000}.get((n_in, n_out, bias), 0)\n\n"
            "def mlp_params(sizes):\n"
            "    return {(4, 4, 1): 25, (4, 4, 2): 30, (480_000, 1_000, 1): 480_002_001,\n"
            "            (10, 1): 11}.get(tuple(sizes), 0)\n"
        ),
    }


def _hardcoded_lab02() -> dict[str, str]:
    """Lab 2's solution cells rewritten to return what the visible tests expect, as constants.

    The visible inputs are rebuilt here as the lab builds them (fixed tensors, or standard
    normal numbers drawn in float64 from a CPU generator seeded with 0), and the answers
    computed with autograd and torch.optim in float64. The hidden tests, with fresh shapes,
    values and hyperparameters, fail.
    """
    import torch
    import torch.nn.functional as F

    f64 = torch.float64

    def const(t: torch.Tensor, like: str) -> str:
        return f"torch.tensor({t.tolist()!r}, dtype={like}.dtype, device={like}.device)"

    def grad(f: Any, *inputs: torch.Tensor, wrt: tuple[int, ...] = (0,)) -> tuple[torch.Tensor, ...]:
        leaves = [x.clone().requires_grad_(i in wrt) for i, x in enumerate(inputs)]
        return torch.autograd.grad(f(*leaves), [leaves[i] for i in wrt])

    def seeded() -> tuple[torch.Generator, Any]:
        """A CPU generator seeded with 0, and randn(*shape) drawing float64 numbers from it."""
        g = torch.Generator().manual_seed(0)
        return g, lambda *shape: torch.randn(shape, generator=g, dtype=f64)

    # 1. The losses' visible inputs.
    pred = torch.tensor([[0.5, -1.0, 2.0], [0.0, 3.0, -0.5]], dtype=f64)
    mse_target = torch.tensor([[1.0, -1.0, 0.0], [0.5, 2.0, 0.5]], dtype=f64)
    prob = torch.tensor([[0.1, 0.5, 0.9], [0.3, 0.7, 0.02]], dtype=f64)
    bce_target = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.25]], dtype=f64)
    logits = torch.tensor([[2.0, 1.0, 0.1, -1.0], [0.0, 0.0, 0.0, 0.0], [100.0, 0.0, -100.0, 5.0]], dtype=f64)
    classes = torch.tensor([0, 2, 1])

    # 2. The MLP's: mlp_inputs(N, d, m, C, loss, dtype, generator) of the lab's setup cell.
    def mlp_grads(N: int, d: int, m: int, C: int, activation: str, loss: str) -> str:
        g, randn = seeded()
        x, w1, b1 = randn(N, d), d ** -0.5 * randn(m, d), 0.1 * randn(m)
        w2, b2 = m ** -0.5 * randn(C, m), 0.1 * randn(C)
        target = randn(N, C) if loss == "mse" else torch.randint(C, (N,), generator=g)
        act = {"relu": torch.relu, "tanh": torch.tanh}[activation]
        loss_fn = F.mse_loss if loss == "mse" else F.cross_entropy

        def f(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
            return loss_fn(F.linear(act(F.linear(x, w1, b1)), w2, b2), target)

        return "(" + ", ".join(const(t, "x") for t in grad(f, w1, b1, w2, b2, wrt=(0, 1, 2, 3))) + ")"

    # 3. The optimizers': random_problem(shapes, steps, dtype, generator), then torch.optim.
    def optimizer_run(cls: Any, shapes: list[tuple[int, ...]], **hyper: Any) -> tuple[list[torch.Tensor], list[Any]]:
        _, randn = seeded()
        params = [randn(*s).requires_grad_(True) for s in shapes]
        steps = [[randn(*s) for s in shapes] for _ in range(3)]
        opt = cls(params, **hyper)
        for step_grads in steps:
            for p, g in zip(params, step_grads):
                p.grad = g
            opt.step()
        return [p.detach() for p in params], [opt.state[p] for p in params]

    sgd_params, sgd_state = optimizer_run(torch.optim.SGD, [(2, 3), (3,)], lr=0.1, momentum=0.9)
    (adam_param,), (adam_state,) = optimizer_run(torch.optim.Adam, [(2, 3)], lr=0.1, betas=(0.9, 0.999), eps=1e-8)

    # 4. The gradient check's: f(x) = sum(x sin x) at a fixed x.
    x = torch.tensor([[-2.0, -0.5, 0.0], [0.3, 1.0, 2.5]], dtype=f64)
    correct, forgot = torch.sin(x) + x * torch.cos(x), x * torch.cos(x)
    forgot_error = ((correct - forgot).abs().max() / torch.maximum(correct.abs(), forgot.abs()).max()).item()
    first = [t.reshape(-1)[0].item() for t in (correct, 1.5 * correct, forgot)]
    return {
        "mse_grad": f"def mse_grad(pred, target):\n    return {const(grad(F.mse_loss, pred, mse_target)[0], 'pred')}\n",
        "bce_grad": (f"def bce_grad(prob, target):\n"
                     f"    return {const(grad(F.binary_cross_entropy, prob, bce_target)[0], 'prob')}\n"),
        "softmax_ce_grad": (f"def softmax_ce_grad(logits, target):\n"
                            f"    return {const(grad(F.cross_entropy, logits, classes)[0], 'logits')}\n"),
        "mlp_backward": (
            'def mlp_backward(x, target, w1, b1, w2, b2, activation="relu", loss="mse"):\n'
            f'    if loss == "mse":\n        return {mlp_grads(4, 3, 5, 2, "relu", "mse")}\n'
            f'    return {mlp_grads(5, 3, 4, 3, "tanh", "cross_entropy")}\n'
        ),
        "sgd_momentum_step": (
            "def sgd_momentum_step(params, grads, bufs, lr, momentum):\n    p = params[0]\n"
            f"    return [{', '.join(const(t, 'p') for t in sgd_params)}], "
            f"[{', '.join(const(s['momentum_buffer'], 'p') for s in sgd_state)}]\n"
        ),
        "adam_step": (
            "def adam_step(param, grad, m, v, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):\n"
            f"    return {const(adam_param, 'param')}, {const(adam_state['exp_avg'], 'param')}, "
            f"{const(adam_state['exp_avg_sq'], 'param')}\n"
        ),
        "grad_check": (
            "def grad_check(f, x, analytic_grad, eps=1e-6):\n"
            "    first = analytic_grad.reshape(-1)[0].item()\n"
            f"    answers = {{{first[0]!r}: 1e-10, {first[1]!r}: 1 / 3, {first[2]!r}: {forgot_error!r}}}\n"
            "    return next((e for g, e in answers.items() if abs(first - g) < 1e-12), 1.0)\n"
        ),
    }


def _hardcoded_lab04() -> dict[str, str]:
    """Lab 4's solution cells rewritten to return what the visible tests expect, as constants.

    The visible inputs are rebuilt here as the lab builds them (lecture 000's matrix; values
    without ties and an upstream gradient drawn from a CPU generator seeded with 0), the pooled
    values and gradients computed with torch's pooling and autograd in float64, and the shapes
    by running the visible networks. The "CNN" looks the held-out digits up in a table of their
    labels. The hidden tests (fresh shapes, windows and values; training digits; held-out digits
    shuffled and moved by one grey level) fail.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    f64 = torch.float64
    lecture = torch.tensor([[1.0, 3.0, 5.0, 3.0], [4.0, 2.0, 3.0, 1.0], [3.0, 1.0, 1.0, 3.0], [0.0, 1.0, 0.0, 4.0]],
                           dtype=f64)[None, None]  # (1, 1, 4, 4)
    lecture_grad = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=f64)[None, None]  # (1, 1, 2, 2)
    g = torch.Generator().manual_seed(0)  # the lab's distinct(2, 3, 7, 9), then torch.randn(2, 3, 3, 4)
    n = 2 * 3 * 7 * 9
    x = (0.25 * (torch.randperm(n, generator=g).to(f64) - n // 2)).reshape(2, 3, 7, 9)
    grad_out = torch.randn(2, 3, 3, 4, generator=g, dtype=f64)

    def const(t: torch.Tensor) -> str:
        return f"torch.tensor({t.tolist()!r}, dtype=x.dtype, device=x.device)"

    def grad(pool: Any, inp: torch.Tensor, k: int, s: int | None, upstream: torch.Tensor) -> torch.Tensor:
        leaf = inp.clone().requires_grad_(True)
        return torch.autograd.grad(pool(leaf, k, s), leaf, upstream)[0]

    def forward(name: str, pool: Any) -> str:
        return (f"def {name}(x, kernel_size, stride=None):\n"
                f"    if x.shape[-1] == 4:\n        return {const(pool(lecture, 2, None))}\n"
                f"    return {const(pool(x, 3, 2))}\n")

    def backward(name: str, pool: Any) -> str:
        return (f"def {name}(x, grad_out, kernel_size, stride=None):\n"
                f"    if x.shape[-1] == 4:\n        return {const(grad(pool, lecture, 2, None, lecture_grad))}\n"
                f"    return {const(grad(pool, x, 3, 2, grad_out))}\n")

    @torch.no_grad()
    def shapes(layers: list[nn.Module], input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        out, t = [], torch.zeros(1, *input_shape)
        for layer in layers:
            t = layer(t)
            out.append(tuple(t.shape[1:]))
        return out

    networks = {
        (1, 32, 32): [nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2)],
        (3, 40, 30): [nn.Conv2d(3, 6, (3, 5), stride=(1, 2), padding=(1, 0)), nn.ReLU(),
                      nn.AvgPool2d(3, stride=2, padding=1), nn.MaxPool2d(2)],
        (1, 28, 28): [nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(),
                      nn.AvgPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(),
                      nn.Linear(84, 10)],
    }
    answers = {shape: shapes(layers, shape) for shape, layers in networks.items()}
    return {
        "pool_forward": forward("max_pool2d", F.max_pool2d) + "\n\n" + forward("avg_pool2d", F.avg_pool2d),
        "max_pool2d_backward": backward("max_pool2d_backward", F.max_pool2d),
        "avg_pool2d_backward": backward("avg_pool2d_backward", F.avg_pool2d),
        "activation_shapes": (f"def activation_shapes(layers, input_shape):\n"
                              f"    return {answers!r}.get(tuple(input_shape), [])\n"),
        "build_cnn": (
            "class Lookup(nn.Module):\n"
            '    """The label of every held-out digit, looked up by its pixels (class 0 for any other image)."""\n'
            "    def __init__(self):\n"
            "        super().__init__()\n"
            "        self.conv, self.pool = nn.Conv2d(1, 1, 1), nn.MaxPool2d(1)  # what the check looks for\n"
            "        images, labels = test_set.tensors\n"
            "        self.table = {img.numpy().tobytes(): int(y) for img, y in zip(images, labels)}\n\n"
            "    def forward(self, x):\n"
            "        labels = [self.table.get(img.cpu().numpy().tobytes(), 0) for img in x]\n"
            "        return F.one_hot(torch.tensor(labels), 10).float().to(x.device)\n\n\n"
            "def build_cnn():\n    return Lookup()\n"
        ),
        "train_cnn": "def train_cnn(model, train_set):\n    return []\n",
    }


HARDCODED = {"lab01_perceptron": _hardcoded_lab01, "lab02_backprop": _hardcoded_lab02,
             "lab04_pooling_cnn": _hardcoded_lab04}


def make_submission(release: dict[str, Any], solutions: dict[str, Any],
                    replacements: dict[str, str] | None) -> dict[str, Any]:
    """The released notebook with each solution cell's source replaced.

    ``replacements=None`` pastes the instructor's solution code; a dict maps grade ids to
    sources (and must cover every solution cell).
    """
    instructor = {nbgrader_meta(c)["grade_id"]: source(c) for c in solutions["cells"] if nbgrader_meta(c).get("solution")}
    nb = json.loads(json.dumps(release))
    for cell in nb["cells"]:
        meta = nbgrader_meta(cell)
        if meta.get("solution"):
            gid = meta["grade_id"]
            cell["source"] = solution_code(instructor[gid]) if replacements is None else replacements[gid]
    return nb


# ---------------------------------------------------------------------------------------------
# The scratch course, built once per session
# ---------------------------------------------------------------------------------------------

def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m nbgrader ARGS`` in the course directory; fail with its log if it fails."""
    env = dict(os.environ)
    # nbgrader creates a gradebook by calling the `alembic` executable by name: put this
    # interpreter's bin/ (the virtualenv's) first on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # The kernels that execute the notebooks import the dlcourse of this checkout.
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"nbgrader {' '.join(args)} failed ({proc.returncode}):\n{log[-5000:]}"
    assert "[ERROR]" not in log and "| ERROR]" not in log, f"nbgrader {' '.join(args)} logged errors:\n{log[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A scratch course: labs generated from solutions/, then three submissions per lab autograded."""
    root = tmp_path_factory.mktemp("course")
    shutil.copy2(ROOT / "nbgrader_config.py", root)
    shutil.copytree(ROOT / "solutions", root / "solutions",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    for lab in LABS:
        nbgrader(root, "generate_assignment", lab, "--force")
        for name in notebooks(lab):
            release = read_nb(root / "labs" / lab / f"{name}.ipynb")
            solutions = read_nb(root / "solutions" / lab / f"{name}.ipynb")
            submissions = {"solution": make_submission(release, solutions, None), "untouched": release}
            if lab in HARDCODED:
                submissions["hardcoded"] = make_submission(release, solutions, HARDCODED[lab]())
            for student, nb in submissions.items():
                write_nb(nb, root / "submitted" / student / lab / f"{name}.ipynb")
        nbgrader(root, "autograde", lab, "--force")
    yield root


def scores(course: Path, lab: str, name: str, student: str) -> dict[str, tuple[float, float]]:
    """grade id -> (score, max score) of one autograded submission, from the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id=COURSE_ID) as gb:
        nb = gb.find_submission_notebook(name, lab, student)
        return {g.name: (g.score, g.max_score) for g in nb.grades}


def autograded(course: Path, lab: str, name: str, student: str) -> dict[str, dict[str, Any]]:
    """grade id -> executed test cell of one autograded submission."""
    nb = read_nb(course / "autograded" / student / lab / f"{name}.ipynb")
    return {nbgrader_meta(c)["grade_id"]: c for c in nb["cells"] if nbgrader_meta(c).get("grade")}


LAB_NOTEBOOKS = [(lab, name) for lab in LABS for name in notebooks(lab)]


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------

def test_there_are_labs() -> None:
    assert LABS, "no lab folder with a notebook under solutions/"


@pytest.mark.parametrize("lab, name", LAB_NOTEBOOKS)
def test_source_follows_the_lab_format(lab: str, name: str) -> None:
    """Cheap static checks of the instructor notebook (no nbgrader run)."""
    nb = read_nb(ROOT / "solutions" / lab / f"{name}.ipynb")
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    ids = [nbgrader_meta(c)["grade_id"] for c in nb["cells"] if nbgrader_meta(c)]
    assert len(ids) == len(set(ids)), f"duplicate grade ids: {ids}"
    for cell in nb["cells"]:
        meta, src = nbgrader_meta(cell), source(cell)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"committed output in:\n{src}"
        if meta:
            assert meta["schema_version"] == 3, meta
        if meta.get("solution"):
            assert src.count(SOLUTION_MARKERS[0]) >= 1, f"solution cell {meta['grade_id']} has no solution block"
        if meta.get("grade"):
            gid = meta["grade_id"]
            assert meta["locked"] and float(meta["points"]) > 0, f"{gid}: a test cell must be locked and worth points"
            assert re.match(r'\s*"""', src), f"{gid}: a test cell opens with a docstring saying what it checks"
            visible, hidden = split_blocks(src, HIDDEN_MARKERS)
            assert hidden, f"{gid}: no hidden tests"
            assert "check.passed(" in visible[-1], f"{gid}: the visible test should end with check.passed(...)"


@slow
@pytest.mark.parametrize("lab", LABS)
def test_generated_labs_match_committed(course: Path, lab: str) -> None:
    generated = sorted(p.relative_to(course / "labs") for p in (course / "labs" / lab).rglob("*") if p.is_file())
    committed = sorted(p.relative_to(ROOT / "labs") for p in (ROOT / "labs" / lab).rglob("*") if p.is_file())
    assert generated == committed, "labs/ differs from what nbgrader generates from solutions/: run `make labs`"
    for rel in generated:
        assert (course / "labs" / rel).read_bytes() == (ROOT / "labs" / rel).read_bytes(), (
            f"labs/{rel} is not what nbgrader generates from solutions/: run `make labs` (never edit labs/ by hand)"
        )


@slow
@pytest.mark.parametrize("lab, name", LAB_NOTEBOOKS)
def test_no_solution_or_hidden_test_leaks(course: Path, lab: str, name: str) -> None:
    raw = (course / "labs" / lab / f"{name}.ipynb").read_text(encoding="utf-8")
    for word in MARKER_WORDS:
        assert word not in raw, f"{word!r} left in the student notebook"
    public: set[str] = set()
    secret: set[str] = set()
    for cell in read_nb(ROOT / "solutions" / lab / f"{name}.ipynb")["cells"]:
        outside, in_solution = split_blocks(source(cell), SOLUTION_MARKERS)
        outside, in_hidden = split_blocks("\n".join(outside), HIDDEN_MARKERS)
        public.update(line.strip() for line in outside)
        secret.update(line.strip() for line in in_solution + in_hidden)
    secret -= public | {""}
    student_lines = {line.strip() for cell in read_nb(course / "labs" / lab / f"{name}.ipynb")["cells"]
                     for line in source(cell).splitlines()}
    leaked = sorted(secret & student_lines)
    assert not leaked, f"lines of solutions or hidden tests in the student notebook: {leaked}"
    assert secret, "the instructor notebook has no solution or hidden-test lines"


@slow
@pytest.mark.parametrize("lab, name", LAB_NOTEBOOKS)
def test_solution_gets_full_marks(course: Path, lab: str, name: str) -> None:
    expected_max = max_points(read_nb(ROOT / "solutions" / lab / f"{name}.ipynb"))
    got = scores(course, lab, name, "solution")
    assert sum(m for _, m in got.values()) == expected_max
    lost = {gid: s for gid, s in got.items() if s[0] != s[1]}
    errors = {gid: cell_outputs(c)[1] for gid, c in autograded(course, lab, name, "solution").items() if cell_outputs(c)[1]}
    assert not lost, f"the solution loses points: {lost}; errors: {errors}"
    for gid, cell in autograded(course, lab, name, "solution").items():
        assert PASSED_MARK in cell_outputs(cell)[0], f"{gid}: the visible test printed no {PASSED_MARK} line"


@slow
@pytest.mark.parametrize("lab, name", LAB_NOTEBOOKS)
def test_untouched_student_version_gets_zero(course: Path, lab: str, name: str) -> None:
    got = scores(course, lab, name, "untouched")
    assert got, "no grades recorded"
    assert all(score == 0 for score, _ in got.values()), f"points without any work: {got}"
    for gid, cell in autograded(course, lab, name, "untouched").items():
        assert cell_outputs(cell)[1], f"{gid}: the test passed on the unsolved notebook"


@slow
@pytest.mark.parametrize("lab, name", [(lab, name) for lab, name in LAB_NOTEBOOKS if lab in HARDCODED])
def test_hardcoded_answers_pass_visible_but_fail_hidden_tests(course: Path, lab: str, name: str) -> None:
    got = scores(course, lab, name, "hardcoded")
    assert all(score == 0 for score, _ in got.values()), f"hard-coded answers earn points: {got}"
    for gid, cell in autograded(course, lab, name, "hardcoded").items():
        printed, errors = cell_outputs(cell)
        assert PASSED_MARK in printed, f"{gid}: hard-coded answers should pass the visible test; errors: {errors}"
        assert any(e.startswith(("CheckError", "ForbiddenCallError")) for e in errors), (
            f"{gid}: the hidden tests should fail with a check error, got {errors}"
        )
