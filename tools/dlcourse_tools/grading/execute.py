"""nbgrader preprocessors of the course's autograder: sandboxed, guarded, crash-tolerant execution.

- :class:`RestoreMetadata` (sanitizing step, before nbgrader's ``OverwriteCells``): every cell
  that claims a grade id gets the nbgrader metadata of the released notebook back, and cells
  with grade ids the lab does not have lose theirs, so a submission cannot change points,
  unlock a test, or turn its solution into a test cell.
- :class:`GuardedExecute` replaces nbgrader's ``Execute``: the kernel runs in the
  :mod:`~dlcourse_tools.grading.sandbox`; guard cells (:mod:`~dlcourse_tools.grading.guard`) surround the
  test cells and are removed again afterwards; a test during which the checks were tampered
  with gets an error output (so 0 points); and when the kernel dies (``os._exit``, a crash,
  the CPU or wall-time limit) the notebook is run again in a fresh kernel with the cell that
  killed it replaced by an error, so the rest is still graded.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import shutil
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import nbformat
from nbclient.exceptions import DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from traitlets import Bool, Integer, Unicode

from dlcourse_tools.grading.guard import MARK
from dlcourse_tools.grading.sandbox import Limits, Sandbox, SandboxedKernelManager

GUARD_KEY = "dlcourse_guard"
RUNS: list[dict[str, Any]] = []  # what each execution in this process found; read by the autograder
GUARD = "__import__('dlcourse_tools.grading.guard').grading.guard"


def nbgrader_meta(cell: dict[str, Any]) -> dict[str, Any]:
    return cell.get("metadata", {}).get("nbgrader", {})


class RestoreMetadata(NbGraderPreprocessor):
    """Give each cell the nbgrader metadata of the released notebook (matched by grade id)."""

    release_directory = Unicode("labs", help="where the released notebooks are, relative to the course").tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any]) -> tuple[NotebookNode, dict[str, Any]]:
        info = resources["nbgrader"]
        release = Path(self.release_directory) / info["assignment"] / f"{info['notebook']}.ipynb"
        if not release.is_file():
            self.log.warning("No released notebook %s: cell metadata not restored", release)
            return nb, resources
        released = {nbgrader_meta(c)["grade_id"]: nbgrader_meta(c)
                    for c in nbformat.read(release, as_version=4).cells if nbgrader_meta(c).get("grade_id")}
        for cell in nb.cells:
            meta = cell.get("metadata", {}).get("nbgrader")
            if not isinstance(meta, dict):
                cell.get("metadata", {}).pop("nbgrader", None)
                continue
            gid = meta.get("grade_id")
            if gid in released:
                if dict(meta) != released[gid]:
                    self.log.warning("Cell %s: nbgrader metadata changed by the submission, restored", gid)
                cell.metadata["nbgrader"] = copy.deepcopy(released[gid])
            else:
                self.log.warning("A cell claims unknown grade id %r: its nbgrader metadata is dropped", gid)
                del cell.metadata["nbgrader"]
        return nb, resources


def bound_names(src: str) -> list[str]:
    """The names a cell binds at top level (assignments, imports, defs), for the guard to keep."""
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"]
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.With)):
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            if isinstance(node, ast.With):
                targets = [i.optional_vars for i in node.items if i.optional_vars is not None]
            for target in targets:
                names += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)] if target is not None else []
    return sorted(set(names))


def _guard_cell(kind: str, code: str) -> NotebookNode:
    cell = nbformat.v4.new_code_cell(code)
    cell.metadata[GUARD_KEY] = kind
    del cell["id"]
    return cell


def insert_guards(nb: NotebookNode) -> NotebookNode:
    """A copy of ``nb`` with guard cells: first, after locked instructor cells, around test cells."""
    out = copy.deepcopy(nb)
    cells = [_guard_cell("start", f"{GUARD}.start(get_ipython())")]
    for cell in out.cells:
        meta = nbgrader_meta(cell)
        is_test = cell.cell_type == "code" and meta.get("grade") and not meta.get("solution")
        if is_test:
            cells.append(_guard_cell("before", f"{GUARD}.before_test(get_ipython(), {meta['grade_id']!r})"))
        cells.append(cell)
        if is_test:
            cells.append(_guard_cell("after", f"{GUARD}.after_test(get_ipython(), {meta['grade_id']!r})"))
        elif cell.cell_type == "code" and meta.get("locked") and not meta.get("solution"):
            cells.append(_guard_cell("record", f"{GUARD}.record(get_ipython(), {bound_names(cell.source)!r})"))
    out.cells = cells
    return out


def _error(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def remove_guards(nb: NotebookNode) -> tuple[NotebookNode, list[dict[str, Any]]]:
    """Drop the guard cells; a test changed while it ran gets a ``TamperingError`` output.

    Returns the notebook and the guard's findings (``{"grade_id", "when", "changed"}``).
    """
    findings: list[dict[str, Any]] = []
    kept: list[NotebookNode] = []
    last_test: NotebookNode | None = None
    pending_before: dict[str, Any] | None = None
    for cell in nb.cells:
        kind = cell.metadata.get(GUARD_KEY)
        if kind is None:
            kept.append(cell)
            if nbgrader_meta(cell).get("grade") and cell.cell_type == "code":
                last_test = cell
                if pending_before is not None:  # the guard itself failed: the test cannot be trusted
                    cell.outputs.append(_error("TamperingError", pending_before["changed"][0]))
                    pending_before = None
            continue
        text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")
        for line in text.splitlines():
            if line.startswith(MARK):
                findings.append(json.loads(line[len(MARK):]))
        failed = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if failed:
            why = f"the grader's guard could not run ({failed[0]['ename']}: {failed[0]['evalue']})"
            findings.append({"grade_id": None, "when": kind, "changed": [why]})
            if kind == "before":
                pending_before = {"changed": [why]}
            elif kind == "after" and last_test is not None:
                last_test.outputs.append(_error("TamperingError", why))
    for f in findings:
        if f["when"] == "during" and last_test is not None:
            target = next((c for c in kept if nbgrader_meta(c).get("grade_id") == f["grade_id"]), None)
            if target is not None:
                target.outputs.append(_error(
                    "TamperingError", "the code under test changed the grader's checks while the test ran: "
                    + ", ".join(f["changed"][:5])))
    nb.cells = kept
    return nb, findings


def describe_exit(code: int | None) -> str:
    """A kernel's exit status in words."""
    if code is None:
        return "the kernel died"
    if code in (137, -9):
        return "the kernel was killed (wall-time limit, memory, or SIGKILL)"
    sig = code - 128 if code > 128 else -code if code < 0 else None
    if sig == signal.SIGXCPU:
        return "the kernel was killed at the CPU-time limit"
    if sig:
        try:
            return f"the kernel crashed ({signal.Signals(sig).name})"
        except ValueError:
            return f"the kernel crashed (signal {sig})"
    return f"the kernel exited with status {code} (sys.exit/os._exit?)"


