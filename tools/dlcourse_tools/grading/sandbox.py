"""Where student code runs during autograding: processes in their own Linux namespaces, under limits.

Each grading worker's student processes run inside fresh mount, PID, network, IPC and UTS
namespaces made by util-linux's ``unshare`` (part of every Debian and Ubuntu system, nothing to
install), in a minimal read-only root that holds the Python installation, the virtual
environment and the ``dlcourse`` package, plus one writable scratch folder (see
:mod:`dlcourse_tools.grading._jail` for the steps): no ``solutions/``, no gradebook, no other
submission, no network. Started as root, the processes run as an unprivileged user of their own
(one user id per worker, so one student's processes cannot use up another's process quota);
started as another user, ``unshare --user`` maps that user to root inside a user namespace.
Where cgroups can be created, each worker's sandbox gets one memory and process budget for
everything the submission starts (:func:`make_cgroup`). The student's process talks to the judge
over pipes and a Unix socket pair: nothing with a path, whatever ``TMPDIR`` is.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any


JAIL = Path(__file__).with_name("_jail.py")
NOBODY = 65534  # uid and gid of ``nobody`` on Debian
# Environment variables a kernel gets (everything else, tokens and credentials included, is dropped).
KEPT_ENV = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
            "MKL_NUM_THREADS", "MPLBACKEND", "NBGRADER_EXECUTION", "CUDA_VISIBLE_DEVICES")


@dataclass
class Limits:
    """Resource limits of one kernel (one submission).

    Attributes:
        cpu_s: CPU seconds before the kernel is killed (``RLIMIT_CPU``).
        wall_s: wall-clock seconds before the kernel is killed, whatever it does.
        memory_mb: private memory (``RLIMIT_DATA``): an allocation beyond it fails with a
            ``MemoryError`` or ``RuntimeError`` in the cell that asked for it.
        file_mb: largest file the kernel may write (``RLIMIT_FSIZE``).
        tmp_mb: size of the private ``/tmp`` and ``/dev/shm``.
        scratch_mb: size of the writable scratch folder (a private ``tmpfs``; 0: the grader's folder itself).
        files: open file descriptors.
        processes: processes and threads of the sandbox user (``RLIMIT_NPROC``, when the kernel
            runs as ``nobody``).
    """

    cpu_s: int = 600
    wall_s: int = 900
    memory_mb: int = 4096
    file_mb: int = 64
    tmp_mb: int = 64
    scratch_mb: int = 256
    files: int = 512
    processes: int = 1024


@dataclass
class Sandbox:
    """How to wrap a kernel command so that it runs isolated (see the module docstring).

    Attributes:
        limits: the resource limits.
        read_only: extra paths visible (read-only) inside, besides the Python installation, the
            virtual environment and the ``dlcourse`` package.
    """

    limits: Limits = field(default_factory=Limits)
    read_only: tuple[str, ...] = ()
    uid: int = NOBODY
    cgroup: str | None = None

    def visible_paths(self) -> list[str]:
        import dlcourse

        # The student package and the grader's own (the guard), not the repositories around them.
        packages = [Path(dlcourse.__file__).resolve().parent, Path(__file__).resolve().parents[1]]
        paths = ["/usr", "/etc", sys.base_prefix, sys.prefix, *map(str, packages), *self.read_only]
        return [p for p in dict.fromkeys(os.path.realpath(p) for p in paths)]

    def command(self, argv: list[str], job: Path, env: dict[str, str]) -> list[str]:
        """``argv`` wrapped to run in the sandbox, with ``job/work`` as its writable scratch folder.

        Raises:
            RuntimeError: the sandbox cannot start on this machine (the message says why).
        """
        problem = unavailable()
        if problem:
            raise RuntimeError(f"the grading sandbox cannot start here: {problem}")
        return self._command(argv, job, env)

    def _command(self, argv: list[str], job: Path, env: dict[str, str]) -> list[str]:
        work, root = job / "work", job / "root"
        work.mkdir(parents=True, exist_ok=True)
        root.mkdir(parents=True, exist_ok=True)
        as_root = os.getuid() == 0
        kernel_env = {k: env[k] for k in KEPT_ENV if k in env}
        kernel_env.update(HOME=str(work), TMPDIR="/tmp", IPYTHONDIR=str(work / ".ipython"),
                          MPLCONFIGDIR=str(work / ".matplotlib"), PYTHONDONTWRITEBYTECODE="1",
                          JUPYTER_RUNTIME_DIR=str(work))
        spec = {
            "root": str(root), "cwd": str(work), "read_only": self.visible_paths(), "writable": [str(work)],
            "devices": [d for d in os.listdir("/dev") if d.startswith("nvidia")],
            "uid": self.uid if as_root else None, "gid": self.uid if as_root else None,
            "cgroup": self.cgroup,
            "limits": asdict(self.limits), "tmp_mb": self.limits.tmp_mb, "scratch_mb": self.limits.scratch_mb,
            "env": kernel_env,
        }
        spec_file = job / "sandbox.json"
        spec_file.write_text(json.dumps(spec, indent=1))
        if as_root:
            for path in [work, *work.rglob("*")]:
                os.chown(path, self.uid, self.uid)
        return [*unshare_prefix(), sys.executable, "-I", "-S", str(JAIL), str(spec_file), "--", *argv]


def unshare_prefix() -> list[str]:
    """The ``unshare`` command that creates the namespaces (a user namespace too when not root)."""
    user = [] if os.getuid() == 0 else ["--user", "--map-root-user"]
    return ["unshare", *user, "--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child"]


@lru_cache(maxsize=1)
def unavailable() -> str | None:
    """``None`` when the sandbox works on this machine, else the reason it does not (tried once)."""
    if sys.platform != "linux":
        return f"it needs Linux namespaces (this is {sys.platform})"
    if shutil.which("unshare") is None:
        return "the `unshare` command (Debian package util-linux) is missing"
    with tempfile.TemporaryDirectory(prefix="dlcourse-sandbox-probe-") as tmp:
        os.chmod(tmp, 0o755)
        argv = [sys.executable, "-I", "-S", "-c", "print('ok')"]
        try:
            cmd = Sandbox(limits=Limits(cpu_s=10, wall_s=30))._command(argv, Path(tmp), dict(os.environ))
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as err:
            return f"starting it failed: {err}"
        if proc.returncode != 0 or proc.stdout.strip() != "ok":
            return f"`{' '.join(unshare_prefix())}` failed: {(proc.stderr or proc.stdout).strip()[-500:]}"
    return None


def make_cgroup(name: str, memory_mb: int, processes: int) -> str | None:
    """A cgroup for one grading worker's sandbox: its memory and process count, all processes together.

    Uses cgroups v2 where its memory and pids controllers are available to us, else the v1
    ``memory`` and ``pids`` hierarchies; returns the folders joined by ``:`` (the jail enters each),
    or ``None`` where neither can be created (then only the per-process limits apply).
    """
    made = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    where = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            where[c] = path
    v2 = Path("/sys/fs/cgroup") if Path("/sys/fs/cgroup/cgroup.controllers").is_file() else None
    candidates = []
    if v2 is not None and {"memory", "pids"} <= set((v2 / "cgroup.controllers").read_text().split()):
        candidates.append((v2 / where.get("", "/").lstrip("/") / name,
                           {"memory.max": str(memory_mb * 2**20), "pids.max": str(processes)}))
    else:
        for controller, settings in (("memory", {"memory.limit_in_bytes": str(memory_mb * 2**20)}),
                                     ("pids", {"pids.max": str(processes)})):
            root = Path("/sys/fs/cgroup") / controller
            if controller in where and root.is_dir():
                candidates.append((root / where[controller].lstrip("/") / name, settings))
    for folder, settings in candidates:
        try:
            folder.mkdir(exist_ok=True)
            for key, value in settings.items():
                (folder / key).write_text(value)
            made.append(str(folder))
        except OSError:
            continue
    return ":".join(made) or None


def remove_cgroup(cgroup: str | None) -> None:
    for folder in (cgroup or "").split(":"):
        if folder:
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def describe_exit(code: int | None) -> str:
    """The exit status of the student's process, in words."""
    import signal

    if code is None:
        return "the student's process died"
    if code in (137, -9):
        return "the student's process was killed (time limit, memory, or SIGKILL)"
    sig = code - 128 if code > 128 else -code if code < 0 else None
    if sig == signal.SIGXCPU:
        return "the student's process was killed at the CPU-time limit"
    if sig:
        try:
            return f"the student's process crashed ({signal.Signals(sig).name})"
        except ValueError:
            return f"the student's process crashed (signal {sig})"
    return f"the student's process exited with status {code} (sys.exit or os._exit in the notebook?)"
