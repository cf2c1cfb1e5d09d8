"""The instructor workflow end to end, on adversarial submissions of lab 1 graded in one parallel batch.

Once per session (fixture ``batch``): a scratch course is released, a folder of submissions
is built from lab 1's solution and student versions with LMS-style file names (Moodle,
Canvas, Google Classroom), imported, and autograded with 2 workers in the sandbox. Each
case's score is then asserted test by test. One submission (``intruder``) tries to read the
solutions, the gradebook and another student's submission, to write outside its scratch
folder and to reach a server on 127.0.0.1; it must fail at each.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hardcoded import hardcoded_builders
from test_grading import ROOT, make_submission, nbgrader_meta, read_nb, solution_code, source, write_nb

LAB = "lab01_perceptron"
TESTS = {"test_sigmoid": 2, "test_tanh": 2, "test_relu": 2, "test_leaky_relu": 2, "test_elu": 2,
         "test_perceptron_lecture": 1, "test_perceptron_batch": 2, "test_dense": 2, "test_two_layer": 2,
         "test_dense_params": 1, "test_mlp_params": 2}
TIMEOUT = 30  # per-cell seconds: the infinite loop costs this much
MEMORY_MB = 2048

pytestmark = [pytest.mark.slow]

WRONG_TANH = "def tanh(x):\n    return x * 1.0\n\ndef tanh_grad(x):\n    return torch.ones_like(x)\n"
INTRUDER = '''
import json, os, socket
probe = {{}}
def attempt(name, f):
    try:
        f()
        probe[name] = "allowed"
    except Exception as err:
        probe[name] = type(err).__name__
attempt("read solutions", lambda: open({solutions!r}).read())
attempt("read gradebook", lambda: open({gradebook!r}, "rb").read())
attempt("read the repository's solutions", lambda: open({repo_solutions!r}).read())
attempt("read another submission", lambda: open({other!r}).read())
attempt("list the course", lambda: os.listdir({course!r}))
attempt("write the gradebook", lambda: open({gradebook!r}, "ab").write(b"x"))
attempt("write into the package", lambda: open({package!r}, "w").write("x"))
attempt("write /etc", lambda: open("/etc/dlcourse-pwned", "w").write("x"))
attempt("write scratch", lambda: open("scratch.txt", "w").write("x"))
attempt("connect to 127.0.0.1", lambda: socket.create_connection(("127.0.0.1", {port}), timeout=3))
attempt("resolve a host name", lambda: socket.getaddrinfo("pypi.org", 443))
attempt("see other processes", lambda: [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) > 50][0])
print("PROBE" + json.dumps(probe))
'''
DENIED = ["read solutions", "read gradebook", "read the repository's solutions", "read another submission",
          "list the course", "write the gradebook", "write into the package", "write /etc",
          "connect to 127.0.0.1", "resolve a host name", "see other processes"]


def _sources(course: Path) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    release = read_nb(course / "labs" / LAB / f"{LAB}.ipynb")
    solutions = read_nb(course / "solutions" / LAB / f"{LAB}.ipynb")
    sol = {nbgrader_meta(c)["grade_id"]: solution_code(source(c)) for c in solutions["cells"]
           if nbgrader_meta(c).get("solution")}
    blank = {nbgrader_meta(c)["grade_id"]: source(c) for c in release["cells"] if nbgrader_meta(c).get("solution")}
    return release, sol, blank


def build(release: dict[str, Any], cells: dict[str, str], tests: dict[str, str | None] | None = None) -> dict[str, Any]:
    """The released notebook with solution cells ``cells``; ``tests`` edits (str) or deletes (None) test cells."""
    nb = make_submission(release, release, cells)
    for gid, new in (tests or {}).items():
        idx = next(i for i, c in enumerate(nb["cells"]) if nbgrader_meta(c).get("grade_id") == gid)
        if new is None:
            del nb["cells"][idx]
        else:
            nb["cells"][idx]["source"] = new
    return nb


def cases(course: Path, port: int) -> dict[str, tuple[str, Any, dict[str, float] | None]]:
    """student id -> (file name in the LMS download, notebook or raw text, expected score per test)."""
    release, sol, blank = _sources(course)
    full = dict(TESTS)
    zero = {t: 0 for t in TESTS}

    def minus(*tests: str) -> dict[str, float]:
        return {t: (0 if t in tests else p) for t, p in TESTS.items()}

    mixed = dict(sol, tanh=WRONG_TANH,
                 relu="def relu(x):\n    raise ValueError('oops')\n\ndef relu_grad(x):\n    raise ValueError('oops')\n",
                 leaky_relu=sol["leaky_relu"].replace("return torch.where(x > 0, x, negative_slope * x)",
                                                      "return torch.nn.functional.leaky_relu(x, negative_slope)"),
                 elu="def elu(x, alpha=1.0):\n    while True:\n        pass\n\ndef elu_grad(x, alpha=1.0):\n"
                     "    while True:\n        pass\n")
    crashes = dict(sol, sigmoid=sol["sigmoid"] + "\nimport sys\nsys.exit(1)\n",
                   relu=sol["relu"] + "\nimport os\nos._exit(3)\n")
    killers = dict(sol, tanh="def tanh(x):\n    hog = torch.ones(2**30)  # 4 GiB: over the memory limit\n"
                             "    return hog\n\ndef tanh_grad(x):\n    return torch.ones(2**30)\n",
                   elu=sol["elu"] + "\nimport ctypes\nctypes.string_at(0)  # segmentation fault\n")
    metadata = build(release, dict(sol, tanh=WRONG_TANH))
    for i, cell in enumerate(metadata["cells"]):
        meta = nbgrader_meta(cell)
        cell["id"] = f"same-{i % 2}"  # duplicated cell ids
        if meta.get("grade_id") == "test_tanh":
            meta.update(points=100, locked=False, grade_id="test_tanh_mine")
        if meta.get("grade_id") == "sigmoid":
            meta.update(grade=True, points=50)
    patch = ("import dlcourse.check as _c\n_c.close = _c.equal = lambda *a, **k: None\n"
             "check.close = check.equal = lambda *a, **k: None\n"
             "check.forbid = lambda *a, **k: __import__('contextlib').nullcontext()\n"
             "dtypes = []\ntorch.manual_seed(0)\nimport builtins\nbuiltins.AssertionError = Exception\n")
    monkey = {gid: f"def _wrong(*a, **k):\n    return 0\n" for gid in sol}
    for gid, src in sol.items():  # every function returns 0, under its own name
        names = [line.split("(")[0][4:] for line in src.splitlines() if line.startswith("def ")]
        monkey[gid] = "".join(f"def {n}(*args, **kwargs):\n    return 0\n\n" for n in names)
    monkey["sigmoid"] += patch
    monkey["dense"] = ("def dense(x, weight, bias=None):\n    import dlcourse.check as c\n"
                       "    c.close = lambda *a, **k: None  # patched while the test runs\n    return x\n")
    fake = {gid: f"print('\u2714 All tests passed: 20/20')\n{src}" for gid, src in blank.items()}
    other = course / "submitted" / "100001" / LAB / f"{LAB}.ipynb"
    intruder = dict(sol, sigmoid=sol["sigmoid"] + INTRUDER.format(
        solutions=str(course / "solutions" / LAB / f"{LAB}.ipynb"), gradebook=str(course / "gradebook.db"),
        repo_solutions=str(ROOT / "solutions" / LAB / f"{LAB}.ipynb"), other=str(other), course=str(course),
        package=str(ROOT / "dlcourse" / "pwned.py"), port=port))
    forbidden = dict(sol, sigmoid="def sigmoid(x):\n    return torch.sigmoid(x)\n\n"
                                  "def sigmoid_grad(x):\n    s = torch.sigmoid(x)\n    return s * (1 - s)\n")
    # Issue 17's classes of weakness, one submission each; none may buy a point it did not earn.
    hide_errors = dict(blank, sigmoid=(
        "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: print('\u2714 passed'))\n"
        "import sys\nsys.excepthook = lambda *a: None\n" + blank["sigmoid"]),
        tanh="from IPython.display import display\ndisplay({'text/plain': '\u2714 tanh passed'}, raw=True)\n"
             + blank["tanh"])
    frames = dict(sol, sigmoid=(
        "def sigmoid(x):\n    import sys\n    f = sys._getframe(1)\n    while f is not None:\n"
        "        for v in f.f_locals.values():\n"
        "            if isinstance(v, torch.Tensor) and v.shape == x.shape and v is not x:\n                return v\n"
        "        f = f.f_back\n    return x\n\ndef sigmoid_grad(x):\n    return x\n"))
    dynamic = dict(sol, sigmoid=("def sigmoid(x):\n    return getattr(torch, 'sig' + 'moid')(x)\n\n"
                                 "def sigmoid_grad(x):\n    s = sigmoid(x)\n    return s * (1 - s)\n"),
                   tanh=("def tanh(x):\n    return torch.ops.aten.tanh(x)\n\n"
                         "def tanh_grad(x):\n    return 1 - tanh(x) ** 2\n"),
                   relu=("import threading\n\ndef relu(x):\n    out = []\n"
                         "    t = threading.Thread(target=lambda: out.append(torch.relu(x)))\n    t.start(); t.join()\n"
                         "    return out[0]\n\ndef relu_grad(x):\n    return (x > 0).to(x.dtype)\n"),
                   elu=("from functools import partial\nmy_elu = partial(torch.nn.functional.elu)\n\n"
                        "def elu(x, alpha=1.0):\n    return my_elu(x, alpha)\n\n"
                        "def elu_grad(x, alpha=1.0):\n    return torch.where(x > 0, torch.ones_like(x), alpha * torch.exp(x))\n"))
    liar = dict(sol, tanh=(
        "class Liar(torch.Tensor):\n    @classmethod\n    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
        "        if getattr(func, '__name__', '') in ('allclose', 'isclose', 'equal', 'eq', '__eq__'):\n"
        "            return True\n        return super().__torch_function__(func, types, args, kwargs or {})\n\n"
        "def tanh(x):\n    return torch.zeros_like(x).as_subclass(Liar)\n\n"
        "def tanh_grad(x):\n    return torch.zeros_like(x).as_subclass(Liar)\n"))
    honest = dict(sol, sigmoid=("import warnings\nimport torch._dynamo  # a library's lazy import: not tampering\n"
                                + sol["sigmoid"].replace('    """The logistic sigmoid 1 / (1 + exp(-x)), element by element."""',
                                                         '    warnings.warn("a warning on stderr costs nothing")')),
                  dense=sol["dense"] + "\nlazy = torch.nn.LazyLinear(3)\nlazy(torch.ones(2, 4))\n")
    dies = dict(sol, sigmoid=("def sigmoid(x):\n    import os\n    os._exit(7)\n\n"
                              "def sigmoid_grad(x):\n    import os\n    os._exit(7)\n"))
    leftovers = dict(sol, relu=sol["relu"] + (
        "\nimport os, subprocess, sys\nfor _ in range(3):\n"
        "    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True)\n"
        "open('/tmp/left-behind', 'w').write('x')\n"))
    filler = dict(sol, relu=sol["relu"] + (
        "\nwritten = 0\nfor i in range(40):  # 2 GB in 50 MB files, each under the file-size limit\n    try:\n"
        "        with open(f'fill{i}', 'wb') as f:\n            f.write(b'x' * 50_000_000)\n        written += 1\n"
        "    except OSError:\n        break\nprint('FILLED', written)\n"))
    history = dict(sol, param_counts=sol["param_counts"] + "\nprint('HISTORY', In, _ih, Out)\nget_ipython().run_line_magic('history', '')\n")
    return {
        "hide_errors": ("hide_errors_lab01_perceptron.ipynb", build(release, hide_errors), zero),
        "frames": ("frames_lab01_perceptron.ipynb", build(release, frames),
                   minus("test_sigmoid", "test_perceptron_lecture", "test_perceptron_batch")),
        "dynamic": ("dynamic_lab01_perceptron.ipynb", build(release, dynamic),
                    minus("test_sigmoid", "test_tanh", "test_relu", "test_elu", "test_perceptron_lecture",
                          "test_perceptron_batch", "test_two_layer")),
        "liar": ("liar_lab01_perceptron.ipynb", build(release, liar), minus("test_tanh")),
        "honest": ("honest_lab01_perceptron.ipynb", build(release, honest), full),
        "dies": ("dies_lab01_perceptron.ipynb", build(release, dies),
                 minus("test_sigmoid", "test_perceptron_lecture", "test_perceptron_batch")),
        "leftovers": ("leftovers_lab01_perceptron.ipynb", build(release, leftovers), full),
        "history": ("history_lab01_perceptron.ipynb", build(release, history), full),
        "filler": ("filler_lab01_perceptron.ipynb", build(release, filler), full),
        "100001": ("Ada Lovelace_100001_assignsubmission_file_/lab01_perceptron.ipynb", build(release, sol), full),
        "100002": ("blankbob_100002_7001_lab01_perceptron.ipynb", release, zero),
        "carla_mixed": ("Copy of lab01_perceptron - Carla Mixed.ipynb", build(release, mixed),
                        minus("test_tanh", "test_relu", "test_leaky_relu", "test_elu", "test_two_layer")),
        "crashes": ("crashes_lab01_perceptron.ipynb", build(release, crashes), minus("test_relu", "test_two_layer")),
        "killers": ("lab01_perceptron_killers.ipynb", build(release, killers), minus("test_tanh", "test_elu")),
        "edited": ("edited_lab01_perceptron.ipynb",
                   build(release, dict(sol, sigmoid=blank["sigmoid"]),
                         {"test_sigmoid": "pass", "test_tanh": "print('\u2714 tanh passed')"}),
                   minus("test_sigmoid", "test_perceptron_lecture", "test_perceptron_batch")),
        "deleted": ("deleted_lab01_perceptron.ipynb",
                    build(release, dict(sol, sigmoid=blank["sigmoid"]), {"test_sigmoid": None, "test_tanh": None}),
                    minus("test_sigmoid", "test_perceptron_lecture", "test_perceptron_batch")),
        "metadata": ("metadata_lab01_perceptron.ipynb", metadata, minus("test_tanh")),
        "monkey": ("monkey_lab01_perceptron.ipynb", build(release, monkey), zero),
        "fake": ("fake_lab01_perceptron.ipynb", build(release, fake), zero),
        "hardcoded": ("hardcoded_lab01_perceptron.ipynb", build(release, hardcoded_builders()[LAB]()), zero),
        "forbidden": ("forbidden_lab01_perceptron.ipynb", build(release, forbidden),
                      minus("test_sigmoid", "test_perceptron_lecture", "test_perceptron_batch")),
        "malformed": ("malformed_lab01_perceptron.ipynb", '{"cells": [', zero),
        "100014": ("Dan Renamed_100014_assignsubmission_file_/lab1_final_v2.ipynb", build(release, sol), full),
        "fay_twice": ("Copy of lab01_perceptron - Fay Twice (1).ipynb", build(release, sol), full),
        "intruder": ("intruder_lab01_perceptron.ipynb", build(release, intruder), full),
    }


class Listener:
    """A TCP server on 127.0.0.1 that counts connections (none may come from a sandbox)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()
            except OSError:
                pass


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory):
    """Release lab 1, import the adversarial submissions, autograde them with 2 workers."""
    from dlcourse_tools.grading.autograde import Options, autograde
    from dlcourse_tools.grading.sandbox import unavailable
    from dlcourse_tools.grading.submissions import import_submissions, zero_unreadable

    if unavailable():
        pytest.skip(f"the grading sandbox cannot start on this machine: {unavailable()}")
    course = tmp_path_factory.mktemp("course")
    os.chmod(course, 0o755)
    shutil.copy2(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions" / LAB, course / "solutions" / LAB)
    from dlcourse_tools.grade import release

    release(course, LAB)
    listener = Listener()
    download = tmp_path_factory.mktemp("lms-download")
    expected = {}
    for student, (name, nb, scores) in cases(course, listener.port).items():
        path = download / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(nb if isinstance(nb, str) else json.dumps(nb, indent=1))
        expected[student] = scores
    older = download / "lab01_perceptron - Fay Twice.ipynb"  # the first, blank, submission of fay_twice
    older.write_text(json.dumps(read_nb(course / "labs" / LAB / f"{LAB}.ipynb")))
    os.utime(older, (time.time() - 3600, time.time() - 3600))
    before = digest(download)
    imported = import_submissions(download, course, LAB, students=[*expected, "erin_missing"])
    expected["erin_missing"] = {t: 0 for t in TESTS}
    options = Options(workers=2, timeout=TIMEOUT, memory_mb=MEMORY_MB)
    started = time.monotonic()
    results = autograde(course, LAB, options=options, progress=False)
    zero_unreadable(course, LAB, imported.problems)
    seconds = time.monotonic() - started
    listener.stop = True
    return {"course": course, "download": download, "before": before, "imported": imported,
            "results": {r["student"]: r for r in results}, "expected": expected, "seconds": seconds,
            "listener": listener, "options": options}


def grades(course: Path, student: str) -> dict[str, float]:
    from dlcourse_tools.grading.autograde import gradebook

    with gradebook(course) as gb:
        nb = gb.find_submission_notebook(LAB, LAB, student)
        return {g.name: g.score for g in nb.grades}


def outputs(course: Path, student: str) -> dict[str, str]:
    nb = read_nb(course / "autograded" / student / LAB / f"{LAB}.ipynb")
    out = {}
    for cell in nb["cells"]:
        gid = nbgrader_meta(cell).get("grade_id")
        if gid:
            out[gid] = "".join("".join(o.get("text", "")) if o["output_type"] == "stream"
                               else f"{o.get('ename')}: {o.get('evalue')}\n" for o in cell.get("outputs", []))
    return out


STUDENTS = ["100001", "100002", "carla_mixed", "crashes", "killers", "edited", "deleted", "metadata", "monkey",
            "fake", "hardcoded", "forbidden", "malformed", "100014", "fay_twice", "intruder", "erin_missing",
            "hide_errors", "frames", "dynamic", "liar", "honest", "dies", "leftovers", "history", "filler"]


def test_the_scratch_folder_has_a_quota(batch) -> None:
    """A submission that fills its scratch folder stops at the quota (256 MiB), not at the grader's disk."""
    nb = read_nb(batch["course"] / "autograded" / "filler" / LAB / f"{LAB}.ipynb")
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", [])
                   if o["output_type"] == "stream")
    filled = int(text.split("FILLED", 1)[1].split()[0])
    assert 1 <= filled <= 5, f"{filled} files of 50 MB written into a 256 MiB scratch folder"


