"""How fast the autograder is: N generated lab-1 submissions graded with W = 1, 2, ... workers.

``python -m dlcourse_tools.grade bench --n 100 --workers 1 2`` builds a scratch course, generates
``n`` submissions of lab 1 (a rotation of complete, partial and blank solutions, so execution
times vary like a real class's), then for each ``W``: starts the pool, grades all of them
exactly as ``autograde`` does (each worker's warm sandbox forks a student's process per
submission; the judge runs the tests), and compares the wall time with

    bound = 1.25 * sum(grading times) / W + start-up,

where a grading time is what one submission took in its worker (the student's cells and every
test) and start-up the time to start W workers. It then times plain sequential ``nbgrader
autograde`` on the same submissions (its own unsandboxed kernels, tests inside the student's
kernel), for reference. Figures go to stdout and, with ``--json``, to a file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

LAB = "lab01_perceptron"
ROOT = Path(__file__).resolve().parents[3]  # the repository: tools/dlcourse_tools/grading/timing.py


def _submissions(course: Path, n: int) -> None:
    import nbformat

    release = nbformat.read(course / "labs" / LAB / f"{LAB}.ipynb", as_version=4)
    solutions = nbformat.read(course / "solutions" / LAB / f"{LAB}.ipynb", as_version=4)
    answer = {c.metadata["nbgrader"]["grade_id"]: "\n".join(
        line for line in c.source.splitlines() if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))
        for c in solutions.cells if c.metadata.get("nbgrader", {}).get("solution")}
    order = list(answer)
    for i in range(n):
        solved = set(order[: (i * 7) % (len(order) + 1)])  # 0 .. all exercises solved
        nb = nbformat.from_dict(json.loads(json.dumps(release)))
        for cell in nb.cells:
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if gid in solved:
                cell.source = answer[gid]
        path = course / "submitted" / f"s{i:03d}" / LAB / f"{LAB}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, path)


def _course(base: Path, n: int) -> Path:
    from dlcourse_tools.grading.course import release

    course = base / "course"
    course.mkdir(parents=True)
    os.chmod(base, 0o755)
    os.chmod(course, 0o755)
    shutil.copy2(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions" / LAB, course / "solutions" / LAB)
    release(course, LAB)
    _submissions(course, n)
    return course


def _startup(course: Path, workers: int, options: dict[str, Any]) -> float:
    import multiprocessing

    from dlcourse_tools.grading.autograde import init_worker

    started = time.monotonic()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker,
                             initargs=(str(course), options)) as pool:
        list(pool.map(time.sleep, [0.2] * workers))  # every worker initialised and alive
    return time.monotonic() - started - 0.2


def bench(n: int = 100, workers: list[int] | None = None, sequential: bool = True,
          json_path: Path | None = None) -> dict[str, Any]:
    """Time grading ``n`` lab-1 submissions with each W in ``workers`` (and plain nbgrader)."""
    from dataclasses import asdict

    from dlcourse_tools.grading.autograde import Options, autograde

    workers = workers or [1, 2]
    figures: dict[str, Any] = {"n": n, "cpus": os.cpu_count(), "load": os.getloadavg()[0], "runs": []}
    with tempfile.TemporaryDirectory(prefix="dlcourse-grade-bench-") as tmp:
        course = _course(Path(tmp), n)
        for w in workers:
            options = Options(workers=w)
            startup = _startup(course, w, asdict(options))
            started = time.monotonic()
            results = autograde(course, LAB, options=options, progress=True)
            wall = time.monotonic() - started
            exec_sum = sum(r["seconds"] for r in results)  # each submission's whole time in its worker
            bound = 1.25 * exec_sum / w + startup
            run = {"workers": w, "wall_s": round(wall, 1), "sum_exec_s": round(exec_sum, 1),
                   "startup_s": round(startup, 1), "bound_s": round(bound, 1), "within_bound": wall <= bound,
                   "failed": sum(not r["success"] for r in results)}
            figures["runs"].append(run)
            print(f"W={w}: {wall:.1f} s for {n} submissions; sum of grading times {exec_sum:.1f} s, "
                  f"start-up {startup:.1f} s; bound 1.25*sum/W + start-up = {bound:.1f} s: "
                  f"{'OK' if wall <= bound else 'OVER'}", flush=True)
        if sequential:
            env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
                       PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
            started = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "nbgrader", "autograde", LAB, "--force", "--log-level=WARN"],
                                  cwd=course, env=env, capture_output=True, text=True)
            wall = time.monotonic() - started
            figures["nbgrader_sequential_s"] = round(wall, 1)
            figures["nbgrader_returncode"] = proc.returncode
            print(f"plain sequential `nbgrader autograde`: {wall:.1f} s for {n} submissions "
                  f"(exit {proc.returncode})", flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps(figures, indent=1))
    return figures
