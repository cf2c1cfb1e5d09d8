"""Import submissions as an LMS or Colab gives them into nbgrader's ``submitted/`` layout.

Input: a folder or a ``.zip`` with one notebook per student, either flat (the student's name
or ID in the file name) or one sub-folder per student. File names recognised, besides the
plain ``<student>_<lab>.ipynb`` / ``<lab>_<student>.ipynb``:

- Moodle: ``Jane Doe_123456_assignsubmission_file_/lab01_perceptron.ipynb`` (or flat, with
  the folder's name as prefix) -> ``123456`` (name "Jane Doe");
- Canvas: ``doejane_123456_7890_lab01_perceptron-1.ipynb`` (``_LATE_`` allowed) -> ``123456``;
- Blackboard: ``lab01_perceptron_jdoe42_attempt_2026-10-01-12-00-00_lab01.ipynb`` -> ``jdoe42``;
- Google Classroom / Colab: ``Copy of lab01_perceptron - Jane Doe.ipynb`` -> ``jane_doe``.

**Student identity is kept exactly.** Each file gives the student's *key*: the LMS's ID where
it has one (Moodle, Canvas, Blackboard), otherwise the name, Unicode-normalised (NFC, so a name
from a macOS zip, stored decomposed, is the same name) with runs of spaces and underscores made
one space. The nbgrader student ID (also a folder name) is made from the key by
:func:`student_id`: the ASCII slug when the key is plain ASCII letters and digits with single
separators (``Jane Doe`` -> ``jane_doe``, ``123456`` -> ``123456``), otherwise the slug (accents
dropped, possibly empty) plus ``_`` and 8 hex digits of the SHA-256 of the key: ``Zoë Li`` ->
``zoe_li_b276f818``, ``Zoé Li`` -> ``zoe_li_b4da14db``, ``李小龙`` -> ``student_535320da``. So
every script works and distinct keys get distinct IDs. Two distinct keys that would still share
an ID (``Jane Doe`` and ``jane-doe``, or a new name whose ID an earlier import gave someone
else) are a *collision*: both are graded, never merged, each new one under its hashed ID, and
the collision is listed in the import's result, ``grading/<lab>.json`` and the report.
Keys and IDs are remembered in ``grading/students.json``, so a student keeps the same ID in
every lab.

The display name the LMS gives (Moodle's and Google's names, a folder's or file's name unless it
is written as an ID, like ``jdoe``) is stored in
nbgrader's gradebook (``first_name``/``last_name``: the last word is the last name, or what
comes before a comma) and in ``grading/students.json`` as given; ``grades.csv`` carries both.

The originals are only read. Each submission is copied to
``submitted/<student>/<lab>/<notebook>.ipynb`` (the name the lab's notebook has, whatever the
student renamed it to). Notebooks that are not valid JSON, students with no notebook and
students with several notebooks for one (the most recently modified is kept) are reported in
``grading/<lab>.json``; the grader gives a student without a readable notebook 0 points with
the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import unicodedata
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nbformat

PATTERNS = (  # (LMS, regex with a `student` group and maybe a `name` group), tried in order on the file or folder name
    ("moodle", re.compile(r"^(?P<name>[^_/]+)_(?P<student>\d+)_assign(?:submission|ment)_\w*?(?:_|$)")),
    ("canvas", re.compile(r"^(?P<name>[^\W\d_]+)(?:_LATE)?_(?P<student>\d+)_\d+_")),
    ("blackboard", re.compile(r"_(?P<student>[^_/\s]+)_attempt_\d{4}-\d{2}-\d{2}")),
    ("google", re.compile(r"^(?:Copy of )?.+? - (?P<student>(?P<name>[^/]+?))(?: \(\d+\))?\.ipynb$")),
)
NOISE = re.compile(r"(?i)(copy of|\(\d+\)|-\d+$|submission|final|attempt|late|notebook)")
PLAIN_KEY = re.compile(r"[A-Za-z0-9]+(?:[ _.\-][A-Za-z0-9]+)*")  # keys whose slug is their ID (no hash)
MAX_SLUG = 40
REGISTRY = "students.json"


@dataclass
class Imported:
    """What the import did for one lab."""

    lab: str
    imported: dict[str, str] = field(default_factory=dict)  # student -> original file
    ignored: dict[str, list[str]] = field(default_factory=dict)  # student -> older duplicates
    problems: dict[str, str] = field(default_factory=dict)  # student -> why nothing was imported
    unmatched: list[str] = field(default_factory=list)  # files no student could be read from
    names: dict[str, str] = field(default_factory=dict)  # student -> display name (as the LMS wrote it)
    keys: dict[str, str] = field(default_factory=dict)  # student -> the exact key the ID was made from
    collisions: dict[str, list[str]] = field(default_factory=dict)  # shared ID -> the distinct keys kept apart


def normalise(text: str) -> str:
    """A key as compared: NFC, runs of white space made one space, no leading or trailing space."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


