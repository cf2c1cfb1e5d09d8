"""Keep committed notebooks clean (no outputs, no execution counts, no per-user metadata) and
give each one the standard set-up cell that installs ``dlcourse`` where it is missing (Colab)::

    python -m dlcourse_tools.notebooks strip book solutions labs           # rewrite in place
    python -m dlcourse_tools.notebooks check book solutions labs           # exit 1 listing dirty notebooks
    python -m dlcourse_tools.notebooks cache-guard _build                   # drop stale executed outputs
    python -m dlcourse_tools.notebooks setup-cell book/*.ipynb solutions    # insert or refresh the set-up cell
    python -m dlcourse_tools.notebooks setup-cell --check book solutions    # exit 1 listing stale ones
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

# Notebook-level metadata worth keeping; everything else (widget state, execution timing,
# editor layout) is per-run noise.
KEEP_METADATA = ("kernelspec", "language_info", "jupytext", "colab", "mystnb")
# Cell metadata to drop: per-run noise that editors add.
DROP_CELL_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime", "jupyter", "outputId")


def notebooks(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Every ``.ipynb`` under the given files or folders, skipping checkpoints and builds."""
    for p in map(Path, paths):
        candidates = [p] if p.is_file() else sorted(p.rglob("*.ipynb"))
        for nb in candidates:
            if nb.suffix == ".ipynb" and not {".ipynb_checkpoints", "_build", ".venv"} & set(nb.parts):
                yield nb


def problems(nb: dict) -> list[str]:
    """What makes a notebook dict unfit to commit (an empty list when it is clean)."""
    found = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") == "code":
            if cell.get("outputs"):
                found.append(f"cell {i} has outputs")
            if cell.get("execution_count") is not None:
                found.append(f"cell {i} has an execution count")
        if any(k in cell.get("metadata", {}) for k in DROP_CELL_METADATA):
            found.append(f"cell {i} has run-time metadata")
    extra = set(nb.get("metadata", {})) - set(KEEP_METADATA)
    if extra:
        found.append(f"notebook metadata has {sorted(extra)}")
    return found


