"""Every number in a chapter's prose comes from its run (issue 20).

A chapter that measures something (an accuracy, a time, a speed-up, a loss) hands the value to
its text with ``dlcourse.glue.glue("key", value)`` and writes {glue:text}`key:.1f` in the
Markdown, so text and output cannot disagree. This test reads the Markdown cells of every
``book/*.ipynb`` and flags a *measured-looking* number written by hand:

- a decimal number (``0.82``, ``1.47``),
- a percentage (``85%``, ``59.8 %``, ``85 per cent``),
- a ratio (``1.5x``, ``27×``),
- a time (``12 s``, ``3.4 ms``, ``2 minutes``).

Plain integers (``5,000 digits``, ``lecture 004``, ``1958``) are not flagged: counts, sizes and
dates are set by the code or by history, not measured.

What is *not* prose, and never flagged:

- math (``$...$``, ``$$...$$``, ``\\(...\\)``, ``{math}`` blocks): formulas and worked examples,
  with one exception: a decimal stated as a *result* (after ``=``, ``\\approx``, ``≈``) is a number
  like any other, unless the formula computes it from known numbers (every number before it in the
  formula is an integer, a constant the code sets, an allowlisted numeral or an earlier such
  result: ``$(6 - 3)/2 + 1 = 2.5$``, ``$\\sigma(0.52) \\approx 0.627$`` with the lecture's 0.52
  allowlisted) or defines a constant (``$a = 0.01$``). So ``$-\\log 0.23 \\approx 1.47$``, where
  0.23 came from the run, is caught;
- code (```` ``` ```` fences and ```` `...` ```` spans): names and literal calls;
- MyST roles (``{glue:text}`key:.2f```, ``{cite:p}`...```, ``{py:func}`...```), link targets,
  HTML tags and comments, directive option lines (``:width: 80%``), version numbers (``2.13.0``).

A flagged number is still allowed when

1. the same literal is a constant the notebook's code sets: it appears as a numeric literal in a
   code cell's source, or in one of its strings, comments and figure-styling arguments
   (``alpha=0.3``) left out (``lr=0.03`` lets the text say "a learning rate of 0.03"; a
   percentage ``p%`` may also be set as ``p/100``, so "dropout of 50%" matches ``p=0.5``). Integers below 10 do not count (they are in every cell: shapes, indices), so a
   hand-written "3x faster" is caught; or
2. it is on the chapter's allowlist, ``tests/numbers_allowlist.yml``: numbers that are the
   lectures' own (worked examples, figures quoted from the slides), history, or definitions.
   Each entry names the numeral as written in the text and says why it is not a measurement of
   this run. An entry that no longer matches anything in the chapter fails the test (so the
   list stays short and current).

The same test checks that every ``{glue:...}`key``` role in a chapter names a key that one of
its code cells glues, with a valid format spec, and that no key is glued by two calls (myst-nb
reports these only when the book is built, and the strict build fails on them). A key built
with an f-string, ``glue(f"acc_{name}", ...)``, matches any ``acc_<word>``.

One case per notebook, so each chapter fails on its own. To see a chapter's findings::

    .venv/bin/python tests/test_numbers_from_run.py book/09_recurrent_networks.ipynb
"""

from __future__ import annotations

import ast
import io
import json
import re
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
ALLOWLIST = Path(__file__).resolve().parent / "numbers_allowlist.yml"

# Chapters whose prose is still being converted (issue 20): chapter file -> reason. Their cases
# are strict xfails, so the day a chapter passes the xfail fails and the entry must be removed.
PENDING: dict[str, str] = {}