def slug(text: str) -> str:
    """ASCII lower case, digits and ``_`` (accents dropped, other scripts dropped): may lose information."""
    ascii_text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    ascii_text = ascii_text.encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", ascii_text.strip().lower()).strip("_")


def hashed_id(key: str, digits: int = 8) -> str:
    """``<slug>_<hash>`` (``student_<hash>`` when the slug is empty): unique to the exact key."""
    base = slug(key)[:MAX_SLUG].strip("_") or "student"
    return f"{base}_{hashlib.sha256(normalise(key).encode('utf-8')).hexdigest()[:digits]}"


def student_id(key: str) -> str:
    """The preferred nbgrader student ID of a key (a safe folder name: ``[a-z0-9_]``, at most 49 chars).

    The slug when it keeps everything but case and single separators, otherwise
    :func:`hashed_id`. (Collisions between keys are resolved by :func:`assign_ids`.)
    """
    key = normalise(key)
    if PLAIN_KEY.fullmatch(key) and len(key) <= MAX_SLUG:
        return slug(key)
    return hashed_id(key)


def split_name(name: str) -> tuple[str, str]:
    """(first name, last name) from a display name: ``"Doe, Jane"`` or ``"Jane Doe"``; one word is a last name."""
    name = normalise(name)
    if "," in name:
        last, first = (part.strip() for part in name.split(",", 1))
        return first, last
    first, _, last = name.rpartition(" ")
    return first, last


def load_registry(course: Path) -> dict[str, Any]:
    """``grading/students.json``: ``keys`` (key -> ID), ``reserved`` (IDs shared by colliding keys), ``names``."""
    path = Path(course) / "grading" / REGISTRY
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return {"keys": dict(data.get("keys", {})), "reserved": sorted(set(data.get("reserved", []))),
            "names": dict(data.get("names", {}))}


