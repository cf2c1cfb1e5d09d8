"""`make gpucheck` cannot rot: its dry run (the CPU in place of CUDA, tiny sizes) runs every step
here, writes the JSON and the summary, and a step that fails or hangs is reported as failed.

The real run needs a lent GPU (tools/dlcourse_tools/gpu_check.py --help says how to run it);
nothing here asserts a speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from dlcourse_tools import gpu_check

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "dlcourse_tools" / "gpu_check.py"
PROBE = "gpucheck_probe"  # the package inside a hand-made wheel the dry run installs


def make_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel holding one module, as `pip download` would leave it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{PROBE}-0.1-py3-none-any.whl"
    info = f"{PROBE}-0.1.dist-info"
    files = {f"{PROBE}/__init__.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {PROBE}\nVersion: 0.1\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def run_script(*args: str, timeout: float = 240) -> tuple[subprocess.CompletedProcess, dict, str]:
    """Run the script as the device machine would (a plain python, the repository as cwd)."""
    out = Path(args[args.index("--out") + 1])
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    results = json.loads((out / gpu_check.JSON_NAME).read_text())
    return proc, results, (out / gpu_check.TEXT_NAME).read_text()


def assert_well_formed(results: dict, text: str) -> None:
    """The JSON's shape: every step present, each ok/failed/skipped with a one-line reason."""
    assert results["kind"] == "dlcourse-gpu-check" and results["version"] == 1
    assert {"dry_run", "device", "date", "commit", "budget_s", "elapsed_s", "finished", "counts", "steps"} <= set(results)
    assert results["finished"] is True
    assert list(results["steps"]) == gpu_check.STEPS
    for name, step in results["steps"].items():
        assert step["status"] in gpu_check.STATUSES, (name, step["status"])
        assert isinstance(step["reason"], str) and step["reason"].strip() and "\n" not in step["reason"], (name, step)
        assert f"{step['status']:8} {name}" in text  # the summary has a line per step
    assert sum(results["counts"].values()) == len(gpu_check.STEPS)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One whole dry run, with a folder of carried wheels holding one hand-made wheel."""
    base = tmp_path_factory.mktemp("gpucheck")
    make_wheel(base / "wheels")
    out = base / "out"
    return run_script("--dry-run", "--out", str(out), "--wheels", str(base / "wheels")) + (out,)


def test_dry_run_runs_every_step_and_writes_the_json(dry_run):
    proc, results, text, out = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_well_formed(results, text)
    assert results["dry_run"] is True and results["device"] == "cpu"
    assert "DRY RUN" in text
    failed = {n: s["reason"] for n, s in results["steps"].items() if s["status"] != "ok"}
    assert not failed, failed  # this machine has everything a dry run needs
    assert results["elapsed_s"] <= results["budget_s"]


def test_dry_run_installs_the_carried_wheels(dry_run):
    _, results, _, _ = dry_run
    wheels = results["steps"]["wheels"]["details"]
    assert wheels["count"] == 1 and wheels["wheels"] == [f"{PROBE}-0.1-py3-none-any.whl"]
    assert PROBE in wheels["installed"]


def test_dry_run_unit_tests_ran_on_the_cpu_and_counted_them(dry_run):
    _, results, _, _ = dry_run
    details = results["steps"]["unit_tests"]["details"]
    assert details["device"] == "cpu"
    assert details["totals"]["passed"] >= 5 and details["totals"]["failed"] == 0
    for group in details["groups"].values():
        assert group["status"] == "ok" and group["seconds"] > 0


def test_dry_run_trains_the_cnn_epoch_and_skips_amp_with_a_reason(dry_run):
    _, results, _, _ = dry_run
    details = results["steps"]["cnn_epoch"]["details"]
    runs = details["runs"]
    assert runs["cpu torch.nn"]["epoch_s"] > 0 and 0 <= runs["cpu torch.nn"]["test_accuracy"] <= 1
    assert runs["cpu dlcourse.nn"]["epoch_s"] > 0
    assert runs["cpu torch.nn amp"] == {"status": "skipped", "reason": "mixed precision (amp=True) needs CUDA"}
    assert details["cpu_over_device"] > 0


def test_dry_run_copies_the_bench_results_and_executes_a_notebook(dry_run):
    _, results, _, out = dry_run
    bench = json.loads((out / "bench.json").read_text())
    assert bench["device"] == "cpu" and results["steps"]["bench"]["details"]["ratios"] == bench["ratios"]
    notebooks = results["steps"]["notebooks"]["details"]["notebooks"]
    assert [nb["computing_on"] for nb in notebooks.values()] == [["computing on: cpu"]]


def test_a_failing_and_a_hanging_step_are_reported_as_failed(tmp_path):
    out = tmp_path / "out"
    proc, results, text = run_script("--dry-run", "--out", str(out), "--wheels", str(tmp_path / "none"),
                                     "--only", "wheels", "cnn_epoch", "--inject", "wheels=fail",
                                     "--inject", "cnn_epoch=hang", "--limit", "cnn_epoch=3", timeout=90)
    assert proc.returncode == 1  # a failed step fails the command
    assert_well_formed(results, text)
    steps = results["steps"]
    assert steps["wheels"]["status"] == "failed" and "injected failure in wheels" in steps["wheels"]["reason"]
    assert steps["cnn_epoch"]["status"] == "failed" and steps["cnn_epoch"]["reason"] == "timed out after 3 s"
    assert steps["cnn_epoch"]["details"] == {"injected": "hang"}  # what the step reported before it hung
    assert steps["cnn_epoch"]["seconds"] < 30
    assert steps["environment"]["status"] == "skipped" and "not selected" in steps["environment"]["reason"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the real run would use it")
def test_the_real_run_without_cuda_fails_the_environment_and_skips_the_device_steps(tmp_path):
    out = tmp_path / "out"
    proc, results, text = run_script("--out", str(out), "--wheels", str(tmp_path / "none"),
                                     "--only", "environment", "unit_tests", timeout=90)
    assert proc.returncode == 1
    assert_well_formed(results, text)
    env = results["steps"]["environment"]
    assert env["status"] == "failed" and "CUDA is not available" in env["reason"] and "--dry-run" in env["reason"]
    assert env["details"]["cuda_available"] is False and env["details"]["torch_in_range"] is True
    tests = results["steps"]["unit_tests"]
    assert (tests["status"], tests["reason"]) == ("skipped", "no CUDA device (see the environment step)")


@pytest.mark.parametrize("args, message", [
    (["--inject", "nosuch=fail"], "unknown step 'nosuch'"),
    (["--inject", "bench=explode"], "expected STEP=fail or STEP=hang"),
    (["--limit", "bench=soon"], "expected STEP=SECONDS"),
    (["--limit", "bench=-1"], "positive number of seconds"),
    (["--only", "everything"], "invalid choice"),
])
def test_bad_options_are_clear_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_carried_wheels_are_pinned_by_constraints_txt():
    versions = gpu_check.constraint_versions()
    pins = gpu_check.pinned_wheels(list(gpu_check.WHEEL_GROUPS))
    assert f"mlxtend=={versions['mlxtend']}" in pins and f"expecttest=={versions['expecttest']}" in pins
    assert len(pins) == sum(len(names) for names in gpu_check.WHEEL_GROUPS.values())
    help_text = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True,
                               timeout=60).stdout
    assert "--download-wheels" in help_text and "mlxtend" in help_text and "carry" in help_text


def test_junit_counts_reads_passes_failures_and_skips(tmp_path):
    xml = tmp_path / "junit.xml"
    xml.write_text("""<testsuites><testsuite name="pytest" tests="4">
      <testcase classname="tests.test_a" name="test_ok[cuda]"/>
      <testcase classname="tests.test_a" name="test_gradcheck[cuda-float64]"/>
      <testcase classname="tests.test_a" name="test_bad[cuda]"><failure message="assert 1 == 2">...</failure></testcase>
      <testcase classname="tests.test_a" name="test_err[cuda]"><error message="fixture broke"/></testcase>
      <testcase classname="tests.test_a" name="test_mps[cuda]"><skipped message="MPS is not available"/></testcase>
    </testsuite></testsuites>""")
    counts = gpu_check._junit_counts(xml)
    assert (counts["passed"], counts["failed"], counts["errors"], counts["skipped"]) == (2, 1, 1, 1)
    assert counts["float64_passed"] == 1
    assert counts["failures"] == ["tests.test_a::test_bad[cuda]: assert 1 == 2", "tests.test_a::test_err[cuda]: fixture broke"]
    assert counts["skip_reasons"] == {"MPS is not available": 1}


def performance_page_gpu_cell() -> str:
    """The Performance page's code cell that shows the published GPU results."""
    cells = json.loads((ROOT / "book" / "performance.ipynb").read_text())["cells"]
    found = [c for c in cells if c["cell_type"] == "code" and "data/gpu-results.json" in "".join(c["source"])]
    assert len(found) == 1, "the Performance page should have one cell reading data/gpu-results.json"
    return "".join(found[0]["source"])