class GuardedExecute(Execute):
    """nbgrader's ``Execute`` with a sandboxed kernel, guard cells and kernel-death recovery."""

    sandboxed = Bool(True, help="run the kernel in the namespaces sandbox (False: nbgrader's plain kernel)").tag(config=True)
    scratch_root = Unicode("", help="where the kernels' scratch folders go (default: the system's temp folder)").tag(config=True)
    max_kernel_deaths = Integer(3, help="kernel deaths before the rest of a notebook is given up").tag(config=True)
    cpu_s = Integer(Limits.cpu_s, help="CPU seconds per kernel").tag(config=True)
    wall_s = Integer(Limits.wall_s, help="wall seconds per kernel").tag(config=True)
    memory_mb = Integer(Limits.memory_mb, help="memory (MiB) per kernel").tag(config=True)

    def create_kernel_manager(self):  # noqa: D102 (nbclient's hook)
        if not self.sandboxed:
            return super().create_kernel_manager()
        limits = Limits(cpu_s=self.cpu_s, wall_s=self.wall_s, memory_mb=self.memory_mb)
        self.km = SandboxedKernelManager(job=str(self._job), sandbox=Sandbox(limits=limits),
                                         kernel_name=self.kernel_name or "python3", config=self.config)
        return self.km

    def preprocess_cell(self, cell, resources, index):  # noqa: D102
        self._running = index
        try:
            return super().preprocess_cell(cell, resources, index)
        except DeadKernelError:
            process = getattr(getattr(self.km, "provisioner", None), "process", None)
            code = None
            if process is not None:
                try:
                    code = process.wait(timeout=10)
                except Exception:  # noqa: BLE001 (best effort: the reason is for the report)
                    code = None
            self._exit_code = code
            raise

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any], km=None):  # noqa: D102
        started = time.monotonic()
        guarded = insert_guards(nb)
        deaths: list[dict[str, Any]] = []
        base = Path(self.scratch_root or os.environ.get("TMPDIR", "/tmp")) / "dlcourse-grading"
        base.mkdir(parents=True, exist_ok=True)
        result = None
        for _ in range(self.max_kernel_deaths + 1):
            work = copy.deepcopy(guarded)
            for death in deaths:
                cell = work.cells[death["index"]]
                cell.source = f"raise RuntimeError({('not run: ' + death['reason'] + ' in this cell').__repr__()})"
            self._job = base / f"{uuid.uuid4().hex}"
            self._exit_code = None
            self._running = None
            self.km = None
            try:
                result, resources = super().preprocess(work, resources, km)
                break
            except DeadKernelError:
                reason = describe_exit(self._exit_code)
                index = self._running if self._running is not None else 0
                deaths.append({"index": index, "reason": reason})
                self.log.warning("Kernel died in cell %s (%s); running the notebook again without it", index, reason)
            finally:
                self.km = None
                shutil.rmtree(self._job, ignore_errors=True)
        if result is None:  # gave up: every cell from the last death on gets an error
            result = copy.deepcopy(guarded)
            last = deaths[-1]
            for i, cell in enumerate(result.cells):
                if cell.cell_type == "code" and i >= last["index"]:
                    cell.outputs = [_error("KernelDied", f"not run: {last['reason']} {len(deaths)} times")]
        for death in deaths:
            original = guarded.cells[death["index"]]
            result.cells[death["index"]].source = original.source
            result.cells[death["index"]].outputs = [_error("KernelDied", f"{death['reason']} while running this cell")]
        result, findings = remove_guards(result)
        nb.cells = result.cells
        nb.metadata = result.metadata
        timeouts = [nbgrader_meta(c).get("grade_id") or f"cell {i}" for i, c in enumerate(nb.cells)
                    if any(o.get("ename") == "CellTimeoutError" for o in c.get("outputs", []))]
        run = dict(notebook=resources.get("nbgrader", {}).get("notebook"), exec_seconds=time.monotonic() - started,
                   kernel_deaths=[d["reason"] for d in deaths], tampering=findings, timeouts=timeouts)
        RUNS.append(run)
        resources.setdefault("dlcourse", {}).update(run)
        return nb, resources
