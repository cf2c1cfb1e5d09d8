"""How fast are the from-scratch pieces next to PyTorch's own? ``python -m dlcourse_tools.bench`` (``make bench``).

Every case times one forward *and* backward pass of ours and of PyTorch's twin, on the same
inputs, in one process, on the device present (CUDA, else MPS, else the CPU; ``--device``
overrides). The two are *interleaved*, repeat after repeat, and each repeat's ratio
ours / torch is recorded; the reported ratio is the median of those. On a shared machine the
load changes from second to second, and a pair of back-to-back runs sees nearly the same
load, so the median of paired ratios is far steadier than a ratio of two separate timings.

Three parts, each printed as a table:

* **ratios** (``CASES``): conv2d on three typical layers, max and average pooling,
  cross-entropy, an LSTM and scaled dot-product attention, each with a target ratio. A case
  whose from-scratch code does not exist yet reports ``not available yet (...)``. Where an
  operation has a tuned kernel behind its readable code (``dlcourse._fast``: conv2d, pooling,
  the LSTM, cross-entropy), both of its paths are timed, interleaved with torch's: the readable code
  (``DLCOURSE_FAST=0``) and the fast kernel (``DLCOURSE_FAST=1``), so the table shows what
  readability costs and what the kernels buy. ``ratio`` is the path the environment selects
  (the fast kernel unless ``DLCOURSE_FAST=0``), as a student's notebook runs it.
* **time to accuracy** (``TASKS``): the book's own training recipes, timed until they
  reach their stated goal (the pooling chapter's CNN to 97% on MNIST; the tiny GPT to its
  chapter's validation loss).
* **notebooks**: every chapter in ``_toc.yml`` and every lab solution, with its run time and
  peak memory against the budgets (a chapter <= 60 s, a lab solution <= 30 s, the whole book
  <= 8 minutes, <= 2 GiB each). ``--notebooks run`` executes them one by one in fresh kernels
  (minutes); the default ``cache`` takes the times of the last ``make book`` for notebooks
  whose code has not changed since (no memory then); ``none`` skips them.

Everything is written to ``_build/bench.json`` (and, with ``--publish``, to
``book/data/bench-results.json``, which the book's Performance page shows), one stable shape::

    {"device": "cpu", "machine": "...", "date": "2025-01-01T12:00:00+00:00", "torch": "2.13.0",
     "threads": 2, "omp_wait_policy": "default", "load_avg": {"start": 1.9, "end": 2.1}, "options": {...},
     "ratios": {"conv2d_64x1x28x28": 1.1, ..., "lstm": 1.6, "attention": null},
     "fast_default": true,
     "paths": {"readable": {"conv2d_64x1x28x28": 2.4, ..., "max_pool2d": 1.3},
               "fast": {"conv2d_64x1x28x28": 1.1, ..., "max_pool2d": null}},
     "path_details": {"conv2d_64x1x28x28": {"readable": {"mine_ms": ..., "ratio": ..., "ratio_q1": ...,
                                                         "ratio_q3": ...}, "fast": {...}}, ...},
     "details": {"conv2d_64x1x28x28": {"shape": ..., "mine_ms": ..., "torch_ms": ..., "ratio": ...,
                                        "target": 1.5, "met": true, "status": "ok", ...}, ...},
     "time_to_accuracy": {"mnist_cnn": 12.3, "tiny_gpt": null},
     "time_to_accuracy_details": {"mnist_cnn": {"seconds": ..., "reached": true, "value": 0.971, ...}},
     "notebooks": {"book/01_what_is_deep_learning.ipynb": {"seconds": 9.1, "peak_mib": 610.0,
                                                           "status": "ok"}, ...},
     "notebooks_summary": {"total_s": ..., "targets": {"chapter_s": {"limit": 60, "met": true, ...}}}}

A number that was not measured is ``null``, with the reason in its ``status``; a case without a
fast kernel has ``null`` as its fast ratio (its readable code is all there is). New measurements
are new entries of ``CASES`` or ``TASKS``, or new top-level keys; the keys above keep
their meaning.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as TF

from dlcourse import _fast
from dlcourse import functional as F
from dlcourse.device import get_device

Step = Callable[[], None]  # one forward + backward pass
PUBLISHED = Path("book") / "data" / "bench-results.json"  # what the book's Performance page shows


@dataclass
class Case:
    """One benchmark: a name, what it runs on, the target ratio, and how to build the two runs."""

    key: str  # the key in ``ratios`` and ``details``
    op: str  # the operation, for the table
    target: float | None  # the ratio ours / torch to stay within (None: no target)
    build: Callable[[torch.device, bool], tuple[str, Step, Step]]  # (device, quick) -> (shape, mine, theirs)
    fast: bool = False  # whether dlcourse has a tuned kernel behind the readable code (timed both ways)


def _fwd_bwd(fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor], upstream: torch.Tensor | None,
             *args) -> Step:
    """A step running ``fn(*inputs, *args)`` and its backward pass; gradients reset each time.

    The upstream gradient gets the output's memory layout, as it would inside a network (where
    it comes from the next layer, which sees this output), so neither side pays for a layout
    change the other does not.
    """
    leaves = [t for t in inputs if t.requires_grad]
    if upstream is not None:
        with torch.no_grad():
            upstream = torch.empty_like(fn(*inputs, *args)).copy_(upstream)

    def step() -> None:
        for t in leaves:
            t.grad = None
        out = fn(*inputs, *args)
        if upstream is None:
            out.backward()
        else:
            out.backward(upstream)

    return step


def _conv_case(N: int, C: int, H: int, C_out: int, padding: int) -> Case:
    def build(device: torch.device, quick: bool) -> tuple[str, Step, Step]:
        n, h = (2, min(H, 8)) if quick else (N, H)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, C, h, h, generator=g).to(device).requires_grad_()
        w = (0.1 * torch.randn(C_out, C, 3, 3, generator=g)).to(device).requires_grad_()
        b = torch.randn(C_out, generator=g).to(device).requires_grad_()
        h_out = F.conv_output_size(h, 3, 1, padding)
        up = torch.randn(n, C_out, h_out, h_out, generator=g).to(device)
        shape = f"({n}, {C}, {h}, {h}) -> {C_out} ch, 3x3, pad {padding}"
        return (shape, _fwd_bwd(F.conv2d, [x, w, b], up, 1, padding),
                _fwd_bwd(TF.conv2d, [x, w, b], up, 1, padding))

    # 3x3 layers with 16 to 32 input channels: the fast kernel's target is 1.7x (issue 18)
    return Case(f"conv2d_{N}x{C}x{H}x{H}", "conv2d", 1.7 if 16 <= C <= 32 else 1.5, build, fast=True)


def _pool_case(name: str) -> Case:
    mine, theirs = {"max_pool2d": (F.max_pool2d, TF.max_pool2d), "avg_pool2d": (F.avg_pool2d, TF.avg_pool2d)}[name]

    def build(device: torch.device, quick: bool) -> tuple[str, Step, Step]:
        n, c, h = (2, 3, 8) if quick else (64, 32, 28)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, c, h, h, generator=g).to(device).requires_grad_()
        up = torch.randn(n, c, h // 2, h // 2, generator=g).to(device)
        shape = f"({n}, {c}, {h}, {h}), 2x2, stride 2"
        return shape, _fwd_bwd(mine, [x], up, 2, 2), _fwd_bwd(theirs, [x], up, 2, 2)

    return Case(name, name, 2.0, build, fast=True)


def _cross_entropy_case() -> Case:
    def build(device: torch.device, quick: bool) -> tuple[str, Step, Step]:
        n, c = (16, 10) if quick else (4096, 100)
        g = torch.Generator().manual_seed(0)
        logits = torch.randn(n, c, generator=g).to(device).requires_grad_()
        target = torch.randint(0, c, (n,), generator=g).to(device)
        shape = f"({n}, {c}) logits"
        return shape, _fwd_bwd(F.cross_entropy, [logits, target], None), _fwd_bwd(TF.cross_entropy, [logits, target], None)

    return Case("cross_entropy", "cross_entropy", 1.5, build, fast=True)


def _module_fwd_bwd(module: torch.nn.Module, x: torch.Tensor, upstream: torch.Tensor) -> Step:
    """A step running ``module(x)`` (its first output, for modules returning a tuple) and its backward pass."""
    leaves = [x, *module.parameters()]

    def step() -> None:
        for t in leaves:
            t.grad = None
        out = module(x)
        out = out[0] if isinstance(out, tuple) else out
        out.backward(upstream)

    return step


def _lstm_case() -> Case:
    def build(device: torch.device, quick: bool) -> tuple[str, Step, Step]:
        from dlcourse.nn import LSTM  # ImportError until dlcourse/rnn.py exists

        T, B, I, H = (5, 2, 32, 128) if quick else (50, 64, 32, 128)
        g = torch.Generator().manual_seed(0)
        theirs = torch.nn.LSTM(I, H).to(device)
        mine = LSTM(I, H).to(device)
        mine.load_state_dict(theirs.state_dict())  # the same weights: the same work on both sides
        x = torch.randn(T, B, I, generator=g).to(device).requires_grad_()
        up = torch.randn(T, B, H, generator=g).to(device)
        shape = f"({T}, {B}, {I}) seq-first -> hidden {H}"
        return shape, _module_fwd_bwd(mine, x, up), _module_fwd_bwd(theirs, x, up)

    return Case("lstm", "LSTM", 2.0, build, fast=True)


def _attention_case() -> Case:
    def build(device: torch.device, quick: bool) -> tuple[str, Step, Step]:
        mine = F.scaled_dot_product_attention  # AttributeError until dlcourse/attention.py exists

        B, h, T, d = (2, 2, 8, 16) if quick else (32, 4, 128, 64)
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(B, h, T, d, generator=g).to(device).requires_grad_() for _ in range(3))
        up = torch.randn(B, h, T, d, generator=g).to(device)
        shape = f"q, k, v ({B}, {h}, {T}, {d})"
        return (shape, _fwd_bwd(mine, [q, k, v], up),
                _fwd_bwd(TF.scaled_dot_product_attention, [q, k, v], up))

    return Case("attention", "scaled_dot_product_attention", 1.3, build)


CASES: list[Case] = [
    _conv_case(64, 1, 28, 16, padding=1),  # a first layer on MNIST
    _conv_case(64, 16, 14, 32, padding=0),  # a second layer
    _conv_case(32, 64, 16, 64, padding=1),  # a many-channel layer
    _pool_case("max_pool2d"),
    _pool_case("avg_pool2d"),
    _cross_entropy_case(),
    _lstm_case(),
    _attention_case(),
]


# ---------------------------------------------------------------------------------------------
# Time to accuracy: how long the book's own training recipes take to reach their stated goal
# ---------------------------------------------------------------------------------------------

@dataclass
class Task:
    """One time-to-accuracy task: a name, the goal in words, and the routine that trains to it."""

    key: str  # the key in ``time_to_accuracy``
    goal: str  # e.g. "test accuracy >= 97%"
    run: Callable[[torch.device, bool], dict]  # (device, quick) -> seconds, reached, value, ... (see _task_result)


def _task_result(seconds: float | None, reached: bool, value: float | None, metric: str, target: float,
                 budget: str, **extra) -> dict:
    """The details of a time-to-accuracy task; ``seconds`` is ``None`` where the goal was not reached."""
    return {"seconds": seconds if reached else None, "reached": reached, "metric": metric, "value": value,
            "target": target, "budget": budget, **extra}


MNIST_TARGET = 0.97  # test accuracy the pooling chapter's CNN must reach
MNIST_EPOCHS = 10  # the chapter's cosine schedule runs over 10 epochs; the run stops early at the target


def _mnist_cnn_time_to_accuracy(device: torch.device, quick: bool) -> dict:
    """The pooling chapter's CNN trained as the chapter trains it, until the test accuracy reaches 97%.

    Adam (learning rate 2e-3) with a cosine decay over 10 epochs, batches of 64, seed 0, on the
    4,000/1,000 split of ``load_mnist``; the test set is scored after every epoch and the clock
    (data loading excluded, evaluation included) stops at the first epoch at or above the target.
    ``quick``: 256 training and 128 test digits, one epoch (checks that it runs, reaches nothing).
    """
    import dlcourse
    from dlcourse import data, train
    from dlcourse.models import mnist_cnn

    train_set, test_set = data.load_mnist()
    epochs = MNIST_EPOCHS
    if quick:
        train_set = torch.utils.data.Subset(train_set, range(256))
        test_set = torch.utils.data.Subset(test_set, range(128))
        epochs = 1
    dlcourse.seed_everything(0)
    train_loader, test_loader = data.make_dataloaders(train_set, test_set, batch_size=64, device=device, seed=0)
    model = mnist_cnn(torch.nn).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=MNIST_EPOCHS)
    curve = []
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(epochs):
        train.fit(model, train_loader, TF.cross_entropy, optimizer, 1, scheduler=scheduler, progress=False)
        curve.append(train.evaluate(model, test_loader, metrics={"accuracy": train.accuracy})["accuracy"])
        if curve[-1] >= MNIST_TARGET:
            break
    _synchronize(device)
    seconds = time.perf_counter() - start
    return _task_result(seconds, curve[-1] >= MNIST_TARGET, curve[-1], "test accuracy", MNIST_TARGET,
                        f"{epochs} epochs", epochs=len(curve), curve=curve, run_seconds=seconds)


def _tiny_gpt_time_to_loss(device: torch.device, quick: bool) -> dict:
    """The transformer chapter's tiny GPT trained with the chapter's recipe to its stated validation loss.

    ``dlcourse.models.lm``'s chapter run (``CHAPTER_CONFIG``, ``CHAPTER_TRAINING``, ``CHAPTER_TARGET_LOSS``):
    the clock is ``train_gpt``'s own (training steps and the evaluations every 50 steps; not
    building the model or loading the corpus), stopped at the first evaluation at or below the
    target. ``quick``: 4 steps of 4 windows, one small evaluation.
    """
    import dataclasses

    from dlcourse.models import lm  # ImportError until dlcourse/lm.py exists

    tokenizer, train_ids, val_ids = lm.chapter_data()
    training = lm.CHAPTER_TRAINING
    if quick:
        training = dataclasses.replace(training, steps=4, batch_size=4, eval_every=4, eval_tokens=1024)
    _, history = lm.train_gpt(lm.chapter_config(tokenizer.vocab_size), train_ids, val_ids, training,
                              target_loss=lm.CHAPTER_TARGET_LOSS, device=device)
    reached = history["reached"] is not None
    return _task_result(history["seconds"][-1], reached, history["val_loss"][-1], "validation loss",
                        lm.CHAPTER_TARGET_LOSS, f"{training.steps} steps", steps=history["step"][-1],
                        curve=history["val_loss"], run_seconds=history["seconds"][-1])


TASKS: list[Task] = [
    Task("mnist_cnn", f"MNIST 5k, test accuracy >= {MNIST_TARGET:.0%}", _mnist_cnn_time_to_accuracy),
    Task("tiny_gpt", "tiny GPT (chapter 11), its validation loss target", _tiny_gpt_time_to_loss),
]


def time_to_accuracy(task: Task, device: torch.device, quick: bool = False) -> dict:
    """Run one task; a task whose code is not written yet reports so instead of failing."""
    try:
        result = task.run(device, quick)
    except (ImportError, AttributeError) as error:
        status = f"not available yet ({type(error).__name__}: {str(error).split(' (')[0]})"
        return {**_task_result(None, False, None, "", float("nan"), ""), "target": None, "status": status,
                "goal": task.goal, "quick": quick}
    return {**result, "status": "ok", "goal": task.goal, "quick": quick}


# ---------------------------------------------------------------------------------------------
# The book: every chapter and lab solution executed as a reader would, timed, its memory watched
# ---------------------------------------------------------------------------------------------

CHAPTER_BUDGET_S = 60.0  # every chapter on 2 CPU cores
LAB_BUDGET_S = 30.0  # every lab solution
BOOK_BUDGET_S = 8 * 60.0  # all of them together
MEMORY_BUDGET_MIB = 2048.0  # peak resident memory of one notebook's kernel (and its children)


def book_notebooks(root: Path = Path(".")) -> list[Path]:
    """The notebooks the book runs: every ``.ipynb`` chapter in ``_toc.yml`` outside ``labs/``
    (the student labs cannot run unsolved), then every lab solution in ``solutions/``."""
    import yaml

    def files(node: object) -> list[str]:
        if isinstance(node, dict):
            own = [node["file"]] if "file" in node else []
            return own + [f for key in ("parts", "chapters", "sections") for f in files(node.get(key, []))]
        if isinstance(node, list):
            return [f for item in node for f in files(item)]
        return []

    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    entries = [toc["root"], *files(toc)]
    chapters = [Path(f"{e}.ipynb") for e in entries if not e.startswith("labs/")]
    chapters = [c for c in dict.fromkeys(chapters) if (root / c).exists()]
    return chapters + sorted(Path(p).relative_to(root) for p in root.glob("solutions/*/*.ipynb"))


_EXECUTE = """
import json, re, resource, sys, time
import nbformat
from nbclient import NotebookClient
path, timeout = sys.argv[1], float(sys.argv[2])
nb = nbformat.read(path, as_version=4)
start = time.perf_counter()
error = None
try:
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": sys.argv[3]}}).execute()
except Exception as e:  # a failing cell: report it, with the time and memory so far
    last = re.sub(r"\\x1b\\[[0-9;]*m", "", str(e)).strip().splitlines()  # without terminal colours
    error = f"{type(e).__name__}: {last[-1] if last else ''}"