def run_cell(source: str, folder: Path, monkeypatch, capsys) -> tuple[str, list]:
    monkeypatch.chdir(folder)
    shown: list = []
    exec(compile(source, "performance.ipynb", "exec"), {"display": shown.append})
    return capsys.readouterr().out, shown


def test_performance_page_says_plainly_when_gpu_results_are_missing(tmp_path, monkeypatch, capsys, dry_run):
    source = performance_page_gpu_cell()
    out, shown = run_cell(source, tmp_path, monkeypatch, capsys)
    assert out.startswith("GPU results: missing.") and "does not exist" in out and not shown
    (tmp_path / "data").mkdir()
    _, results, _, _ = dry_run
    (tmp_path / "data" / "gpu-results.json").write_text(json.dumps(results))  # a dry run is no GPU result
    out, shown = run_cell(source, tmp_path, monkeypatch, capsys)
    assert out.startswith("GPU results: missing.") and "holds only a dry run" in out and not shown


def test_performance_page_shows_published_gpu_results_with_date_and_device(tmp_path, monkeypatch, capsys, dry_run):
    _, results, _, _ = dry_run
    published = json.loads(json.dumps(results))  # the dry run's shape, as if from a GPU
    published["dry_run"], published["device"] = False, "cuda"
    published["steps"]["environment"]["details"].update(gpu="NVIDIA H100 80GB HBM3", torch_cuda="13.0")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "gpu-results.json").write_text(json.dumps(published))
    out, shown = run_cell(performance_page_gpu_cell(), tmp_path, monkeypatch, capsys)
    assert f"GPU check of {published['date']} on NVIDIA H100 80GB HBM3" in out and "CUDA 13.0" in out
    assert list(shown[0].index) == gpu_check.STEPS and list(shown[0]["status"]) == ["ok"] * len(gpu_check.STEPS)
    ratio = published["steps"]["cnn_epoch"]["details"]["cpu_over_device"]
    assert f"{ratio:.1f}x faster on the GPU" in out and "(the lecture: 27x)" in out
    assert "dlcourse / torch on the GPU:" in out


