"""Parallel autograding into a PostgreSQL gradebook: a real server, started from the Debian package.

Course teams that grade from several machines share one PostgreSQL gradebook (nbgrader takes
any SQLAlchemy URL). The test starts a throw-away server (``initdb`` + ``pg_ctl`` on a Unix
socket in a temporary folder, as the ``postgres`` user when run as root), grades three
submissions with 2 workers into it, and checks every grade. It is skipped, saying why, where
the server binaries or the ``psycopg`` driver are missing or the server does not start.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from test_grading import ROOT, make_submission, read_nb, write_nb

LAB = "lab01_perceptron"
pytestmark = pytest.mark.slow


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    return Path(which).resolve().parent if which else None


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory):
    """A running PostgreSQL server on a Unix socket; yields its SQLAlchemy URL."""
    pytest.importorskip("psycopg", reason="the psycopg driver is not installed (pip install 'psycopg[binary]')")
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")
    # Not under pytest's temp folder: it is private (0700) and the server runs as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="dlcourse-pg-"))
    os.chmod(base, 0o755)
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    as_user: list[str] = []
    if os.getuid() == 0:
        if shutil.which("runuser") is None or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            pytest.skip("running as root without a `postgres` user to start the server as")
        shutil.chown(base, "postgres")  # the server writes its log there
        shutil.chown(sock, "postgres")
        data.mkdir()
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    init = subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "grader"],
                          capture_output=True, text=True)
    if init.returncode:
        pytest.skip(f"initdb failed, cannot start PostgreSQL here: {init.stderr[-300:]}")
    start = subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "60", "-l", str(base / "log"),
                            "-o", f"-k {sock} -c listen_addresses='' -p 54329", "start"], capture_output=True, text=True)
    if start.returncode:
        log = (base / "log").read_text()[-300:] if (base / "log").exists() else ""
        pytest.skip(f"PostgreSQL did not start: {start.stderr[-300:]} {log}")
    try:
        subprocess.run([*as_user, str(bindir.parent / "bin" / "createdb"), "-h", str(sock), "-p", "54329", "-U", "grader",
                        "dlcourse"], check=True, capture_output=True)
        yield f"postgresql+psycopg://grader@/dlcourse?host={sock}&port=54329"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_parallel_autograde_into_postgresql(postgres: str, tmp_path: Path) -> None:
    from dlcourse_tools.grade import main
    from dlcourse_tools.grading.autograde import Options, autograde, gradebook

    course = tmp_path / "course"
    course.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(course, 0o755)
    shutil.copy2(ROOT / "nbgrader_config.py", course)
    (course / "nbgrader_config.py").write_text((course / "nbgrader_config.py").read_text()
                                               + f"\nc.CourseDirectory.db_url = {postgres!r}\n")
    shutil.copytree(ROOT / "solutions" / LAB, course / "solutions" / LAB)
    assert main(["--course", str(course), "release", LAB]) == 0
    release = read_nb(course / "labs" / LAB / f"{LAB}.ipynb")
    solutions = read_nb(course / "solutions" / LAB / f"{LAB}.ipynb")
    for student, nb in {"s1": make_submission(release, solutions, None), "s2": release,
                        "s3": make_submission(release, solutions, None)}.items():
        write_nb(nb, course / "submitted" / student / LAB / f"{LAB}.ipynb")
    options = Options(workers=2, timeout=60, db_url=postgres)
    results = autograde(course, LAB, options=options, progress=False)
    assert [r["success"] for r in results] == [True, True, True], results
    with gradebook(course, options) as gb:
        totals = {s.student.id: s.score for s in gb.find_assignment(LAB).submissions}
        n_grades = sum(len(nb.grades) for s in gb.find_assignment(LAB).submissions for nb in s.notebooks)
    assert totals == {"s1": 20.0, "s2": 0.0, "s3": 20.0}
    assert n_grades == 3 * 11  # no lost or duplicated grades
