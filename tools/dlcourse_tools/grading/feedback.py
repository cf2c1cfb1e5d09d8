"""Feedback for students: each test's name, points and failure message, never the hidden tests, never a script.

nbgrader's ``generate_feedback`` renders the autograded notebook, hidden tests included, and
Python tracebacks quote the failing lines of a test (nbgrader issues #917 and #1363). It also
renders whatever the student's code displayed (HTML, JavaScript, SVG, widgets) live, in the
feedback page and in the formgrader, which runs in the instructor's authenticated Jupyter.
Here, before anything is rendered:

- :class:`HideHiddenTests` gives every test cell the source the student was given (the released
  notebook's) and keeps only the one-line message of every error, for example ``CheckError:
  sigmoid(x) for torch.float64 x of shape (5, 2): values differ at (3, 1): expected 0.731059,
  got 0.5``. nbgrader's template adds each test's name and points.
- :func:`sanitize_notebook` (also run by the autograder when it writes ``autograded/``, and
  written back there by :func:`generate_feedback` before the formgrader can show it) leaves
  nothing that can run: outputs keep only plain text and PNG/JPEG/GIF images (no ``text/html``,
  JavaScript, SVG, Markdown, LaTeX or widget outputs, no widget state), raw cells are dropped,
  the raw HTML of Markdown cells is cleaned with bleach (tags and attributes from an
  allow-list, links only to ``http``, ``https`` and ``mailto``), and sizes are capped: 10 kB
  per output, 200 kB of output text per notebook, 20 kB per Markdown cell, 100 kB per code
  cell; Markdown images only from the notebook itself. Anything between ``### BEGIN HIDDEN
  TESTS`` and ``### END HIDDEN TESTS`` (in any cell's source or any output, also as printed
  by ``In``, ``_ih`` or ``%history``, where newlines show as ``\\n``) is cut, and so is
  every line of the lab's hidden tests that an output quotes.
- The HTML page is rendered with nbconvert's own sanitizer on and carries a Content Security
  Policy that allows no script at all.

:func:`generate_feedback` renders the pages in parallel, one process per page and at most
``workers`` at a time, each with a time and memory limit. A page that fails or runs out of time
is replaced by a plain page that says so and lists the student's scores from the gradebook; the
failures are recorded in ``grading/<lab>.json`` (``feedback``).
"""

from __future__ import annotations

import base64
import html
import json
import multiprocessing
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nbformat
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Unicode

HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?^[ \t]*### END HIDDEN TESTS[^\n]*\n?", re.S | re.M)
# The same block anywhere in a text, also where newlines are escaped (a printed list of sources),
# and a block whose end was cut off.
HIDDEN_ANYWHERE = re.compile(r"#+\s*BEGIN\s+HIDDEN\s+TESTS.*?(?:#+\s*END\s+HIDDEN\s+TESTS|\Z)", re.S | re.I)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
REDACTED = "[hidden test removed]"

MAX_OUTPUT_CHARS = 10_000  # per output
MAX_NOTEBOOK_OUTPUT_CHARS = 200_000  # all output text of a notebook
MAX_MARKDOWN_CHARS = 20_000  # per Markdown cell
MAX_CODE_CHARS = 100_000  # per code cell
MAX_IMAGE_CHARS = 500_000  # per image (base64)
MAX_NOTEBOOK_IMAGE_CHARS = 2_000_000  # all images of a notebook (base64)
IMAGES = {"image/png": (b"\x89PNG\r\n\x1a\n",), "image/jpeg": (b"\xff\xd8\xff",), "image/gif": (b"GIF87a", b"GIF89a")}
TAGS = ["a", "abbr", "acronym", "b", "blockquote", "br", "code", "div", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
        "i", "img", "kbd", "li", "ol", "p", "pre", "s", "span", "strong", "sub", "sup", "table", "tbody", "td", "th",
        "thead", "tr", "u", "ul", "dl", "dt", "dd", "del", "details", "summary", "center", "font"]
ATTRIBUTES = {"a": ["href", "title"], "img": ["alt", "title", "width", "height"], "td": ["colspan", "rowspan"],
              "th": ["colspan", "rowspan"], "*": ["class"]}
