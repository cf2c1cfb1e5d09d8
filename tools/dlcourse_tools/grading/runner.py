"""The student's side of grading: a process in the sandbox that runs the student's code when asked.

Started by :mod:`dlcourse_tools.grading.judge` inside the sandbox (``python -c "from
dlcourse_tools.grading.runner import main; main()"``), it reads requests from its standard input and answers on its
standard output (see :mod:`~dlcourse_tools.grading.wire`); file descriptors 0-2 then point at
``/dev/null`` and a log file, so that nothing the student's code prints can reach the judge.
Requests:

- ``exec``: run a notebook cell (student code or a released set-up cell) in the student's
  namespace, IPython syntax included; answers what it printed and the error, if any.
- ``resolve``: the values of top-level names (functions and other objects come back as handles).
- ``call``, ``vjp``, ``getattr``, ``setattr``, ``getitem``, ``iter``, ``next``, ``len``:
  operations on the student's objects, on arguments the judge sends; ``vjp`` also returns the
  gradients autograd computes through the student's function.

Each operation may run under a list of forbidden functions (the judge's ``check.forbid``):
they are watched at the Python level (:func:`dlcourse.check.forbid`), as ``__torch_function__``
calls and as ATen operators (a dispatch mode), and reported back. None of this is trusted: this
whole process is the student's, and everything it answers is data that the judge checks. What it
cannot do is see the tests, the references or the judge's verdicts: they never come here.
"""

from __future__ import annotations

import io
import os
import sys
import traceback
from typing import Any

MAX_TEXT = 20_000  # characters of printed output kept per request


class _Handles:
    def __init__(self) -> None:
        self.by_id: dict[int, Any] = {}
        self.ids: dict[int, int] = {}
        self.next = 1

    def handle_of(self, obj: Any) -> dict[str, Any]:
        hid = self.ids.get(id(obj))
        if hid is None or self.by_id.get(hid) is not obj:
            hid, self.next = self.next, self.next + 1
            self.by_id[hid] = obj
            self.ids[id(obj)] = hid
        types = [f"{t.__module__}.{t.__qualname__}" for t in type(obj).__mro__]
        name = getattr(obj, "__name__", None)
        return {"id": hid, "types": types, "name": name if isinstance(name, str) else None,
                "callable": callable(obj)}


HANDLES = _Handles()
RUNNER: Runner | None = None  # set by main(); the judge's proxies of top-level names resolve through it


def resolve_handle(hid: int) -> Any:
    """The object a handle stands for (what a judge-side proxy unpickles to here)."""
    try:
        return HANDLES.by_id[hid]
    except KeyError:
        raise LookupError(f"no object with handle {hid} in the student's process") from None


class _Capture:
    def __enter__(self) -> io.StringIO:
        self.buffer = io.StringIO()
        self.saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = self.buffer
        return self.buffer

    def __exit__(self, *exc: Any) -> None:
        sys.stdout, sys.stderr = self.saved


def _error(err: BaseException) -> dict[str, str]:
    return {"ename": type(err).__name__, "evalue": str(err)[:2000]}