# --- what is not prose ---------------------------------------------------------------------------

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})[^\n]*\n.*?^\1\2[ \t]*$", re.M | re.S)  # ``` ... ```
_MATH_BLOCK = re.compile(r"\$\$.*?\$\$", re.S)
_MATH_INLINE = re.compile(r"(?<![\\$])\$(?!\s)(?:[^$\n]|\n(?![ \t]*\n))+?(?<![\\\s])\$(?!\d)")  # may wrap a line
_MATH_PAREN = re.compile(r"\\\(.*?\\\)|\\\[.*?\\\]", re.S)
_ROLE = re.compile(r"\{[\w:.-]+\}`[^`]*`")  # {glue:text}`key:.1f`, {cite:p}`x`, {py:mod}`m`
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
_LINK_TARGET = re.compile(r"\]\([^)]*\)")  # [text](target): the target is not prose
_HTML = re.compile(r"<!--.*?-->|<[^>\n]+>", re.S)
_OPTION_LINE = re.compile(r"^\s*:[\w-]+:.*$", re.M)  # :width: 80% under a directive
_VERSION = re.compile(r"\b\d+(?:\.\d+){2,}\b")  # 2.13.0

# --- what is measured-looking --------------------------------------------------------------------

_NUMBER = re.compile(
    r"(?<![\w.,/\\-])(?P<num>\d{1,3}(?:,\d{3})+|\d+)(?P<frac>\.\d+)?(?![\d])"
    r"(?P<unit>"
    r"\s?(?:%|per ?cent\b|percent\b)"                                          # percentages
    r"|\s?[x×](?![\w])(?!\s*\d)"                                             # ratios, not 4096 x 100
    r"|\s+times\s+(?=(?:faster|slower|more|less|fewer|larger|smaller|as|the)\b)"  # "27 times faster"
    r"|[ \u00a0\u202f](?:s|sec|seconds?|min|minutes?|h|hours?)\b(?![-'])"      # times, "12 s"
    r"|\s?(?:ms|µs|μs|us|ns)\b"                                                # times, "3.4 ms"
    r")?"
)


@dataclass(frozen=True)
class Finding:
    """A hand-written measured-looking number in a Markdown cell."""

    cell: int
    text: str     # the match as written: "85%", "1.47", "12 s"
    numeral: str  # the number without unit: "85", "1.47", "12"
    line: str     # the line of prose around it
    inputs: tuple[str, ...] | None = None  # a result in math: the numbers before it in the formula

    def __str__(self) -> str:
        return f"cell {self.cell}: {self.text!r} in: {self.line.strip()[:140]}"


def _blank(m: re.Match) -> str:
    return re.sub(r"[^\n]", " ", m.group(0))  # same length, same lines


_MATH = (_MATH_BLOCK, _MATH_PAREN, _MATH_INLINE)
# In math, a decimal stated as a result ("\approx 1.47", "= 0.627") is a number like any other.
_MATH_RESULT = re.compile(r"(?:\\approx|\\simeq|=|≈)\s*-?\s*(?P<num>\d+)(?P<frac>\.\d+)(?![\d])")


def strip_non_prose(markdown: str) -> tuple[str, list[tuple[re.Match, tuple[str, ...]]]]:
    """The Markdown with math, code, roles, link targets, HTML, directive options and version
    numbers blanked out (replaced by spaces, so positions stay where they were), and the results
    stated in its math (see ``_MATH_RESULT``), each with the numbers before it in its formula."""
    for pattern in (_FENCE, _ROLE, _CODE_SPAN, _LINK_TARGET, _HTML, _OPTION_LINE):
        markdown = pattern.sub(_blank, markdown)
    results = []
    for pattern in _MATH:
        for m in pattern.finditer(markdown):
            for r in _MATH_RESULT.finditer(markdown, m.start(), m.end()):
                inputs = tuple(re.findall(r"\d+(?:\.\d+)?", markdown[m.start():r.start("num")]))
                results.append((r, inputs))
        markdown = pattern.sub(_blank, markdown)
    return _VERSION.sub(_blank, markdown), results