PROTOCOLS = ["http", "https", "mailto"]
# [text](destination) and ![alt](destination), and reference definitions `[label]: destination`
MD_LINK = re.compile(r"(\]\(\s*<?)([^()\s>]*(?:\([^()\s]*\)[^()\s>]*)*)")
MD_REF = re.compile(r"(^[ \t]{0,3}\[[^\]\n]+\]:[ \t]*<?)(\S*)", re.M)
SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*):")
CSP = ("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
       "style-src 'unsafe-inline'; img-src data:; font-src data:\">")


def visible_source(source: str) -> str:
    """A test cell's source without its hidden block (markers included)."""
    return HIDDEN.sub("", source).rstrip() + "\n"


def hidden_lines(sources: Iterable[str], shortest: int = 8) -> list[str]:
    """The lines of the hidden blocks of ``sources`` (the instructor's test cells) worth redacting."""
    lines: set[str] = set()
    for source in sources:
        for block in HIDDEN_ANYWHERE.findall(source):
            for line in block.splitlines()[1:]:
                line = line.strip()
                if len(line) >= shortest and re.search(r"\w", line) and "HIDDEN TESTS" not in line.upper():
                    lines.add(line)
    return sorted(lines, key=len, reverse=True)


def redact(text: str, hidden: Iterable[str] = ()) -> str:
    """``text`` without hidden-test blocks and without any of the ``hidden`` lines (also as ``repr`` shows them)."""
    text = HIDDEN_ANYWHERE.sub(REDACTED, text)
    for line in hidden:
        for form in {line, line.encode("unicode_escape").decode(), line.replace("'", "\\'"),
                     json.dumps(line)[1:-1]}:
            if form in text:
                text = text.replace(form, REDACTED)
    return text


def strip_hidden(source: str) -> str:
    """A cell's source without hidden-test blocks (a cut-off block: to the end)."""
    source = HIDDEN.sub("", source)
    return HIDDEN_ANYWHERE.sub("# " + REDACTED, source) if HIDDEN_ANYWHERE.search(source) else source


def cap(text: str, limit: int, what: str = "output") -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters of this {what} not shown]\n"


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _safe_image(mime: str, data: Any) -> str | None:
    """The base64 data of a PNG/JPEG/GIF image, or None when it is not one (or too large)."""
    data = re.sub(r"\s+", "", _text(data))
    if len(data) > MAX_IMAGE_CHARS:
        return None
    try:
        raw = base64.b64decode(data, validate=True)
    except (ValueError, TypeError):
        return None
    return data if raw.startswith(IMAGES[mime]) else None


class _Audit:
    """Whether HTML (as the Markdown renderer makes it) has only allow-listed tags, attributes and URLs."""

    RENDERED_TAGS = {*TAGS, "input"}  # mistune's task lists
    RENDERED_ATTRIBUTES = {"class", "id", "href", "src", "alt", "title", "width", "height", "colspan", "rowspan",
                           "align", "start", "type", "disabled", "checked", "style"}

    @classmethod
    def safe(cls, rendered: str) -> bool:
        from html.parser import HTMLParser

        problems: list[str] = []

        class Parser(HTMLParser):
            def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
                if tag not in cls.RENDERED_TAGS:
                    problems.append(tag)
                for name, value in attrs:
                    value = value or ""
                    if name not in cls.RENDERED_ATTRIBUTES:
                        problems.append(f"{tag}.{name}")
                    elif name == "style" and not re.fullmatch(r"\s*text-align:\s*(left|right|center)\s*;?\s*", value):
                        problems.append(f"{tag}.style")
                    elif name == "type" and (tag, value) not in (("input", "checkbox"), ("ol", "1"), ("ol", "a"),
                                                                 ("ol", "A"), ("ol", "i"), ("ol", "I")):
                        problems.append(f"{tag}.type")
                    elif name in ("href", "src") and not _safe_url(value, image=(name == "src")):
                        problems.append(f"{tag}.{name}")

            handle_startendtag = handle_starttag

            def handle_pi(self, data: str) -> None:
                problems.append("processing instruction")

            def unknown_decl(self, data: str) -> None:
                problems.append("declaration")

        parser = Parser(convert_charrefs=True)
        parser.feed(rendered)
        parser.close()
        return not problems


def _safe_url(url: str, image: bool = False) -> bool:
    """A link to http(s)/mailto or a relative one; an image only from the notebook itself (a data URL).

    An image from anywhere else would be fetched when the page opens: from the formgrader's
    own server with the instructor's cookies for a relative URL, or from a tracking server.
    """
    url = re.sub(r"[\x00-\x20]+", "", html.unescape(url)).lower()
    if image:
        return bool(re.match(r"data:image/(png|jpeg|gif);base64,", url))
    scheme = SCHEME.match(url)
    return not scheme or scheme.group(1) in PROTOCOLS