def strip(nb: dict) -> dict:
    """Return ``nb`` without outputs, execution counts and run-time metadata (nbgrader's kept)."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        for key in DROP_CELL_METADATA:
            cell.get("metadata", {}).pop(key, None)
    nb["metadata"] = {k: v for k, v in nb.get("metadata", {}).items() if k in KEEP_METADATA}
    return nb


def _write(path: Path, nb: dict) -> None:
    # The layout Jupyter itself writes (indent 1, sorted keys), so saving in JupyterLab
    # afterwards produces no spurious diff.
    path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def library_fingerprint(package_dir: Path | None = None) -> str:
    """A hash of the ``dlcourse`` sources: executed notebooks depend on them, not only on
    their own text (which is all Jupyter Book's execution cache looks at)."""
    package_dir = package_dir or Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(package_dir.rglob("*.py")):
        h.update(f.relative_to(package_dir).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def cache_guard(build_dir: str | Path) -> bool:
    """Clear the book's execution cache when ``dlcourse`` changed since it was filled.

    Returns ``True`` when the cache was cleared.
    """
    build_dir = Path(build_dir)
    stamp = build_dir / ".dlcourse-fingerprint"
    now = library_fingerprint()
    stale = stamp.exists() and stamp.read_text().strip() != now
    if stale:
        shutil.rmtree(build_dir / ".jupyter_cache", ignore_errors=True)
    build_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(now + "\n")
    return stale


# The set-up cell: the first code cell of every chapter and lab. It is recognised by its id and its
# tag; the tag also makes the book show it collapsed ("hide-cell").
SETUP_CELL_ID = "dlcourse-setup"
SETUP_CELL_TAGS = ["dlcourse-setup", "hide-cell"]
SETUP_CELL_TEMPLATE = """\
# Set-up: installs the course package only where it is missing (on Colab, say); elsewhere it does nothing.
try:
    import dlcourse
except ImportError:
    import importlib
    import subprocess
    import sys

    # The repository and branch are the ones set in the book's _config.yml.
    requirement = "{requirement}"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", requirement], check=True)
    importlib.invalidate_caches()
    import dlcourse"""


def find_config(start: str | Path) -> Path:
    """The book's ``_config.yml``: in ``start`` (a file or folder) or the nearest folder above it."""
    start = Path(start).resolve()
    for folder in [start, *start.parents] if start.is_dir() else start.parents:
        if (folder / "_config.yml").is_file():
            return folder / "_config.yml"
    raise FileNotFoundError(f"no _config.yml in {start} or any folder above it")


def repository(config: str | Path) -> tuple[str, str]:
    """``(url, branch)`` of the repository, from the ``repository:`` section of ``_config.yml``."""
    import yaml  # a book dependency, not one of the package's

    repo = (yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}).get("repository") or {}
    url, branch = repo.get("url"), repo.get("branch", "main")
    if not url:
        raise ValueError(f"{config}: expected repository.url to be set, got {repo!r}")
    return str(url).rstrip("/"), str(branch)


def setup_cell_source(url: str, branch: str) -> str:
    """The source of the set-up cell that installs ``dlcourse`` from ``url`` at ``branch``."""
    return SETUP_CELL_TEMPLATE.format(requirement=f"dlcourse @ git+{url}@{branch}")


def _source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _is_setup_cell(cell: dict[str, Any]) -> bool:
    return cell.get("id") == SETUP_CELL_ID or SETUP_CELL_ID in cell.get("metadata", {}).get("tags", [])


def setup_cell_problem(nb: dict[str, Any], source: str) -> str | None:
    """Why ``nb`` lacks the current set-up cell as its first code cell (``None`` when it has it)."""
    code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    if not code or not _is_setup_cell(code[0]):
        return "no set-up cell as the first code cell"
    cell = code[0]
    if _source(cell) != source:
        return "the set-up cell is out of date"
    if cell.get("id") != SETUP_CELL_ID or cell.get("metadata", {}).get("tags") != SETUP_CELL_TAGS:
        return "the set-up cell lacks its id or tags"
    if sum(map(_is_setup_cell, nb["cells"])) != 1:
        return "more than one set-up cell"
    return None


def add_setup_cell(nb: dict[str, Any], source: str) -> dict[str, Any]:
    """Return ``nb`` with exactly one set-up cell, placed just before its first other code cell.

    Idempotent: an existing set-up cell is replaced, wherever it was.
    """
    cells = [c for c in nb.get("cells", []) if not _is_setup_cell(c)]
    cell = {"cell_type": "code", "execution_count": None, "id": SETUP_CELL_ID,
            "metadata": {"tags": list(SETUP_CELL_TAGS)}, "outputs": [], "source": source.splitlines(keepends=True)}
    first_code = next((i for i, c in enumerate(cells) if c.get("cell_type") == "code"), len(cells))
    nb["cells"] = cells[:first_code] + [cell] + cells[first_code:]
    return nb


def setup_cell_command(paths: Iterable[str | Path], check: bool) -> int:
    """``setup-cell``: refresh (or with ``check``, only report) the set-up cell of each notebook."""
    stale = 0
    for path in notebooks(paths):
        source = setup_cell_source(*repository(find_config(path)))
        nb = json.loads(path.read_text(encoding="utf-8"))
        found = setup_cell_problem(nb, source)
        if found is None:
            continue
        stale += 1
        if check:
            print(f"{path}: {found}")
        else:
            _write(path, add_setup_cell(nb, source))
            print(f"set-up cell written to {path}")
    if check and stale:
        print(f"{stale} notebook(s) need `python -m dlcourse_tools.notebooks setup-cell FILES...`", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlcourse_tools.notebooks", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["strip", "check", "cache-guard", "setup-cell"])
    parser.add_argument("paths", nargs="+", help="notebooks or folders (cache-guard: the build folder)")
    parser.add_argument("--check", action="store_true", help="setup-cell: only report, exit 1 if any is stale")
    args = parser.parse_args(argv)
    if args.command == "setup-cell":
        return setup_cell_command(args.paths, args.check)
    if args.command == "cache-guard":
        if cache_guard(args.paths[0]):
            print("dlcourse changed since the last build: notebooks will be executed again")
        return 0
    dirty = 0
    for path in notebooks(args.paths):
        nb = json.loads(path.read_text(encoding="utf-8"))
        found = problems(nb)
        if not found:
            continue
        dirty += 1
        if args.command == "strip":
            _write(path, strip(nb))
            print(f"stripped {path}")
        else:
            print(f"{path}: {'; '.join(found)}")
    if args.command == "check" and dirty:
        print(f"{dirty} notebook(s) need `make strip`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
