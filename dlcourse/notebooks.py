"""Keep committed notebooks clean: no outputs, no execution counts, no per-user metadata.

    python -m dlcourse.notebooks strip book solutions labs   # rewrite in place
    python -m dlcourse.notebooks check book solutions labs   # exit 1 listing dirty notebooks
    python -m dlcourse.notebooks cache-guard _build           # drop stale executed outputs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlcourse.notebooks", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["strip", "check", "cache-guard"])
    parser.add_argument("paths", nargs="+", help="notebooks or folders (cache-guard: the build folder)")
    args = parser.parse_args(argv)
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
