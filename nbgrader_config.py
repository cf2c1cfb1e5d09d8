"""nbgrader configuration: instructor sources in solutions/, student versions released to labs/.

    nbgrader generate_assignment lab01_perceptron --force   # solutions/ -> labs/
    nbgrader autograde lab01_perceptron                     # submitted/ -> autograded/ (see below)
    nbgrader generate_feedback lab01_perceptron             # autograded/ -> feedback/, sanitized

The course's own commands (`make release|import|autograde|feedback|export|report LAB=...`,
i.e. `python -m dlcourse_tools.grade ...`) are the supported path for grading: plain
`nbgrader autograde` runs the hidden tests inside the student's own kernel and takes the
absence of an error there as the verdict, so a submission can buy points (see
book/instructor_guide.md). This file makes the plain commands work cleanly where they can.
"""

import os
import re
import sys

c = get_config()  # noqa: F821 (provided by nbgrader)

c.CourseDirectory.course_id = "dlcourse"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "labs"

# What a student sees in place of the solution.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# A submission that hangs is stopped, graded as far as it got, and reported.
c.ExecutePreprocessor.timeout = 120
c.Execute.timeout = 120

# nbgrader runs `alembic` by name to create the gradebook: without this, a plain
# `nbgrader generate_assignment` fails (FileNotFoundError: 'alembic') unless the environment
# is activated. alembic is installed next to the Python that runs nbgrader.
_bin = os.path.dirname(sys.executable)
if _bin and _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = os.pathsep.join([_bin, os.environ.get("PATH", "")])

# Feedback (plain `nbgrader generate_feedback` and the formgrader): test cells show the
# released source, errors one line, and nothing a student's code displayed can run: see
# dlcourse_tools.grading.feedback (sanitize_notebook). nbconvert's own sanitizer is on too.
c.GenerateFeedback.preprocessors = [
    "dlcourse_tools.grading.feedback.HideHiddenTests",
    "dlcourse_tools.grading.feedback.SanitizeFeedback",
    "nbgrader.preprocessors.GetGrades",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
c.HideHiddenTests.release_directory = "labs"
c.SanitizeFeedback.source_directory = "solutions"
c.HTMLExporter.sanitize_html = True

# Plain `nbgrader autograde`: a test cell as released (its hidden tests removed by the
# release) is the instructor's cell, so it gets its hidden tests back without nbgrader's
# "Attribute 'checksum' ... has changed" warning; an edited test cell still warns and is
# replaced, as before.
try:
    from nbgrader.preprocessors import (CheckCellMetadata, ClearOutput, DeduplicateIds, OverwriteCells,
                                        OverwriteKernelspec)
except ImportError:  # loaded without nbgrader (nothing to configure then)
    OverwriteCells = None

if OverwriteCells is not None:
    _HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?^[ \t]*### END HIDDEN TESTS[^\n]*(\n|\Z)", re.S | re.M)

    class OverwriteReleasedTests(OverwriteCells):
        """nbgrader's OverwriteCells, silent for a locked cell whose source is the released one."""

        def preprocess_cell(self, cell, resources, cell_index):
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "code" and meta.get("grade_id") and meta.get("locked"):
                try:
                    source = self.gradebook.find_source_cell(meta["grade_id"], self.notebook_id,
                                                             self.assignment_id).source
                except Exception:  # noqa: BLE001 (an unknown cell: nbgrader's own handling below)
                    source = None
                if source is not None and _HIDDEN.sub("", source).rstrip() == cell.source.rstrip():
                    cell.source = source
            return super().preprocess_cell(cell, resources, cell_index)

    c.Autograde.sanitize_preprocessors = [ClearOutput, DeduplicateIds, OverwriteKernelspec, OverwriteReleasedTests,
                                          CheckCellMetadata]
