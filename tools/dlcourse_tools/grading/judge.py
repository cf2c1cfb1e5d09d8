"""The judge: grades one submitted notebook with the trust boundary at a process boundary.

Two processes take part:

- **the student's process** (:mod:`~dlcourse_tools.grading.runner`, in the
  :mod:`~dlcourse_tools.grading.sandbox`) runs the notebook's code cells, the released set-up
  cells and the student's own cells, in order. It never sees a test cell.
- **the judge** (this module, in the grader's process) runs the instructor's test cells, hidden
  tests included, from ``solutions/``. Each name the student's cells define is a
  :class:`Remote` here: calling it sends the arguments to the student's process, runs the
  student's function there and brings back the result as plain data
  (:mod:`~dlcourse_tools.grading.wire`). References are computed here, and every verdict is
  made here: a test scores its points when its code ran to the end without an exception.

Nothing the notebook prints, returns or displays is read as a grade. An error, a time-out, a
dead process or a forbidden call costs the points of the test it happened in, and only those:
the student's process is started again (its cells run again) before the next test.

``check.forbid`` blocks of the tests are enforced twice: in the student's process (Python calls,
``__torch_function__`` calls and ATen operators are watched and reported, which that process
could suppress) and here, where the source of the student's functions that a test calls is read
for the forbidden names and for dynamic look-ups that could hide them (``getattr``, ``eval``,
``importlib``, ``torch.ops``, threads, ...), which no code in the student's process can change.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle
import nbformat

from dlcourse_tools.grading import wire

HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
MAX_OUTPUT = 20_000


class StudentError(Exception):
    """The student's process died, timed out or broke the protocol during one operation."""


class StudentTimeout(StudentError):
    """The student's code ran past its time limit and was stopped."""


def _forbidden_error() -> type:
    from dlcourse.check import ForbiddenCallError

    return ForbiddenCallError


# ---------------------------------------------------------------------------------------------
# The student's process
# ---------------------------------------------------------------------------------------------