def measured_numbers(markdown: str, cell: int = 0) -> list[Finding]:
    """Decimals, percentages, ratios and times in the prose of one Markdown cell, and the
    decimal results stated in its math."""
    prose, math_results = strip_non_prose(markdown)
    found = [(m, None) for m in _NUMBER.finditer(prose) if m.group("frac") or m.group("unit")]  # not integers
    findings = []
    for m, inputs in sorted(found + math_results, key=lambda pair: pair[0].start("num")):
        start = markdown.rfind("\n", 0, m.start()) + 1
        end = markdown.find("\n", m.end())
        line = markdown[start:end if end >= 0 else len(markdown)]
        numeral = (m.group("num") + (m.group("frac") or "")).replace(",", "")
        text = markdown[m.start("num"):m.end()].strip() if m.re is _NUMBER else numeral
        findings.append(Finding(cell, text, numeral, line, inputs))
    return findings


def code_without_comments(source: str) -> str:
    """A code cell's source with its comments removed (IPython magics and shell lines dropped)."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    text = "\n".join(lines) + "\n"
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
                  if t.type != tokenize.COMMENT]
        return tokenize.untokenize(tokens)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return re.sub(r"#[^\n]*", "", text)


_CODE_NUMBER = re.compile(r"(?<![\w.])(\d[\d_]*(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)(?![\w.])")
# Keyword arguments that only style a figure: alpha=0.3 is no reason to let "0.3" through
_STYLE_ARGS = {"alpha", "lw", "linewidth", "linewidths", "ms", "markersize", "fontsize", "figsize", "s",
               "size", "pad", "width_ratios", "height_ratios", "xytext", "capsize", "zorder", "dpi",
               "wspace", "hspace", "labelpad", "rotation", "bbox_to_anchor", "shrink", "aspect"}


def _numbers_in(text: str) -> set[float]:
    values = set()
    for m in _CODE_NUMBER.finditer(text):
        try:
            values.add(float(m.group(1).replace("_", "")))
        except ValueError:
            pass
    return values


def code_constants(code_sources: list[str]) -> set[float]:
    """The numbers the code cells set: numeric literals (comments and figure-styling keyword
    arguments such as ``alpha=0.3`` left out) and numbers written in its strings (a cell that
    prints "within 0.3" states 0.3), as floats."""
    values = set()
    for source in code_sources:
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        try:
            tree = ast.parse(code)
        except SyntaxError:
            values |= _numbers_in(code_without_comments(source))
            continue
        styling = {id(node) for kw in ast.walk(tree) if isinstance(kw, ast.keyword) and kw.arg in _STYLE_ARGS
                   for node in ast.walk(kw.value)}
        for node in ast.walk(tree):
            if id(node) in styling or not isinstance(node, ast.Constant):
                continue
            if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
                values.add(float(node.value))
            elif isinstance(node.value, str):
                values |= _numbers_in(node.value)
    return values


def _in(value: float, constants: set[float]) -> bool:
    return any(abs(value - k) <= 1e-12 * max(1.0, abs(value)) for k in constants)


def set_by_code(finding: Finding, constants: set[float]) -> bool:
    """Whether the finding's number is a constant the code sets (see the module docstring)."""
    value = float(finding.numeral)
    if "." not in finding.numeral and value < 10:
        return False  # small integers are in every cell: they prove nothing
    if "%" in finding.text or "cent" in finding.text:
        return _in(value, constants) or _in(round(value / 100, 12), constants)
    return _in(value, constants)


def formula_of_constants(finding: Finding, constants: set[float], allowed: set[str]) -> bool:
    """Whether a result stated in math is a formula evaluated on known numbers: every number
    before it in the formula is an integer, a constant the code sets, an allowlisted numeral or
    the result of an earlier such formula
    (``$(6 - 3)/2 + 1 = 2.5$``, ``$\\ln 10 \\approx 2.30$``; not ``$-\\log 0.23 \\approx 1.47$``
    when 0.23 came from the run)."""
    if not finding.inputs:  # "$a = 0.01$" defines a constant; "$L \\approx 1.4493$" is a result
        return not re.search(r"(?:\\approx|\\simeq|≈)\s*-?\s*" + re.escape(finding.numeral) + r"(?!\d)",
                             finding.line)
    return all("." not in x or x in allowed or _in(float(x), constants) for x in finding.inputs)


