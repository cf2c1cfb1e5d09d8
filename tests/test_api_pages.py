"""The book's "API reference" part has one page per public module, in three groups: the library
students import (``dlcourse``, in ``book/api/``), the chapters' models (``dlcourse.models``, in
``book/api/models/``) and the instructor's tools (``dlcourse_tools``, in ``book/api/tools/``). A
module added later is caught here, not found missing by a reader."""

from __future__ import annotations

import pkgutil
import re
from pathlib import Path

import pytest
import yaml

import dlcourse
import dlcourse.models
import dlcourse_tools

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "book" / "api"
# group folder -> the package it documents
GROUPS = {
    API: dlcourse,
    API / "models": dlcourse.models,
    API / "tools": dlcourse_tools,
}


def public_modules(package) -> list[str]:
    """The package and its modules and subpackages (any depth) with no ``_`` name in their path."""
    found = pkgutil.walk_packages(package.__path__, prefix=package.__name__ + ".", onerror=lambda name: None)
    names = [package.__name__] + [m.name for m in found]
    names = [n for n in names if not any(part.startswith("_") for part in n.split("."))]
    if package is dlcourse:  # the models have their own group, and the package its index page
        names = [n for n in names if n != "dlcourse" and not n.startswith("dlcourse.models")]
    return sorted(names)


def page_text(module: str) -> str:
    return f"# `{module}`\n\n```{{eval-rst}}\n.. automodule:: {module}\n   :members:\n```\n"


@pytest.mark.parametrize("folder", list(GROUPS), ids=lambda f: f.relative_to(ROOT).as_posix())
def test_every_public_module_has_an_api_page_in_its_group(folder):
    modules = public_modules(GROUPS[folder])
    assert modules, f"no public module found for {folder}"
    missing = [m for m in modules if not (folder / f"{m}.md").is_file()]
    assert not missing, (f"no API page for {missing}: create "
                         + ", ".join(f"{(folder / m).relative_to(ROOT)}.md" for m in missing)
                         + ", each like:\n\n" + page_text(missing[0]))


@pytest.mark.parametrize("folder", list(GROUPS), ids=lambda f: f.relative_to(ROOT).as_posix())
def test_every_api_page_documents_its_module_and_no_other(folder):
    modules = set(public_modules(GROUPS[folder]))
    pages = [p for p in folder.glob("*.md") if p.stem != "index"]
    assert pages
    for page in sorted(pages):
        where = page.relative_to(ROOT)
        assert page.stem in modules, f"{where}: this group has no module {page.stem}: remove the page"
        text = page.read_text(encoding="utf-8")
        assert re.search(rf"^\.\. automodule:: {re.escape(page.stem)}$", text, re.M), (
            f"{where} does not run automodule on {page.stem}")
        assert "```{eval-rst}" in text, f"{where}: autodoc output is reStructuredText: wrap it in eval-rst"


def test_library_group_holds_no_instructor_tool_and_no_chapter_model():
    library = public_modules(dlcourse)
    assert "dlcourse.nn" in library and "dlcourse.train" in library
    assert not [m for m in library if m.split(".")[-1] in ("grade", "grading", "bench", "notebooks") or m.startswith("dlcourse.models")]


def test_api_reference_part_has_three_groups_in_the_toc():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    parts = {p.get("caption"): p for p in toc.get("parts", [])}
    assert "API reference" in parts, "_toc.yml has no part captioned 'API reference'"
    entries = {c["file"]: c.get("sections", []) for c in parts["API reference"]["chapters"]}
    assert entries == {
        "book/api/index": [{"glob": "book/api/dlcourse.*"}],
        "book/api/models/dlcourse.models": [{"glob": "book/api/models/dlcourse.models.*"}],
        "book/api/tools/dlcourse_tools": [{"glob": "book/api/tools/dlcourse_tools.*"}],
    }
