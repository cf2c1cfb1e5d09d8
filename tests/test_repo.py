"""Repository hygiene: pinned and consistent dependencies, clean notebooks, nothing generated
in git, a toc that matches the files."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from dlcourse_tools.notebooks import notebooks, problems

ROOT = Path(__file__).resolve().parents[1]


def norm(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    return norm(re.split(r"[<>=!~\[; ]", spec.strip(), maxsplit=1)[0])


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pyproject_packages() -> set[str]:
    project = pyproject()["project"]
    names = {requirement_name(d) for d in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        names |= {requirement_name(d) for d in extra}
    tools = tomllib.loads((ROOT / "tools" / "pyproject.toml").read_text())["project"]  # the instructor's
    names |= {requirement_name(d) for d in tools["dependencies"]}
    return names - {"dlcourse"}


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return out.stdout.splitlines()


def test_environment_yml_lists_the_same_packages_as_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_to_pypi = {"pytorch": "torch"}
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            name = requirement_name(dep)
            if name not in {"python", "pip"}:
                names.add(conda_to_pypi.get(name, name))
        elif isinstance(dep, dict):  # the pip: list, for packages conda-forge lacks
            names |= {requirement_name(d) for d in dep.get("pip", []) if not d.startswith("-")}
    assert names == pyproject_packages(), (
        f"only in environment.yml: {sorted(names - pyproject_packages())}; "
        f"only in pyproject.toml: {sorted(pyproject_packages() - names)}"
    )


def test_constraints_pin_every_dependency_exactly():
    lines = [l.strip() for l in (ROOT / "constraints.txt").read_text().splitlines()]
    pins = {}
    for line in lines:
        if not line or line.startswith("#"):
            continue
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", line), f"not an exact pin: {line!r}"
        name, version = line.split("==")
        pins[norm(name)] = version
    assert pins.get("torch") == "2.13.0", "torch must be pinned to 2.13.0 (the local CPU wheel)"
    unpinned = pyproject_packages() - set(pins)
    assert not unpinned, f"constraints.txt does not pin {sorted(unpinned)}"
    torch_specs = [d for d in pyproject()["project"]["dependencies"] if requirement_name(d) == "torch"]
    assert torch_specs and "==" not in torch_specs[0], "pyproject.toml keeps a loose torch range"


def test_installed_versions_match_the_constraints():
    from importlib.metadata import PackageNotFoundError, version

    pins = dict(l.split("==") for l in (ROOT / "constraints.txt").read_text().splitlines()
                if l and not l.startswith("#"))
    for name in sorted(pyproject_packages()):
        pinned = next(v for k, v in pins.items() if norm(k) == name)
        try:
            installed = version(name)
        except PackageNotFoundError:
            pytest.fail(f"{name} is not installed; run `make install`")
        assert installed.split("+")[0] == pinned.split("+")[0], f"{name}: installed {installed}, pinned {pinned}"


def test_committed_notebooks_have_no_outputs():
    tracked = set(tracked_files())
    dirty = {}
    for nb_path in notebooks([ROOT / "book", ROOT / "solutions", ROOT / "labs"]):
        rel = nb_path.relative_to(ROOT).as_posix()
        if rel in tracked:
            import json

            found = problems(json.loads(nb_path.read_text(encoding="utf-8")))
            if found:
                dirty[rel] = found
    assert not dirty, f"run `make strip`: {dirty}"


def test_nothing_generated_is_tracked():
    banned = re.compile(r"(^|/)(_build|\.venv|__pycache__|\.ipynb_checkpoints|submitted|autograded|feedback)/"
                        r"|\.db$|\.pyc$|(^|/)grades\.csv$")
    offenders = [f for f in tracked_files() if banned.search(f)]
    assert not offenders, f"generated files are tracked: {offenders}"


def test_toc_and_book_folder_agree():
    toc_text = (ROOT / "_toc.yml").read_text()
    for nb in sorted((ROOT / "book").glob("*.ipynb")):
        entry = nb.relative_to(ROOT).with_suffix("").as_posix()
        assert re.search(rf"file:\s*{re.escape(entry)}\s*$", toc_text, re.M), f"{entry} is not in _toc.yml"


def test_config_builds_strictly():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] in {"cache", "force"}
    assert config["execute"].get("allow_errors") is False
    assert config.get("only_build_toc_files") is True
    makefile = (ROOT / "Makefile").read_text()
    assert "build . -W -n --keep-going" in makefile
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == "make test"


def test_nbgrader_config_points_at_solutions_and_labs():
    text = (ROOT / "nbgrader_config.py").read_text()
    assert re.search(r"source_directory\s*=\s*['\"]solutions['\"]", text)
    assert re.search(r"release_directory\s*=\s*['\"]labs['\"]", text)


def test_readme_leads_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    first_book, first_test = readme.find("make book"), readme.find("make test")
    assert 0 <= first_book < 3000 and 0 <= first_test < 3000, "README must give `make book` and `make test` early"


def test_wheel_contains_only_the_package(tmp_path):
    """`pip install .` gives users dlcourse alone: the wheel holds the package, not the book."""
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("dlcourse-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "dlcourse/__init__.py" in names and "dlcourse/check.py" in names
    assert not [n for n in names if n.startswith(("tests/", "book/", "solutions/", "labs/"))]