@dataclass
class Budget:
    """What one submission may use, over all its processes and restarts.

    Attributes:
        cell_s: wall seconds for one cell or one test.
        total_s: wall seconds for the whole submission (every start and cell together).
        restarts: how often the student's process may be started again after dying.
    """

    cell_s: float = 120.0
    total_s: float = 900.0
    restarts: int = 3


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "OMP_NUM_THREADS",
                                                         "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")}
    env.update(extra, MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return env


class Zygote:
    """A warm sandbox: one process that imported torch once and forks a fresh student's process per submission.

    Started once per grading worker (``sandbox`` required: between two students it kills every
    other process of its PID namespace and empties the scratch folder, ``/tmp`` and ``/dev/shm``).
    The judge talks to it over a Unix socket pair and hands each child its two pipe ends.
    """

    def __init__(self, sandbox: Any, scratch: Path) -> None:
        self.sandbox, self.scratch = sandbox, Path(scratch)
        self.proc: subprocess.Popen | None = None
        self.sock: Any = None
        self.starts = 0

    def start(self, timeout: float = 180.0) -> None:
        import socket

        self.stop()
        self.starts += 1
        job = self.scratch / f"zygote{self.starts}"
        job.mkdir(parents=True, exist_ok=True)
        os.chmod(job, 0o755)
        ours, theirs = socket.socketpair()
        argv = [sys.executable, "-c", "import sys; from dlcourse_tools.grading.runner import zygote_main; "
                                      "sys.exit(zygote_main())"]
        cmd = self.sandbox.command(argv, job, _child_env({"DLCOURSE_SANDBOXED": "1"}))
        self.proc = subprocess.Popen(cmd, stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=subprocess.DEVNULL,
                                     cwd=job, env={k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ},
                                     start_new_session=True)
        theirs.close()
        self.sock = ours
        reply = self._line(time.monotonic() + timeout)
        if "ready" not in reply:
            raise StudentError("the grading sandbox did not start")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _line(self, deadline: float) -> dict[str, Any]:
        import json

        buffer = b""
        while not buffer.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.sock], [], [], max(0.0, min(left, 1.0)))
            if not ready:
                if left <= 0 or not self.alive():
                    self.stop()
                    raise StudentError("the grading sandbox stopped answering")
                continue
            chunk = self.sock.recv(4096)
            if not chunk:
                self.stop()
                raise StudentError("the grading sandbox stopped")
            buffer += chunk
            if len(buffer) > 65536:
                self.stop()
                raise StudentError("the grading sandbox broke its protocol")
        reply = json.loads(buffer.decode())
        return reply if isinstance(reply, dict) else {}

    def command(self, op: str, fds: list[int] | None = None, timeout: float = 60.0) -> dict[str, Any]:
        import json
        import socket

        if not self.alive():
            self.start()
        socket.send_fds(self.sock, [json.dumps({"op": op}).encode()], fds or [])
        return self._line(time.monotonic() + timeout)

    def stop(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            self.proc = None


class StudentProcess:
    """The runner, forked by a :class:`Zygote`, or started in the sandbox (or plainly, where ``sandbox`` is ``None``)."""

    def __init__(self, sandbox: Any, scratch: Path, env: dict[str, str] | None = None,
                 zygote: Zygote | None = None) -> None:
        self.sandbox, self.scratch = sandbox, Path(scratch)
        self.env = env or {}
        self.zygote = zygote
        self.proc: subprocess.Popen | None = None
        self.forked = False
        self.generation = 0
        self.death: str | None = None

    def start(self, timeout: float = 120.0) -> None:
        self.kill()
        self.generation += 1
        self.death = None
        if self.zygote is not None:
            self._fork(timeout)
            return
        job = self.scratch / f"run{self.generation}"
        job.mkdir(parents=True, exist_ok=True)
        # By import, not `-m`: handles must live in the module the unpickled proxies import.
        argv = [sys.executable, "-c", "import sys; from dlcourse_tools.grading.runner import main; sys.exit(main())"]
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "OMP_NUM_THREADS",
                                                               "OMP_WAIT_POLICY", "MKL_NUM_THREADS",
                                                               "CUDA_VISIBLE_DEVICES")}
        env.update(self.env, MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
        tools = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = tools
        if self.sandbox is not None:
            cmd, cwd = self.sandbox.command(argv, job, env), job
            work = job / "work"
        else:
            work = job / "work"
            work.mkdir(parents=True, exist_ok=True)
            cmd, cwd = argv, work
            env.update(HOME=str(work), TMPDIR=str(work), IPYTHONDIR=str(work / ".ipython"),
                       MPLCONFIGDIR=str(work / ".matplotlib"))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     cwd=cwd, env=env if self.sandbox is None else {k: env[k] for k in ("PATH", "LANG") if k in env} | {"PYTHONPATH": tools},
                                     start_new_session=True)
        self.work = work
        self._send_fd, self._recv_fd = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        reply = self._receive(time.monotonic() + timeout)
        if reply.get("value") != "ready":
            raise StudentError("the student's process did not start")

    def _fork(self, timeout: float) -> None:
        to_child, from_judge = os.pipe()[::-1]  # (write end for the judge, read end for the child)
        from_child, to_judge = os.pipe()
        try:
            reply = self.zygote.command("fork", [from_judge, to_judge], timeout)
        finally:
            os.close(from_judge)
            os.close(to_judge)
        if "pid" not in reply:
            os.close(to_child)
            os.close(from_child)
            raise StudentError("the grading sandbox could not start the student's process")
        self._send_fd, self._recv_fd = to_child, from_child
        self.forked = True
        reply = self._receive(time.monotonic() + timeout)
        if reply.get("value") != "ready":
            raise StudentError("the student's process did not start")

    def alive(self) -> bool:
        if self.forked:
            return self.death is None
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.forked:
            self.forked = False
            for fd in (self._send_fd, self._recv_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)
            with contextlib.suppress(StudentError):
                self.zygote.command("done")  # kills whatever the student's code started, empties its folders
            self.death = self.death or "stopped"
            return
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                f.close()
        self.proc = None

    def _why_dead(self) -> str:
        if self.forked:
            code = None
            for _ in range(20):
                with contextlib.suppress(StudentError, ValueError):
                    code = self.zygote.command("status", timeout=10).get("status")
                if code is not None:
                    break
                time.sleep(0.05)
            if code is None:
                return "the student's process stopped answering"
            from dlcourse_tools.grading.sandbox import describe_exit

            return describe_exit(128 - code if code < 0 else code)
        code = self.proc.poll() if self.proc else None
        if code is None:
            return "the student's process stopped answering"
        from dlcourse_tools.grading.sandbox import describe_exit

        return describe_exit(code)

    def _receive(self, deadline: float) -> dict[str, Any]:
        fd = self._recv_fd
        buffer = b""
        need = 4
        size = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.death = "the time limit was reached"
                self.kill()
                raise StudentTimeout("the time limit was reached: the student's code was stopped")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                if not self.forked and not self.alive():
                    self.death = self._why_dead()
                    raise StudentError(self.death)
                continue
            chunk = os.read(fd, max(need - len(buffer), 1 << 16) if size is None else min(need - len(buffer), 1 << 20))
            if not chunk:
                if self.proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.proc.wait(timeout=5)
                self.death = self._why_dead()
                self.kill()
                raise StudentError(self.death)
            buffer += chunk
            if size is None and len(buffer) >= 4:
                size = int.from_bytes(buffer[:4], "big")
                if size > wire.MAX_FRAME:
                    self.kill()
                    raise StudentError(f"the student's process sent {size} bytes at once (at most {wire.MAX_FRAME})")
                buffer, need = buffer[4:], size
            if size is not None and len(buffer) >= need:
                payload, rest = buffer[:need], buffer[need:]
                if rest:  # more than one frame: the process wrote to the protocol itself
                    self.kill()
                    raise StudentError("the student's process broke the grading protocol")
                try:
                    reply = wire.loads(payload)
                except wire.WireError as err:
                    self.kill()
                    raise StudentError(str(err)) from None
                if type(reply) is not dict:
                    raise StudentError("the student's process sent a malformed reply")
                return reply

    def request(self, req: dict[str, Any], deadline: float) -> dict[str, Any]:
        if not self.alive():
            raise StudentError(self.death or "the student's process is not running")
        try:
            payload = cloudpickle.dumps(req)
        except Exception as err:  # noqa: BLE001 (an argument the judge cannot send)
            raise StudentError(f"cannot send the arguments to the student's code: {err}") from None
        try:
            wire.write_frame(self._send_fd, payload)
        except OSError:
            self.death = self._why_dead()
            raise StudentError(self.death) from None
        done = False
        try:
            reply = self._receive(deadline)
            done = True
            return reply
        finally:
            if not done and self.alive():  # interrupted (a test's time limit): its state is unknown, stop it
                self.death = "stopped by the test's time limit"
                self.kill()