# --- glue keys -------------------------------------------------------------------------------------

_GLUE_ROLE = re.compile(r"\{glue(?::\w*)?\}`([^`:]+)(?::([^`]*))?`")
# Python's format-spec mini-language, which {glue:text}`key:spec` hands its value to
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?\d*[,_]?(?:\.\d+)?[bcdeEfFgGnosxX%]?")
_GLUE_DIRECTIVE = re.compile(r"^\s*(?:`{3,}|:{3,})\{glue(?::\w*)?\}\s+(\S+)", re.M)
_GLUE_CALL = re.compile(r"\bglue\(\s*(f?)(['\"])(.+?)\2")


def glued_keys(code_sources: list[str]) -> list[re.Pattern]:
    """The keys the code cells glue, as patterns (an f-string's fields match any word)."""
    keys = []
    for source in code_sources:
        for is_f, _, name in _GLUE_CALL.findall(code_without_comments(source)):
            if is_f:
                parts = re.split(r"\{[^}]*\}", name)
                keys.append(re.compile(r"\w+".join(map(re.escape, parts))))
            else:
                keys.append(re.compile(re.escape(name)))
    return keys


def duplicate_keys(code_sources: list[str]) -> list[str]:
    """Literal keys glued by more than one glue(...) call: myst-nb warns ("glue key duplicate"),
    and the strict build fails."""
    names = [name for source in code_sources
             for is_f, _, name in _GLUE_CALL.findall(code_without_comments(source)) if not is_f]
    return sorted({name for name in names if names.count(name) > 1})


def glue_references(markdown: str) -> list[tuple[str, str]]:
    """(key, format spec) of every glue role and directive in the Markdown."""
    roles = [(key.strip(), spec) for key, spec in _GLUE_ROLE.findall(markdown)]
    return roles + [(key.strip(), "") for key in _GLUE_DIRECTIVE.findall(markdown)]


# --- a notebook ------------------------------------------------------------------------------------

@dataclass
class Report:
    unexplained: list[Finding]   # measured-looking, not set by code, not allowlisted
    stale: list[str]             # allowlist entries that match nothing
    missing_keys: list[str]      # glue roles whose key no code cell glues, or whose format is wrong

    @property
    def ok(self) -> bool:
        return not (self.unexplained or self.stale or self.missing_keys)

    def __str__(self) -> str:
        parts = []
        if self.unexplained:
            parts.append("numbers written by hand (glue them from the run, or allowlist a lecture number "
                         "in tests/numbers_allowlist.yml with its reason):\n  "
                         + "\n  ".join(map(str, self.unexplained)))
        if self.stale:
            parts.append("allowlist entries that match no number in the prose (remove them): "
                         + ", ".join(self.stale))
        if self.missing_keys:
            parts.append("{glue:...} roles with no glue(...) call in the notebook, or a bad format: "
                         + ", ".join(self.missing_keys))
        return "\n".join(parts) or "ok"


