"""The strict book build (`jupyter-book build . -W -n --keep-going`): every chapter executes
without error and renders with its figures and math.

The build runs once per test session (the ``build`` fixture of conftest.py, shared with the
browser tests of test_site.py), so each notebook is executed at most
once per `make test`; Jupyter Book's execution cache skips notebooks that did not change since
the last build, and the cache is cleared whenever `dlcourse` itself changed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
HTML = BUILD / "html"

pytestmark = pytest.mark.slow


def toc_entries() -> list[str]:
    """Every file named in _toc.yml (root, chapters, sections), without suffix."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    entries = [toc["root"]]

    def walk(items):
        for item in items or []:
            if "file" in item:
                entries.append(item["file"])
            walk(item.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return entries


def source_of(entry: str) -> Path:
    matches = [p for p in (ROOT / f"{entry}.ipynb", ROOT / f"{entry}.md") if p.exists()]
    assert matches, f"_toc.yml names {entry}, but neither {entry}.ipynb nor {entry}.md exists"
    return matches[0]


def executed_chapters() -> list[str]:
    """Notebooks the build executes: every toc notebook except the student labs."""
    return [e for e in toc_entries() if source_of(e).suffix == ".ipynb" and not e.startswith("labs/")]


def test_strict_build_succeeds_without_warnings(build):
    log = build.stdout + build.stderr
    # Sphinx reports "path: WARNING: ..." / "ERROR: ..."; kernels' own log lines ("[IPKernelApp]
    # WARNING | ...") are not build problems.
    warnings = [line for line in log.splitlines() if re.search(r"\b(WARNING|ERROR):", line)]
    assert build.returncode == 0 and not warnings, (
        f"jupyter-book build failed (exit {build.returncode}):\n" + "\n".join(warnings[:40]) + "\n" + log[-4000:]
    )


def test_every_toc_page_is_rendered(build):
    for entry in toc_entries():
        page = HTML / f"{entry}.html"
        assert page.exists(), f"{page.relative_to(ROOT)} was not built"


def test_chapters_executed_with_figures_and_no_errors(build):
    chapters = executed_chapters()
    assert len(chapters) >= 2, "expected at least the first two chapters in _toc.yml"
    for entry in chapters:
        html = (HTML / f"{entry}.html").read_text(encoding="utf-8")
        assert "cell_output" in html, f"{entry}: no cell outputs in the page: was it executed?"
        assert "<img" in html, f"{entry}: no figure in the page"
        for marker in ("Traceback (most recent call last)", "NotImplementedError", "Error in callback"):
            assert marker not in html, f"{entry}: the rendered page shows {marker!r}"


def test_execution_times_recorded(build):
    """Each executed chapter is in the execution cache; its run time is written to
    _build/notebook_times.json and printed (budgets are checked by `make bench`, not here)."""
    from jupyter_cache import get_cache

    cache = get_cache(BUILD / ".jupyter_cache")
    times = {}
    for record in cache.list_cache_records():
        uri = Path(record.uri).resolve()
        if ROOT in uri.parents:
            times[uri.relative_to(ROOT).with_suffix("").as_posix()] = (record.data or {}).get("execution_seconds")
    missing = [c for c in executed_chapters() if c not in times]
    assert not missing, f"not in the execution cache (not executed?): {missing}"
    (BUILD / "notebook_times.json").write_text(json.dumps(times, indent=2) + "\n")
    print(f"\nbook build: {build.elapsed:.1f} s; notebook execution times (s): {json.dumps(times)}")


def test_math_is_typeset_markup(build):
    html = (HTML / "book" / "02_perceptron.html").read_text(encoding="utf-8")
    assert "math notranslate" in html or "\\(" in html, "chapter 2 has no math markup"


def test_no_solutions_in_the_site(build):
    assert not (HTML / "solutions").exists(), "the instructor solutions must not be published"
    for page in HTML.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, f"{page} leaks a solution"
