"""The inside of the grading sandbox: run as PID 1 of fresh namespaces, it builds a minimal root and starts the kernel.

This file is executed by path (``python -I -S _jail.py SPEC -- ARGV...``), right after
``unshare --mount --net --pid --ipc --uts --fork`` has created new namespaces, so it imports
nothing but the standard library (importing :mod:`dlcourse` would import torch, seconds of
start-up). It

1. mounts a tmpfs as the new root and bind-mounts into it, read-only, only what a kernel needs
   (``/usr``, ``/etc``, the Python installation, the virtual environment, the ``dlcourse``
   package), plus the submission's scratch folder read-write, a small private ``/tmp``, a few
   device nodes and a fresh ``/proc``. Everything else (the course folder with ``solutions/``,
   the gradebook, other students' submissions and scratch folders, home folders) does not exist
   inside;
2. ``chroot``s into it, drops to an unprivileged user (when started as root), sets
   ``no_new_privs`` and the resource limits (CPU time, memory, file size, processes, files);
3. starts the kernel as its child and kills it at the wall-time limit. The new network
   namespace has no interface up, so there is no network; the kernel talks to the grader over
   Unix sockets in the scratch folder.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import resource
import signal
import subprocess
import sys
import time

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS = 38
DEVICES = ("null", "zero", "full", "random", "urandom")

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: None if s is None else s.encode())
    if _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} -> {target} ({fstype}): {os.strerror(err)}")


def _bind(source: str, root: str, *, writable: bool = False) -> None:
    """Bind ``source`` at the same path inside ``root``; read-only unless ``writable``."""
    if not os.path.exists(source):
        return
    target = root + os.path.abspath(source)
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    _mount(source, target, None, MS_BIND | MS_REC)
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | (0 if writable else MS_RDONLY)
    if os.path.realpath(source).startswith("/dev/"):
        _mount(None, target, None, flags)  # device nodes need dev
    else:
        _mount(None, target, None, flags | MS_NODEV)


def build_root(spec: dict) -> str:
    """Mount the minimal root described by ``spec``; returns its path (not yet entered)."""
    root = spec["root"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates to the host
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    for name in sorted(os.listdir("/")):  # merged-/usr symlinks such as /bin -> usr/bin
        if os.path.islink("/" + name):
            os.symlink(os.readlink("/" + name), os.path.join(root, name))
    os.makedirs(root + "/dev", exist_ok=True)
    for dev in DEVICES + tuple(spec.get("devices", ())):
        _bind("/dev/" + dev, root)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    os.makedirs(root + "/dev/shm")
    _mount("tmpfs", root + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={spec['tmp_mb']}m")
    os.makedirs(root + "/tmp")
    _mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={spec['tmp_mb']}m")
    os.makedirs(root + "/proc")
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV)
    # After /tmp, so that paths under /tmp (a scratch folder, a virtualenv) land on top of it.
    for path in spec["read_only"]:
        if not os.path.islink(path.rstrip("/")):
            _bind(path, root)
    for path in spec["writable"]:
        if spec.get("scratch_mb"):  # a size-limited folder of its own: filling it stops at the quota
            target = root + os.path.abspath(path)
            os.makedirs(target, exist_ok=True)
            owner = f",uid={spec['uid']},gid={spec['gid']}" if spec.get("uid") is not None else ""
            _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=0755,size={spec['scratch_mb']}m{owner}")
        else:
            _bind(path, root, writable=True)
    _mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)  # the skeleton itself
    return root


def enter(root: str, spec: dict) -> None:
    """chroot into ``root``, become the unprivileged user, and set the resource limits."""
    os.chroot(root)
    os.chdir(spec["cwd"])
    try:
        os.sethostname("sandbox") if hasattr(os, "sethostname") else None
    except OSError:
        pass
    if os.getuid() == 0 and spec.get("uid") is not None:
        os.setgroups([])
        os.setgid(spec["gid"])
        os.setuid(spec["uid"])  # drops every capability as well
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    limits = spec["limits"]
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_s"], limits["cpu_s"] + 5))
    resource.setrlimit(resource.RLIMIT_DATA, (limits["memory_mb"] * mb, limits["memory_mb"] * mb))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_mb"] * mb, limits["file_mb"] * mb))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["files"], limits["files"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.getuid() != 0:  # counted per user: meaningless (and harmful) for a mapped root
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))


def main(argv: list[str]) -> int:
    spec_path, sep, *command = argv
    assert sep == "--", "usage: _jail.py SPEC -- COMMAND..."
    with open(spec_path) as f:
        spec = json.load(f)
    for folder in (spec.get("cgroup") or "").split(":"):  # one budget for everything the submission starts
        if folder:
            with open(os.path.join(folder, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
    root = build_root(spec)
    enter(root, spec)
    env = spec["env"]
    # SIGINT reaches the kernel directly (same process group): the jail ignores it; it passes
    # SIGTERM on and kills the kernel at the wall-time limit.
    signal.signal(signal.SIGINT, lambda *_: None)
    child = subprocess.Popen(command, env=env, cwd=spec["cwd"])
    signal.signal(signal.SIGTERM, lambda *_: child.kill())
    deadline = time.monotonic() + spec["limits"]["wall_s"]
    while True:
        try:
            code = child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            sys.stderr.write(f"sandbox: wall-time limit of {spec['limits']['wall_s']} s reached, kernel killed\n")
            child.kill()
            child.wait()
            return 137
        else:
            return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