def save_registry(course: Path, registry: dict[str, Any]) -> None:
    path = Path(course) / "grading" / REGISTRY
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(registry, indent=1, sort_keys=True, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def assign_ids(keys: list[str], registry: dict[str, Any]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The student ID of every key, and the collisions found, updating ``registry`` in place.

    A key seen before keeps its ID. A new key gets :func:`student_id` unless another key already
    has that ID, another new key wants it, or it was reserved by an earlier collision: then each
    new key that wants it gets its own hashed ID, the ID is reserved, and the collision
    (the ID -> every key that wanted it) is returned. Two keys never get one ID.
    """
    known: dict[str, str] = registry["keys"]
    reserved = set(registry["reserved"])
    taken = {sid: key for key, sid in known.items()}
    wanted: dict[str, list[str]] = {}
    for key in dict.fromkeys(normalise(k) for k in keys):
        if key not in known:
            wanted.setdefault(student_id(key), []).append(key)
    collisions: dict[str, list[str]] = {}
    for sid, group in sorted(wanted.items()):
        if len(group) == 1 and sid not in taken and sid not in reserved:
            known[group[0]] = taken[sid] = sid
            continue
        reserved.add(sid)
        collisions[sid] = sorted({*group, *(k for k in known if student_id(k) == sid)})
        for key in group:
            for digits in (8, 16, 64):  # a longer hash in the (unlikely) case the short one is taken
                candidate = hashed_id(key, digits)
                if candidate not in taken and candidate not in wanted:
                    break
            known[key] = taken[candidate] = candidate
    registry["reserved"] = sorted(reserved)
    return {normalise(k): known[normalise(k)] for k in keys}, collisions


def identify(path: Path, top: Path, lab: str, notebooks: list[str]) -> tuple[str, str] | None:
    """(key, display name) of the student a submitted file belongs to, from its folder or file name."""
    rel = path.relative_to(top)
    names = [rel.parts[0]] if len(rel.parts) > 1 else []
    names.append(path.name)
    for name in names:
        for _, pattern in PATTERNS:
            m = pattern.search(name)
            if m and normalise(m.group("student")):
                display = m.groupdict().get("name") or ""
                return normalise(m.group("student")), normalise(display)
    if len(rel.parts) > 1:  # one folder per student
        key = normalise(re.sub(r"_+", " ", rel.parts[0]))
    else:
        stem = path.stem
        for word in sorted({lab, *notebooks}, key=len, reverse=True):
            stem = stem.replace(word, " ")
        stem = NOISE.sub(" ", stem)
        key = normalise(re.sub(r"_+", " ", stem)).strip(" -.")
    if not re.search(r"\w", key):
        return None
    return key, ("" if student_id(key) == key else key)  # `jdoe` is an ID, `Jane Doe` a name


def student_of(path: Path, top: Path, lab: str, notebooks: list[str]) -> str | None:
    """The preferred student ID of a submitted file (without collision handling; see :func:`assign_ids`)."""
    found = identify(path, top, lab, notebooks)
    return student_id(found[0]) if found else None


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
            if not target.is_relative_to(into.resolve()):
                raise ValueError(f"{archive.name}: unsafe path in the archive: {info.filename!r}")
        z.extractall(into)
    return into


def import_submissions(source: Path, course: Path, lab: str, students: list[str] | None = None,
                       db_url: str | None = None, gradebook: bool = True) -> Imported:
    """Copy the submissions in ``source`` (a folder or a zip) to ``course/submitted/``.

    Args:
        source: what the LMS gave: a folder or a ``.zip``.
        course: the course folder; the lab's notebooks are read from its ``release`` folder.
        lab: the assignment, e.g. ``"lab01_perceptron"``.
        students: student ids expected (a roster): those without a file are reported missing.
        db_url: the gradebook (default ``sqlite:///<course>/gradebook.db``).
        gradebook: store each student's display name in the gradebook (nbgrader ``Student``).

    Returns:
        What was imported, ignored and why (also saved in ``grading/<lab>.json``).
    """
    course = Path(course)
    source = Path(source)
    if not source.exists():
        raise ValueError(f"no such folder or zip of submissions: {source}")
    release = course / "labs" / lab
    notebooks = sorted(p.stem for p in release.glob("*.ipynb"))
    if not notebooks:
        raise ValueError(f"no released notebooks in {release}: run the release step first")
    result = Imported(lab=lab)
    registry = load_registry(course)
    with tempfile.TemporaryDirectory() as tmp:
        top = _extract(source, Path(tmp)) if source.suffix == ".zip" else source
        files = sorted(p for p in top.rglob("*.ipynb")
                       if ".ipynb_checkpoints" not in p.parts and "__MACOSX" not in p.parts)
        found: dict[Path, tuple[str, str]] = {}
        for path in files:
            who = identify(path, top, lab, notebooks)
            if who:
                found[path] = who
            else:
                result.unmatched.append(str(path.relative_to(top)))
        ids, result.collisions = assign_ids([key for key, _ in found.values()], registry)
        by_student: dict[str, list[Path]] = {}
        for path, (key, display) in found.items():
            student = ids[key]
            by_student.setdefault(student, []).append(path)
            result.keys[student] = key
            if display or student not in result.names:
                result.names[student] = display or result.names.get(student, "")
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
    for student, name in result.names.items():
        if name:
            registry["names"][student] = name
    save_registry(course, registry)
    record_import(course, result)
    if gradebook:
        store_names(course, {s: n for s, n in result.names.items() if n}, db_url)
    return result


def store_names(course: Path, names: dict[str, str], db_url: str | None = None) -> None:
    """Create or update each student in the gradebook with the display name's first and last name."""
    from dlcourse_tools.grading.course import gradebook

    if not names:
        return
    alembic_on_path()
    with gradebook(course, db_url) as gb:
        for student, name in sorted(names.items()):
            first, last = split_name(name)
            gb.update_or_create_student(student, first_name=first, last_name=last)


def alembic_on_path() -> None:
    """nbgrader runs ``alembic`` by name to create a gradebook: find it next to this Python."""
    here = str(Path(sys.executable).parent)
    if shutil.which("alembic") is None and here not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([here, os.environ.get("PATH", "")])


def record_import(course: Path, result: Imported) -> None:
    path = Path(course) / "grading" / f"{result.lab}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data["import"] = asdict(result)
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


def zero_unreadable(course: Path, lab: str, problems: dict[str, str], db_url: str | None = None) -> None:
    """Give students whose submission could not be read 0 points (with the gradebook lock)."""
    from dlcourse_tools.grading.course import gradebook

    if not problems:
        return
    with gradebook(course, db_url) as gb:
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
