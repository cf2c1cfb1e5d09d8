"""The grading sandbox on its own: each limit and each wall, tried by a program that runs inside it.

These run a few lines of Python through :class:`dlcourse_tools.grading.sandbox.Sandbox` (no kernel,
no nbgrader: seconds). The full workflow's intrusion test is in ``test_instructor_workflow.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlcourse_tools.grading.sandbox import Limits, Sandbox, unavailable

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(bool(unavailable()), reason=f"grading sandbox unavailable: {unavailable()}")


def run(code: str, tmp_path: Path, **limits: int) -> subprocess.CompletedProcess[str]:
    job = tmp_path / "job"
    job.mkdir(exist_ok=True)
    os.chmod(tmp_path, 0o755)
    cmd = Sandbox(limits=Limits(**limits)).command([sys.executable, "-I", "-c", code], job, dict(os.environ))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_only_the_runtime_and_the_scratch_folder_are_visible(tmp_path: Path) -> None:
    code = ("import os, json; print(json.dumps([os.getuid(), sorted(os.listdir('/')), "
            f"os.path.exists({str(ROOT / 'solutions')!r}), os.path.exists({str(ROOT / 'dlcourse' / 'check.py')!r}), "
            f"os.path.exists({str(tmp_path / 'secret.txt')!r}), os.getcwd()]))")
    (tmp_path / "secret.txt").write_text("another student's work")
    proc = run(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    uid, top, solutions, package, secret, cwd = json.loads(proc.stdout)
    assert uid != 0 or os.getuid() != 0  # started as root, the code runs as nobody
    assert "root" not in top or not os.path.exists("/root/.ssh")
    assert not solutions and package and not secret
    assert cwd == str(tmp_path / "job" / "work")


def test_cannot_write_outside_scratch(tmp_path: Path) -> None:
    code = ("import sys\nfor p in [sys.argv[0] if False else '/etc/x', '/usr/x', "
            f"{str(ROOT / 'dlcourse' / 'pwned.py')!r}]:\n"
            "    try:\n        open(p, 'w')\n        print('WROTE', p)\n    except OSError as e:\n        print('denied', e.errno)\n"
            "open('ok.txt', 'w').write('fine')\nprint('READ', open('ok.txt').read())")
    proc = run(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "WROTE" not in proc.stdout and proc.stdout.count("denied") == 3
    assert "READ fine" in proc.stdout  # the scratch folder is writable ...
    assert not (tmp_path / "job" / "work" / "ok.txt").exists()  # ... and private (a tmpfs), not the grader's disk
    assert not (ROOT / "dlcourse" / "pwned.py").exists()


def test_the_scratch_folder_has_a_quota(tmp_path: Path) -> None:
    code = ("written = 0\ntry:\n    for i in range(20):\n"
            "        with open(f'f{i}', 'wb') as f:\n            f.write(b'x' * 30_000_000)\n        written += 1\n"
            "except OSError as e:\n    print('STOPPED', e.errno)\nprint('WRITTEN', written)")
    proc = run(code, tmp_path)
    assert "STOPPED" in proc.stdout, proc.stdout + proc.stderr
    assert int(proc.stdout.split("WRITTEN")[1].split()[0]) <= 9  # 256 MiB: at most 8 files of 30 MB


def test_no_network(tmp_path: Path) -> None:
    code = ("import socket\ntry:\n    socket.create_connection(('127.0.0.1', 22), timeout=2)\n    print('CONNECTED')\n"
            "except OSError as e:\n    print('no network', type(e).__name__)\n"
            "import os; print(sorted(os.listdir('/sys/class/net')) if os.path.exists('/sys/class/net') else 'nosys')")
    proc = run(code, tmp_path)
    assert "CONNECTED" not in proc.stdout and "no network" in proc.stdout, proc.stdout + proc.stderr


def test_memory_limit_stops_an_allocation(tmp_path: Path) -> None:
    code = "x = bytearray(3 * 1024**3)\nprint('ALLOCATED')"  # 3 GiB: the machine has it, the limit not
    proc = run(code, tmp_path, memory_mb=512)
    assert "ALLOCATED" not in proc.stdout and "MemoryError" in proc.stderr, proc.stdout + proc.stderr


def test_cpu_time_limit_kills_a_busy_loop(tmp_path: Path) -> None:
    proc = run("while True:\n    pass", tmp_path, cpu_s=2, wall_s=60)
    assert proc.returncode == 128 + 24, (proc.returncode, proc.stderr)  # SIGXCPU


def test_wall_time_limit_kills_a_sleeper(tmp_path: Path) -> None:
    proc = run("import time\ntime.sleep(60)", tmp_path, wall_s=2)
    assert proc.returncode == 137 and "wall-time limit" in proc.stderr, (proc.returncode, proc.stderr)


def test_processes_outside_are_invisible(tmp_path: Path) -> None:
    proc = run("import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))", tmp_path)
    pids = json.loads(proc.stdout)
    assert len(pids) == 2 and pids[0] == 1, pids  # the jail (PID 1) and the program itself
