"""Feedback that runs no student script and shows no hidden test (issue 17), and the plain nbgrader commands (issue 21).

Unit tests of :func:`dlcourse_tools.grading.feedback.sanitize_notebook` on hand-made notebooks,
then one tiny course (a lab with one answer and one test cell with hidden tests, no torch)
driven by the *plain* nbgrader commands with the course's ``nbgrader_config.py`` and a PATH
without the virtual environment, as an instructor who did not activate it would run them:
``generate_assignment`` must work (it failed on 'alembic'), ``autograde`` must not warn about
the checksum of every released test cell, ``generate_feedback`` must show no hidden test and
no student HTML; then the course's :func:`generate_feedback`: parallel pages with a time
limit, a plain page where rendering fails, and the sanitized notebook written back to
``autograded/`` for the formgrader.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dlcourse_tools.grading.feedback import (CSP, MAX_MARKDOWN_CHARS, MAX_NOTEBOOK_OUTPUT_CHARS, MAX_OUTPUT_CHARS,
                                             REDACTED, clean_markdown, failed_pages, generate_feedback, hidden_lines,
                                             sanitize_notebook)

ROOT = Path(__file__).resolve().parents[1]
LAB = "lab01_tiny"
SECRET = "secret_reference_check"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(32)).decode()
v4 = nbformat.v4


def out_text(nb) -> str:
    return json.dumps([c.get("outputs", []) for c in nb.cells])


# ---------------------------------------------------------------------------------------------
# sanitize_notebook on hand-made notebooks
# ---------------------------------------------------------------------------------------------

def evil_outputs() -> list:
    return [
        v4.new_output("display_data", data={"text/html": "<script>steal()</script>", "text/plain": "<HTML>"}),
        v4.new_output("display_data", data={"application/javascript": "steal()"}),
        v4.new_output("display_data", data={"image/svg+xml": "<svg onload='steal()'/>"}),
        v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "m"}}),
        v4.new_output("display_data", data={"text/markdown": "<img src=x onerror=steal()>"}),
        v4.new_output("execute_result", data={"text/latex": "$x$", "image/png": PNG}, execution_count=3),
        v4.new_output("display_data", data={"image/png": base64.b64encode(b"<script>").decode()}),
    ]


def test_only_plain_text_and_real_images_are_kept() -> None:
    nb = v4.new_notebook(cells=[v4.new_raw_cell("<script>steal()</script>"), v4.new_code_cell("x", outputs=evil_outputs())])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nb = sanitize_notebook(nb)
    nbformat.validate(nb)
    assert [c.cell_type for c in nb.cells] == ["code"] and "widgets" not in nb.metadata
    mimes = [sorted(o["data"]) for o in nb.cells[0].outputs]
    assert mimes == [["text/plain"], ["text/plain"], ["text/plain"], ["text/plain"], ["text/plain"],
                     ["image/png", "text/plain"], ["text/plain"]]
    assert nb.cells[0].outputs[5]["data"]["image/png"] == PNG
    text = out_text(nb)
    assert "steal()" not in text and "onerror" not in text
    assert "application/javascript" in text  # the note says what was not shown


def test_errors_keep_one_line_and_sizes_are_capped() -> None:
    error = v4.new_output("error", ename="ValueError", evalue="bad\x1b[31m value", traceback=["x" * 1000] * 30)
    big = v4.new_output("stream", name="stdout", text="y" * 50_000)
    many = [v4.new_output("stream", name="stdout", text="z" * 9_000) for _ in range(40)]
    nb = v4.new_notebook(cells=[v4.new_code_cell("a" * 300_000, outputs=[error, big, *many]),
                                v4.new_markdown_cell("m" * 100_000)])
    nb = sanitize_notebook(nb)
    outs = nb.cells[0].outputs
    assert outs[0]["traceback"] == ["ValueError: bad value"]
    assert len(outs[1]["text"]) < MAX_OUTPUT_CHARS + 200 and "not shown" in outs[1]["text"]
    assert sum(len(o.get("text", "")) for o in outs) < MAX_NOTEBOOK_OUTPUT_CHARS + 500
    assert len(nb.cells[1].source) < MAX_MARKDOWN_CHARS + 200 and len(nb.cells[0].source) < 100_200


def test_hidden_tests_never_reach_the_outputs() -> None:
    instructor = f"check(f)\n### BEGIN HIDDEN TESTS\nexpected = reference_value(seed=7)\nassert f(7) == expected, '{SECRET}'\n### END HIDDEN TESTS\n"
    history = repr(["", "def f(x): return x", instructor])  # print(In) or print(_ih): newlines as \n
    outputs = [v4.new_output("stream", name="stdout", text=history + "\n"),
               v4.new_output("stream", name="stdout", text="### BEGIN HIDDEN TESTS\nassert f(1) == 1, 'cut off"),
               v4.new_output("stream", name="stdout", text="    expected = reference_value(seed=7)\n"),  # a quoted line
               v4.new_output("error", ename="RuntimeError", evalue=f"leak: assert f(7) == expected, '{SECRET}'",
                             traceback=[]),
               v4.new_output("error", ename="CheckError", evalue="f(7): expected 14, got 7", traceback=[]),
               v4.new_output("execute_result", data={"text/plain": repr(instructor)}, execution_count=1)]
    nb = v4.new_notebook(cells=[v4.new_code_cell(instructor, outputs=outputs)])
    hidden = hidden_lines([instructor])
    assert "expected = reference_value(seed=7)" in hidden
    nb = sanitize_notebook(nb, hidden)
    text = out_text(nb) + nb.cells[0].source
    for leak in (SECRET, "reference_value", "BEGIN HIDDEN", "cut off"):
        assert leak not in text, f"{leak!r} in {text}"
    assert REDACTED in text and "def f(x)" in text and nb.cells[0].source == "check(f)\n"
    assert nb.cells[0].outputs[4]["traceback"] == ["CheckError: f(7): expected 14, got 7"]  # a test's message stays


UNSAFE_MARKDOWN = [
    "<img src=x onerror=steal()>", "<script>steal()</script>", "[a](javascript:steal())", "[a](jav&#x61;script:steal())",
    "<javascript:steal()>", "[r]: javascript:steal()\n\n[x][r]", "<a href=' JaVaScRiPt:steal()'>x</a>",
    "<svg><script>steal()</script></svg>", "<iframe src=https://x.org></iframe>", "<div>\n`<img src=x onerror=steal()>`\n</div>",
    "\\`<img src=x onerror=steal()>`", "<style>body{display:none}</style>", "<form action=https://x.org><input></form>",
    "<a href=x style='position:fixed'>x</a>", "![i](javascript:steal())", "<object data=x.swf></object>",
    "<img src=/api/contents/secret>", "![i](https://tracker.example/pixel.png)", "![i](../../files/x.png)",
]
SAFE_MARKDOWN = ["# Title\n\nplain `a<b` text & stuff $x<y$ **bold** [ok](https://x.org)", "<b>bold</b> and <br> line",
                 "![plot](attachment:plot.png)",
                 "| a | b |\n|:-:|---|\n| 1 | 2 |", "- [ ] task\n- [x] done", "```python\nif a < b:\n    pass\n```"]


@pytest.mark.parametrize("source", UNSAFE_MARKDOWN)
def test_markdown_renders_without_anything_that_runs(source: str) -> None:
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    cleaned = clean_markdown(source)
    rendered = MarkdownWithMath(renderer=IPythonRenderer(escape=False)).render(cleaned)
    assert not re.search(r"<(script|iframe|svg|style|form|object|embed)\b", rendered, re.I), rendered
    assert not re.search(r"<[^>]*(\son\w+\s*=|(href|src)\s*=\s*[\"']?\s*javascript:|\sstyle\s*=)", rendered, re.I), rendered
    assert not re.search(r"<img[^>]*\ssrc=\"(?!data:image/)", rendered), rendered  # nothing fetched on opening


@pytest.mark.parametrize("source", SAFE_MARKDOWN)
def test_safe_markdown_is_left_as_written(source: str) -> None:
    assert clean_markdown(source, {"plot.png": {"image/png": PNG}}) == source


def test_sanitizing_is_idempotent_and_html_export_is_inert() -> None:
    from nbconvert import HTMLExporter

    cells = [v4.new_markdown_cell(s) for s in UNSAFE_MARKDOWN]
    cells.append(v4.new_code_cell("print(1)", outputs=evil_outputs()))
    once = sanitize_notebook(v4.new_notebook(cells=cells))
    twice = sanitize_notebook(copy.deepcopy(once))
    assert twice == once
    page, _ = HTMLExporter(template_name="classic").from_notebook_node(once)  # the formgrader does not sanitize
    assert not re.search(r"<script>steal|\sonerror=|\sonload=|href=\"javascript:|<iframe", page, re.I)


# ---------------------------------------------------------------------------------------------
# A tiny course through the plain nbgrader commands, then the course's feedback
# ---------------------------------------------------------------------------------------------

def grade_meta(**kw) -> dict:
    return {"nbgrader": {"schema_version": 3, "solution": False, "grade": False, "locked": False, **kw}}


def source_notebook():
    answer = v4.new_code_cell("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
                              metadata=grade_meta(solution=True, grade_id="answer"))
    test = v4.new_code_cell("assert double(2) == 4\nprint('visible check passed')\n### BEGIN HIDDEN TESTS\n"
                            f"assert double(21) == 42, '{SECRET}'\n### END HIDDEN TESTS",
                            metadata=grade_meta(grade=True, locked=True, points=2, grade_id="test_double"))
    return v4.new_notebook(cells=[v4.new_markdown_cell("# A tiny lab"), answer, test],
                           metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})


def plain(course: Path, *args: str) -> subprocess.CompletedProcess:
    """A plain nbgrader command, as run by an instructor who did not activate the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTEST", "COV_"))}
    env["PATH"] = "/usr/bin:/bin"
    env["PYTHONPATH"] = ""
    return subprocess.run([sys.executable, "-m", "nbgrader", *args, "--force"], cwd=course, env=env,
                          capture_output=True, text=True, timeout=300)


