"""The course folder as every grading step sees it: its nbgrader settings, the gradebook behind one lock, release.

Everything here is shared by the steps (:mod:`~dlcourse_tools.grading.submissions`,
:mod:`~dlcourse_tools.grading.autograde`, :mod:`~dlcourse_tools.grading.feedback`,
:mod:`~dlcourse_tools.grading.report`), so none of them imports another for it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

COURSE_ID = "dlcourse"


def course_config(course: Path) -> dict[str, Any]:
    """The course's ``CourseDirectory`` settings from ``nbgrader_config.py`` (folders, course id, gradebook URL)."""
    from traitlets.config.loader import PyFileConfigLoader

    found: dict[str, Any] = {"source_directory": "source", "release_directory": "release", "course_id": COURSE_ID,
                             "db_url": None}
    if (Path(course) / "nbgrader_config.py").is_file():
        config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
        found.update({k: v for k, v in config.get("CourseDirectory", {}).items() if k in found})
    return found


def db_url_of(course: Path, db: Any = None) -> str:
    """The gradebook URL: ``db`` (a URL, or options with a ``db_url``), else ``sqlite:///<course>/gradebook.db``."""
    url = getattr(db, "db_url", db)
    return url or f"sqlite:///{Path(course).resolve() / 'gradebook.db'}"


_held: dict[str, list[Any]] = {}


@contextlib.contextmanager
def gradebook_lock(course: Path) -> Iterator[None]:
    """Hold the course's gradebook lock (``.gradebook.lock``, flock); re-entrant within a process."""
    import fcntl

    path = str(Path(course).resolve() / ".gradebook.lock")
    if path in _held:
        _held[path][1] += 1
        try:
            yield
        finally:
            _held[path][1] -= 1
        return
    handle = open(path, "a+")  # noqa: SIM115 (held for the block)
    fcntl.flock(handle, fcntl.LOCK_EX)
    _held[path] = [handle, 1]
    try:
        yield
    finally:
        del _held[path]
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


@contextlib.contextmanager
def gradebook(course: Path, db: Any = None) -> Iterator[Any]:
    """An open ``nbgrader.api.Gradebook`` of the course, with the gradebook lock held.

    Args:
        course: the course folder.
        db: the gradebook URL, or options with a ``db_url`` (default: the course's SQLite file).
    """
    import warnings

    from nbgrader.api import Gradebook

    with gradebook_lock(course), warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="nbgrader")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        with Gradebook(db_url_of(course, db), course_id=COURSE_ID) as gb:
            yield gb


def release(course: Path, lab: str) -> None:
    """``nbgrader generate_assignment LAB --force``: the student version into the release folder."""
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", lab, "--force", "--log-level=WARN"],
                   cwd=course, env=env, check=True)