seconds = time.perf_counter() - start
kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the kernel's peak, once it has exited (Linux: KiB)
print(json.dumps({"seconds": seconds, "kernel_maxrss_mib": kib / 1024, "error": error}))
"""


def run_notebook(path: Path, timeout_s: float = 600.0, poll_s: float = 0.1) -> dict:
    """Execute one notebook top to bottom in a fresh kernel; its wall time and peak memory.

    A separate Python process runs ``nbclient`` (which starts the kernel), so nothing is shared
    between notebooks. The peak memory (MiB) is the larger of the kernel's own peak resident set
    (``getrusage``, exact) and the largest sum over the kernel and its child processes seen by
    polling every ``poll_s`` seconds (catches DataLoader workers and the like).
    """
    import psutil

    path = Path(path)
    proc = subprocess.Popen([sys.executable, "-c", _EXECUTE, str(path), str(timeout_s), str(path.parent.resolve())],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MPLBACKEND": "Agg", "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
    watcher = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, sum(c.memory_info().rss for c in watcher.children(recursive=True)))
        except psutil.Error:  # a process ended between listing and reading it
            pass
        time.sleep(poll_s)
    stdout, stderr = proc.communicate()
    try:
        report = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"seconds": None, "peak_mib": None, "status": f"failed: {stderr.strip()[-300:]}"}
    return {"seconds": report["seconds"], "peak_mib": max(peak / 2**20, report["kernel_maxrss_mib"]),
            "status": "ok" if report["error"] is None else f"failed: {report['error']}"}


def notebooks_from_cache(paths: list[Path], build: Path = Path("_build")) -> dict[str, dict]:
    """Execution times recorded by the last ``make book`` (jupyter-cache) for the notebooks whose
    current code it executed; no memory, and lab solutions (not in the site) are absent."""
    import nbformat
    from jupyter_cache import get_cache

    if not (build / ".jupyter_cache").exists():
        return {}
    cache = get_cache(build / ".jupyter_cache")
    found = {}
    for path in paths:
        try:
            record = cache.match_cache_notebook(nbformat.read(path, as_version=4))  # this very code, else KeyError
        except (KeyError, ValueError, OSError):
            continue
        seconds = (record.data or {}).get("execution_seconds")
        if seconds is not None:
            found[path.as_posix()] = {"seconds": seconds, "peak_mib": None, "status": "ok (from the book's cache)"}
    return found


def notebook_summary(notebooks: dict[str, dict], expected: int | None = None) -> dict:
    """The budgets, and which notebooks keep them: a chapter <= 60 s, a lab <= 30 s, all <= 8 min, <= 2 GiB each.

    The whole-book budget is met only when all ``expected`` notebooks (default: as many as
    given) were timed within it; it is not met as soon as those timed exceed it.
    """
    def over(key: str, limit: float, which=lambda p: True) -> list[str] | None:
        values = {p: d[key] for p, d in notebooks.items() if which(p)}
        if not values or any(v is None for v in values.values()):
            return None  # not measured
        return [p for p, v in values.items() if v > limit]

    def lab(p: str) -> bool:
        return p.startswith("solutions/")

    total = sum(d["seconds"] for d in notebooks.values() if d["seconds"] is not None)
    checks = {
        "chapter_s": (CHAPTER_BUDGET_S, over("seconds", CHAPTER_BUDGET_S, lambda p: not lab(p))),
        "lab_s": (LAB_BUDGET_S, over("seconds", LAB_BUDGET_S, lab)),
        "peak_mib": (MEMORY_BUDGET_MIB, over("peak_mib", MEMORY_BUDGET_MIB)),
    }
    failed = [p for p, d in notebooks.items() if not d["status"].startswith("ok")]
    summary = {"count": len(notebooks), "total_s": total, "failed": failed,
               "targets": {name: {"limit": limit, "over": bad, "met": None if bad is None else not bad}
                           for name, (limit, bad) in checks.items()}}
    complete = (bool(notebooks) and len(notebooks) == (len(notebooks) if expected is None else expected)
                and all(d["seconds"] is not None for d in notebooks.values()))
    summary["targets"]["book_s"] = {"limit": BOOK_BUDGET_S, "over": None,
                                    "met": False if total > BOOK_BUDGET_S else (True if complete else None)}
    return summary


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timing covers the computation and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _time(step: Step, device: torch.device) -> float:
    _synchronize(device)
    start = time.perf_counter()
    step()
    _synchronize(device)
    return time.perf_counter() - start


def measure(case: Case, device: torch.device, quick: bool = False, repeats: int = 50,
            budget_s: float = 15.0) -> dict:
    """Time ``case`` on ``device`` (the path the environment selects); see :func:`measure_paths`."""
    return measure_paths(case, device, quick, repeats, budget_s)[0]


def _path_stats(mine_s: list[float], torch_s: list[float]) -> dict:
    """Median time and the median and quartiles of the paired ratios ``mine / torch``."""
    ratios = [m / t for m, t in zip(mine_s, torch_s)]
    ratio = statistics.median(ratios)
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratio, ratio, ratio]
    return {"mine_ms": 1e3 * statistics.median(mine_s), "ratio": ratio,
            "ratio_q1": quartiles[0], "ratio_q3": quartiles[2]}  # the middle half of the ratios lies in [q1, q3]


def measure_paths(case: Case, device: torch.device, quick: bool = False, repeats: int = 50,
                  budget_s: float = 15.0) -> tuple[dict, dict]:
    """Time ``case`` on ``device``: interleaved runs, median of the paired ratios; ``(details, paths)``.

    Runs ``repeats`` rounds after two warm-up runs of each side; a round times torch's twin and
    ours back to back, or, for a case with a fast kernel, torch's, our readable code
    (``DLCOURSE_FAST=0``) and our fast kernel (``DLCOURSE_FAST=1``), each round in another
    order. Stops early (after at least 3 rounds) once ``budget_s`` seconds have passed.
    ``details`` describe the path the environment selects; ``paths`` has the statistics of
    each path, ``{"readable": {...}, "fast": {...} or None}``.
    """
    try:
        shape, mine, theirs = case.build(device, quick)
    except (ImportError, AttributeError) as error:  # a from-scratch piece that is not written yet
        status = f"not available yet ({type(error).__name__}: {str(error).split(' (')[0]})"
        return _not_measured(case, quick, status), {"readable": None, "fast": None}
    # (name, the DLCOURSE_FAST setting to run it under or None for the environment's, step)
    sides = [("torch", None, theirs)]
    sides += [("readable", False, mine), ("fast", True, mine)] if case.fast else [("readable", None, mine)]
    default = "fast" if case.fast and _fast.enabled() else "readable"
    times: dict[str, list[float]] = {name: [] for name, _, _ in sides}

    def timed(setting: bool | None, step: Step) -> float:
        if setting is None:
            return _time(step, device)
        with _fast.switched(setting):  # set outside the timed call
            return _time(step, device)

    for _ in range(2):  # warm-up: allocator, caches, lazy initialisation
        for _, setting, step in sides:
            timed(setting, step)
    started = time.perf_counter()
    for r in range(repeats):
        for k in range(len(sides)):  # each round starts with another side
            name, setting, step = sides[(r + k) % len(sides)]
            times[name].append(timed(setting, step))
        if r + 1 >= 3 and time.perf_counter() - started > budget_s:
            break
    paths = {name: _path_stats(times[name], times["torch"]) if name in times else None
             for name in ("readable", "fast")}
    chosen = paths[default]
    details = {
        "op": case.op,
        "shape": shape,
        "mine_ms": chosen["mine_ms"],
        "torch_ms": 1e3 * statistics.median(times["torch"]),
        "ratio": chosen["ratio"],
        "ratio_q1": chosen["ratio_q1"],
        "ratio_q3": chosen["ratio_q3"],
        "repeats": len(times["torch"]),
        "target": case.target,
        "met": None if case.target is None else bool(chosen["ratio"] <= case.target),
        "quick": quick,
        "load_avg": _load_average(),
        "status": "ok",
    }
    return details, paths


def _not_measured(case: Case, quick: bool, status: str) -> dict:
    """The details of a case that could not run: the same fields, ``None`` for every number."""
    return {"op": case.op, "shape": None, "mine_ms": None, "torch_ms": None, "ratio": None, "ratio_q1": None,
            "ratio_q3": None, "repeats": 0, "target": case.target, "met": None, "quick": quick,
            "load_avg": _load_average(), "status": status}


def _load_average() -> float | None:
    """The 1-minute load average where the system reports one (how busy the CPUs were)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _machine() -> str:
    """The processor and core count, in words, e.g. ``"x86_64, Intel(R) Xeon(R) ..., 2 cores"``."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {name}, {os.cpu_count()} logical cores"


def run(device: torch.device, quick: bool = False, repeats: int = 50, only: list[str] | None = None,
        budget_s: float = 15.0, notebooks: str = "none", notebook_patterns: list[str] | None = None,
        notebook_timeout_s: float = 600.0) -> dict:
    """Measure every ratio case and time-to-accuracy task (or those named in ``only``) and the
    notebooks (``notebooks``: ``"run"`` executes them, ``"cache"`` reads the book build's times,
    ``"none"`` skips them; ``notebook_patterns`` restricts them by glob); the JSON-ready results."""
    cases = [c for c in CASES if only is None or c.key in only or c.op in only]
    tasks = [t for t in TASKS if only is None or t.key in only]
    if only is not None and not cases and not tasks:
        raise ValueError(f"bench: no case named {only}; the cases are {[c.key for c in CASES]} "
                         f"and the tasks {[t.key for t in TASKS]}")
    if notebooks not in ("run", "cache", "none"):
        raise ValueError(f"bench: notebooks must be 'run', 'cache' or 'none', got {notebooks!r}")
    load_start = _load_average()
    clock = [time.perf_counter()]

    def lap() -> float:  # seconds since the last lap
        clock.append(time.perf_counter())
        return clock[-1] - clock[-2]

    measured = {c.key: measure_paths(c, device, quick, repeats, budget_s) for c in cases}
    details = {key: d for key, (d, _) in measured.items()}
    path_details = {key: p for key, (_, p) in measured.items()}
    elapsed = {"ratios": lap()}
    tta = {t.key: time_to_accuracy(t, device, quick) for t in tasks}
    elapsed["time_to_accuracy"] = lap()
    paths = []
    if notebooks != "none":
        paths = [p for p in book_notebooks()
                 if not notebook_patterns or any(fnmatch.fnmatch(p.as_posix(), pat) for pat in notebook_patterns)]
    nbs = {}
    if notebooks == "run":
        nbs = {p.as_posix(): run_notebook(p, notebook_timeout_s) for p in paths}
    elif notebooks == "cache":
        nbs = notebooks_from_cache(paths)
    elapsed["notebooks"] = lap()
    # The whole-book budget is judged only on all of the book's notebooks, not on a selection.
    expected = len(book_notebooks()) if notebook_patterns else len(paths)
    return {
        "device": str(device),
        "machine": _machine(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY") or "default",  # PASSIVE slows threaded kernels down
        "load_avg": {"start": load_start, "end": _load_average()},
        "options": {"quick": quick, "repeats": repeats, "only": only, "notebooks": notebooks,
                    "notebook_patterns": notebook_patterns},
        "ratios": {key: d["ratio"] for key, d in details.items()},
        "details": details,
        "fast_default": _fast.enabled(),  # whether `ratios` are the fast kernels' (DLCOURSE_FAST unset or 1)
        "paths": {path: {key: None if p[path] is None else p[path]["ratio"] for key, p in path_details.items()}
                  for path in ("readable", "fast")},
        "path_details": path_details,
        "time_to_accuracy": {key: d["seconds"] for key, d in tta.items()},
        "time_to_accuracy_details": tta,
        "notebooks": nbs,
        "notebooks_summary": notebook_summary(nbs, expected=expected),
        "elapsed_s": elapsed,
    }


def _aligned(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def table(results: dict) -> str:
    """The results as a plain-text table: op, shape, ours, torch's, ratio, target, met?, and the
    ratios of the readable code and of the fast kernel ("-": no fast kernel)."""
    header = ("op", "shape", "mine ms", "torch ms", "ratio", "target", "met?", "readable", "fast")
    paths = results.get("path_details", {})
    rows = []
    for key, d in results["details"].items():
        target = "-" if d["target"] is None else f"<= {d['target']:g}x"
        if d["ratio"] is None:  # not measured: say why in place of the numbers
            rows.append((key, d["status"], "-", "-", "-", target, "-", "-", "-"))
            continue
        met = "-" if d["met"] is None else ("yes" if d["met"] else "NO")
        if d.get("quick"):  # tiny sizes: a ratio that says nothing about the target
            met = "(quick)"
        each = [paths.get(key, {}).get(path) for path in ("readable", "fast")]
        rows.append((key, d["shape"], f"{d['mine_ms']:.2f}", f"{d['torch_ms']:.2f}", f"{d['ratio']:.2f}x",
                     target, met, *("-" if p is None else f"{p['ratio']:.2f}x" for p in each)))
    return _aligned(header, rows)


def tta_table(results: dict) -> str:
    """Time to accuracy as a plain-text table: task, goal, seconds, reached, epochs or steps."""
    rows = []
    for key, d in results["time_to_accuracy_details"].items():
        if d["status"] != "ok":
            rows.append((key, d["goal"], "-", d["status"]))
            continue
        seconds = "-" if d["seconds"] is None else f"{d['seconds']:.1f}"
        span = f"{d['epochs']} epochs" if "epochs" in d else f"{d.get('steps')} steps"
        got = f"{d['metric']} {d['value']:.4g} (target {d['target']:g}) after {span}"
        rows.append((key, d["goal"], seconds, ("reached: " if d["reached"] else f"NOT reached in {d['budget']}: ") + got))
    return _aligned(("task", "goal", "seconds", "result"), rows)


def notebook_table(results: dict) -> str:
    """Notebook times and peak memory as a plain-text table, then the budgets kept or not."""
    rows = []
    for path, d in results["notebooks"].items():
        limit = LAB_BUDGET_S if path.startswith("solutions/") else CHAPTER_BUDGET_S
        seconds = "-" if d["seconds"] is None else f"{d['seconds']:.1f}"
        peak = "-" if d["peak_mib"] is None else f"{d['peak_mib']:.0f}"
        ok = d["seconds"] is not None and d["seconds"] <= limit and (d["peak_mib"] or 0) <= MEMORY_BUDGET_MIB
        rows.append((path, seconds, f"<= {limit:g}", peak, "yes" if ok and d["status"].startswith("ok") else "NO",
                     d["status"]))
    summary = results["notebooks_summary"]
    lines = [_aligned(("notebook", "seconds", "budget", "peak MiB", "met?", "status"), rows)]
    words = {True: "met", False: "NOT met", None: "not measured"}
    t = summary["targets"]
    lines.append(f"total {summary['total_s']:.1f} s for {summary['count']} notebooks; "
                 f"whole book <= {BOOK_BUDGET_S / 60:g} min: {words[t['book_s']['met']]}; "
                 f"every chapter <= {CHAPTER_BUDGET_S:g} s: {words[t['chapter_s']['met']]}; "
                 f"every lab solution <= {LAB_BUDGET_S:g} s: {words[t['lab_s']['met']]}; "
                 f"<= {MEMORY_BUDGET_MIB / 1024:g} GiB each: {words[t['peak_mib']['met']]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlcourse_tools.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 repeats: checks that it runs")
    parser.add_argument("--output", type=Path, default=Path("_build") / "bench.json",
                        help="where to write the JSON results (default: _build/bench.json)")
    parser.add_argument("--publish", nargs="?", type=Path, const=PUBLISHED, default=None, metavar="PATH",
                        help=f"also write the results where the book's Performance page reads them ({PUBLISHED})")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    parser.add_argument("--repeats", type=int, default=None, help="pairs of runs per case (default 50; 2 with --quick)")
    parser.add_argument("--only", nargs="+", default=None, metavar="CASE",
                        help="run only these ratio cases (keys or ops) and time-to-accuracy tasks (keys)")
    parser.add_argument("--notebooks", choices=["run", "cache", "none"], default=None,
                        help="run: execute every chapter and lab solution (time and peak memory; minutes); "
                             "cache: the times of the last `make book`; none: skip (default: cache, "
                             "none with --quick or --only)")
    parser.add_argument("--notebook", action="append", default=None, metavar="GLOB", dest="notebook_patterns",
                        help="only the notebooks whose path matches this glob (repeatable), e.g. 'book/0[12]*'")
    args = parser.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 50)
    if repeats < 1:
        parser.error(f"--repeats must be at least 1, got {repeats}")
    notebooks = args.notebooks or ("none" if args.quick or args.only else "cache")
    device = get_device(args.device)
    results = run(device, quick=args.quick, repeats=repeats, only=args.only, notebooks=notebooks,
                  notebook_patterns=args.notebook_patterns)
    load = results["load_avg"]
    print(f"dlcourse_tools.bench on {results['device']} ({results['machine']}) with {results['threads']} threads "
          f"(OMP_WAIT_POLICY={results['omp_wait_policy']}), torch {results['torch']}, "
          f"load average {_fmt(load['start'])} at the start, {_fmt(load['end'])} at the end"
          f"{'; quick: tiny sizes, not a measurement' if args.quick else ''}")
    if results["details"]:
        print("\nforward + backward; ratio = median over repeats of (mine / torch) for back-to-back runs; "
              f"mine = {'the fast kernels' if results['fast_default'] else 'the readable code'} "
              "(DLCOURSE_FAST); readable and fast: each path's ratio")
        print(table(results))
        if args.quick:
            print("quick: tiny sizes, so these ratios are not comparable with the targets (met? is not judged); "
                  "run `make bench` without --quick to measure them")
    if results["time_to_accuracy_details"]:
        print("\ntime to accuracy (seconds of training and evaluation, data loading excluded)")
        print(tta_table(results))
    if notebooks != "none":
        how = "executed one by one in a fresh kernel" if notebooks == "run" else "from the last `make book`'s cache"
        print(f"\nnotebooks, {how}")
        print(notebook_table(results))
    text = json.dumps(results, indent=2, allow_nan=False) + "\n"
    for path in [args.output] + ([args.publish] if args.publish else []):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"written to {path}")
    return 0


def _fmt(load: float | None) -> str:
    return "?" if load is None else f"{load:.2f}"


if __name__ == "__main__":
    sys.exit(main())