def check_cells(cells: list[dict], allowed: list[dict] | None = None) -> Report:
    """Check a notebook's cells (``nbformat`` JSON dicts) against its allowlist entries."""
    source = lambda c: "".join(c["source"]) if isinstance(c["source"], list) else c["source"]  # noqa: E731
    code = [source(c) for c in cells if c["cell_type"] == "code"]
    constants = code_constants(code)
    allowed_numerals = {str(e["number"]).replace(",", ""): e for e in (allowed or [])}
    used: set[str] = set()
    known = set(allowed_numerals)  # numbers a formula in math may start from
    unexplained = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        for finding in measured_numbers(source(cell), i):
            if finding.numeral in allowed_numerals:
                used.add(finding.numeral)
            elif set_by_code(finding, constants):
                pass
            elif finding.inputs is not None and formula_of_constants(finding, constants, known):
                used.update(x for x in finding.inputs if x in allowed_numerals)
                known.add(finding.numeral)  # a result of known numbers is known: 0.6271 from 0.52
            else:
                unexplained.append(finding)
    stale = [n for n in allowed_numerals if n not in used]
    keys = glued_keys(code)
    missing = [f"{name} (glued twice)" for name in duplicate_keys(code)]
    for cell in cells:
        if cell["cell_type"] == "markdown":
            for ref, spec in glue_references(source(cell)):
                if not any(k.fullmatch(ref) for k in keys) and ref not in missing:
                    missing.append(ref)
                if not _FORMAT_SPEC.fullmatch(spec):
                    missing.append(f"{ref} (format {spec!r} is not a Python format spec)")
    return Report(unexplained, stale, missing)


def load_allowlist() -> dict[str, list[dict]]:
    data = yaml.safe_load(ALLOWLIST.read_text(encoding="utf-8")) or {}
    return {name: entries or [] for name, entries in data.items()}


def check_notebook(path: Path, allowlist: dict[str, list[dict]] | None = None) -> Report:
    allowlist = load_allowlist() if allowlist is None else allowlist
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return check_cells(cells, allowlist.get(path.name, []))


# --- the tests -------------------------------------------------------------------------------------

NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))


def _case(path: Path):
    marks = []
    if path.name in PENDING:
        marks.append(pytest.mark.xfail(strict=True, reason=PENDING[path.name]))
    return pytest.param(path, id=path.stem, marks=marks)


@pytest.mark.parametrize("path", [_case(p) for p in NOTEBOOKS])
def test_prose_numbers_come_from_the_run(path):
    report = check_notebook(path)
    assert report.ok, f"{path.relative_to(ROOT)}:\n{report}"


def test_allowlist_is_well_formed():
    allowlist = load_allowlist()
    names = {p.name for p in NOTEBOOKS}
    for notebook, entries in allowlist.items():
        assert notebook in names, f"numbers_allowlist.yml: no notebook book/{notebook}"
        for entry in entries:
            assert set(entry) == {"number", "reason"}, f"{notebook}: entry {entry} needs number and reason only"
            assert re.fullmatch(r"[\d,]+(\.\d+)?", str(entry["number"])), \
                f"{notebook}: {entry['number']!r} is not a numeral as written in the text"
            assert len(str(entry["reason"]).split()) >= 3, f"{notebook}: {entry['number']} needs a reason"


def _nb(*cells: tuple[str, str]) -> list[dict]:
    return [{"cell_type": kind, "source": text, "metadata": {}} for kind, text in cells]


def test_the_checker_catches_a_hand_written_measured_number():
    """A sentence quoting a result by hand, next to the cell that computed it, is caught."""
    cells = _nb(("code", "accuracy = evaluate(model)\nprint(f'{100 * accuracy:.1f}%')"),
                ("markdown", "The row-by-row LSTM reaches about 85% on the test set."))
    report = check_cells(cells)
    assert [f.text for f in report.unexplained] == ["85%"]
    for sentence, caught in [("It reaches 59.8 per cent.", "59.8 per cent"),
                             ("The loss is -log 0.23 ≈ 1.47 here.", "1.47"),
                             ("The loss is $-\\log 0.23 \\approx 1.47$ here.", "1.47"),
                             ("The loss is $$L \\approx 1.4493.$$", "1.4493"),
                             ("A formula that wraps, $L = -\\log 0.23\n\\approx 1.47$, and 97.3%.", "97.3%"),
                             ("The benchmark measured 1.45 times, that is 1.6x.", "1.6x"),
                             ("One epoch takes 12 s, one step 3.4 ms.", "3.4 ms"),
                             ("| model | accuracy |\n|---|---|\n| MLP | 0.97 |", "0.97"),
                             ("Three times: 3x faster than before.", "3x")]:
        found = [f.text for f in check_cells(_nb(("markdown", sentence))).unexplained]
        assert caught in found, (sentence, found)


