"""Every lab through the instructor's workflow: solutions/ -> labs/ -> submissions -> autograded scores.

The course's commands run as an instructor runs them (``python -m dlcourse_tools.grade release``
and ``autograde``, what ``make release`` and ``make autograde`` call), in a scratch copy of the
course (``nbgrader_config.py`` and ``solutions/``), with the interpreter that runs pytest. Once
per test session:

1. ``release`` (nbgrader's ``generate_assignment``) writes the student version of each lab. Its
   output is deterministic, so it must equal the committed ``labs/`` byte for byte (``make
   labs`` rewrites it), and no line of a solution or of a hidden test may leak into it.
2. ``autograde`` (the judge: student code in the sandbox, tests outside it) grades three
   submissions of each lab with 2 workers: ``solution``, the released notebook with the instructor's solution code in
   every solution cell, must get full marks; ``untouched``, the released notebook as is, must
   get 0 without crashing nbgrader; ``hardcoded`` (labs with a module in ``tests/hardcoded/``), solution cells that return the
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
from hardcoded import hardcoded_builders

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

HARDCODED = hardcoded_builders()


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


def grade(course: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the instructor's command ``python -m dlcourse_tools.grade ARGS`` in the course folder."""
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "dlcourse_tools.grade", *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"grade {' '.join(args)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A scratch course: labs generated from solutions/, then three submissions per lab autograded."""
    root = tmp_path_factory.mktemp("course")
    shutil.copy2(ROOT / "nbgrader_config.py", root)
    shutil.copytree(ROOT / "solutions", root / "solutions",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    for lab in LABS:
        grade(root, "release", lab)  # nbgrader's generate_assignment, as `make release` runs it
        for name in notebooks(lab):
            release = read_nb(root / "labs" / lab / f"{name}.ipynb")
            solutions = read_nb(root / "solutions" / lab / f"{name}.ipynb")
            submissions = {"solution": make_submission(release, solutions, None), "untouched": release}
            if lab in HARDCODED:
                submissions["hardcoded"] = make_submission(release, solutions, HARDCODED[lab]())
            for student, nb in submissions.items():
                write_nb(nb, root / "submitted" / student / lab / f"{name}.ipynb")
        grade(root, "autograde", lab, "--workers", "2", "--no-progress")  # as `make autograde` runs it
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
