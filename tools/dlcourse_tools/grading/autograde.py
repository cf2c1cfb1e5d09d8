"""Autograding a lab for a whole class: each submission judged outside the student's process.

For every student, every notebook of the lab is graded by a :class:`~dlcourse_tools.grading.judge.Judge`:
the student's cells run in a sandboxed process of their own, the instructor's tests (hidden
ones included, read from ``solutions/``) run in the grader's process, and the verdicts are
made there (see :mod:`dlcourse_tools.grading.judge`). The results go where nbgrader keeps them,
so that ``feedback``, ``export``, the formgrader and ``report`` work as with nbgrader's own
autograder:

- the scores into nbgrader's gradebook (``Grade.auto_score`` of each test cell);
- ``autograded/<student>/<lab>/<notebook>.ipynb``: the submission as the student wrote it,
  with the released (visible) source of each test cell, each test's printed output and one-line
  error, sanitized (no HTML or scripts of the student's, outputs capped);
- one line per submission in ``grading/<lab>.json`` (time, deaths, time-outs, forbidden calls),
  which the report reads.

``W`` worker processes grade ``W`` students at a time (a progress bar shows the rate and the
ETA). Every gradebook session holds one inter-process lock (a file next to the course), taken
by this module around its own sessions, so writes never interleave.
"""

from __future__ import annotations

import contextlib
import copy
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

@dataclass
class Options:
    """Settings of an autograding run.

    Attributes:
        workers: worker processes (each grades one submission at a time).
        timeout: seconds for one cell of the student's or one test.
        cpu_s, wall_s, memory_mb: limits of the student's process (see
            :class:`dlcourse_tools.grading.sandbox.Limits`); ``wall_s`` also bounds the whole
            submission, restarts included.
        sandboxed: run the student's code in the sandbox (turn off only where Linux namespaces
            are unavailable, and only for code you trust).
        db_url: the gradebook (default: ``sqlite:///<course>/gradebook.db``).
        scratch: where the student's processes get their scratch folders (default: the system's
            temporary folder).
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


from dlcourse_tools.grading.course import COURSE_ID, course_config, db_url_of, gradebook, gradebook_lock  # noqa: E402,F401


# ---------------------------------------------------------------------------------------------
# One submission
# ---------------------------------------------------------------------------------------------

def lab_notebooks(course: Path, lab: str) -> list[str]:
    cfg = course_config(course)
    return sorted(p.stem for p in (Path(course) / cfg["source_directory"] / lab).glob("*.ipynb"))


def _sandbox(options: Options, long_lived: bool = False) -> Any:
    if not options.sandboxed:
        return None
    from dlcourse_tools.grading.sandbox import Limits, Sandbox

    # A warm sandbox lives as long as its worker; each submission's time is the judge's to limit.
    wall = 7 * 24 * 3600 if long_lived else options.wall_s
    uid = 100_000 + os.getpid() if os.getuid() == 0 else None  # one user per worker: quotas are not shared
    sandbox = Sandbox(limits=Limits(cpu_s=options.cpu_s, wall_s=wall, memory_mb=options.memory_mb))
    if uid is not None:
        sandbox.uid = uid
    return sandbox


_zygote: dict[str, Any] = {}


def worker_zygote(options: Options) -> Any:
    """This worker's warm sandbox (:class:`~dlcourse_tools.grading.judge.Zygote`), started once; ``None`` unsandboxed."""
    if not options.sandboxed:
        return None
    if "z" not in _zygote:
        import atexit

        from dlcourse_tools.grading.judge import Zygote
        from dlcourse_tools.grading.sandbox import make_cgroup, remove_cgroup

        sandbox = _sandbox(options, long_lived=True)
        sandbox.cgroup = make_cgroup(f"dlcourse-grading-{os.getpid()}", options.memory_mb + 1024,
                                     sandbox.limits.processes)
        base = Path(options.scratch or tempfile.gettempdir()) / "dlcourse-grading"
        base.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="w", dir=base))
        os.chmod(scratch, 0o755)
        zygote = Zygote(sandbox, scratch)

        def close() -> None:
            zygote.stop()
            shutil.rmtree(scratch, ignore_errors=True)
            remove_cgroup(sandbox.cgroup)

        atexit.register(close)
        _zygote["z"] = zygote
    return _zygote["z"]