EVIL_CELLS = [
    v4.new_code_cell("print(In)\nprint(_ih)\nget_ipython().run_line_magic('history', '')"),
    v4.new_code_cell("from IPython.display import HTML, Javascript, display\n"
                     "display(HTML(\"<script>document.title='pwned'</script><b>x</b>\"))\n"
                     "display(Javascript(\"document.title='pwned'\"))\nprint('A' * 50000)"),
    v4.new_markdown_cell("<img src=x onerror=\"document.title='pwned'\"> [click](javascript:void(document.title='pwned'))"),
    v4.new_raw_cell("<script>document.title='pwned'</script>"),
]


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory) -> dict:
    course = tmp_path_factory.mktemp("plain") / "course"
    (course / "solutions" / LAB).mkdir(parents=True)
    shutil.copy2(ROOT / "nbgrader_config.py", course)
    nbformat.write(source_notebook(), course / "solutions" / LAB / f"{LAB}.ipynb")
    generate = plain(course, "generate_assignment", LAB)
    info = {"course": course, "generate": generate}
    if generate.returncode:
        return info
    release = nbformat.read(course / "labs" / LAB / f"{LAB}.ipynb", as_version=4)
    honest = copy.deepcopy(release)
    honest.cells[1].source = "def double(x):\n    return 2 * x"
    edited = copy.deepcopy(honest)
    edited.cells[2].source = "print('I edited the test')"
    evil = copy.deepcopy(honest)
    evil.cells += copy.deepcopy(EVIL_CELLS)
    for student, nb in {"honest": honest, "edited": edited, "evil": evil}.items():
        folder = course / "submitted" / student / LAB
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{LAB}.ipynb")
    info["autograde"] = plain(course, "autograde", LAB)
    info["feedback"] = plain(course, "generate_feedback", LAB)
    if info["autograde"].returncode == 0:  # two more students graded like evil, for the failure paths
        from nbgrader.api import Gradebook

        with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id="dlcourse") as gb:
            for student in ("slow", "crash"):
                shutil.copytree(course / "autograded" / "evil", course / "autograded" / student)
                gb.add_student(student)
                for grade in gb.add_submission(LAB, student).notebooks[0].grades:
                    grade.auto_score = 2
            gb.db.commit()
    return info


