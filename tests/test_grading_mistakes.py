"""Known mistakes across the class (issue 22): what the judge records, what the report counts.

A generated class of submissions (``grading/<lab>.json`` as autograding writes it) gives the
report's table and plot: each mistake per test, how many submissions made it, their share.
Then lab 3 end to end through the judge (marked slow): a submission whose ``corr2d`` flips the
kernel, written the way a student writes it, loses that test's points, the judge records
``kernel_flipped``, and the autograded notebook and its feedback page show the one-sentence hint.
"""

from __future__ import annotations

import copy
import json
import random
import re
import sys
from pathlib import Path

import nbformat
import pytest

from dlcourse_tools.grading.report import mistake_lines, mistakes, plot_mistakes

ROOT = Path(__file__).resolve().parents[1]
LAB = "lab03_convolution"
FLIPPED = "you computed a true convolution (kernel flipped); deep-learning layers compute the cross-correlation"

# (test, mistake, how many of the 50 students made it)
MADE = [("test_corr2d", "kernel_flipped", 17), ("test_corr2d", "one_short", 4), ("test_conv_out", "no_plus_one", 9),
        ("test_conv_out", "padding_one_side", 6), ("test_conv2d_values", "no_bias", 3)]
STUDENTS = [f"s{i:02d}" for i in range(50)]


def generated_class(course: Path, seed: int = 22) -> None:
    """grading/<LAB>.json for 50 students: the mistakes of MADE, the rest right or wrong without one."""
    rng = random.Random(seed)
    graded = {s: {"success": True, "tests": {t: {"score": 2.0, "points": 2.0, "error": None, "mistake": None}
                                           for t in ("test_corr2d", "test_conv_out", "test_conv2d_values")}}
              for s in STUDENTS}
    for test, mistake, n in MADE:
        free = [s for s in STUDENTS if graded[s]["tests"][test]["mistake"] is None]
        for student in rng.sample(free, n):
            graded[student]["tests"][test] = {"score": 0.0, "points": 2.0, "mistake": mistake,
                                              "error": f"CheckError: {test.removeprefix('test_')}(x, k): {mistake}: a | in the hint"}
    for student in rng.sample(STUDENTS, 5):  # wrong without a known mistake: not counted
        graded[student]["tests"]["test_conv2d_values"].update(score=0.0, error="CheckError: values off", mistake=None)
    (course / "grading").mkdir(parents=True, exist_ok=True)
    (course / "grading" / f"{LAB}.json").write_text(json.dumps({"autograde": graded}))


def test_the_class_counts_each_mistake_per_test(tmp_path: Path) -> None:
    generated_class(tmp_path)
    graded, counts, examples = mistakes(tmp_path, LAB)
    assert graded == 50
    assert {(t, m): n for t, c in counts.items() for m, n in c.items()} == {(t, m): n for t, m, n in MADE}
    assert examples[("test_corr2d", "kernel_flipped")] == "CheckError: corr2d(x, k): kernel_flipped: a | in the hint"


def test_the_report_table_gives_counts_and_shares(tmp_path: Path) -> None:
    generated_class(tmp_path)
    lines = mistake_lines(tmp_path, LAB, ["test_conv_out", "test_corr2d", "test_conv2d_values"])
    text = "\n".join(lines)
    assert lines[0] == "## Known mistakes (39)"
    rows = [line for line in lines if line.startswith("| test_")]
    # In the notebook's order of the tests, the most frequent mistake of each test first.
    assert [r.split(" | ")[:4] for r in rows] == [
        ["| test_conv_out", "no_plus_one", "9", "18%"], ["| test_conv_out", "padding_one_side", "6", "12%"],
        ["| test_corr2d", "kernel_flipped", "17", "34%"], ["| test_corr2d", "one_short", "4", "8%"],
        ["| test_conv2d_values", "no_bias", "3", "6%"]]
    # The hint (the message without the check's name), with a | that does not break the table.
    assert rows[2].endswith("| kernel_flipped: a \\| in the hint |"), rows[2]
    assert "![known mistakes](report_mistakes.png)" in text


def test_the_plot_has_a_bar_per_mistake(tmp_path: Path) -> None:
    generated_class(tmp_path)
    to = tmp_path / "report_mistakes.png"
    assert plot_mistakes(tmp_path, LAB, to) == to and to.stat().st_size > 5000


def test_no_mistakes_says_so_and_leaves_no_stale_plot(tmp_path: Path) -> None:
    generated_class(tmp_path)
    record = json.loads((tmp_path / "grading" / f"{LAB}.json").read_text())
    for student in record["autograde"].values():
        for result in student["tests"].values():
            result["mistake"] = None
    (tmp_path / "grading" / f"{LAB}.json").write_text(json.dumps(record))
    stale = tmp_path / "report_mistakes.png"
    stale.write_bytes(b"an old plot")
    assert plot_mistakes(tmp_path, LAB, stale) is None and not stale.exists()
    assert mistake_lines(tmp_path, LAB)[2] == "No failed check recognised a known mistake in the 50 graded submissions."
    assert mistake_lines(tmp_path / "empty", LAB)[2] == "No failed check recognised a known mistake: nothing graded yet."