def grade_submission(course: Path, lab: str, student: str, options: Options) -> dict[str, Any]:
    """Judge every notebook of ``student``'s submission of ``lab``; writes autograded/ and the gradebook."""
    import nbformat

    from dlcourse_tools.grading.judge import Budget, Judge, StudentProcess, read_notebook

    course = Path(course).resolve()
    cfg = course_config(course)
    started = time.monotonic()
    record: dict[str, Any] = {"student": student, "lab": lab, "success": True, "error": "", "seconds": 0.0,
                              "exec_seconds": 0.0, "kernel_deaths": [], "timeouts": [], "tampering": [],
                              "forbidden": [], "notebooks": [], "tests": {}}
    scores: dict[str, dict[str, float]] = {}
    base = Path(options.scratch or tempfile.gettempdir()) / "dlcourse-grading"
    base.mkdir(parents=True, exist_ok=True)
    budget = Budget(cell_s=options.timeout, total_s=options.wall_s)
    for name in lab_notebooks(course, lab):
        source = nbformat.read(course / cfg["source_directory"] / lab / f"{name}.ipynb", as_version=4)
        release = nbformat.read(course / cfg["release_directory"] / lab / f"{name}.ipynb", as_version=4)
        submitted = course / "submitted" / student / lab / f"{name}.ipynb"
        submission = read_notebook(submitted) if submitted.is_file() else None
        scratch = Path(tempfile.mkdtemp(prefix="s", dir=base))
        os.chmod(scratch, 0o755)
        process = StudentProcess(_sandbox(options), scratch, zygote=worker_zygote(options))
        try:
            report = Judge(source, release, submission, process, budget).grade()
        except Exception as err:  # noqa: BLE001 (a grader bug must not stop the class)
            record["success"] = False
            record["error"] = f"{type(err).__name__}: {err}"
            report = None
        finally:
            process.kill()
            shutil.rmtree(scratch, ignore_errors=True)
        record["notebooks"].append(name)
        if report is None:
            continue
        record["exec_seconds"] += report.seconds
        record["kernel_deaths"] += report.deaths
        record["timeouts"] += [gid for gid, t in report.tests.items() if t.error and "time limit" in t.error]
        record["forbidden"] += report.forbidden
        scores[name] = {gid: t.score for gid, t in report.tests.items()}
        record["tests"].update({gid: {"score": t.score, "points": t.points, "error": t.error, "mistake": t.mistake,
                                      "seconds": round(t.seconds, 2)} for gid, t in report.tests.items()})
        write_autograded(course, lab, student, name, release, submission, report)
    if record["success"]:
        save_scores(course, lab, student, scores, options)
    record["seconds"] = time.monotonic() - started
    return record


def write_autograded(course: Path, lab: str, student: str, name: str, release: Any, submission: Any,
                     report: Any) -> Path:
    """``autograded/<student>/<lab>/<name>.ipynb``: the submission with released test cells and the judge's outputs."""
    import nbformat

    from dlcourse_tools.grading.judge import is_test, nbgrader_meta, released_source

    nb = copy.deepcopy(submission if submission is not None else release)
    released = {nbgrader_meta(c).get("grade_id"): c for c in release.cells if nbgrader_meta(c).get("grade_id")}
    cells, seen = [], set()
    for i, cell in enumerate(nb.cells):
        meta = nbgrader_meta(cell)
        gid = meta.get("grade_id")
        ref = released.get(gid)
        if ref is None:
            cell.get("metadata", {}).pop("nbgrader", None)
        else:
            seen.add(gid)
            cell.metadata["nbgrader"] = copy.deepcopy(ref.metadata["nbgrader"])
            if meta.get("locked") or nbgrader_meta(ref).get("locked"):
                cell.source = ref.source
        if cell.get("cell_type") == "code":
            cell.outputs, cell.execution_count = [], None
            run = report.cells.get(i) if submission is not None else None
            if ref is not None and is_test(ref):
                result = report.tests.get(gid)
                cell.source = released_source(ref.source)
                if result is not None:
                    cell.outputs = _outputs(result.output, result.error)
            elif run is not None:
                cell.outputs = _outputs(run.output, run.error)
        cells.append(cell)
    for cell in release.cells:  # test cells the submission lost are shown (with their 0)
        gid = nbgrader_meta(cell).get("grade_id")
        if gid and gid not in seen and is_test(cell):
            cell = copy.deepcopy(cell)
            result = report.tests.get(gid)
            cell.source = released_source(cell.source)
            cell.outputs = _outputs(result.output, result.error) if result else []
            cells.append(cell)
    nb.cells = cells
    from dlcourse_tools.grading.feedback import lab_hidden_lines, sanitize_notebook

    # Plain text and real images only, sizes capped, and no line of a hidden test, whatever was printed.
    nb = sanitize_notebook(nb, lab_hidden_lines(course, lab, name))
    out = Path(course) / "autograded" / student / lab / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    stamp = Path(course) / "submitted" / student / lab / "timestamp.txt"
    if stamp.is_file():
        shutil.copy2(stamp, out.parent / "timestamp.txt")
    return out


