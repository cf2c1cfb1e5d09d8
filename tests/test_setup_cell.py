"""The standard set-up cell (``python -m dlcourse_tools.notebooks setup-cell``): every notebook of the
book and every instructor lab opens its code with it, so a notebook opened in Colab installs
``dlcourse`` from the repository in ``_config.yml``, and only where it is missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dlcourse_tools.notebooks import (SETUP_CELL_ID, add_setup_cell, find_config, main, notebooks, problems,
                                repository, setup_cell_problem, setup_cell_source)

ROOT = Path(__file__).resolve().parents[1]
TOOL = ".venv/bin/python -m dlcourse_tools.notebooks setup-cell"


def toc_notebooks() -> list[Path]:
    """Every notebook named in _toc.yml (root, parts, chapters, sections)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(items):
        for item in items or []:
            if "file" in item:
                files.append(item["file"])
            walk(item.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [ROOT / f"{f}.ipynb" for f in files if (ROOT / f"{f}.ipynb").exists()]


def fix_command(stale: list[Path]) -> str:
    """The exact command that brings ``stale`` up to date: student labs are generated from
    ``solutions/``, so for them the tool runs on the instructor notebook, then ``make labs``."""
    targets, regenerate = [], False
    for path in stale:
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "labs":
            rel = Path("solutions", *rel.parts[1:])
        regenerate = regenerate or rel.parts[0] == "solutions"
        if rel.as_posix() not in targets:
            targets.append(rel.as_posix())
    command = f"{TOOL} {' '.join(targets)}"
    if regenerate:
        command += " && PATH=$PWD/.venv/bin:$PATH make labs"
    return command


def test_every_book_and_solution_notebook_has_the_current_setup_cell():
    paths = toc_notebooks() + list(notebooks([ROOT / "solutions"]))
    assert any(p.parts[-2] == "book" for p in paths), "no chapter notebook found through _toc.yml"
    source = setup_cell_source(*repository(ROOT / "_config.yml"))
    stale = {}
    for path in dict.fromkeys(paths):
        found = setup_cell_problem(json.loads(path.read_text(encoding="utf-8")), source)
        if found:
            stale[path] = found
    assert not stale, (
        "these notebooks lack the current set-up cell:\n"
        + "\n".join(f"  {p.relative_to(ROOT)}: {why}" for p, why in stale.items())
        + f"\nrun, from the repository root:\n  {fix_command(list(stale))}"
    )


def test_setup_cell_installs_from_the_configured_repository_only_when_missing():
    url, branch = repository(ROOT / "_config.yml")
    source = setup_cell_source(url, branch)
    assert f'"dlcourse @ git+{url}@{branch}"' in source
    assert source.startswith("# ") and "except ImportError:" in source
    assert "sys.executable" in source and "!pip" not in source and "%pip" not in source
    assert len(source.splitlines()) <= 25
    compile(source, "<setup cell>", "exec")


def test_setup_cell_does_nothing_where_dlcourse_is_installed():
    """Run the cell in a fresh interpreter whose pip would fail: it must not be called."""
    source = setup_cell_source("https://invalid.example/none", "nowhere")
    guard = "import subprocess\nsubprocess.run = lambda *a, **k: (_ for _ in ()).throw(SystemExit('pip was called'))\n"
    proc = subprocess.run([sys.executable, "-c", guard + source], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def notebook(*cells: tuple[str, str]) -> dict:
    return {"cells": [{"cell_type": t, "id": f"c{i}", "metadata": {}, "source": s,
                       **({"outputs": [], "execution_count": None} if t == "code" else {})}
                      for i, (t, s) in enumerate(cells)],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_add_setup_cell_is_idempotent_and_goes_before_the_first_code_cell():
    nb = notebook(("markdown", "# Title"), ("code", "x = 1"), ("code", "y = 2"))
    old, new = setup_cell_source("https://a/b", "main"), setup_cell_source("https://a/b", "v2")
    assert setup_cell_problem(nb, old) == "no set-up cell as the first code cell"
    once = add_setup_cell(json.loads(json.dumps(nb)), old)
    assert [c.get("id") for c in once["cells"]] == ["c0", SETUP_CELL_ID, "c1", "c2"]
    assert setup_cell_problem(once, old) is None and not problems(once)
    assert add_setup_cell(json.loads(json.dumps(once)), old) == once
    assert setup_cell_problem(once, new) == "the set-up cell is out of date"
    refreshed = add_setup_cell(once, new)
    assert [c.get("id") for c in refreshed["cells"]] == ["c0", SETUP_CELL_ID, "c1", "c2"]
    assert "".join(refreshed["cells"][1]["source"]) == new


def test_command_line_check_then_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "_config.yml").write_text("repository:\n  url: https://example.org/me/course/\n  branch: dev\n")
    (tmp_path / "book").mkdir()
    path = tmp_path / "book" / "ch.ipynb"
    path.write_text(json.dumps(notebook(("markdown", "# T"), ("code", "1"))))
    assert find_config(path) == tmp_path / "_config.yml"
    assert main(["setup-cell", "--check", str(path)]) == 1
    assert "no set-up cell" in capsys.readouterr().out
    assert main(["setup-cell", str(path)]) == 0
    assert main(["setup-cell", "--check", str(path)]) == 0
    text = path.read_text()
    assert "git+https://example.org/me/course@dev" in text
    assert main(["setup-cell", str(path)]) == 0 and path.read_text() == text


def test_fix_command_names_the_instructor_notebook_for_labs():
    stale = [ROOT / "book" / "10_x.ipynb", ROOT / "labs" / "lab05_y" / "lab05_y.ipynb",
             ROOT / "solutions" / "lab05_y" / "lab05_y.ipynb"]
    assert fix_command(stale) == (f"{TOOL} book/10_x.ipynb solutions/lab05_y/lab05_y.ipynb"
                                  " && PATH=$PWD/.venv/bin:$PATH make labs")


def test_fix_command_regenerates_the_labs_after_a_solution():
    assert fix_command([ROOT / "solutions" / "lab07_z" / "lab07_z.ipynb"]) == (
        f"{TOOL} solutions/lab07_z/lab07_z.ipynb && PATH=$PWD/.venv/bin:$PATH make labs")
    assert fix_command([ROOT / "book" / "11_x.ipynb"]) == f"{TOOL} book/11_x.ipynb"