def test_the_real_runs_epoch_summary_compares_cpu_and_cuda_with_the_lecture():
    runs = {"cuda torch.nn": {"status": "ok", "epoch_s": 0.5}, "cuda torch.nn amp": {"status": "ok", "epoch_s": 0.4},
            "cpu torch.nn": {"status": "ok", "epoch_s": 6.0}}
    status, reason, details = gpu_check.epoch_summary({"train_size": 4000, "runs": runs}, "cuda", dry=False)
    assert status == "ok" and details["cpu_over_device"] == 12.0 and details["cpu_over_device_amp"] == 15.0
    assert reason == "one epoch: CPU 6.00 s, CUDA 0.50 s: 12.0x faster, 15.0x with AMP (lecture: 27x)"
    del runs["cpu torch.nn"]  # e.g. cut at the step's limit
    status, reason, _ = gpu_check.epoch_summary({"train_size": 4000, "runs": runs}, "cuda", dry=False)
    assert status == "failed" and "did not run" in reason


def test_the_real_run_groups_every_oracle_test_file_once():
    groups = gpu_check._test_groups({"dry_run": False})
    files = [f for _, group in groups for f in group]
    assert len(files) == len(set(files))
    assert {"test_conv.py", "test_pool.py", "test_rnn.py", "test_optim.py", "test_losses.py", "test_attention.py",
            "test_transformer.py", "test_check.py", "test_train.py", "test_generative.py", "test_nn.py"} <= set(files)
    assert all((ROOT / "tests" / f).exists() for f in files)
