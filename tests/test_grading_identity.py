"""Student identity at import (issue 17) and names in grades.csv (issue 21), on small fake courses.

Distinct names stay distinct students (``Zoë Li`` and ``Zoé Li`` were one student, one of them
dropped), any script is graded (a name in a non-Latin script was never imported), collisions
are reported and never merged, IDs are stable from lab to lab, and the LMS's display names
reach nbgrader's gradebook and ``grades.csv``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import unicodedata
import zipfile
from pathlib import Path

import nbformat
import pytest

from dlcourse_tools.grading import submissions
from dlcourse_tools.grading.submissions import import_submissions


def student_id(name: str) -> str:
    return submissions.student_id(name)

LAB = "lab01_tiny"
SAFE = re.compile(r"[a-z0-9_]{1,60}")


def notebook(marker: str) -> str:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"answer = {marker!r}")])
    return nbformat.writes(nb)


def make_course(tmp_path: Path, labs: tuple[str, ...] = (LAB,)) -> Path:
    course = tmp_path / "course"
    for lab in labs:
        (course / "labs" / lab).mkdir(parents=True)
        (course / "labs" / lab / f"{lab}.ipynb").write_text(notebook("released"))
    return course


def submitted(course: Path, student: str, lab: str = LAB) -> str:
    nb = nbformat.read(course / "submitted" / student / lab / f"{lab}.ipynb", as_version=4)
    return nb.cells[0].source


def write(folder: Path, name: str, marker: str, age: float = 0.0) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(notebook(marker))
    if age:
        os.utime(path, (path.stat().st_mtime - age, path.stat().st_mtime - age))
    return path


def test_distinct_names_get_distinct_safe_ids() -> None:
    names = ["Zoë Li", "Zoé Li", "Zoe Li", "李小龙", "李小強", "Алла Пугачёва", "محمد علي", "O'Brien", "Jane Doe",
             "123456", "jdoe42", "x" * 80, "x" * 81]
    ids = [student_id(n) for n in names]
    assert len(set(ids)) == len(names), dict(zip(names, ids))
    assert all(SAFE.fullmatch(i) for i in ids), ids
    # plain ASCII names and LMS IDs keep the IDs they always had
    assert student_id("Jane Doe") == "jane_doe" and student_id("123456") == "123456" and student_id("jdoe42") == "jdoe42"
    # the same name written decomposed (as macOS stores file names) is the same student
    assert student_id(unicodedata.normalize("NFD", "Zoë Li")) == student_id("Zoë Li")
    assert student_id("Zoë  Li ") == student_id("Zoë Li")
    assert student_id("Zoë Li").startswith("zoe_li_") and student_id("李小龙").startswith("student_")


def test_import_keeps_accented_names_apart_and_grades_every_script(tmp_path: Path) -> None:
    course = make_course(tmp_path)
    download = tmp_path / "download"
    write(download, f"Copy of {LAB} - Zoë Li.ipynb", "zoe diaeresis")
    write(download, f"Copy of {LAB} - Zoé Li.ipynb", "zoe acute")
    write(download, f"Copy of {LAB} - 李小龙.ipynb", "li xiaolong")
    write(download, f"Алла Пугачёва_777_assignsubmission_file_/{LAB}.ipynb", "alla")
    write(download, f"{LAB}_jdoe42_attempt_2026-10-01-12-00-00_{LAB}.ipynb", "blackboard")
    write(download, f"mroe_{LAB}.ipynb", "plain file name")
    result = import_submissions(download, course, LAB, gradebook=False)
    zoe1, zoe2, li = student_id("Zoë Li"), student_id("Zoé Li"), student_id("李小龙")
    assert set(result.imported) == {zoe1, zoe2, li, "777", "jdoe42", "mroe"}, result
    assert result.unmatched == [] and result.collisions == {} and result.ignored == {}
    assert submitted(course, zoe1) == "answer = 'zoe diaeresis'"
    assert submitted(course, zoe2) == "answer = 'zoe acute'"
    assert submitted(course, li) == "answer = 'li xiaolong'"
    assert result.names == {zoe1: "Zoë Li", zoe2: "Zoé Li", li: "李小龙", "777": "Алла Пугачёва", "jdoe42": "",
                            "mroe": ""}  # an ID is not a name
    record = json.loads((course / "grading" / f"{LAB}.json").read_text())
    assert set(record["import"]["imported"]) == set(result.imported)


def test_a_name_from_a_mac_zip_is_the_same_student(tmp_path: Path) -> None:
    course = make_course(tmp_path)
    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(unicodedata.normalize("NFD", f"Copy of {LAB} - Zoë Li.ipynb"), notebook("first"))
        z.writestr(unicodedata.normalize("NFC", f"Copy of {LAB} - Zoë Li (1).ipynb"), notebook("second"))
    result = import_submissions(archive, course, LAB, gradebook=False)
    assert list(result.imported) == [student_id("Zoë Li")]
    assert len(result.ignored[student_id("Zoë Li")]) == 1  # two notebooks of one student: the newest graded


def test_collisions_are_reported_and_never_merged(tmp_path: Path) -> None:
    from dlcourse_tools.grading.report import problems

    course = make_course(tmp_path)
    download = tmp_path / "download"
    write(download, f"Jane Doe/{LAB}.ipynb", "the first jane")
    write(download, f"jane-doe/{LAB}.ipynb", "the second jane")
    write(download, f"Ada Lovelace/{LAB}.ipynb", "ada")
    result = import_submissions(download, course, LAB, gradebook=False)
    assert result.collisions == {"jane_doe": ["Jane Doe", "jane-doe"]}
    ids = {key: sid for sid, key in result.keys.items()}
    assert ids["Jane Doe"] != ids["jane-doe"] and "jane_doe" not in result.imported
    assert submitted(course, ids["Jane Doe"]) == "answer = 'the first jane'"
    assert submitted(course, ids["jane-doe"]) == "answer = 'the second jane'"
    assert "ada_lovelace" in result.imported  # no collision: the plain ID
    assert result.names["ada_lovelace"] == "Ada Lovelace" and result.names[ids["jane-doe"]] == "jane-doe"
    record = json.loads((course / "grading" / f"{LAB}.json").read_text())
    assert record["import"]["collisions"] == {"jane_doe": ["Jane Doe", "jane-doe"]}
    text = "\n".join(f"{s}: {why}" for s, why in problems(course, LAB))
    assert "jane_doe: name collision" in text and "not merged" in text and ids["jane-doe"] in text, text


def test_ids_are_stable_from_lab_to_lab(tmp_path: Path) -> None:
    course = make_course(tmp_path, (LAB, "lab02_tiny"))
    first = tmp_path / "lab1"
    write(first, f"Jane Doe/{LAB}.ipynb", "jane")
    write(first, f"Sam Roe/{LAB}.ipynb", "sam")
    write(first, f"sam_roe/{LAB}.ipynb", "another sam")
    one = import_submissions(first, course, LAB, gradebook=False)
    second = tmp_path / "lab2"
    write(second, "JANE DOE/lab02_tiny.ipynb", "a different jane")
    write(second, "Jane Doe/lab02_tiny.ipynb", "jane again")
    write(second, "Sam Roe/lab02_tiny.ipynb", "sam again")
    two = import_submissions(second, course, "lab02_tiny", gradebook=False)
    assert two.keys["jane_doe"] == "Jane Doe"  # Jane keeps her ID
    sam = {key: sid for sid, key in one.keys.items()}["Sam Roe"]
    assert sam != "sam_roe" and two.keys[sam] == "Sam Roe"  # Sam's hashed ID too, although alone this time
    other = {key: sid for sid, key in two.keys.items()}["JANE DOE"]
    assert other != "jane_doe" and two.collisions == {"jane_doe": ["JANE DOE", "Jane Doe"]}
    assert submissions.load_registry(course)["keys"]["Jane Doe"] == "jane_doe"


def test_assign_ids_never_gives_two_keys_one_id() -> None:
    registry = {"keys": {}, "reserved": [], "names": {}}
    keys = ["Jane Doe", "jane doe", "JANE-DOE", "jane.doe", "Zoë Li", "Zoé Li", "李小龙", "李小龍", "", "jane_doe_x"]
    ids, collisions = submissions.assign_ids(keys, registry)
    assert len(set(ids.values())) == len(set(ids)) == len(keys)
    assert collisions == {"jane_doe": sorted(["Jane Doe", "jane doe", "JANE-DOE", "jane.doe"])}
    # someone literally named like another's hashed ID still gets an ID of their own
    ids2, _ = submissions.assign_ids([ids["Zoë Li"].replace("_", " ")], registry)
    assert set(ids2.values()).isdisjoint(ids.values())


def test_split_name() -> None:
    split_name = submissions.split_name
    assert split_name("Jane Doe") == ("Jane", "Doe")
    assert split_name("Maria de la Cruz") == ("Maria de la", "Cruz")
    assert split_name("Doe, Jane") == ("Jane", "Doe")
    assert split_name("李小龙") == ("", "李小龙")


@pytest.fixture
def course_with_gradebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import sys

    from dlcourse_tools.grading.autograde import gradebook

    course = make_course(tmp_path)
    # nbgrader runs `alembic` by name when it creates a gradebook
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    with gradebook(course) as gb:
        gb.add_assignment(LAB)
        gb.add_notebook(LAB, LAB)
        gb.add_grade_cell("test_a", LAB, LAB, max_score=2, cell_type="code")
    return course


def test_display_names_reach_the_gradebook_and_grades_csv(course_with_gradebook: Path, tmp_path: Path) -> None:
    from dlcourse_tools.grading.autograde import gradebook
    from dlcourse_tools.grading.report import export_csv

    course = course_with_gradebook
    download = tmp_path / "download"
    write(download, f"Jane Doe_123456_assignsubmission_file_/{LAB}.ipynb", "jane")
    write(download, f"Copy of {LAB} - Zoë Li.ipynb", "zoe")
    write(download, f"Copy of {LAB} - Doe, John.ipynb", "john")
    write(download, f"Copy of {LAB} - =HYPERLINK(1).ipynb", "formula")
    write(download, f"{LAB}_jdoe42_attempt_2026-10-01-12-00-00_{LAB}.ipynb", "no name")
    result = import_submissions(download, course, LAB)
    with gradebook(course) as gb:
        stored = {s.id: (s.first_name, s.last_name) for s in gb.students}
    assert stored["123456"] == ("Jane", "Doe")
    assert stored[student_id("Zoë Li")] == ("Zoë", "Li")
    assert stored[student_id("Doe, John")] == ("John", "Doe")
    assert "jdoe42" not in stored  # no name to store: nbgrader creates the student when grading
    with gradebook(course) as gb:
        gb.add_student("jdoe42")  # as the autograder does
        submission = gb.add_submission(LAB, "123456")
        submission.notebooks[0].grades[0].auto_score = 2
        gb.db.commit()
    rows = {r["student_id"]: r for r in csv.DictReader(export_csv(course).open(encoding="utf-8"))}
    assert set(rows) == set(result.imported)
    jane = rows["123456"]
    assert (jane["first_name"], jane["last_name"], jane["name"], jane["score"]) == ("Jane", "Doe", "Jane Doe", "2.0")
    assert rows[student_id("Zoë Li")]["name"] == "Zoë Li" and rows[student_id("Zoë Li")]["score"] == "0.0"
    assert rows[student_id("Doe, John")]["name"] == "Doe, John"  # a comma stays inside its cell
    assert rows[student_id("=HYPERLINK(1)")]["name"] == "'=HYPERLINK(1)"  # never a spreadsheet formula
    assert rows["jdoe42"]["name"] == "" and rows["jdoe42"]["last_name"] == ""


def test_a_zip_cannot_write_beside_its_folder(tmp_path: Path) -> None:
    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"Copy of {LAB} - Ann.ipynb", notebook("ann"))
        z.writestr("../outside/evil.ipynb", notebook("evil"))  # a sibling whose name starts like the folder's
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match="unsafe path in the archive"):
        submissions._extract(archive, tmp_path / "out")
    assert not (tmp_path / "outside").exists() and not any((tmp_path / "out").iterdir())