def test_nothing_of_the_hidden_tests_reaches_the_student(batch) -> None:
    """Test code never runs in the student's process: printing the input history shows none of it."""
    nb = read_nb(batch["course"] / "autograded" / "history" / LAB / f"{LAB}.ipynb")
    text = json.dumps(nb)
    assert "HISTORY" in text  # the student's cell ran and printed
    for hidden in ("x = random_inputs(dtype)", "BEGIN HIDDEN TESTS", "x, slope = random_inputs(dtype)"):
        assert hidden not in text, f"hidden test code in the autograded notebook: {hidden!r}"


def test_left_behind_processes_and_files_are_swept(batch) -> None:
    """What one submission leaves running or written is gone before the next one in that worker."""
    import subprocess

    leftover = subprocess.run(["pgrep", "-f", "time.sleep\\(600\\)"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", f"processes a submission started are still running: {leftover.stdout}"


@pytest.mark.parametrize("student", STUDENTS)
def test_adversarial_submission_gets_its_score(batch, student: str) -> None:
    got = grades(batch["course"], student)
    expected = batch["expected"][student]
    record = batch["results"].get(student, {})
    assert got == pytest.approx(expected), (
        f"{student}: got {got}, expected {expected}; grading record {record}")


def test_every_case_was_imported_as_expected(batch) -> None:
    imp = batch["imported"]
    assert set(imp.imported) == set(STUDENTS) - {"malformed", "erin_missing"}
    assert "not valid JSON" in imp.problems["malformed"]
    assert imp.problems["erin_missing"] == "no notebook submitted"
    assert imp.ignored == {"fay_twice": ["lab01_perceptron - Fay Twice.ipynb"]}
    assert imp.unmatched == []


def test_originals_are_never_modified(batch) -> None:
    assert digest(batch["download"]) == batch["before"]


def test_timeouts_crashes_and_tampering_are_reported(batch) -> None:
    from dlcourse_tools.grading.report import problems

    results, course = batch["results"], batch["course"]
    assert "test_elu" in results["carla_mixed"]["timeouts"]
    assert "TimeoutError" in outputs(course, "carla_mixed")["test_elu"]
    assert any("exited with status 3" in d for d in results["crashes"]["kernel_deaths"]), results["crashes"]
    assert any("SIGSEGV" in d for d in results["killers"]["kernel_deaths"]), results["killers"]
    assert "memory" in outputs(course, "killers")["test_tanh"].lower()
    # The monkey patched dlcourse.check in its own process: the judge's checks, in another process, saw
    # its wrong values and failed them with the usual one-sentence messages.
    assert outputs(course, "monkey")["test_dense"].startswith(("CheckError", "ForbiddenCallError"))
    assert any("torch.sigmoid" in f for f in results["forbidden"]["forbidden"]), results["forbidden"]
    text = "\n".join(f"{s}: {why}" for s, why in problems(course, LAB))
    for needle in ("malformed: not graded", "erin_missing: not graded: no notebook", "carla_mixed: timed out",
                   "crashes: kernel died", "killers: kernel died", "fay_twice: several notebooks"):
        assert needle in text, text


def test_the_sandbox_stopped_every_intrusion(batch) -> None:
    printed = outputs(batch["course"], "intruder")
    nb = read_nb(batch["course"] / "autograded" / "intruder" / LAB / f"{LAB}.ipynb")
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", [])
                   if o["output_type"] == "stream")
    probe = json.loads(text.split("PROBE", 1)[1].splitlines()[0])
    assert probe["write scratch"] == "allowed", probe  # the probe itself works
    allowed = [name for name in DENIED if probe[name] == "allowed"]
    assert not allowed, f"the sandbox let the submission {allowed}: {probe}"
    assert batch["listener"].connections == 0
    assert not (ROOT / "dlcourse" / "pwned.py").exists()
    assert (batch["course"] / "solutions" / LAB / f"{LAB}.ipynb").exists()  # it was there to read
    assert printed  # the tests ran


def test_regrading_is_idempotent_and_leaves_others_untouched(batch) -> None:
    from dlcourse_tools.grading.autograde import autograde

    course = batch["course"]
    before = {s: grades(course, s) for s in STUDENTS}
    autograde(course, LAB, ["100001", "100002"], batch["options"], progress=False)
    after = {s: grades(course, s) for s in STUDENTS}
    assert after == before


def test_feedback_shows_names_points_and_messages_but_no_hidden_tests(batch) -> None:
    import html as html_lib
    import re

    from dlcourse_tools.grading.feedback import generate_feedback

    course = batch["course"]
    written = generate_feedback(course, LAB, ["carla_mixed", "edited"])
    assert len(written) == 2
    raw = (course / "feedback" / "carla_mixed" / LAB / f"{LAB}.html").read_text()
    text = html_lib.unescape(re.sub(r"<[^>]+>", "", raw))
    assert "test_tanh" in text and re.search(r"Score:\s*0(\.0)?\s*/\s*2(\.0)?", text), "no test name or points"
    assert "CheckError: tanh(x) for torch.float" in text  # dlcourse.check's one-sentence message
    assert "ForbiddenCallError" in text and "TimeoutError" in text
    assert 'check.passed("sigmoid and sigmoid_grad match PyTorch")' in text  # the visible test is shown
    for hidden in ("x = random_inputs(dtype)", "BEGIN HIDDEN TESTS", "slope = random_inputs"):
        assert hidden not in text, f"hidden test code in the feedback: {hidden!r}"


def test_export_and_report(batch) -> None:
    import csv

    from dlcourse_tools.grading.report import export_csv, report

    course = batch["course"]
    rows = list(csv.DictReader(export_csv(course).open()))
    by_student = {r["student_id"]: float(r["score"]) for r in rows}
    assert by_student["100001"] == 20 and by_student["carla_mixed"] == 10 and by_student["malformed"] == 0
    md = report(course, LAB)
    assert (md.parent / "report.png").stat().st_size > 5000
    text = md.read_text()
    assert "| test_sigmoid | 2 |" in text and "timed out: test_elu" in text
    questions = list(csv.reader((md.parent / "questions.csv").open()))
    assert questions[0][0] == "student" and len(questions) == len(STUDENTS) + 2
