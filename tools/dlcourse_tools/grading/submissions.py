"""Import submissions as an LMS or Colab gives them into nbgrader's ``submitted/`` layout.

Input: a folder or a ``.zip`` with one notebook per student, either flat (the student's name
or ID in the file name) or one sub-folder per student. File names recognised, besides the
plain ``<student>_<lab>.ipynb`` / ``<lab>_<student>.ipynb``:

- Moodle: ``Jane Doe_123456_assignsubmission_file_/lab01_perceptron.ipynb`` (or flat, with
  the folder's name as prefix) -> ``123456``;
- Canvas: ``doejane_123456_7890_lab01_perceptron-1.ipynb`` (``_LATE_`` allowed) -> ``123456``;
- Blackboard: ``lab01_perceptron_jdoe42_attempt_2026-10-01-12-00-00_lab01.ipynb`` -> ``jdoe42``;
- Google Classroom / Colab: ``Copy of lab01_perceptron - Jane Doe.ipynb`` -> ``jane_doe``.

The originals are only read. Each submission is copied to
``submitted/<student>/<lab>/<notebook>.ipynb`` (the name the lab's notebook has, whatever the
student renamed it to). Notebooks that are not valid JSON, students with no notebook and
students with several notebooks for one (the most recently modified is kept) are reported in
``grading/<lab>.json``; the grader gives a student without a readable notebook 0 points with
the reason.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nbformat

PATTERNS = (  # (LMS, regex with a `student` group), tried in order on the file or folder name
    ("moodle", re.compile(r"^(?P<name>[^_/]+)_(?P<student>\d+)_assign(?:submission|ment)_\w*?(?:_|$)")),
    ("canvas", re.compile(r"^(?P<name>[a-z]+)(?:_LATE)?_(?P<student>\d+)_\d+_")),
    ("blackboard", re.compile(r"_(?P<student>[A-Za-z0-9.\-]+)_attempt_\d{4}-\d{2}-\d{2}")),
    ("google", re.compile(r"^(?:Copy of )?.+? - (?P<student>[^/]+?)(?: \(\d+\))?\.ipynb$")),
)
NOISE = re.compile(r"(?i)(copy of|\(\d+\)|-\d+$|submission|final|attempt|late|notebook)")


@dataclass
class Imported:
    """What the import did for one lab."""

    lab: str
    imported: dict[str, str] = field(default_factory=dict)  # student -> original file
    ignored: dict[str, list[str]] = field(default_factory=dict)  # student -> older duplicates
    problems: dict[str, str] = field(default_factory=dict)  # student -> why nothing was imported
    unmatched: list[str] = field(default_factory=list)  # files no student could be read from


def slug(text: str) -> str:
    """A student id from a name: lower case, letters, digits and ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", text.strip().lower()).strip("_")


def student_of(path: Path, top: Path, lab: str, notebooks: list[str]) -> str | None:
    """The student a submitted file belongs to, from its folder or file name."""
    rel = path.relative_to(top)
    names = [rel.parts[0]] if len(rel.parts) > 1 else []
    names.append(path.name)
    for name in names:
        for _, pattern in PATTERNS:
            m = pattern.search(name)
            if m:
                return slug(m.group("student"))
    if len(rel.parts) > 1:  # one folder per student
        return slug(rel.parts[0]) or None
    stem = path.stem
    for word in sorted({lab, *notebooks}, key=len, reverse=True):
        stem = stem.replace(word, " ")
    stem = NOISE.sub(" ", stem)
    return slug(stem) or None


def notebook_for(path: Path, notebooks: list[str]) -> str:
    """Which of the lab's notebooks a (possibly renamed) file is: the longest name it contains."""
    if len(notebooks) == 1:
        return notebooks[0]
    found = [n for n in notebooks if n in path.name]
    return max(found, key=len) if found else notebooks[0]