def _render_markdown(source: str, attachments: dict[str, Any] | None = None) -> str | None:
    """The HTML nbconvert makes of a Markdown cell (None when it cannot render it)."""
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    try:
        return MarkdownWithMath(renderer=IPythonRenderer(escape=False, attachments=attachments or {})).render(source)
    except Exception:  # noqa: BLE001 (a missing attachment, a parser error: treated as unsafe)
        return None


def clean_markdown(source: str, attachments: dict[str, Any] | None = None) -> str:
    """Markdown that renders to allow-listed HTML only: unchanged where it already does.

    The cell is rendered as nbconvert (and so the formgrader and the feedback) renders it and
    the HTML audited: allow-listed tags and attributes, links to ``http``, ``https`` and
    ``mailto`` only. A cell that fails has its raw HTML cleaned by bleach (disallowed tags shown
    as text) and its unsafe link targets replaced by ``#removed-link``; one that still fails is
    shown as plain text in a code block.
    """
    import bleach

    rendered = _render_markdown(source, attachments)
    if rendered is not None and _Audit.safe(rendered):
        return source
    cleaned = bleach.clean(source, tags=TAGS, attributes=ATTRIBUTES, protocols=PROTOCOLS, strip=False,
                           strip_comments=True)

    def safe(m: re.Match[str]) -> str:
        return m.group(0) if _safe_url(m.group(2)) or m.group(2).startswith("attachment:") else m.group(1) + "#removed-link"

    cleaned = MD_REF.sub(safe, MD_LINK.sub(safe, cleaned))
    rendered = _render_markdown(cleaned, attachments)
    if rendered is not None and _Audit.safe(rendered):
        return cleaned
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", source)), default=0))
    return f"{fence}text\n{source}\n{fence}\n"


def sanitize_notebook(nb: NotebookNode, hidden: Iterable[str] = ()) -> NotebookNode:
    """Make a notebook safe to render for a student or in the instructor's formgrader; returns it (changed in place).

    Raw cells are dropped; Markdown cells keep cleaned HTML only (:func:`clean_markdown`) and
    only PNG/JPEG/GIF attachments; outputs keep plain text (``stream``, ``text/plain``, errors
    as one line ``Name: message``) and PNG/JPEG/GIF images, everything else is replaced by a
    note; widget state goes; sizes are capped (see the module's constants). Hidden-test blocks
    are cut from every source and output; the ``hidden`` lines (the lab's hidden-test lines,
    see :func:`hidden_lines` and :func:`lab_hidden_lines`) from every output. Idempotent.
    The autograder calls it before writing ``autograded/``::

        from dlcourse_tools.grading.feedback import lab_hidden_lines, sanitize_notebook
        nb = sanitize_notebook(nb, lab_hidden_lines(course, lab, notebook_name))
    """
    if not isinstance(nb, NotebookNode):  # a plain dict (json.load): a NotebookNode copy is returned
        nb = nbformat.from_dict(nb)
    hidden = list(hidden)
    nb.metadata.pop("widgets", None)
    budget = {"text": MAX_NOTEBOOK_OUTPUT_CHARS, "images": MAX_NOTEBOOK_IMAGE_CHARS}
    cells = []
    for cell in nb.cells:
        kind = cell.get("cell_type")
        if kind == "markdown":
            attachments = {}
            for name, bundle in (cell.get("attachments") or {}).items():
                kept = {m: d for m, d in bundle.items() if m in IMAGES and _safe_image(m, d)}
                if kept:
                    attachments[name] = kept
            if attachments:
                cell.attachments = attachments
            else:
                cell.pop("attachments", None)
            source = cap(strip_hidden(_text(cell.source)), MAX_MARKDOWN_CHARS, "Markdown cell")
            cell.source = clean_markdown(source, attachments)
            cells.append(cell)
        elif kind == "code":
            cell.source = cap(strip_hidden(_text(cell.source)), MAX_CODE_CHARS, "code cell")
            cell.outputs = [out for out in (_sanitize_output(o, hidden, budget) for o in cell.get("outputs", [])) if out]
            cells.append(cell)
    nb.cells = cells
    return nb


def _note(text: str) -> NotebookNode:
    return nbformat.v4.new_output("stream", name="stdout", text=text)


