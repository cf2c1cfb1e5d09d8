"""The instructor's command line and the grade report on small fake courses (issue 21).

A mistyped ``LAB=`` is a one-line error naming the labs that exist, before anything is done
(it was a Python traceback); a report on 0 submissions says there is nothing to average (it
said "mean 0.00 / 20"); ``--db``'s help and the guide give the same psycopg 3 URL.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dlcourse_tools.grade import main

ROOT = Path(__file__).resolve().parents[1]
LAB = "lab01_tiny"


def tiny_course(tmp_path: Path) -> Path:
    course = tmp_path / "course"
    for folder, lab in (("solutions", LAB), ("solutions", "lab02_other"), ("labs", LAB)):
        (course / folder / lab).mkdir(parents=True, exist_ok=True)
        nbformat.write(nbformat.v4.new_notebook(), course / folder / lab / f"{lab}.ipynb")
    (course / "solutions" / "notes").mkdir()  # a folder without a notebook is not a lab
    return course


def test_labs_are_the_folders_with_notebooks(tmp_path: Path) -> None:
    from dlcourse_tools.grade import labs_of

    assert labs_of(tiny_course(tmp_path)) == ["lab01_tiny", "lab02_other"]
    assert labs_of(ROOT)[:2] == ["lab01_perceptron", "lab02_backprop"]


@pytest.mark.parametrize("command", [["release", "lab1_tiny"], ["import", "lab01_tinny", "download.zip"],
                                     ["autograde", "lab03"], ["feedback", "LAB01_TINY"], ["report", "lab01"]])
def test_a_mistyped_lab_is_one_line_listing_the_labs(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                     command: list[str]) -> None:
    course = tiny_course(tmp_path)
    before = sorted(p.relative_to(course) for p in course.rglob("*"))
    assert main(["--course", str(course), *command]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"no lab named {command[1]!r}" in err and "the labs are: lab01_tiny, lab02_other" in err, err
    assert sorted(p.relative_to(course) for p in course.rglob("*")) == before  # nothing was done


def test_a_close_name_is_suggested(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--course", str(tiny_course(tmp_path)), "report", "lab01_tinny"]) == 2
    assert "did you mean lab01_tiny?" in capsys.readouterr().err


def test_the_command_line_prints_no_traceback(tmp_path: Path) -> None:
    """As `make report LAB=lab1` runs it: a separate process, exit status 2, one line on stderr."""
    run = subprocess.run([sys.executable, "-m", "dlcourse_tools.grade", "--course", str(tiny_course(tmp_path)),
                          "report", "lab1"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stderr.startswith("error: no lab named 'lab1'"), run.stderr
    assert "Traceback" not in run.stderr and run.stderr.count("\n") == 1


def test_other_bad_input_is_one_line_too(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    course = tiny_course(tmp_path)
    assert main(["--course", str(course), "import", LAB, str(tmp_path / "missing.zip")]) == 2
    assert "no such folder or zip of submissions" in capsys.readouterr().err
    assert main(["--course", str(course), "import", "lab02_other", str(tmp_path)]) == 2  # not released yet
    assert "run the release step first" in capsys.readouterr().err
    assert main(["--course", str(course), "import", LAB, str(tmp_path), "--roster", str(tmp_path / "no.txt")]) == 2
    assert "no roster file" in capsys.readouterr().err
    assert main(["--course", str(tmp_path / "nowhere"), "report", LAB]) == 2
    assert "no labs in" in capsys.readouterr().err


def test_db_help_and_guide_agree_on_psycopg_3(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "postgresql+psycopg://" in help_text and "psycopg2" not in help_text, help_text
    guide = (ROOT / "book" / "instructor_guide.md").read_text()
    assert "postgresql+psycopg://" in guide and "psycopg2" not in guide
    assert "psycopg" in (ROOT / "constraints.txt").read_text()  # the driver the URL names is pinned


@pytest.fixture
def graded_course(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import os

    from dlcourse_tools.grading.autograde import gradebook

    course = tiny_course(tmp_path)
    # nbgrader runs `alembic` by name when it creates a gradebook
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    with gradebook(course) as gb:
        gb.add_assignment(LAB)
        gb.add_notebook(LAB, LAB)
        for i, points in enumerate((2, 3)):
            gb.add_grade_cell(f"test_{i}", LAB, LAB, max_score=points, cell_type="code")
    return course


def test_a_report_on_no_submissions_says_so(graded_course: Path) -> None:
    from dlcourse_tools.grading.report import report

    (graded_course / "reports" / LAB).mkdir(parents=True)
    (graded_course / "reports" / LAB / "report.png").write_bytes(b"an old plot")
    text = report(graded_course, LAB).read_text()
    assert f"No graded submissions of {LAB} yet" in text, text
    assert "mean" not in text and "0.00" not in text and "report.png" not in text
    assert not (graded_course / "reports" / LAB / "report.png").exists()  # no stale plot of grades that are gone
    assert "## Submissions to look at (0)" in text


def test_a_report_with_submissions_gives_the_mean(graded_course: Path) -> None:
    from dlcourse_tools.grading.autograde import gradebook
    from dlcourse_tools.grading.report import report

    with gradebook(graded_course) as gb:
        for student, scores in {"s1": (2, 3), "s2": (0, 1)}.items():
            gb.add_student(student)
            submission = gb.add_submission(LAB, student)
            for grade, score in zip(sorted(submission.notebooks[0].grades, key=lambda g: g.name), scores):
                grade.auto_score = score
        gb.db.commit()
    text = report(graded_course, LAB).read_text()
    assert "2 graded submissions, mean 3.00 / 5, 1 with full marks, 0 with 0." in text, text
    assert re.search(r"\| test_1 \| 3 \| 2\.00 \| 1/2 \|", text), text
    assert (graded_course / "reports" / LAB / "report.png").stat().st_size > 5000


def test_a_report_on_a_lab_not_in_the_gradebook_is_one_line(graded_course: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--course", str(graded_course), "report", "lab02_other"]) == 2
    assert "lab02_other is not in the gradebook: release it first" in capsys.readouterr().err


def test_the_course_config_names_the_gradebook_when_db_is_not_given(graded_course: Path, tmp_path: Path) -> None:
    """The guide's PostgreSQL set-up puts the URL in nbgrader_config.py: every command must use it."""
    import csv

    from dlcourse_tools.grading.autograde import Options, gradebook

    other = tmp_path / "shared.db"
    (graded_course / "gradebook.db").rename(other)
    (graded_course / "nbgrader_config.py").write_text(f"c = get_config()\nc.CourseDirectory.db_url = 'sqlite:///{other}'\n")
    with gradebook(graded_course, Options(db_url=f"sqlite:///{other}")) as gb:
        gb.add_student("s1", first_name="Ada", last_name="Lovelace")
    assert main(["--course", str(graded_course), "export"]) == 0
    rows = list(csv.DictReader((graded_course / "grades.csv").open(encoding="utf-8")))
    assert [(r["student_id"], r["last_name"]) for r in rows] == [("s1", "Lovelace")]
    assert not (graded_course / "gradebook.db").exists()