@pytest.mark.slow  # runs nbgrader (about a minute for the module)
def test_plain_generate_assignment_works_without_the_environment_on_path(course: dict) -> None:
    generate = course["generate"]
    assert generate.returncode == 0, generate.stderr[-2000:]
    released = (course["course"] / "labs" / LAB / f"{LAB}.ipynb").read_text()
    assert "visible check passed" in released and SECRET not in released


def segments(log: str) -> dict[str, str]:
    """The autograde log of each student."""
    parts = re.split(r"(?=\[AutogradeApp \| INFO\] Creating/updating student with ID ')", log)
    return {m.group(1): part for part in parts if (m := re.search(r"with ID '([^']+)'", part))}


@pytest.mark.slow  # runs nbgrader (about a minute for the module)
def test_plain_autograde_warns_only_about_an_edited_test(course: dict) -> None:
    from nbgrader.api import Gradebook

    run = course.get("autograde")
    assert run is not None and run.returncode == 0, (run.stderr[-3000:] if run else course["generate"].stderr[-2000:])
    logs = segments(run.stderr)
    assert set(logs) >= {"honest", "edited", "evil"}, run.stderr[-3000:]
    for student in ("honest", "evil"):
        assert "checksum" not in logs[student], logs[student]
    assert "Attribute 'checksum' for cell test_double has changed" in logs["edited"]
    with Gradebook(f"sqlite:///{course['course'] / 'gradebook.db'}", course_id="dlcourse") as gb:
        scores = {s.student.id: s.score for s in gb.find_assignment(LAB).submissions}
    assert {s: scores[s] for s in ("honest", "edited", "evil")} == {"honest": 2, "edited": 2, "evil": 2}