def test_the_checker_lets_formulas_constants_and_glued_numbers_through():
    cells = _nb(
        ("code", "optimizer = SGD(params, lr=0.03)  # lr 0.5 diverges\n"
                 "p_drop = 0.5\nglue('acc', acc)\nfor k in keys:\n    glue(f'time_{k}', t[k])"),
        ("markdown",
         "By hand, $\\sigma(0.52) \\approx 0.627$, so $\\sigma'(0.52) \\approx 0.234$ and\n"
         "$$\\eta^* = 2 / (1 + 10) \\approx 0.18, \\quad -\\log 0.03 \\approx 3.51,$$ $\\ln 10 \\approx 2.30$, $a = 0.01$.\n"
         "A learning rate of 0.03 and a dropout of 50% (code sets them). "
         "It reaches {glue:text}`acc:.1%` in {glue:text}`time_mlp:.1f` s.\n"
         "Call `torch.randn(3, 4) * 0.01` or see [v2](https://x.org/v1.5x). "
         "Lecture 004, 28x28 images, 5,000 digits, 1,000 classes, in 1958; PyTorch 2.13.0.\n"
         "```python\nx = 0.25 ** 10\n```\n"
         "```{figure} img.png\n:width: 80%\n```\n"
         "The lecture's 734 s per epoch."),
    )
    report = check_cells(cells, [{"number": "734", "reason": "lecture 001's training log, quoted"},
                                 {"number": "0.52", "reason": "lecture 004's worked example"}])
    assert report.ok, str(report)
    # ... and the constant of a comment is not a constant the code sets
    assert [f.text for f in check_cells(cells[:1] + _nb(("markdown", "lr 0.5 diverges"))).unexplained] == []
    commented = _nb(("code", "x = 1  # about 0.82"), ("markdown", "confidence 0.82"))
    assert [f.text for f in check_cells(commented).unexplained] == ["0.82"]
    styled = _nb(("code", "ax.grid(alpha=0.3)\nplt.plot(x, lw=1.5)"), ("markdown", "an error of 0.3, 1.5x faster"))
    assert [f.text for f in check_cells(styled).unexplained] == ["0.3", "1.5x"]
    printed = _nb(("code", "print(f'{share:.1%} within 0.3')"), ("markdown", "samples within 0.3"))
    assert check_cells(printed).ok


def test_the_checker_reports_stale_allowlist_entries_and_missing_glue_keys():
    cells = _nb(("code", "glue('acc', 0.5)\nglue(f'loss_{name}', 1.0)\nglue('twice', 1)\nglue('twice', 2)"),
                ("markdown", "{glue:text}`acc:.2f`, {glue:text}`loss_adam:.3f`, {glue:text}`accuracy`,"
                             " {glue:}`loss_`, {glue:text}`acc:.0f}`"))
    report = check_cells(cells, [{"number": "0.9", "reason": "a number that is not there"}])
    assert report.stale == ["0.9"]
    assert report.missing_keys == ["twice (glued twice)", "accuracy", "loss_",
                                   "acc (format '.0f}' is not a Python format spec)"]


def test_the_checker_catches_a_number_put_back_in_a_real_chapter():
    """Put a hand-written measured number back into a chapter: its case fails."""
    path = BOOK / "03_losses_gradient_descent.ipynb"
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    allowed = load_allowlist().get(path.name, [])
    cells.append({"cell_type": "markdown", "metadata": {},
                  "source": "Here the loss is $-\\log 0.23$, about 1.4731 nats, and training reaches 97.3%."})
    found = [f.text for f in check_cells(cells, allowed).unexplained]
    assert "1.4731" in found and "97.3%" in found


if __name__ == "__main__":
    for arg in sys.argv[1:] or map(str, NOTEBOOKS):
        print(f"== {arg}\n{check_notebook(Path(arg))}")
