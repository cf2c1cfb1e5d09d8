"""The set-up cell's install path, as on Colab: in a fresh environment that has only Colab's
packages (PyTorch, NumPy, matplotlib, scikit-learn, pandas, tqdm, ipywidgets, mlxtend, IPython, pip),
the notebooks' set-up cell installs ``dlcourse`` from a git URL (here a local clone of this
repository's HEAD) quietly, without a packaging warning, and brings in nothing else: no nbgrader,
no Jupyter Book, no instructor tools. The wheel built from the clone holds the student package only.

The environment is a new virtual environment whose Colab packages are this repository's .venv's
copies, linked in through a ``.pth`` file (nothing is downloaded for them); building the wheel
fetches the bounded build backend (setuptools) as pip does on Colab.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import subprocess
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from dlcourse_tools.notebooks import repository, setup_cell_source

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # a virtual environment, a clone and a wheel build: about a minute

# What Colab preinstalls of dlcourse's dependencies, and the kernel.
COLAB = ["torch", "numpy", "matplotlib", "scikit-learn", "pandas", "tqdm", "ipywidgets", "mlxtend", "ipykernel", "pip"]
# What the student package must not bring: the instructor's and the developers' stacks.
NOT_FOR_STUDENTS = {"nbgrader", "jupyter-book", "psutil", "pyyaml", "playwright", "pytest", "sphinx", "jupyter-cache",
                    "dlcourse-tools"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(names: list[str]) -> dict[str, md.Distribution]:
    """The installed distributions ``names`` need, theirs included (markers evaluated, no extras)."""
    found: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        name = norm(todo.pop())
        if name in found:
            continue
        dist = md.distribution(name)
        found[name] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def link_colab_packages(env: Path, folder: Path) -> list[str]:
    """Make the Colab packages of this interpreter importable in ``env`` through a .pth file."""
    folder.mkdir()
    dists = closure(COLAB)
    for dist in dists.values():
        tops = {Path(str(f)).parts[0] for f in dist.files or []}
        for top in tops - {"..", "__pycache__"}:
            source = Path(dist.locate_file(top))
            if source.exists() and not (folder / top).exists() and not top.endswith(".pth"):
                (folder / top).symlink_to(source)
    purelib = subprocess.run([str(env / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "colab-packages.pth").write_text(str(folder) + "\n")
    return sorted(dists)


@pytest.fixture(scope="module")
def colab(tmp_path_factory) -> dict:
    """A Colab-like environment after the set-up cell ran in it: paths, outputs, what it installed."""
    tmp = tmp_path_factory.mktemp("colab")
    clone = tmp / "src" / "dlcourse"
    work = tmp / "work"  # the notebook's folder: empty (a "dlcourse" folder there would be imported)
    work.mkdir()
    subprocess.run(["git", "clone", "--quiet", "--no-local", str(ROOT), str(clone)], check=True, timeout=300)
    _, branch = repository(ROOT / "_config.yml")  # the branch the set-up cell names: here, this HEAD
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", "-B", branch], check=True)
    env = tmp / "env"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env)  # pip: a recent one, as on Colab (below)
    python = str(env / "bin" / "python")
    preinstalled = link_colab_packages(env, tmp / "colab-packages")
    purelib = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    before = {p.name for p in purelib.iterdir()}
    cell = setup_cell_source(f"file://{clone}", branch)
    run = subprocess.run([python, "-c", cell], cwd=work, capture_output=True, text=True, timeout=900)
    after = {p.name for p in purelib.iterdir()}
    wheel = subprocess.run([python, "-m", "pip", "wheel", "--no-deps", "--verbose", "--wheel-dir", str(tmp / "dist"),
                            f"dlcourse @ git+file://{clone}@{branch}"], cwd=work, capture_output=True, text=True, timeout=900)
    return {"python": python, "tmp": tmp, "work": work, "preinstalled": preinstalled, "run": run, "new": sorted(after - before),
            "wheel": wheel, "dist": tmp / "dist"}


def test_the_setup_cell_installs_dlcourse_quietly(colab):
    run = colab["run"]
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "" and "warning" not in run.stderr.lower(), (run.stdout + run.stderr)[-3000:]
    check = subprocess.run([colab["python"], "-c", "import dlcourse, dlcourse.nn, dlcourse.check; print(dlcourse.__file__)"],
                           cwd=colab["work"], capture_output=True, text=True)
    assert check.returncode == 0 and str(colab["tmp"] / "env") in check.stdout, check.stderr[-2000:]


def test_the_setup_cell_brings_in_dlcourse_alone(colab):
    installed = {norm(name.split("-")[0]) for name in colab["new"] if name.endswith(".dist-info")}
    assert installed == {"dlcourse"}, f"the set-up cell installed more than dlcourse: {colab['new']}"
    # (Colab itself has psutil and PyYAML, through IPython's kernel; not the instructor's stack.)
    stack = NOT_FOR_STUDENTS - {"psutil", "pyyaml"}
    assert not stack & set(colab["preinstalled"]), "the Colab stand-in has instructor packages"
    tools = subprocess.run([colab["python"], "-c", "import dlcourse_tools"], cwd=colab["work"], capture_output=True, text=True)
    assert tools.returncode != 0 and "No module named 'dlcourse_tools'" in tools.stderr


def test_building_the_wheel_gives_no_packaging_warning(colab):
    build = colab["wheel"]
    assert build.returncode == 0, build.stderr[-3000:]
    log = build.stdout + build.stderr
    warnings = [line.strip() for line in log.splitlines()
                if re.search(r"DeprecationWarning|license.*(deprecated|TOML table)|!!", line, re.IGNORECASE)]
    assert not warnings, "the build of dlcourse warns:\n" + "\n".join(warnings[:10])


def test_the_wheel_holds_the_student_package_and_its_dependencies_only(colab):
    (wheel,) = colab["dist"].glob("dlcourse-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "dlcourse/check.py" in names and "dlcourse/models/__init__.py" in names
    assert not [n for n in names if n.split("/")[0] not in ("dlcourse",) and ".dist-info/" not in n], names
    assert not [n for n in names if "dlcourse_tools" in n or n.startswith(("tests/", "book/", "tools/"))]
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    required = {norm(Requirement(line.split(":", 1)[1].strip()).name) for line in metadata.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line}
    assert {"torch", "numpy"} <= required and not required & NOT_FOR_STUDENTS, sorted(required)
    assert re.search(r"^License-Expression: MIT$", metadata, re.MULTILINE), "no SPDX licence expression"