class _Watch:
    """Forbidden functions and operators, watched while the student's code runs (best effort)."""

    def __init__(self, spec: dict[str, Any] | None) -> None:
        self.spec = spec or {}
        self.found: list[str] = []
        self.stack: list[Any] = []

    def __enter__(self) -> _Watch:
        names, aten = self.spec.get("names") or [], set(self.spec.get("aten") or [])
        if not names:
            return self
        import contextlib

        import torch
        from torch.overrides import TorchFunctionMode
        from torch.utils._python_dispatch import TorchDispatchMode

        from dlcourse import check

        objects = {}
        for name in names:
            try:
                objects[check._resolve(name)[0]] = name
            except Exception:  # noqa: BLE001 (a name this torch version lacks)
                continue
        found = self.found

        class Functions(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                label = objects.get(func) or objects.get(getattr(func, "__func__", None))
                if label and label not in found:
                    found.append(label)
                return func(*args, **(kwargs or {}))

        class Operators(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                op = func.overloadpacket.__name__
                if op in aten and f"aten.{op}" not in found:
                    found.append(f"aten.{op}")
                return func(*args, **(kwargs or {}))

        self.exits = contextlib.ExitStack()
        forbid = check.forbid(*objects.values()) if objects else contextlib.nullcontext()
        self.forbid = forbid
        self.exits.enter_context(Functions())
        if aten:
            self.exits.enter_context(Operators())
        self.forbid.__enter__()
        del torch
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.spec.get("names"):
            return
        try:
            self.forbid.__exit__(None, None, None)
        except Exception as err:  # noqa: BLE001 (ForbiddenCallError: a forbidden call was made)
            text = str(err)
            if "calls " in text:
                self.found.append(text.split("calls ", 1)[1].split(",", 1)[0])
        finally:
            self.exits.close()


class Runner:
    def __init__(self) -> None:
        from IPython.core.interactiveshell import InteractiveShell

        self.shell = InteractiveShell.instance(colors="nocolor")
        self.shell.run_cell("import matplotlib\nmatplotlib.use('Agg')", store_history=False)
        self.ns = self.shell.user_ns

    # --- helpers -------------------------------------------------------------------------
    def target(self, ref: Any) -> Any:
        kind, value = ref
        if kind == "name":
            if value not in self.ns:
                raise NameError(f"name {value!r} is not defined in the notebook")
            return self.ns[value]
        return resolve_handle(value)

    def encode(self, value: Any) -> Any:
        from dlcourse_tools.grading.wire import encode

        return encode(value, HANDLES.handle_of)

    def state_of(self, value: Any, depth: int = 0) -> Any:
        """What the judge needs to update its own copy of an argument the student's code may change."""
        import torch

        if depth > 4 or id(value) in HANDLES.ids:
            return None
        if isinstance(value, torch.Tensor):
            return ["tensor", self.encode(value)]
        if isinstance(value, torch.nn.Module):
            return ["module", self.encode(dict(value.state_dict()))]
        if isinstance(value, torch.optim.Optimizer):
            return ["optimizer", self.encode(value.state_dict())]
        if type(value) in (list, tuple):
            return ["seq", [self.state_of(v, depth + 1) for v in value]]
        if type(value) is dict:
            return ["map", {str(k): self.state_of(v, depth + 1) for k, v in value.items()}]
        return None

    # --- requests ------------------------------------------------------------------------
    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req["op"]
        if op == "ping":
            return {"ok": True, "value": "pong"}
        if op == "seed":  # the test seeds before training the student's model: the same seed here
            from dlcourse import seed_everything

            with _Capture():
                seed_everything(int(req["seed"]))
            return {"ok": True, "value": None}
        if op == "exec":
            with _Capture() as out:
                result = self.shell.run_cell(req["code"], store_history=False, silent=False)
            err = result.error_before_exec or result.error_in_exec
            return {"ok": True, "stdout": out.getvalue()[-MAX_TEXT:], "error": _error(err) if err else None}
        if op == "resolve":
            values = {}
            for name in req["names"]:
                if name in self.ns:
                    values[name] = self.encode(self.ns[name])
            return {"ok": True, "value": {"__t": "dict", "k": list(values), "v": list(values.values())}}
        if op == "release":
            for hid in req["ids"]:
                obj = HANDLES.by_id.pop(hid, None)
                if obj is not None:
                    HANDLES.ids.pop(id(obj), None)
            return {"ok": True, "value": None}
        import torch

        obj = self.target(req["target"])
        args, kwargs = req.get("args", ()), req.get("kwargs", {})
        watch = _Watch(req.get("forbid"))
        with _Capture() as out, torch.set_grad_enabled(req.get("grad", True)):
            try:
                with watch:
                    value, extra = self.operate(op, obj, args, kwargs, req)
            except BaseException as err:  # noqa: BLE001 (everything the student's code raises is reported)
                if isinstance(err, (KeyboardInterrupt, SystemExit)) and op == "exec":
                    raise
                tb = traceback.extract_tb(err.__traceback__)
                where = next((f"line {f.lineno} of {f.name}" for f in reversed(tb) if f.filename.startswith("<")), "")
                return {"ok": False, "error": {**_error(err), "where": where}, "forbidden": watch.found,
                        "stdout": out.getvalue()[-MAX_TEXT:]}
        reply = {"ok": True, "value": self.encode(value), "forbidden": watch.found, "stdout": out.getvalue()[-MAX_TEXT:]}
        if op in ("call", "vjp", "torch_calls"):
            reply["mutations"] = {"args": [self.state_of(a) for a in args],
                                  "kwargs": {k: self.state_of(v) for k, v in kwargs.items()}}
        reply.update(extra)
        return reply

    def operate(self, op: str, obj: Any, args: Any, kwargs: Any, req: dict[str, Any]) -> tuple[Any, dict]:
        if op == "call":
            return obj(*args, **kwargs), {}
        if op == "vjp":
            import torch

            y = obj(*args, **kwargs)
            wrt = [args[i] for i in req["wrt"]]
            if not isinstance(y, torch.Tensor):
                return y, {"grads": None}
            if not y.requires_grad:
                return y, {"grads": self.encode([None] * len(wrt))}
            upstream = req.get("upstream")
            if upstream is not None and y.shape != upstream.shape:
                raise ValueError(f"wrong shape: expected {tuple(upstream.shape)}, got {tuple(y.shape)}")
            grads = torch.autograd.grad(y if upstream is not None else y.sum(), wrt, upstream, allow_unused=True)
            return y, {"grads": self.encode(list(grads))}
        if op == "torch_calls":
            from dlcourse import check

            value, calls = check.torch_calls(obj, *args, **kwargs)
            return value, {"calls": calls}
        if op == "getattr":
            return getattr(obj, req["name"]), {}
        if op == "setattr":
            setattr(obj, req["name"], req["value"])
            return None, {}
        if op == "getitem":
            return obj[req["key"]], {}
        if op == "iter":
            items = []
            for item in obj:
                items.append(item)
                if len(items) > 100_000:
                    raise OverflowError("more than 100,000 items")
            return items, {}
        if op == "next":
            return next(obj), {}
        if op == "len":
            return len(obj), {}
        raise ValueError(f"unknown operation {op!r}")


def main() -> int:
    """One student's process, talking to the judge on its standard input and output."""
    inp, out = os.dup(0), os.dup(1)
    return serve(inp, out)


def serve(inp: int, out: int) -> int:
    import cloudpickle

    from dlcourse_tools.grading.wire import dumps, read_frame, write_frame

    # The protocol keeps private descriptors; the student's prints go to a log, input is empty.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    log = os.open("runner.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdin = open(os.devnull)
    os.environ.setdefault("MPLBACKEND", "Agg")
    global RUNNER
    runner = RUNNER = Runner()
    write_frame(out, dumps({"ok": True, "value": "ready", "pid": os.getpid()}))
    while True:
        try:
            frame = read_frame(inp)
        except EOFError:
            return 0
        try:
            req = cloudpickle.loads(frame)
            reply = runner.handle(req)
        except BaseException as err:  # noqa: BLE001 (the reply says what went wrong)
            reply = {"ok": False, "error": _error(err)}
        try:
            payload = dumps(reply)
        except (TypeError, ValueError) as err:
            payload = dumps({"ok": False, "error": {"ename": "WireError", "evalue": f"unencodable reply: {err}"}})
        write_frame(out, payload)


def _warm_up() -> None:
    """Import what every student's process needs (torch, IPython, the dispatch modes), once."""
    import cloudpickle  # noqa: F401
    import torch
    from IPython.core.interactiveshell import InteractiveShell  # noqa: F401
    from torch.utils._python_dispatch import TorchDispatchMode

    import dlcourse.check  # noqa: F401
    import dlcourse_tools.grading.wire  # noqa: F401

    class _Noop(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    with _Noop():  # its first use imports torch._dynamo (seconds): done here, not in a student's test
        torch.ones(1) + 1
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def _sweep(keep: set[int], folders: list[str]) -> None:
    """Kill every process of this sandbox but ``keep`` and empty ``folders`` (between two students)."""
    import shutil
    import signal

    for _ in range(3):
        others = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in keep]
        for pid in others:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG) == (0, 0):
                    break
            except ChildProcessError:
                break
        if not others:
            break
    for folder in folders:
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            path = os.path.join(folder, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def zygote_main() -> int:
    """A warm parent in the sandbox: forks one student's process per submission, then sweeps up after it.

    Its standard input is a Unix socket to the judge. Each ``fork`` message carries two pipe ends
    (file descriptors passed with ``SCM_RIGHTS``); the child serves the judge on them. ``done``
    kills every other process in the sandbox (whatever the student's code started) and empties
    the scratch folder, ``/tmp`` and ``/dev/shm`` before the next student.
    """
    import ctypes
    import json
    import socket

    ctrl = socket.socket(fileno=os.dup(0))
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # nothing printed here may reach the judge's socket
        os.dup2(devnull, fd)
    sandboxed = os.getpid() == 2 and os.environ.get("DLCOURSE_SANDBOXED") == "1"  # PID 1 is the sandbox's init
    try:
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: a student's process cannot ptrace this one
    except Exception:  # noqa: BLE001
        pass
    _warm_up()
    home = os.getcwd()
    ctrl.sendall(json.dumps({"ready": os.getpid()}).encode() + b"\n")
    child = 0
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(ctrl, 4096, 2)
        except OSError:
            return 0
        if not msg:
            return 0
        cmd = json.loads(msg.decode())
        if cmd.get("op") == "fork" and len(fds) == 2:
            work = os.path.join(home, "student")
            os.makedirs(work, exist_ok=True)
            pid = os.fork()
            if pid == 0:
                ctrl.close()
                os.setsid()
                os.chdir(work)
                os.environ.update(HOME=work, IPYTHONDIR=os.path.join(work, ".ipython"),
                                  MPLCONFIGDIR=os.path.join(work, ".matplotlib"))
                try:
                    serve(fds[0], fds[1])
                finally:
                    os._exit(0)
            for fd in fds:
                os.close(fd)
            child = pid
            ctrl.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        elif cmd.get("op") == "status":
            status = None
            if child:
                try:
                    pid, code = os.waitpid(child, os.WNOHANG)
                    status = os.waitstatus_to_exitcode(code) if pid else None
                except ChildProcessError:
                    status = -9
            ctrl.sendall(json.dumps({"status": status}).encode() + b"\n")
        elif cmd.get("op") == "done":
            if sandboxed:  # in the sandbox's own PID namespace: everything else there is the student's
                _sweep({os.getpid(), 1}, [os.path.join(home, "student"), "/tmp", "/dev/shm"])
            child = 0
            ctrl.sendall(b'{"done": true}\n')
        else:
            for fd in fds:
                os.close(fd)
            ctrl.sendall(b'{"error": "unknown command"}\n')


if __name__ == "__main__":
    sys.exit(main())