def _take(text: str, budget: dict[str, int]) -> str | None:
    text = cap(text, MAX_OUTPUT_CHARS)
    if budget["text"] <= 0:
        return None
    if len(text) > budget["text"]:
        text = text[:budget["text"]] + "\n[... output cut: this notebook printed too much to show]\n"
    budget["text"] -= len(text)
    return text


def _sanitize_output(out: NotebookNode, hidden: list[str], budget: dict[str, int]) -> NotebookNode | None:
    kind = out.get("output_type")
    if kind == "stream":
        text = _take(ANSI.sub("", redact(_text(out.get("text", "")), hidden)), budget)
        name = out.get("name") if out.get("name") in ("stdout", "stderr") else "stdout"
        return nbformat.v4.new_output("stream", name=name, text=text) if text is not None else None
    if kind == "error":
        ename = cap(ANSI.sub("", redact(str(out.get("ename", "Error")), hidden)), 200, "error name")
        evalue = _take(ANSI.sub("", redact(str(out.get("evalue", "")), hidden)), budget) or ""
        return nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])
    if kind not in ("display_data", "execute_result"):
        return None
    data: dict[str, Any] = {}
    dropped = []
    for mime, value in (out.get("data") or {}).items():
        if mime == "text/plain":
            text = _take(ANSI.sub("", redact(_text(value), hidden)), budget)
            if text is not None:
                data[mime] = text
        elif mime in IMAGES:
            image = _safe_image(mime, value)
            if image and len(image) <= budget["images"]:
                budget["images"] -= len(image)
                data[mime] = image
            else:
                dropped.append(f"{mime} (not a valid image, or too large)")
        else:
            dropped.append(mime)
    if dropped and "text/plain" not in data:
        data["text/plain"] = f"[output not shown in feedback: {', '.join(sorted(dropped))}]"
    if not data:
        return None
    metadata = {m: {k: v for k, v in meta.items() if k in ("width", "height") and isinstance(v, (int, float))}
                for m, meta in (out.get("metadata") or {}).items() if m in data and isinstance(meta, dict)}
    if kind == "execute_result":
        return nbformat.v4.new_output(kind, data=data, metadata=metadata, execution_count=out.get("execution_count"))
    return nbformat.v4.new_output(kind, data=data, metadata=metadata)


def sanitize_file(path: Path, hidden: Iterable[str] = ()) -> None:
    """Sanitize the notebook at ``path`` in place (written atomically)."""
    nb = sanitize_notebook(nbformat.read(path, as_version=4), hidden)
    tmp = path.with_name(f".{path.name}.sanitizing")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)


def lab_hidden_lines(course: Path, lab: str, notebook: str | None = None, source_directory: str = "solutions") -> list[str]:
    """The hidden-test lines of a lab's instructor notebooks (all of them, or one)."""
    folder = Path(course) / source_directory / lab
    paths = [folder / f"{notebook}.ipynb"] if notebook else sorted(folder.glob("*.ipynb"))
    sources = []
    for path in paths:
        if path.is_file():
            sources += [_text(c.source) for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    return hidden_lines(sources)


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


class SanitizeFeedback(NbGraderPreprocessor):
    """:func:`sanitize_notebook`, with the hidden-test lines of the lab's instructor notebook."""

    source_directory = Unicode("solutions", help="the instructor notebooks, relative to the course").tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any]) -> tuple[NotebookNode, dict[str, Any]]:
        info = resources["nbgrader"]
        return sanitize_notebook(nb, lab_hidden_lines(".", info["assignment"], info["notebook"],
                                                      self.source_directory)), resources


# ---------------------------------------------------------------------------------------------
# Rendering: one process per page, a time and memory limit each
# ---------------------------------------------------------------------------------------------

def feedback_config(course: Path, db_url: str | None = None):
    """The course's ``nbgrader_config.py`` with the feedback preprocessors and the sanitizer on."""
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import GetGrades
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    course = Path(course).resolve()
    config = Config()
    if (course / "nbgrader_config.py").is_file():
        config.merge(PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config())
    directories = config.get("CourseDirectory", {})
    c = Config()
    c.CourseDirectory.root = str(course)
    c.CourseDirectory.course_id = directories.get("course_id", "dlcourse")
    c.CourseDirectory.db_url = db_url or directories.get("db_url") or f"sqlite:///{course / 'gradebook.db'}"
    c.GenerateFeedback.preprocessors = [HideHiddenTests, SanitizeFeedback, GetGrades, CSSHTMLHeaderPreprocessor]
    c.HideHiddenTests.release_directory = str(course / directories.get("release_directory", "release"))
    c.SanitizeFeedback.source_directory = str(course / directories.get("source_directory", "source"))
    c.HTMLExporter.sanitize_html = True  # nbconvert's bleach pass over Markdown and outputs, as a second line
    config.merge(c)
    return config


