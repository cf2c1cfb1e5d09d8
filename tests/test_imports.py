"""The import graph of the student package: no circles, and no module importing another module's
private names (those starting with ``_``; private *modules* such as ``dlcourse._checks`` or
``dlcourse._fast`` exist to be imported inside the package). Every import counts, at the top of a
file or inside a function: a circle broken only by importing late is still a circle.

The checker is tested too, on a small package written for the purpose, so the tests can fail."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` under ``root``, by dotted name (a package by its ``__init__.py``)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph(root: Path, package: str) -> tuple[dict[str, set[str]], list[str]]:
    """``(edges, private)``: which of the package's modules each module imports, and every import
    of another module's private name as ``"path:line: from module import _name"``."""
    modules = package_modules(root, package)
    edges: dict[str, set[str]] = {m: set() for m in modules}
    private = []
    for name, path in modules.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]  # the module's package
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                pairs = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # a relative import
                    base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
                pairs = [(base, a.name) for a in node.names]
            else:
                continue
            for module, attr in pairs:
                if attr is not None and f"{module}.{attr}" in modules:
                    target = f"{module}.{attr}"  # a submodule: from dlcourse import _fast
                elif module in modules:
                    target = module
                    if attr and attr.startswith("_") and not attr.startswith("__") and target != name:
                        private.append(f"{path.relative_to(root)}:{node.lineno}: from {module} import {attr}")
                else:
                    continue  # outside the package
                if target != name:
                    edges[name].add(target)
    return edges, private


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: every strongly connected set of two or more modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_dlcourse_has_no_import_circles():
    edges, _ = import_graph(ROOT, "dlcourse")
    assert len(edges) > 20 and sum(map(len, edges.values())) > 20  # the graph was really read
    assert circles(edges) == []


def test_dlcourse_imports_no_private_names_of_other_modules():
    _, private = import_graph(ROOT, "dlcourse")
    assert private == []


def test_the_checker_finds_circles_and_private_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from pkg.b import helper\n",
        "b.py": "def helper():\n    from pkg import c\n",  # a late import still closes the circle
        "c.py": "from . import a\nfrom pkg.d import _secret, public\n",
        "d.py": "import torch\n_secret = public = 1\n",
        "sub/__init__.py": "from .. import d\nfrom ..d import _secret as s\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    edges, private = import_graph(tmp_path, "pkg")
    assert circles(edges) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert private == ["pkg/c.py:2: from pkg.d import _secret", "pkg/sub/__init__.py:2: from pkg.d import _secret"]
    assert edges["pkg.sub"] == {"pkg.d"} and edges["pkg.d"] == set()


def test_the_instructor_tools_have_no_import_circles_and_no_private_imports():
    edges, private = import_graph(ROOT / "tools", "dlcourse_tools")
    assert "dlcourse_tools.grading.judge" in edges and "dlcourse_tools.grade" in edges
    assert circles(edges) == [], "import circles in tools/dlcourse_tools"
    assert not private, "imports of another module's private names:\n" + "\n".join(private)