# ---------------------------------------------------------------------------------------------
# Remote objects
# ---------------------------------------------------------------------------------------------

def _resolve_remote(hid: int) -> Any:  # pragma: no cover (runs in the student's process)
    from dlcourse_tools.grading.runner import resolve_handle

    return resolve_handle(hid)


class Remote:
    """An object that lives in the student's process: a function, a model, a generator...

    Calls, attributes, items and iteration are carried out there; what comes back is plain
    data (tensors, numbers, ...) or another :class:`Remote`. ``isinstance`` checks see the
    closest ``torch`` or ``dlcourse`` class of the object (as the student's process reports it).
    """

    __slots__ = ("_judge", "_ref", "_types", "_name", "_generation", "_callable")

    def __init__(self, judge: Judge, ref: tuple[str, Any], types: list[str], name: str, is_callable: bool) -> None:
        object.__setattr__(self, "_judge", judge)
        object.__setattr__(self, "_ref", ref)
        object.__setattr__(self, "_types", types)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_generation", judge.process.generation)
        object.__setattr__(self, "_callable", is_callable)

    # what the object is
    @property
    def __class__(self) -> type:  # noqa: D105
        return self._judge.known_class(self._types) or Remote

    @property
    def __name__(self) -> str:
        return self._name or self._types[0].rsplit(".", 1)[-1]

    def __repr__(self) -> str:
        return f"<{self._types[0] if self._types else 'object'} {self._name} in the student's process>"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if self._generation != self._judge.process.generation:
            raise StudentError("an object of the student's process from before it was restarted")
        kind, value = self._ref
        if kind == "name":
            return (_lookup_name, (value,))
        return (_resolve_remote, (value,))

    # operations
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._judge.operate("call", self, args=args, kwargs=kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._judge.operate("getattr", self, name=name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._judge.operate("setattr", self, name=name, value=value)

    def __getitem__(self, key: Any) -> Any:
        return self._judge.operate("getitem", self, key=key)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._judge.operate("iter", self))

    def __next__(self) -> Any:
        try:
            return self._judge.operate("next", self)
        except StudentError as err:
            if "StopIteration" in str(err):
                raise StopIteration from None
            raise

    def __len__(self) -> int:
        n = self._judge.operate("len", self)
        if type(n) is not int or n < 0:
            raise StudentError(f"len() of the student's object gave {n!r}")
        return n

    def __dlcourse_torch_calls__(self, args: tuple, kwargs: dict) -> tuple[Any, int]:
        """Run the function and count its torch calls in the student's process (see :func:`dlcourse.check.torch_calls`)."""
        output, calls = self._judge.operate("torch_calls", self, args=args, kwargs=kwargs)
        if type(calls) is not int or calls < 0:
            raise StudentError(f"the student's process reported {calls!r} torch calls")
        return output, calls

    def __dlcourse_vjp__(self, args: tuple, kwargs: dict, upstream: Any, wrt: list[int]) -> tuple[Any, Any]:
        """Run the function and autograd through it in the student's process (see :func:`dlcourse.check.vjp`)."""
        return self._judge.operate("vjp", self, args=args, kwargs=kwargs, upstream=upstream, wrt=wrt)


def _lookup_name(name: str) -> Any:  # pragma: no cover (runs in the student's process)
    import __main__

    from dlcourse_tools.grading.runner import RUNNER

    return RUNNER.ns[name]


# ---------------------------------------------------------------------------------------------
# Reading the student's source (outside the student's process)
# ---------------------------------------------------------------------------------------------

DYNAMIC_CALLS = {"getattr", "setattr", "delattr", "eval", "exec", "compile", "__import__", "globals", "vars",
                 "locals", "breakpoint"}
DYNAMIC_ATTRS = {"__dict__", "__globals__", "__code__", "__builtins__", "__subclasses__", "__getattribute__",
                 "modules", "_C", "ops", "_python_dispatch", "overrides", "_disable_current_modes", "setprofile",
                 "settrace", "__closure__", "f_back", "f_globals"}
DYNAMIC_MODULES = {"importlib", "ctypes", "threading", "_thread", "multiprocessing", "concurrent", "gc", "inspect",
                   "builtins", "sys", "operator", "functools"}


class Source:
    """The student's code cells as the judge reads them: top-level statements and who uses whom."""

    def __init__(self, cells: list[str]) -> None:
        from IPython.core.inputtransformer2 import TransformerManager

        transform = TransformerManager().transform_cell
        self.statements: list[ast.stmt] = []
        for code in cells:
            try:
                self.statements += ast.parse(transform(code)).body
            except (SyntaxError, ValueError):
                continue
        self.binders: dict[str, list[ast.stmt]] = {}
        self.patches: list[ast.stmt] = []  # top-level assignments to attributes or items: x.y = ..., x[k] = ...
        for stmt in self.statements:
            for name in _bound(stmt):
                self.binders.setdefault(name, []).append(stmt)
            if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                if any(isinstance(t, (ast.Attribute, ast.Subscript)) for t in targets):
                    self.patches.append(stmt)

    def names(self) -> list[str]:
        return sorted(self.binders)

    def closure(self, roots: list[str]) -> list[ast.stmt]:
        """The statements that define ``roots`` and every top-level name they use, transitively."""
        seen: set[str] = set()
        todo = [r for r in roots if r in self.binders]
        out: list[ast.stmt] = list(self.patches)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            for stmt in self.binders.get(name, []):
                out.append(stmt)
                for node in ast.walk(stmt):
                    if isinstance(node, ast.Name) and node.id in self.binders and node.id not in seen:
                        todo.append(node.id)
        return out

    def forbidden_uses(self, roots: list[str], names: list[str]) -> list[str]:
        """What in the code of ``roots`` looks like a use of the forbidden ``names``, or could hide one."""
        attrs: dict[str, str] = {}    # attribute name -> forbidden name, on any object (tensor methods too)
        modattrs: dict[str, str] = {}  # ... only on a module (torch.X, F.X): a tensor's .X is another function
        methods = {full.rsplit(".", 1)[-1].rstrip("_") for full in names if full.startswith("torch.Tensor.")}
        for full in names:
            parts = [p for p in full.split(".") if p]
            last = parts[-1]
            if last.startswith("__") and len(parts) > 1:
                last = parts[-2]
            table = attrs if full.startswith("torch.Tensor.") or last.rstrip("_") in methods \
                or last[:1].isupper() or last.startswith("_") else modattrs
            table.setdefault(last, full)
            table.setdefault(last.rstrip("_"), full)
        modules = {"torch", "F", "nn", "functional", "dlcourse", "special", "linalg", "fft", "init"}
        for stmt in self.statements:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                modules |= {(a.asname or a.name).split(".")[0] for a in stmt.names}
        found: list[str] = []
        for stmt in self.closure(roots):
            where = getattr(stmt, "name", None)
            where = f"in {where}" if where else f"on line {stmt.lineno} of a cell"
            for node in ast.walk(stmt):
                if isinstance(node, ast.Attribute) and node.attr in attrs:
                    found.append(f"{attrs[node.attr]} (`.{node.attr}` {where})")
                elif isinstance(node, ast.Attribute) and node.attr in modattrs and _rooted_in(node.value, modules):
                    found.append(f"{modattrs[node.attr]} (`.{node.attr}` {where})")
                elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("torch", "dlcourse"):
                    for alias in node.names:
                        if alias.name in attrs:
                            found.append(f"{attrs[alias.name]} (imported {where})")
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in DYNAMIC_CALLS:
                    found.append(f"a dynamic look-up `{node.func.id}(...)` {where} (not allowed in a graded function)")
                elif isinstance(node, ast.Attribute) and node.attr in DYNAMIC_ATTRS:
                    found.append(f"`.{node.attr}` {where} (not allowed in a graded function)")
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                    for module in modules:
                        if module.split(".")[0] in DYNAMIC_MODULES:
                            found.append(f"`import {module}` {where} (not allowed in a graded function)")
        return list(dict.fromkeys(found))


def _rooted_in(node: ast.AST, modules: set[str]) -> bool:
    """Whether ``node`` is a name of ``modules`` or an attribute chain starting at one (``torch.nn.functional``)."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name) and node.id in modules


def _bound(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return [(a.asname or a.name).split(".")[0] for a in stmt.names if a.name != "*"]
    targets: list[Any] = []
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor)):
        targets = [stmt.target]
    elif isinstance(stmt, (ast.With, ast.AsyncWith)):
        targets = [i.optional_vars for i in stmt.items if i.optional_vars is not None]
    names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    if isinstance(stmt, (ast.If, ast.Try, ast.For, ast.While, ast.With)):
        for child in ast.iter_child_nodes(stmt):
            if isinstance(child, ast.stmt):
                names += _bound(child)
    return names


# ---------------------------------------------------------------------------------------------
# Forbidden calls: the names each test forbids, mapped to ATen operators
# ---------------------------------------------------------------------------------------------

ATEN_ALIASES = {
    "conv1d": ["convolution"], "conv2d": ["convolution"], "conv3d": ["convolution"], "convolution": ["convolution"],
    "_convolution": ["convolution"], "conv_transpose1d": ["convolution"], "conv_transpose2d": ["convolution"],
    "max_pool1d": ["max_pool1d", "max_pool2d_with_indices"], "max_pool2d": ["max_pool2d", "max_pool2d_with_indices"],
    "max_pool2d_with_indices": ["max_pool2d_with_indices"], "max_pool3d": ["max_pool3d_with_indices"],
    "avg_pool1d": ["avg_pool2d"], "avg_pool2d": ["avg_pool2d"], "avg_pool3d": ["avg_pool3d"],
    "adaptive_max_pool2d": ["adaptive_max_pool2d"], "adaptive_avg_pool2d": ["_adaptive_avg_pool2d"],
    "unfold": ["im2col"], "fold": ["col2im"], "sigmoid": ["sigmoid"], "tanh": ["tanh"], "relu": ["relu"],
    "leaky_relu": ["leaky_relu"], "elu": ["elu"], "softmax": ["_softmax"], "log_softmax": ["_log_softmax"],
    "cross_entropy": ["_log_softmax", "nll_loss"], "scaled_dot_product_attention": ["_scaled_dot_product_flash_attention",
                                                                                      "_scaled_dot_product_efficient_attention"],
    "lstm_cell": ["lstm_cell"], "lstm": ["lstm"], "rnn_tanh": ["rnn_tanh"], "mse_loss": ["mse_loss"],
    "binary_cross_entropy": ["binary_cross_entropy"], "binary_cross_entropy_with_logits": ["binary_cross_entropy_with_logits"],
}


def aten_ops(names: list[str]) -> list[str]:
    """The ATen operators that the torch functions called ``names`` run (for the dispatch watch)."""
    ops: set[str] = set()
    for full in names:
        if not full.startswith("torch."):
            continue
        last = full.rsplit(".", 1)[-1]
        if last in ATEN_ALIASES and (full.startswith("torch.nn.functional.") or full.startswith("torch._C") or
                                     last not in ("unfold", "fold")):
            ops.update(ATEN_ALIASES[last])
    return sorted(ops)


# ---------------------------------------------------------------------------------------------
# The judge
# ---------------------------------------------------------------------------------------------

@dataclass
class TestResult:
    grade_id: str
    points: float
    score: float = 0.0
    output: str = ""
    error: str | None = None
    seconds: float = 0.0
    mistake: str | None = None  # the known mistake a check recognised (``CheckError.mistake``), if any


@dataclass
class CellRun:
    index: int
    output: str = ""
    error: str | None = None


@dataclass
class Report:
    tests: dict[str, TestResult] = field(default_factory=dict)
    cells: dict[int, CellRun] = field(default_factory=dict)
    deaths: list[str] = field(default_factory=list)
    forbidden: list[str] = field(default_factory=list)
    seconds: float = 0.0


def nbgrader_meta(cell: Any) -> dict[str, Any]:
    return dict(cell.get("metadata", {}).get("nbgrader", {}) or {})


def is_test(cell: Any) -> bool:
    m = nbgrader_meta(cell)
    return cell.get("cell_type") == "code" and bool(m.get("grade")) and not m.get("solution")


def is_locked_setup(cell: Any) -> bool:
    m = nbgrader_meta(cell)
    return cell.get("cell_type") == "code" and bool(m.get("locked")) and not m.get("grade") and not m.get("solution")


def student_program(release: Any, submission: Any | None) -> list[tuple[str, str, int | None]]:
    """The code the student's process runs, in order: ``(kind, source, submission index)``.

    Released set-up cells run with the released source wherever the submission has them (and
    are put back where it lost them); solution cells and cells the student added run as
    submitted; test cells never run there.
    """
    released = {nbgrader_meta(c).get("grade_id"): c for c in release.cells if nbgrader_meta(c).get("grade_id")}
    # Released code cells without a grade id (the Colab set-up cell) are the course's code while unchanged.
    plain = {c.source for c in release.cells if c.get("cell_type") == "code" and not nbgrader_meta(c).get("grade_id")}
    program: list[tuple[str, str, int | None]] = []
    seen: set[str] = set()
    cells = list(submission.cells) if submission is not None else []
    for i, cell in enumerate(cells):
        if cell.get("cell_type") != "code":
            continue
        gid = nbgrader_meta(cell).get("grade_id")
        ref = released.get(gid)
        if ref is not None:
            seen.add(gid)
            if is_test(ref):
                continue
            if is_locked_setup(ref):
                # Released set-up cells that went missing before this one come back first.
                for missing in _missing_before(release, gid, seen):
                    program.append(("setup", missing.source, None))
                program.append(("setup", ref.source, i))
                continue
            if nbgrader_meta(ref).get("solution"):
                for missing in _missing_before(release, gid, seen):
                    program.append(("setup", missing.source, None))
                program.append(("student", cell.source, i))
                continue
        program.append(("setup" if ref is None and cell.source in plain else "student", cell.source, i))
    for cell in release.cells:  # set-up cells the submission lost after its last known cell
        gid = nbgrader_meta(cell).get("grade_id")
        if gid and gid not in seen and is_locked_setup(cell):
            seen.add(gid)
            program.append(("setup", cell.source, None))
    return program


def _missing_before(release: Any, gid: str, seen: set[str]) -> list[Any]:
    out = []
    for cell in release.cells:
        g = nbgrader_meta(cell).get("grade_id")
        if g == gid:
            break
        if g and g not in seen and is_locked_setup(cell):
            seen.add(g)
            out.append(cell)
    return out


class Judge:
    """Grades one notebook of one submission (see the module docstring)."""

    def __init__(self, source: Any, release: Any, submission: Any | None, process: StudentProcess,
                 budget: Budget | None = None) -> None:
        self.source, self.release, self.submission = source, release, submission
        self.process = process
        self.budget = budget or Budget()
        self.program = student_program(release, submission)
        self.code = Source([src for kind, src, _ in self.program if kind == "student"])
        self.forbid_stack: list[tuple[list[str], str]] = []
        self.deadline = 0.0
        self.started = time.monotonic()
        self.report = Report()
        self.current_test: str | None = None
        self._classes: dict[str, type | None] = {}

    # --- what the tests see -------------------------------------------------------------------
    def known_class(self, types: list[str]) -> type | None:
        """The first class in an object's reported MRO that the judge can import from torch or dlcourse."""
        for qualname in types:
            if qualname in self._classes:
                cls = self._classes[qualname]
            else:
                cls = None
                module, _, name = qualname.rpartition(".")
                if module.split(".")[0] in ("torch", "dlcourse") and "<" not in qualname:
                    try:
                        obj: Any = __import__(module, fromlist=["_"])
                        for part in name.split("."):
                            obj = getattr(obj, part)
                        cls = obj if isinstance(obj, type) else None
                    except Exception:  # noqa: BLE001
                        cls = None
                self._classes[qualname] = cls
            if cls is not None and cls is not object:
                return cls
        return None

    def make_handle(self, hid: int, types: list[str], name: str, is_callable: bool) -> Remote:
        return Remote(self, ("handle", hid), types, name, is_callable)

    @contextlib.contextmanager
    def forbid(self, *targets: Any, reason: str = "write it yourself from the formula") -> Iterator[None]:
        """The judge's ``check.forbid``: the student's code called inside may not use ``targets``."""
        from dlcourse import check

        names = []
        for t in targets:
            names.append(t if isinstance(t, str) else check._resolve(t)[1])
        self.forbid_stack.append((names, reason))
        try:
            yield
        finally:
            self.forbid_stack.pop()

    def operate(self, op: str, remote: Remote, **fields: Any) -> Any:
        """One operation on a student's object, in the student's process; its result as plain data."""
        from dlcourse.check import CheckError

        if remote._generation != self.process.generation:
            raise StudentError("this object belonged to the student's process before it was restarted")
        names = [n for names, _ in self.forbid_stack for n in names]
        reason = self.forbid_stack[-1][1] if self.forbid_stack else ""
        if names and op in ("call", "vjp", "torch_calls"):
            roots = [remote._ref[1]] if remote._ref[0] == "name" else [remote._name] if remote._name else []
            if remote._ref[0] == "handle" and not remote._name:
                roots = self.code.names()  # a method of a student's object: read all the student's code
            uses = self.code.forbidden_uses(roots or self.code.names(), names)
            if uses:
                self.report.forbidden.append(uses[0])
                raise _forbidden_error()(f"your code uses {uses[0]}, which this exercise forbids: {reason}")
        req = {"op": op, "target": remote._ref, **fields}
        if names:
            req["forbid"] = {"names": names, "aten": aten_ops(names)}
        import torch

        req["grad"] = torch.is_grad_enabled()
        deadline = min(self.deadline, self.started + self.budget.total_s)
        reply = self.process.request(req, deadline)
        if reply.get("forbidden"):
            seen = [str(x)[:200] for x in reply["forbidden"] if isinstance(x, str)]
            if seen:
                self.report.forbidden.append(seen[0])
                raise _forbidden_error()(f"your code calls {seen[0]}, which this exercise forbids: {reason}")
        if not reply.get("ok"):
            err = reply.get("error") or {}
            ename = str(err.get("ename", "Error"))[:100]
            evalue = str(err.get("evalue", ""))[:1000]
            if ename == "StopIteration" and op == "next":
                raise StopIteration
            raise CheckError(f"your code raised {ename}: {evalue}" + (f" ({err['where']})" if err.get("where") else ""))
        try:
            value = wire.decode(reply.get("value"), self.make_handle)
            if op in ("call", "vjp", "torch_calls") and isinstance(reply.get("mutations"), dict):
                self._apply_mutations(fields.get("args", ()), fields.get("kwargs", {}), reply["mutations"])
            if op == "vjp":
                grads = wire.decode(reply.get("grads"), self.make_handle)
                return value, grads
            if op == "torch_calls":
                return value, wire.decode(reply.get("calls"), self.make_handle)
        except wire.WireError as err:
            raise StudentError(f"the student's process sent malformed data: {err}") from None
        return value

    def _apply_mutations(self, args: Any, kwargs: Any, mutations: dict[str, Any]) -> None:
        """Copy what the student's code changed in the judge's arguments back into them."""
        states = mutations.get("args") or []
        if type(states) is not list:
            raise wire.WireError("malformed argument states")
        for arg, state in zip(args, states):
            self._apply(arg, state)
        kstates = mutations.get("kwargs") or {}
        if type(kstates) is not dict:
            raise wire.WireError("malformed argument states")
        for key, value in (kwargs or {}).items():
            self._apply(value, kstates.get(key))

    def _apply(self, target: Any, state: Any, depth: int = 0) -> None:
        import torch

        if state is None or isinstance(target, Remote) or depth > 5:
            return
        if type(state) is not list or len(state) != 2:
            raise wire.WireError("a malformed argument state")
        kind, data = state
        if kind == "tensor" and isinstance(target, torch.Tensor):
            new = wire.decode(data, self.make_handle)
            if not isinstance(new, torch.Tensor) or new.shape != target.shape or new.dtype != target.dtype:
                return  # replaced, not changed in place: the judge's tensor stays as it was
            with torch.no_grad():
                if not torch.equal(new.to(target.device), target):
                    target.copy_(new)
        elif kind == "module" and isinstance(target, torch.nn.Module):
            new = wire.decode(data, self.make_handle)
            if type(new) is not dict or not all(isinstance(v, torch.Tensor) for v in new.values()):
                raise wire.WireError("a model's state that is not tensors")
            target.load_state_dict(new)
        elif kind == "optimizer" and isinstance(target, torch.optim.Optimizer):
            new = wire.decode(data, self.make_handle)
            if type(new) is not dict:
                raise wire.WireError("an optimizer's state that is not a dictionary")
            target.load_state_dict(new)
        elif kind == "seq" and type(target) in (list, tuple) and type(data) is list:
            for t, s in zip(target, data):
                self._apply(t, s, depth + 1)
        elif kind == "map" and type(target) is dict and type(data) is dict:
            for k, t in target.items():
                self._apply(t, data.get(str(k)), depth + 1)

    # --- running ---------------------------------------------------------------------------
    def _left(self) -> float:
        return self.started + self.budget.total_s - time.monotonic()

    def run_student_cells(self) -> None:
        """Start the student's process and run the program; a cell that kills it is skipped on the next start."""
        skip: set[int] = set()
        deaths = 0  # cells that killed the process: each is skipped on the next start
        while True:
            if deaths > self.budget.restarts or self._left() <= 0:
                return
            try:
                self.process.start(timeout=max(5.0, min(120.0, self._left())))
            except StudentError as err:
                self.report.deaths.append(f"the student's process could not start: {err}")
                deaths += 1
                continue
            died_at = None
            for k, (kind, src, index) in enumerate(self.program):
                if k in skip:
                    continue
                deadline = min(time.monotonic() + self.budget.cell_s, self.started + self.budget.total_s)
                try:
                    reply = self.process.request({"op": "exec", "code": src}, deadline)
                except StudentError as err:
                    died_at = k
                    deaths += 1
                    self.report.deaths.append(str(err))
                    if index is not None:
                        self.report.cells[index] = CellRun(index, "", f"{err} while running this cell")
                    break
                if index is not None:
                    err = reply.get("error")
                    text = str(reply.get("stdout") or "")[-MAX_OUTPUT:]
                    self.report.cells[index] = CellRun(
                        index, text, f"{str(err.get('ename'))[:100]}: {str(err.get('evalue'))[:1000]}"
                        if isinstance(err, dict) else None)
            if died_at is None:
                return
            skip.add(died_at)

    def restart(self) -> None:
        """A fresh student's process with every cell run again (after a death or a time-out)."""
        saved = dict(self.report.cells)
        self.run_student_cells()
        self.report.cells = saved

    def namespace(self) -> dict[str, Any]:
        """The judge's namespace: the student's names (as remote objects or plain values)."""
        from dlcourse import check

        names = self.code.names()
        ns: dict[str, Any] = {"__name__": "__judge__", "__builtins__": builtins}
        if not names or not self.process.alive():
            return ns
        reply = self.process.request({"op": "resolve", "names": names}, time.monotonic() + 60)
        try:
            values = wire.decode(reply.get("value"), self._named_handle)
        except wire.WireError as err:
            raise StudentError(str(err)) from None
        if type(values) is dict:
            ns.update({k: v for k, v in values.items() if k in names})
        del check
        return ns

    def _named_handle(self, hid: int, types: list[str], name: str, is_callable: bool) -> Remote:
        return Remote(self, ("handle", hid), types, name, is_callable)

    def grade(self) -> Report:
        """Run everything: the student's cells there, the tests here; returns the report."""
        from dlcourse import check

        self.run_student_cells()
        try:
            ns = self.namespace()
        except StudentError:
            ns = {"__name__": "__judge__", "__builtins__": builtins}
        import dlcourse

        original_forbid, original_seed = check.forbid, dlcourse.seed_everything

        def seed_everything(seed: int = 0, *args: Any, **kwargs: Any) -> Any:
            """The tests' seeding reaches the student's process too (their training runs there)."""
            out = original_seed(seed, *args, **kwargs)
            if self.process.alive() and type(seed) is int:
                with contextlib.suppress(StudentError):
                    self.process.request({"op": "seed", "seed": seed}, time.monotonic() + 30)
            return out

        check.forbid, dlcourse.seed_everything = self.forbid, seed_everything
        try:
            for cell in self.source.cells:
                if cell.get("cell_type") != "code":
                    continue
                meta = nbgrader_meta(cell)
                if is_test(cell):
                    self._run_test(cell, meta, ns)
                elif is_locked_setup(cell):
                    self._run_judge_code(cell.source, ns)
        finally:
            check.forbid, dlcourse.seed_everything = original_forbid, original_seed
            self.process.kill()
        self.report.seconds = time.monotonic() - self.started
        return self.report

    def _run_judge_code(self, code: str, ns: dict[str, Any]) -> tuple[str, BaseException | None]:
        from IPython.core.inputtransformer2 import TransformerManager

        out = io.StringIO()
        error: BaseException | None = None
        self.deadline = min(time.monotonic() + self.budget.cell_s, self.started + self.budget.total_s)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), _alarm(self.deadline):
            try:
                exec(compile(TransformerManager().transform_cell(code), "<test>", "exec"), ns)  # noqa: S102 (instructor code)
            except BaseException as err:  # noqa: BLE001 (any failure is the test's)
                error = err
        return out.getvalue()[-MAX_OUTPUT:], error

    def _run_test(self, cell: Any, meta: dict[str, Any], ns: dict[str, Any]) -> None:
        gid, points = meta["grade_id"], float(meta.get("points", 0))
        result = TestResult(gid, points)
        self.report.tests[gid] = result
        if self._left() <= 0:
            result.error = "not run: the submission used up its time"
            return
        if not self.process.alive():
            self.restart()
            try:
                ns.update(self.namespace())
            except StudentError as err:
                result.error = f"not run: {err}"
                return
        started = time.monotonic()
        result.output, error = self._run_judge_code(cell.source, ns)
        result.seconds = time.monotonic() - started
        if error is None:
            result.score = points
            return
        result.error = one_line(error)
        mistake = getattr(error, "mistake", None)
        result.mistake = mistake[:200] if isinstance(mistake, str) else None
        if isinstance(error, StudentError) and not isinstance(error, StudentTimeout):
            self.report.deaths.append(f"{error} (in {gid})")
        if not self.process.alive():  # it died or timed out in this test: the next one gets a fresh one
            self.restart()
            try:
                ns.update(self.namespace())
            except StudentError:
                pass