def protect_page(path: Path) -> None:
    """Give an HTML page a Content Security Policy that lets no script run (first thing in ``<head>``)."""
    page = path.read_text(encoding="utf-8")
    if CSP in page:
        return
    head = re.search(r"<head[^>]*>", page, re.I)
    page = page[:head.end()] + "\n" + CSP + page[head.end():] if head else CSP + "\n" + page
    path.write_text(page, encoding="utf-8")


def _limit_memory(memory_mb: int) -> None:
    """At most ``memory_mb`` MiB more address space than the (forked) process has now."""
    try:
        import resource

        try:
            with open("/proc/self/statm") as f:
                now = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            now = 0
        limit = now + memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass


def _render(course: str, lab: str, student: str, db_url: str | None, memory_mb: int, conn: Any) -> None:
    """In a child process: sanitize the autograded notebooks in place, then render the feedback pages."""
    try:
        os.chdir(course)  # nbgrader resolves folders from the course root
        _limit_memory(memory_mb)
        config = feedback_config(Path(course), db_url)
        source = Path(config.SanitizeFeedback.source_directory).name
        for path in sorted((Path(course) / "autograded" / student / lab).glob("*.ipynb")):
            sanitize_file(path, lab_hidden_lines(course, lab, path.stem, source))
        conn.send(("sanitized", ""))
        from nbgrader.apps import NbGraderAPI
        from nbgrader.coursedir import CourseDirectory

        api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
        result = api.generate_feedback(lab, student, force=True)
        if not result.get("success"):
            log = (result.get("error") or result.get("log") or "").strip().splitlines()
            conn.send(("error", log[-1] if log else "nbgrader's generate_feedback failed"))
            return
        for page in (Path(course) / "feedback" / student / lab).glob("*.html"):
            protect_page(page)
        conn.send(("done", ""))
    except BaseException as err:  # noqa: BLE001 (a MemoryError included: reported, a plain page instead)
        try:
            conn.send(("error", f"{type(err).__name__}: {err}"[:500]))
        except Exception:  # noqa: BLE001
            pass
    finally:
        conn.close()


def fallback_page(course: Path, lab: str, student: str, reason: str, db_url: str | None = None,
                  course_id: str = "dlcourse") -> list[Path]:
    """Plain pages (no script, escaped text) that say the feedback could not be rendered, with the scores."""
    rows = _scores(course, lab, student, db_url, course_id)
    notebooks = sorted(p.stem for p in (Path(course) / "autograded" / student / lab).glob("*.ipynb")) or [lab]
    written = []
    for notebook in notebooks:
        table = "".join(f"<tr><td>{html.escape(t)}</td><td>{s:g} / {m:g}</td></tr>"
                        for nb, t, s, m in rows if nb == notebook)
        page = ("<!DOCTYPE html>\n<html><head>" + CSP + "<meta charset=\"utf-8\">"
                f"<title>{html.escape(notebook)}</title></head><body>"
                f"<h1>Feedback on {html.escape(notebook)}</h1>"
                f"<p>The feedback page for this notebook could not be rendered ({html.escape(reason)}). "
                "Your scores are below; ask your instructor for the details.</p>"
                + (f"<table><tr><th>test</th><th>score</th></tr>{table}</table>" if table else
                   "<p>No scores recorded for this notebook.</p>") + "</body></html>\n")
        path = Path(course) / "feedback" / student / lab / f"{notebook}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
        written.append(path)
    return written


def _scores(course: Path, lab: str, student: str, db_url: str | None,
            course_id: str) -> list[tuple[str, str, float, float]]:
    """(notebook, test, score, max) of one student, or [] where the gradebook has none."""
    url = db_url or f"sqlite:///{Path(course).resolve() / 'gradebook.db'}"
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return []  # do not create an empty gradebook
    try:
        from nbgrader.api import Gradebook

        with Gradebook(url, course_id=course_id) as gb:
            submission = gb.find_submission(lab, student)
            return [(nb.name, g.name, float(g.score or 0.0), float(g.max_score or 0.0))
                    for nb in submission.notebooks for g in nb.grades]
    except Exception:  # noqa: BLE001 (no gradebook, no submission: the page says so)
        return []