def _readable(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
        json.loads(text)
        nbformat.reads(text, as_version=4)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return f"the notebook {path.name} is not valid JSON ({err})"
    except Exception as err:  # noqa: BLE001 (nbformat raises several kinds)
        return f"the notebook {path.name} cannot be read ({type(err).__name__}: {err})"
    return None


def _extract(archive: Path, into: Path) -> Path:
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            target = (into / info.filename).resolve()
            if not str(target).startswith(str(into.resolve())):
                raise ValueError(f"{archive.name}: unsafe path in the archive: {info.filename!r}")
        z.extractall(into)
    return into


def import_submissions(source: Path, course: Path, lab: str, students: list[str] | None = None) -> Imported:
    """Copy the submissions in ``source`` (a folder or a zip) to ``course/submitted/``.

    Args:
        source: what the LMS gave: a folder or a ``.zip``.
        course: the course folder; the lab's notebooks are read from its ``release`` folder.
        lab: the assignment, e.g. ``"lab01_perceptron"``.
        students: student ids expected (a roster): those without a file are reported missing.

    Returns:
        What was imported, ignored and why (also saved in ``grading/<lab>.json``).
    """
    course = Path(course)
    release = course / "labs" / lab
    notebooks = sorted(p.stem for p in release.glob("*.ipynb"))
    if not notebooks:
        raise ValueError(f"no released notebooks in {release}: run the release step first")
    result = Imported(lab=lab)
    with tempfile.TemporaryDirectory() as tmp:
        top = _extract(Path(source), Path(tmp)) if Path(source).suffix == ".zip" else Path(source)
        files = sorted(p for p in top.rglob("*.ipynb")
                       if ".ipynb_checkpoints" not in p.parts and "__MACOSX" not in p.parts)
        by_student: dict[str, list[Path]] = {}
        for path in files:
            student = student_of(path, top, lab, notebooks)
            if student:
                by_student.setdefault(student, []).append(path)
            else:
                result.unmatched.append(str(path.relative_to(top)))
        for student, paths in sorted(by_student.items()):
            chosen: dict[str, Path] = {}
            for path in sorted(paths, key=lambda p: (p.stat().st_mtime, p.name)):  # the newest last
                name = notebook_for(path, notebooks)
                if name in chosen:
                    result.ignored.setdefault(student, []).append(str(chosen[name].relative_to(top)))
                chosen[name] = path
            dest = course / "submitted" / student / lab
            if dest.exists():
                shutil.rmtree(dest)
            problems = []
            for name, path in chosen.items():
                problem = _readable(path)
                if problem:
                    problems.append(problem)
                    continue
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest / f"{name}.ipynb")  # copyfile: the original is only read
                result.imported[student] = str(path.relative_to(top))
            if problems:
                result.problems[student] = "; ".join(problems)
    for student in students or []:
        if student not in by_student:
            result.problems[student] = "no notebook submitted"
    record_import(course, result)
    return result


def record_import(course: Path, result: Imported) -> None:
    path = Path(course) / "grading" / f"{result.lab}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data["import"] = asdict(result)
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


def zero_unreadable(course: Path, lab: str, problems: dict[str, str], db_url: str | None = None) -> None:
    """Give students whose submission could not be read 0 points (with the gradebook lock)."""
    from dlcourse_tools.grading.autograde import Options, gradebook

    if not problems:
        return
    with gradebook(course, Options(db_url=db_url)) as gb:
        for student in problems:
            gb.update_or_create_student(student)
            submission = gb.update_or_create_submission(lab, student)
            for nb in submission.notebooks:
                for grade in nb.grades:
                    grade.auto_score = 0
                    grade.manual_score = None
                    grade.needs_manual_grade = False
        gb.db.commit()


def read_record(course: Path, lab: str) -> dict[str, Any]:
    path = Path(course) / "grading" / f"{lab}.json"
    return json.loads(path.read_text()) if path.is_file() else {}
