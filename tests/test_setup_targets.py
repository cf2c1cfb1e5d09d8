"""The repository's set-up, as the Makefile and the test suite itself provide it: `make clean`
keeps the notebooks' execution cache, `make browser` provides the browser tests' Chromium (no
test installs a system package), `make lab` gives students a lean environment, and the devices
to test on are declared once, in tests/conftest.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAKE = shutil.which("make")
needs_make = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def make(target: str, cwd: Path, path: str | None = None, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MAKEFLAGS": ""}
    if path is not None:
        env["PATH"] = path
    return subprocess.run([MAKE, "-f", str(ROOT / "Makefile"), target, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@needs_make
def test_make_clean_keeps_the_notebook_execution_cache(tmp_path: Path):
    cache = tmp_path / "_build" / ".jupyter_cache" / "global.db"
    site = tmp_path / "_build" / "html" / "index.html"
    for f in (cache, site, tmp_path / "_build" / "screenshots" / "index.png", tmp_path / ".pytest_cache" / "x"):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("x")
    proc = make("clean", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert cache.read_text() == "x", "make clean threw away the execution cache"
    assert sorted(p.name for p in (tmp_path / "_build").iterdir()) == [".jupyter_cache"]
    assert not (tmp_path / ".pytest_cache").exists()
    # A tree never built: nothing to clean, no error.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert make("clean", empty).returncode == 0


@needs_make
def test_make_help_says_what_clean_keeps():
    proc = make("help", ROOT)
    clean = next(line for line in proc.stdout.splitlines() if line.startswith("clean\t"))
    assert "keeps" in clean and ".jupyter_cache" in clean
    assert any(line.startswith("lab-instructor\t") for line in proc.stdout.splitlines())
    assert any(line.startswith("browser\t") for line in proc.stdout.splitlines())


def _bin_with(tmp_path: Path, **scripts: str) -> str:
    """A PATH of one folder holding ``id`` and the given fake programs, nothing else."""
    folder = tmp_path / "bin"
    folder.mkdir()
    os.symlink(shutil.which("id"), folder / "id")
    for name, body in scripts.items():
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    return str(folder)


@needs_make
def test_make_browser_finds_chromium_on_path(tmp_path: Path):
    proc = make("browser", tmp_path, _bin_with(tmp_path, chromium="exit 0"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"chromium: {tmp_path / 'bin' / 'chromium'}" in proc.stdout


@needs_make
def test_make_browser_says_clearly_when_it_cannot_install_chromium(tmp_path: Path):
    proc = make("browser", tmp_path, _bin_with(tmp_path))  # no chromium, no apt-get
    assert proc.returncode != 0
    assert "need Chromium" in proc.stdout and "sudo apt-get install chromium" in proc.stdout


def test_ci_installs_the_browser_then_runs_make_test():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert "make browser" in lines and "make test" in lines
    assert lines.index("make browser") < lines.index("make test")


def test_no_test_installs_system_packages():
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.name == Path(__file__).name:
            continue
        text = path.read_text(encoding="utf-8")
        # A package manager as a program to run: the first item of an argument list, or a shell command.
        if re.search(r"""["'](sudo)?["']?,?\s*["']?(apt-get|apt|dnf|yum|brew|apk)["']\s*,"""
                     r"""|(system|run|call|Popen|check_call|check_output)\(\s*f?["'](sudo )?(apt-get|apt|dnf|yum|apk) """, text):
            offenders.append(path.relative_to(ROOT).as_posix())
    assert not offenders, f"tests that run a system package manager (the set-up's job: make browser): {offenders}"


def test_devices_are_declared_once_in_conftest():
    """The devices come from the ``device`` fixture of conftest.py; no test file lists its own."""
    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        if path.name in ("conftest.py", Path(__file__).name):
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            # A list of devices to parametrize over: a pytest.param of an accelerator, or a literal list.
            if re.search(r"""pytest\.param\(\s*["'](cuda|mps)["']|\[\s*["']cpu["']\s*,\s*["'](cuda|mps)["']""", line):
                offenders.append(f"{path.name}:{n}: {line.strip()}")
    assert not offenders, "device lists outside tests/conftest.py (use its `device` fixture):\n" + "\n".join(offenders)


def _student_install_command() -> list[str]:
    """The pip command `make lab` runs to create the students' environment (from make's dry run)."""
    proc = subprocess.run([MAKE, "-n", "-B", "-f", str(ROOT / "Makefile"), ".venv-student/.installed-stamp"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    installs = [line for line in proc.stdout.splitlines() if "pip install" in line and "--upgrade pip" not in line]
    assert len(installs) == 1, proc.stdout
    return installs[0].split()


@needs_make
def test_make_lab_uses_a_student_environment_without_the_instructor_tools():
    dry = subprocess.run([MAKE, "-n", "-f", str(ROOT / "Makefile"), "lab"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "MAKEFLAGS": ""})
    assert dry.returncode == 0, dry.stderr
    assert ".venv-student/bin/jupyter lab" in dry.stdout
    command = _student_install_command()
    assert command[command.index("install") + 1:] == ["--constraint", "constraints.txt", "--editable", ".", "jupyterlab"]
    assert not re.search(r"dev|nbgrader|jupyter-book|pytest|playwright|tools", " ".join(command))


@needs_make
@pytest.mark.slow
def test_the_student_environment_gets_no_nbgrader_jupyter_book_or_test_stack(tmp_path: Path):
    """Resolve `make lab`'s install command with pip (a dry run: it downloads metadata, installs nothing)."""
    command = _student_install_command()
    report = tmp_path / "report.json"
    args = command[command.index("install") + 1:]
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--report", str(report), *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and ("No matching distribution" in proc.stderr or "NewConnectionError" in proc.stderr):
        pytest.fail(f"pip could not reach the package index to resolve the student set-up:\n{proc.stderr[-2000:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    names = {item["metadata"]["name"].lower().replace("_", "-") for item in json.loads(report.read_text())["install"]}
    assert {"dlcourse", "jupyterlab", "torch"} <= names
    assert not names & {"nbgrader", "jupyter-book", "pytest", "playwright", "sphinx", "psycopg", "dlcourse-tools"}