def _record(course: Path, lab: str, outcomes: dict[str, dict[str, Any]]) -> None:
    path = Path(course) / "grading" / f"{lab}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.setdefault("feedback", {}).update(outcomes)
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


def failed_pages(course: Path, lab: str, students: Iterable[str] | None = None) -> dict[str, str]:
    """Students (of ``students``, default all) whose feedback page could not be rendered, with the reason.

    A plain page stands in for each of them (see :func:`fallback_page`).
    """
    path = Path(course) / "grading" / f"{lab}.json"
    record = json.loads(path.read_text()).get("feedback", {}) if path.is_file() else {}
    wanted = None if students is None else set(students)
    return {s: r.get("reason", "") for s, r in record.items() if not r.get("ok") and (wanted is None or s in wanted)}


def generate_feedback(course: Path, lab: str, students: list[str] | None = None, workers: int | None = None,
                      timeout: float = 60.0, memory_mb: int = 2048, db_url: str | None = None) -> list[Path]:
    """Write ``feedback/<student>/<lab>/<notebook>.html`` for each autograded student; returns the pages.

    Each student's notebooks are sanitized in ``autograded/`` (so the formgrader shows the same)
    and rendered in a child process (at most ``workers`` at a time, default: one per CPU), which
    is stopped after ``timeout`` seconds; it may use ``memory_mb`` MiB more than the parent. Where rendering
    fails, a plain page says so and gives the scores; ``grading/<lab>.json`` records each outcome.
    """
    course = Path(course).resolve()
    config = feedback_config(course, db_url)
    students = sorted(students or [p.parent.name for p in (course / "autograded").glob(f"*/{lab}") if p.is_dir()])
    workers = max(1, workers or os.cpu_count() or 1)
    try:
        ctx = multiprocessing.get_context("fork")  # the parent has nbgrader imported: each page starts at once
        import nbgrader.apps  # noqa: F401
    except ValueError:
        ctx = multiprocessing.get_context("spawn")
    queue = list(students)
    running: dict[str, tuple[Any, Any, float, list[str]]] = {}
    outcomes: dict[str, dict[str, Any]] = {}

    def finish(student: str, ok: bool, reason: str, started: float) -> None:
        outcomes[student] = {"ok": ok, "reason": reason, "seconds": round(time.monotonic() - started, 2)}

    while queue or running:
        while queue and len(running) < workers:
            student = queue.pop(0)
            parent_end, child_end = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_render, args=(str(course), lab, student, db_url, memory_mb, child_end),
                               daemon=True)
            proc.start()
            child_end.close()
            running[student] = (proc, parent_end, time.monotonic(), [])
        time.sleep(0.02)
        for student, (proc, conn, started, said) in list(running.items()):
            try:
                while conn.poll():
                    said.append(conn.recv())
            except (EOFError, OSError):
                pass
            messages = dict(said)
            over = time.monotonic() - started > timeout
            if proc.is_alive() and not over and "done" not in messages and "error" not in messages:
                continue
            if proc.is_alive():
                proc.kill()
            proc.join()
            conn.close()
            del running[student]
            if "done" in messages:
                finish(student, True, "", started)
                continue
            reason = (messages.get("error") or "").strip() or (
                f"it took longer than {timeout:g} s" if over else f"the renderer stopped (exit code {proc.exitcode})")
            for leftover in (course / "autograded" / student / lab).glob(".*.sanitizing"):
                leftover.unlink()  # a write the time limit cut short (the notebook itself is replaced atomically)
            if "sanitized" not in messages:  # never leave an unsanitized notebook for the formgrader
                source = Path(config.SanitizeFeedback.source_directory).name
                for path in sorted((course / "autograded" / student / lab).glob("*.ipynb")):
                    try:
                        sanitize_file(path, lab_hidden_lines(course, lab, path.stem, source))
                    except Exception as err:  # noqa: BLE001 (unreadable: the autograded copy is set aside)
                        path.rename(path.with_name(path.name + ".unsafe"))
                        reason += f"; {path.name} could not be sanitized ({type(err).__name__}) and was renamed"
            fallback_page(course, lab, student, reason, config.CourseDirectory.db_url, config.CourseDirectory.course_id)
            finish(student, False, reason, started)
    _record(course, lab, outcomes)
    return sorted(p for s in students for p in (course / "feedback" / s / lab).glob("*.html"))
