"""The book's "API reference" part has one page per public module of ``dlcourse``, so a module
added later is caught here, not found missing by a reader."""

from __future__ import annotations

import pkgutil
import re
from pathlib import Path

import yaml

import dlcourse

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "book" / "api"


def public_modules() -> list[str]:
    """Every module and subpackage of ``dlcourse`` (at any depth) with no ``_`` name in its path."""
    found = pkgutil.walk_packages(dlcourse.__path__, prefix="dlcourse.", onerror=lambda name: None)
    return sorted(m.name for m in found if not any(part.startswith("_") for part in m.name.split(".")))


def page_text(module: str) -> str:
    return (
        f"# `{module}`\n\n"
        "```{eval-rst}\n"
        f".. automodule:: {module}\n"
        "   :members:\n"
        "```\n"
    )


def test_every_public_module_has_an_api_page():
    modules = public_modules()
    assert "dlcourse.train" in modules and "dlcourse.nn" in modules
    missing = [m for m in modules if not (API / f"{m}.md").is_file()]
    assert not missing, (
        f"no API page for {missing}: create "
        + ", ".join(f"book/api/{m}.md" for m in missing)
        + " (the _toc.yml glob book/api/dlcourse.* picks it up), each like:\n\n"
        + page_text(missing[0])
    )


def test_every_api_page_documents_its_module_and_no_other():
    modules = set(public_modules())
    for page in sorted(API.glob("dlcourse.*.md")):
        assert page.stem in modules, f"{page.relative_to(ROOT)}: dlcourse has no module {page.stem}: remove the page"
        text = page.read_text(encoding="utf-8")
        assert re.search(rf"^\.\. automodule:: {re.escape(page.stem)}$", text, re.M), (
            f"{page.relative_to(ROOT)} does not run automodule on {page.stem}"
        )
        assert "```{eval-rst}" in text, f"{page.relative_to(ROOT)}: autodoc output is reStructuredText: wrap it in eval-rst"


def test_api_reference_part_is_in_the_toc():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    parts = {p.get("caption"): p for p in toc.get("parts", [])}
    assert "API reference" in parts, "_toc.yml has no part captioned 'API reference'"
    (index,) = parts["API reference"]["chapters"]
    assert index["file"] == "book/api/index"
    assert {"glob": "book/api/dlcourse.*"} in index["sections"]