class _Timeout(BaseException):
    """The judge's own time limit for one test (a BaseException so test code cannot catch it)."""


@contextlib.contextmanager
def _alarm(deadline: float) -> Iterator[None]:
    if not hasattr(signal, "setitimer") or threading_main() is False:
        yield
        return

    def fire(*_: Any) -> None:
        raise _Timeout("the test's time limit was reached")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(0.01, deadline - time.monotonic() + 5))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def one_line(error: BaseException) -> str:
    """An error as the student reads it: its class and its message, on one line."""
    name = type(error).__name__
    if isinstance(error, AssertionError):
        name = "CheckError" if name in ("CheckError", "AssertionError") else name
    elif isinstance(error, StudentTimeout):
        name = "TimeoutError"
    elif isinstance(error, StudentError):
        name = "ProcessDied"
    text = " ".join(str(error).split())
    if isinstance(error, _Timeout):
        return "TimeoutError: the test's time limit was reached"
    return f"{name}: {text}"[:2000] if text else name


def released_source(source: str) -> str:
    """A test cell's source without its hidden block (what the student was given)."""
    out, depth = [], 0
    for line in source.splitlines():
        if line.strip() == HIDDEN_BEGIN:
            depth += 1
        elif line.strip() == HIDDEN_END:
            depth -= 1
        elif depth == 0:
            out.append(line)
    return "\n".join(out).rstrip() + "\n"


def read_notebook(path: Path) -> Any | None:
    """A submitted notebook, or ``None`` when it cannot be read as one."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # noqa: BLE001 (anything unreadable is a missing submission)
        return None
    if not isinstance(getattr(nb, "cells", None), list):
        return None
    for cell in nb.cells:
        if not isinstance(cell.get("source", ""), str):
            return None
    return nb
