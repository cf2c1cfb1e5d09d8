"""Parallel autograding: nbgrader's ``autograde`` for many students at once, with a consistent gradebook.

nbgrader grades one submission after another (nbgrader issue #174). Here a pool of ``W`` worker
processes each run nbgrader's own ``Autograde`` converter (through ``NbGraderAPI.autograde``)
for one student at a time, with the course's preprocessors swapped for
:mod:`dlcourse_tools.grading.execute`'s. Notebook execution, the slow part, runs in parallel; every
gradebook session of every worker holds one inter-process lock (a file next to an SQLite
gradebook), so writes never interleave: no "database is locked", no lost or duplicated
grades. With a PostgreSQL gradebook the server orders concurrent sessions itself, so course
teams may also grade from several machines at once (each machine its own set of students).

A progress bar shows done/total, the rate and the ETA. Each grading also writes a line per
submission to ``grading/<lab>.json`` (time, kernel deaths, timeouts, tampering), which the
grade report reads.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

COURSE_ID = "dlcourse"


@dataclass
class Options:
    """Settings of an autograding run (all but ``workers`` go to nbgrader's config).

    Attributes:
        workers: worker processes (each runs one kernel at a time).
        timeout: per-cell timeout in seconds (a cell over it is interrupted, the rest still runs).
        cpu_s, wall_s, memory_mb: per-kernel limits (see :class:`dlcourse_tools.grading.sandbox.Limits`).
        sandboxed: run kernels in the sandbox (turn off only where namespaces are unavailable).
        db_url: the gradebook (default: ``sqlite:///<course>/gradebook.db``).
        scratch: where kernels' scratch folders go (default: the system's temp folder).
    """

    workers: int = 1
    timeout: int = 120
    cpu_s: int = 600
    wall_s: int = 900
    memory_mb: int = 4096
    sandboxed: bool = True
    db_url: str | None = None
    scratch: str | None = None
    extra_config: dict[str, Any] = field(default_factory=dict)


def db_url_of(course: Path, options: Options) -> str:
    return options.db_url or f"sqlite:///{Path(course).resolve() / 'gradebook.db'}"


def nbgrader_config(course: Path, options: Options):
    """The course's ``nbgrader_config.py`` with the autograder's preprocessors and limits on top."""
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, ClearOutput, DeduplicateIds,
                                        IgnorePattern, LimitOutput, OverwriteCells, OverwriteKernelspec,
                                        SaveAutoGrades)
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    from dlcourse_tools.grading.execute import GuardedExecute, RestoreMetadata

    config = Config()
    if (Path(course) / "nbgrader_config.py").is_file():
        config.merge(PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config())
    c = Config()
    c.CourseDirectory.root = str(Path(course).resolve())
    c.CourseDirectory.course_id = config.get("CourseDirectory", {}).get("course_id", COURSE_ID)
    c.CourseDirectory.db_url = db_url_of(course, options)
    c.Autograde.sanitize_preprocessors = [RestoreMetadata, ClearOutput, DeduplicateIds, OverwriteKernelspec,
                                          OverwriteCells, CheckCellMetadata]
    c.Autograde.autograde_preprocessors = [GuardedExecute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
                                           SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
    c.OverwriteCells.add_missing_cells = True  # a deleted test cell is put back and graded
    c.RestoreMetadata.release_directory = str(Path(course).resolve() / config.get("CourseDirectory", {}).get(
        "release_directory", "release"))
    for cls in ("Execute", "ExecutePreprocessor", "GuardedExecute"):
        c[cls].timeout = options.timeout
    c.GuardedExecute.sandboxed = options.sandboxed
    c.GuardedExecute.cpu_s = options.cpu_s
    c.GuardedExecute.wall_s = options.wall_s
    c.GuardedExecute.memory_mb = options.memory_mb
    c.GuardedExecute.scratch_root = options.scratch or ""
    config.merge(c)
    for key, value in options.extra_config.items():  # "Class.trait": value
        cls, trait = key.split(".", 1)
        config[cls][trait] = value
    return config


# ---------------------------------------------------------------------------------------------
# The gradebook lock
# ---------------------------------------------------------------------------------------------

_lock_depth = 0


def install_gradebook_lock(lock_path: Path) -> None:
    """Make every ``nbgrader.api.Gradebook`` session of this process hold ``lock_path`` (flock).

    Re-entrant within the process (nbgrader sometimes nests sessions); other processes wait.
    """
    import fcntl

    from nbgrader.api import Gradebook

    if getattr(Gradebook, "_dlcourse_locked", False):
        Gradebook._dlcourse_lock_path = str(lock_path)
        return
    original_init, original_close = Gradebook.__init__, Gradebook.close
    handle: dict[str, Any] = {}

    def acquire() -> None:
        global _lock_depth
        if _lock_depth == 0:
            handle["f"] = open(Gradebook._dlcourse_lock_path, "a+")
            fcntl.flock(handle["f"], fcntl.LOCK_EX)
        _lock_depth += 1

    def release() -> None:
        global _lock_depth
        _lock_depth -= 1
        if _lock_depth == 0:
            fcntl.flock(handle["f"], fcntl.LOCK_UN)
            handle.pop("f").close()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        acquire()
        try:
            original_init(self, *args, **kwargs)
        except BaseException:
            release()
            raise
        self._dlcourse_held = True

    def close(self) -> None:
        try:
            original_close(self)
        finally:
            if getattr(self, "_dlcourse_held", False):
                self._dlcourse_held = False
                release()

    Gradebook.__init__, Gradebook.close = __init__, close
    Gradebook._dlcourse_locked = True
    Gradebook._dlcourse_lock_path = str(lock_path)


def gradebook(course: Path, options: Options | None = None):
    """An open ``nbgrader.api.Gradebook`` of the course (use it in a ``with`` block)."""
    from nbgrader.api import Gradebook

    options = options or Options()
    install_gradebook_lock(Path(course).resolve() / ".gradebook.lock")
    return Gradebook(db_url_of(course, options), course_id=COURSE_ID)


# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------

_worker: dict[str, Any] = {}


def _init_worker(course: str, options: dict[str, Any]) -> None:
    import warnings

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    warnings.filterwarnings("ignore", module="nbgrader")  # nbgrader 0.9's SQLAlchemy 2 session warnings
    opts = Options(**options)
    install_gradebook_lock(Path(course) / ".gradebook.lock")
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    config = nbgrader_config(Path(course), opts)
    coursedir = CourseDirectory(config=config)
    _worker["api"] = NbGraderAPI(coursedir=coursedir, config=config)
    _worker["course"] = Path(course)


def grade_one(lab: str, student: str) -> dict[str, Any]:
    """Autograde one student's submission of ``lab`` in this worker; returns what happened."""
    from dlcourse_tools.grading import execute

    execute.RUNS.clear()
    started = time.monotonic()
    cwd = os.getcwd()
    try:
        os.chdir(_worker["course"])  # nbgrader resolves the release folder and files from the course root
        result = _worker["api"].autograde(lab, student, force=True, create=True)
    finally:
        os.chdir(cwd)
    log = result.get("log", "") or ""
    runs = list(execute.RUNS)
    return {
        "student": student, "lab": lab, "success": bool(result.get("success")),
        "error": (result.get("error") or "")[-2000:], "log": log[-4000:],
        "seconds": time.monotonic() - started,
        "exec_seconds": sum(r.get("exec_seconds", 0.0) for r in runs),
        "kernel_deaths": [d for r in runs for d in r.get("kernel_deaths", [])],
        "timeouts": [t for r in runs for t in r.get("timeouts", [])],
        "tampering": [t for r in runs for t in r.get("tampering", [])],
        "notebooks": [r.get("notebook") for r in runs],
    }


def _init_and_grade(course: str, options: dict[str, Any], lab: str, student: str) -> dict[str, Any]:
    _init_worker(course, options)
    return grade_one(lab, student)


def submitted_students(course: Path, lab: str) -> list[str]:
    """The students with a submission folder for ``lab`` under ``submitted/``."""
    root = Path(course) / "submitted"
    return sorted(p.parent.name for p in root.glob(f"*/{lab}") if p.is_dir()) if root.is_dir() else []


def autograde(course: Path, lab: str, students: list[str] | None = None, options: Options | None = None,
              progress: bool = True) -> list[dict[str, Any]]:
    """Autograde ``students`` (default: every submission of ``lab``) with ``options.workers`` processes.

    Args:
        course: the course folder (``nbgrader_config.py``, ``submitted/``, the gradebook).
        lab: the assignment, e.g. ``"lab01_perceptron"``.
        students: student ids (default: all under ``submitted/*/lab``).
        options: workers, limits and the gradebook URL.
        progress: show a progress bar with the ETA on stderr.

    Returns:
        One record per student (see :func:`grade_one`), also merged into ``grading/<lab>.json``.
    """
    from tqdm.auto import tqdm

    course = Path(course).resolve()
    options = options or Options()
    students = sorted(students) if students is not None else submitted_students(course, lab)
    results: list[dict[str, Any]] = []
    if not students:
        return results
    workers = max(1, min(options.workers, len(students)))
    ctx = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited ZMQ/asyncio state
    bar = tqdm(total=len(students), desc=f"autograde {lab} (W={workers})", unit="nb", disable=not progress,
               file=sys.stderr, smoothing=0.1)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(str(course), asdict(options))) as pool:
        pending = {pool.submit(grade_one, lab, s): s for s in students}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                student = pending.pop(future)
                try:
                    results.append(future.result())
                except Exception as err:  # noqa: BLE001 (a worker died: record it, keep going)
                    results.append({"student": student, "lab": lab, "success": False,
                                    "error": f"worker failed: {err!r}", "log": "", "seconds": 0.0,
                                    "exec_seconds": 0.0, "kernel_deaths": [], "timeouts": [], "tampering": []})
                bar.update(1)
                bar.set_postfix_str(f"last: {student}")
    bar.close()
    record_results(course, lab, results)
    return sorted(results, key=lambda r: r["student"])


def record_results(course: Path, lab: str, results: list[dict[str, Any]]) -> Path:
    """Merge ``results`` into ``grading/<lab>.json`` (one entry per student, latest wins)."""
    path = Path(course) / "grading" / f"{lab}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.is_file() else {}
    grades = data.setdefault("autograde", {})
    for r in results:
        grades[r["student"]] = {k: v for k, v in r.items() if k != "log"}
    path.write_text(json.dumps(data, indent=1, sort_keys=True))
    return path