def test_the_report_includes_the_mistakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from dlcourse_tools.grading.autograde import gradebook
    from dlcourse_tools.grading.report import report

    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    generated_class(tmp_path)
    with gradebook(tmp_path) as gb:
        gb.add_assignment(LAB)
        gb.add_notebook(LAB, LAB)
        for test in ("test_conv_out", "test_corr2d", "test_conv2d_values"):
            gb.add_grade_cell(test, LAB, LAB, max_score=2, cell_type="code")
        gb.add_student("s00")
        gb.add_submission(LAB, "s00")
        gb.db.commit()
    text = report(tmp_path, LAB).read_text()
    assert re.search(r"\| test_corr2d \| kernel_flipped \| 17 \| 34% \|", text), text
    assert text.index("## Known mistakes (39)") < text.index("## Submissions to look at")
    assert (tmp_path / "reports" / LAB / "report_mistakes.png").stat().st_size > 5000


# ---------------------------------------------------------------------------------------------
# Lab 3 end to end through the judge
# ---------------------------------------------------------------------------------------------

FLIPPED_CORR2D = '''def corr2d(x, kernel):
    """The cross-correlation of x (H, W) with kernel (kH, kW): shape (H - kH + 1, W - kW + 1)."""
    kH, kW = kernel.shape
    y = torch.zeros(x.shape[0] - kH + 1, x.shape[1] - kW + 1, dtype=x.dtype, device=x.device)
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            for a in range(kH):  # the textbook convolution: the kernel runs backwards
                for b in range(kW):
                    y[i, j] += x[i + a, j + b] * kernel[kH - 1 - a, kW - 1 - b]
    return y
'''


def submission_with(cells: dict[str, str]) -> tuple:
    """(source, release, submission) of lab 3: the solution in every cell, `cells` replaced."""
    from dlcourse_tools.grading.judge import nbgrader_meta

    source = nbformat.read(ROOT / "solutions" / LAB / f"{LAB}.ipynb", as_version=4)
    release = nbformat.read(ROOT / "labs" / LAB / f"{LAB}.ipynb", as_version=4)
    solutions = {nbgrader_meta(c)["grade_id"]: c.source for c in source.cells if nbgrader_meta(c).get("solution")}
    submission = copy.deepcopy(release)
    for cell in submission.cells:
        gid = nbgrader_meta(cell).get("grade_id")
        if gid in cells:
            cell.source = cells[gid]
        elif gid in solutions:
            cell.source = "\n".join(line for line in solutions[gid].splitlines()
                                    if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))
    return source, release, submission


@pytest.mark.slow
def test_lab3_flipped_kernel_through_the_judge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from nbconvert import HTMLExporter

    from dlcourse_tools.grading.autograde import write_autograded
    from dlcourse_tools.grading.judge import Budget, Judge, StudentProcess

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    source, release, submission = submission_with({"corr2d": FLIPPED_CORR2D})
    process = StudentProcess(None, tmp_path / "scratch")
    (tmp_path / "scratch").mkdir()
    report = Judge(source, release, submission, process, Budget()).grade()
    corr = report.tests["test_corr2d"]
    assert corr.score == 0 and corr.mistake == "kernel_flipped", corr.error
    assert corr.error.endswith(FLIPPED), corr.error
    assert not re.search(r"expected|got|-?\d+\.\d", corr.error), corr.error  # no value of the reference
    others = {gid: t for gid, t in report.tests.items() if gid != "test_corr2d"}
    assert all(t.score == t.points and t.mistake is None for t in others.values()), \
        {gid: t.error for gid, t in others.items() if t.error}
    # The autograded notebook (what nbgrader's feedback renders) shows the hint under the test cell.
    course = tmp_path / "course"
    shutil.copytree(ROOT / "solutions" / LAB, course / "solutions" / LAB)
    out = write_autograded(course, LAB, "s1", LAB, release, submission, report)
    nb = nbformat.read(out, as_version=4)
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_corr2d"]
    (error,) = [o for o in cell.outputs if o.output_type == "error"]
    assert error.ename == "CheckError" and error.evalue.endswith(FLIPPED)
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert "you computed a true convolution (kernel flipped)" in html
    # And the record the report counts: one kernel_flipped in test_corr2d.
    (course / "grading").mkdir()
    (course / "grading" / f"{LAB}.json").write_text(json.dumps({"autograde": {"s1": {"tests": {
        gid: {"score": t.score, "points": t.points, "error": t.error, "mistake": t.mistake}
        for gid, t in report.tests.items()}}}}))
    graded, counts, _ = mistakes(course, LAB)
    assert graded == 1 and counts == {"test_corr2d": {"kernel_flipped": 1}}