def _outputs(text: str, error: str | None) -> list[Any]:
    import nbformat

    outputs = []
    if text:
        outputs.append(nbformat.v4.new_output("stream", name="stdout", text=text[-20_000:]))
    if error:
        ename, _, evalue = error.partition(": ")
        outputs.append(nbformat.v4.new_output("error", ename=ename[:100], evalue=evalue[:2000],
                                              traceback=[error[:2000]]))
    return outputs


def save_scores(course: Path, lab: str, student: str, scores: dict[str, dict[str, float]], options: Options) -> None:
    """Write the judge's scores into nbgrader's gradebook (the submission is created when new)."""
    stamp = Path(course) / "submitted" / student / lab / "timestamp.txt"
    kwargs = {}
    if stamp.is_file():
        from nbgrader.utils import parse_utc

        with contextlib.suppress(Exception):
            kwargs["timestamp"] = parse_utc(stamp.read_text().strip())
    with gradebook(course, options) as gb:
        if not any(s.id == student for s in gb.students):
            gb.update_or_create_student(student)
        submission = gb.update_or_create_submission(lab, student, **kwargs)
        for nb in submission.notebooks:
            got = scores.get(nb.name, {})
            for grade in nb.grades:
                grade.auto_score = float(got.get(grade.name, 0.0)) if grade.cell_type == "code" else grade.auto_score
                grade.manual_score = None
                grade.needs_manual_grade = False
        gb.db.commit()


# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------

_worker: dict[str, Any] = {}


def init_worker(course: str, options: dict[str, Any]) -> None:
    """A grading worker's set-up: the course, the options, and its warm sandbox started."""
    import warnings

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    warnings.filterwarnings("ignore", module="nbgrader")
    _worker["course"] = Path(course)
    _worker["options"] = Options(**options)
    zygote = worker_zygote(_worker["options"])
    if zygote is not None:  # warm the sandbox now, so the first submission does not wait for it
        try:
            zygote.start()
        except Exception:  # noqa: BLE001 (it is started again, and its failure reported, on first use)
            pass


def grade_one(lab: str, student: str) -> dict[str, Any]:
    """Grade one student's submission of ``lab`` in this worker; returns what happened."""
    return grade_submission(_worker["course"], lab, student, _worker["options"])


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
        One record per student (see :func:`grade_submission`), also merged into ``grading/<lab>.json``.
    """
    from tqdm.auto import tqdm

    course = Path(course).resolve()
    options = options or Options()
    if options.sandboxed:
        from dlcourse_tools.grading.sandbox import unavailable

        problem = unavailable()
        if problem:
            raise RuntimeError(f"the grading sandbox cannot start here: {problem} "
                               "(grade only code you trust with --no-sandbox)")
    students = sorted(students) if students is not None else submitted_students(course, lab)
    results: list[dict[str, Any]] = []
    if not students:
        return results
    workers = max(1, min(options.workers, len(students)))
    ctx = multiprocessing.get_context("spawn")
    bar = tqdm(total=len(students), desc=f"autograde {lab} (W={workers})", unit="nb", disable=not progress,
               file=sys.stderr, smoothing=0.1)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_worker,
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
                                    "error": f"worker failed: {err!r}", "seconds": 0.0, "exec_seconds": 0.0,
                                    "kernel_deaths": [], "timeouts": [], "tampering": [], "tests": {}})
                bar.update(1)
                bar.set_postfix_str(f"last: {student}")
    bar.close()
    record_results(course, lab, results)
    return sorted(results, key=lambda r: r["student"])


def record_results(course: Path, lab: str, results: list[dict[str, Any]]) -> Path:
    """Merge ``results`` into ``grading/<lab>.json`` (one entry per student, latest wins)."""
    path = Path(course) / "grading" / f"{lab}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with gradebook_lock(course):
        data = json.loads(path.read_text()) if path.is_file() else {}
        grades = data.setdefault("autograde", {})
        for r in results:
            grades[r["student"]] = {k: v for k, v in r.items() if k != "log"}
        path.write_text(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False))
    return path