def feedback_page(course: Path, student: str) -> str:
    return (course / "feedback" / student / LAB / f"{LAB}.html").read_text(encoding="utf-8")


INJECTED = re.compile(r"<script>document\.title|\sonerror=|href=\"javascript:|document\.title='pwned'\s*\)?\s*</script>",
                      re.I)


@pytest.mark.slow  # runs nbgrader (about a minute for the module)
def test_plain_generate_feedback_shows_no_hidden_test_and_runs_nothing(course: dict) -> None:
    run = course.get("feedback")
    assert run is not None and run.returncode == 0, (run.stderr[-3000:] if run else "no autograde")
    for student in ("honest", "evil"):
        page = feedback_page(course["course"], student)
        assert "visible check passed" in page  # the visible test and its output are shown
        assert SECRET not in page and "BEGIN HIDDEN TESTS" not in page, student
        assert not INJECTED.search(page), INJECTED.search(page)
        assert "A" * 10_001 not in page


@pytest.mark.slow  # runs nbgrader (about a minute for the module)
def test_generate_feedback_renders_in_parallel_and_sanitizes_autograded(course: dict) -> None:
    root = course["course"]
    if course.get("autograde") is None or course["autograde"].returncode:
        pytest.fail("the plain autograde of the fixture failed")
    pages = generate_feedback(root, LAB, ["honest", "edited", "evil"], workers=2, timeout=120)
    assert [p.parent.parent.name for p in pages] == ["edited", "evil", "honest"]
    assert failed_pages(root, LAB) == {}
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert CSP in text.split("</head>")[0]  # no script can run, whatever slipped through
        assert SECRET not in text and not INJECTED.search(text) and "Score" in text
    evil = nbformat.read(root / "autograded" / "evil" / LAB / f"{LAB}.ipynb", as_version=4)
    assert "raw" not in [c.cell_type for c in evil.cells]
    shown = out_text(evil) + json.dumps([c.source for c in evil.cells if c.cell_type == "markdown"])
    assert SECRET not in json.dumps(evil) and "[click](#removed-link)" in shown  # In, _ih, %history redacted
    assert "onerror" not in shown and "javascript:" not in shown and "<script>" not in shown
    assert not any(m in shown for m in ('"text/html"', '"application/javascript"'))
    assert len(shown) < 20_000  # the 50 000 printed A's were capped


@pytest.mark.slow  # runs nbgrader (about a minute for the module)
def test_a_page_that_cannot_be_rendered_gets_a_plain_page_and_is_still_sanitized(course: dict) -> None:
    root = course["course"]
    if course.get("autograde") is None or course["autograde"].returncode:
        pytest.fail("the plain autograde of the fixture failed")
    pages = generate_feedback(root, LAB, ["slow"], timeout=0)  # over its time limit at once
    pages += generate_feedback(root, LAB, ["crash"], memory_mb=0)  # no memory to spare: fails at once
    assert [p.parent.parent.name for p in pages] == ["slow", "crash"]
    failed = failed_pages(root, LAB)
    assert set(failed) == {"slow", "crash"} and "longer than 0 s" in failed["slow"], failed
    for student in ("slow", "crash"):
        page = feedback_page(root, student)
        assert "could not be rendered" in page and "test_double" in page and "2 / 2" in page, page
        assert CSP in page and "<script" not in page
        nb = nbformat.read(root / "autograded" / student / LAB / f"{LAB}.ipynb", as_version=4)
        shown = out_text(nb) + json.dumps([c.source for c in nb.cells if c.cell_type == "markdown"])
        assert SECRET not in json.dumps(nb) and "onerror" not in shown and '"text/html"' not in shown, student


@pytest.mark.slow  # runs nbgrader (about a minute for the module)
def test_the_feedback_command_names_the_pages_it_could_not_render(course: dict, capsys: pytest.CaptureFixture) -> None:
    from dlcourse_tools.grade import main

    root = course["course"]
    if course.get("autograde") is None or course["autograde"].returncode:
        pytest.fail("the plain autograde of the fixture failed")
    assert main(["--course", str(root), "feedback", LAB, "--student", "slow", "--timeout", "0"]) == 0
    out = capsys.readouterr().out
    assert "wrote 1 feedback files" in out and "1 could not be rendered (a plain page says so): slow" in out, out
