"""Feedback for students: each test's name, points and failure message, never the hidden tests.

nbgrader's ``generate_feedback`` renders the autograded notebook, hidden tests included, and
Python tracebacks quote the failing lines of a test (nbgrader issues #917 and #1363). Here the
:class:`HideHiddenTests` preprocessor runs first: every test cell shows the source the student
was given (the released notebook's), and every error keeps only its one-line message, for
example ``CheckError: sigmoid(x) for torch.float64 x of shape (5, 2): values differ at (3, 1):
expected 0.731059, got 0.5``. nbgrader's template adds each test's name and points.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Unicode

HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?^[ \t]*### END HIDDEN TESTS[^\n]*\n?", re.S | re.M)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def visible_source(source: str) -> str:
    """A test cell's source without its hidden block (markers included)."""
    return HIDDEN.sub("", source).rstrip() + "\n"


class HideHiddenTests(NbGraderPreprocessor):
    """Show the released source of each test cell and only one-line error messages."""

    release_directory = Unicode("labs", help="the released notebooks, relative to the course").tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any]) -> tuple[NotebookNode, dict[str, Any]]:
        info = resources["nbgrader"]
        release = Path(self.release_directory) / info["assignment"] / f"{info['notebook']}.ipynb"
        released = {}
        if release.is_file():
            released = {c.metadata["nbgrader"]["grade_id"]: c.source for c in nbformat.read(release, as_version=4).cells
                        if c.metadata.get("nbgrader", {}).get("grade")}
        for cell in nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade") and cell.cell_type == "code":
                cell.source = released.get(meta.get("grade_id"), visible_source(cell.source))
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    out["traceback"] = [f"{out['ename']}: {ANSI.sub('', str(out['evalue']))}"]
        return nb, resources


def generate_feedback(course: Path, lab: str, students: list[str] | None = None) -> list[Path]:
    """Write ``feedback/<student>/<lab>/<notebook>.html`` for each autograded student."""
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import GetGrades

    from dlcourse_tools.grading.autograde import Options, install_gradebook_lock, nbgrader_config

    course = Path(course).resolve()
    config = nbgrader_config(course, Options())
    config.GenerateFeedback.preprocessors = [HideHiddenTests, GetGrades, CSSHTMLHeaderPreprocessor]
    config.HideHiddenTests.release_directory = config.RestoreMetadata.release_directory
    install_gradebook_lock(course / ".gradebook.lock")
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    students = students or sorted(p.parent.name for p in (course / "autograded").glob(f"*/{lab}"))
    written = []
    for student in students:
        result = api.generate_feedback(lab, student, force=True)
        if not result.get("success"):
            raise RuntimeError(f"feedback for {student} failed:\n{result.get('error') or result.get('log')}")
        written += sorted((course / "feedback" / student / lab).glob("*.html"))
    return written
