"""`python -m dlcourse_tools.bench --quick` runs and writes JSON of the agreed shape, so `make bench`
cannot rot. Nothing here asserts a speed: a shared test machine's timings mean nothing."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlcourse_tools import bench

ROOT = Path(__file__).resolve().parents[1]
CASE_KEYS = ["conv2d_64x1x28x28", "conv2d_64x16x14x14", "conv2d_32x64x16x16", "max_pool2d", "avg_pool2d",
             "cross_entropy", "lstm", "attention"]
DETAIL_FIELDS = {"op", "shape", "mine_ms", "torch_ms", "ratio", "ratio_q1", "ratio_q3", "repeats", "target", "met",
                 "quick", "load_avg", "status"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``--quick`` run in a subprocess, as ``make bench`` would start it: (stdout, results)."""
    out = tmp_path_factory.mktemp("bench") / "nested" / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "dlcourse_tools.bench", "--quick", "--device", "cpu", "--output", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(out.read_text())


def test_the_json_has_the_agreed_top_level_shape(quick_run):
    _, results = quick_run
    # Later benchmarks may add keys (lstm, attention, time_to_accuracy, notebooks); these stay.
    assert {"device", "date", "torch", "threads", "ratios", "details"} <= set(results)
    assert results["device"] == "cpu"
    assert isinstance(results["threads"], int) and results["threads"] >= 1
    assert results["omp_wait_policy"] == (os.environ.get("OMP_WAIT_POLICY") or "default")
    assert results["torch"] and results["date"][:2] == "20"
    assert set(CASE_KEYS) <= set(results["ratios"])
    assert set(results["details"]) == set(results["ratios"])


def test_every_case_runs_and_its_ratio_is_a_positive_finite_number(quick_run):
    _, results = quick_run
    # A case that cannot run (an import or attribute error: "not available yet (...)") is broken.
    broken = {key: d["status"] for key, d in results["details"].items() if d["status"] != "ok"}
    assert not broken, f"benchmark cases that did not run: {broken}"
    for key, ratio in results["ratios"].items():
        assert isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0, key


def test_a_broken_case_is_reported_as_not_run(monkeypatch):
    """What the test above catches: a case whose code is missing is listed as not run, with no ratio."""
    case = next(c for c in bench.CASES if c.key == "max_pool2d")

    def broken(device, quick):
        raise AttributeError("module 'dlcourse.pool' has no attribute 'max_pool2d'")

    monkeypatch.setattr(case, "build", broken)
    d = bench.measure(case, bench.get_device("cpu"), quick=True, repeats=1)
    assert d["ratio"] is None and d["status"] != "ok" and "max_pool2d" in d["status"]


def test_the_details_say_what_was_measured(quick_run):
    _, results = quick_run
    for key, d in results["details"].items():
        assert set(d) == DETAIL_FIELDS, key
        assert d["ratio"] == results["ratios"][key]
        assert d["status"] == "ok" and d["ratio"] is not None, key
        assert d["mine_ms"] > 0 and d["torch_ms"] > 0 and d["repeats"] == 2 and d["quick"] is True
        assert d["ratio_q1"] <= d["ratio"] <= d["ratio_q3"]
        if d["target"] is None:
            assert d["met"] is None
        else:
            assert d["met"] == (d["ratio"] <= d["target"])
    assert results["details"]["conv2d_32x64x16x16"]["target"] == 1.5
    assert results["details"]["max_pool2d"]["target"] == 2.0
    assert results["details"]["cross_entropy"]["target"] == 1.5
    assert results["details"]["lstm"]["target"] == 2.0
    assert results["details"]["attention"]["target"] == 1.3


def test_the_table_lists_every_case(quick_run):
    stdout, results = quick_run
    assert "mine ms" in stdout and "torch ms" in stdout and "met?" in stdout
    # Quick sizes are no measurement: the table judges no target and says why.
    assert "not comparable with the targets" in stdout
    rows = [line for line in stdout.splitlines() if line.split()[:1] and line.split()[0] in CASE_KEYS]
    assert rows and not [r for r in rows if " NO " in f" {r} " or " yes " in f" {r} "], rows
    for key in CASE_KEYS:
        assert key in stdout
    assert bench.table(results).splitlines()[0].split()[:2] == ["op", "shape"]


def test_only_selects_cases_and_rejects_unknown_names():
    results = bench.run(bench.get_device("cpu"), quick=True, repeats=1, only=["max_pool2d"])
    assert list(results["ratios"]) == ["max_pool2d"]
    with pytest.raises(ValueError, match="no case"):
        bench.run(bench.get_device("cpu"), quick=True, repeats=1, only=["no_such_case"])


def test_the_json_has_time_to_accuracy_and_notebooks(quick_run):
    _, results = quick_run
    assert {"time_to_accuracy", "time_to_accuracy_details", "notebooks", "notebooks_summary", "machine",
            "load_avg"} <= set(results)
    assert set(results["time_to_accuracy"]) == set(results["time_to_accuracy_details"]) >= {"mnist_cnn", "tiny_gpt"}
    cnn = results["time_to_accuracy_details"]["mnist_cnn"]
    assert cnn["status"] == "ok" and cnn["quick"] is True and cnn["epochs"] == 1
    assert cnn["metric"] == "test accuracy" and cnn["target"] == 0.97 and 0 <= cnn["value"] <= 1
    assert cnn["seconds"] == (cnn["run_seconds"] if cnn["reached"] else None)
    gpt = results["time_to_accuracy_details"]["tiny_gpt"]
    assert gpt["status"] == "ok" and gpt["steps"] == 4 and gpt["metric"] == "validation loss"
    assert gpt["value"] > gpt["target"] > 0 and gpt["reached"] is False and gpt["seconds"] is None  # 4 steps: far off
    for key, d in results["time_to_accuracy_details"].items():
        assert d["status"] == "ok", f"{key}: {d['status']}"
        assert results["time_to_accuracy"][key] == d["seconds"]
    assert results["notebooks"] == {}  # --quick skips the notebooks
    assert results["notebooks_summary"]["targets"]["book_s"]["met"] is None
    assert set(results["elapsed_s"]) == {"ratios", "time_to_accuracy", "notebooks"}


def test_the_tables_list_the_tasks(quick_run):
    stdout, _ = quick_run
    assert "time to accuracy" in stdout and "mnist_cnn" in stdout and "tiny_gpt" in stdout


def test_book_notebooks_are_the_chapters_and_lab_solutions():
    paths = [p.as_posix() for p in bench.book_notebooks(ROOT)]
    assert "book/07_pooling_cnn.ipynb" in paths
    assert "solutions/lab04_pooling_cnn/lab04_pooling_cnn.ipynb" in paths
    assert not any(p.startswith("labs/") for p in paths)  # the unsolved student versions cannot run
    assert all((ROOT / p).exists() for p in paths) and len(paths) == len(set(paths))


def _notebook(path: Path, *sources: str) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nbformat.write(nb, path)
    return path


def test_run_notebook_times_it_sees_its_peak_memory_and_reports_a_failing_cell(tmp_path):
    # 400 MiB allocated and touched, then freed: the peak must still show it. (One kernel start
    # for both checks: each takes seconds.)
    path = _notebook(tmp_path / "big.ipynb", "import numpy as np\nx = np.ones(400 * 2**20 // 8)", "del x",
                     "raise ValueError('broken on purpose')", "print('never runs')")
    result = bench.run_notebook(path, timeout_s=120)
    assert result["status"].startswith("failed") and "broken on purpose" in result["status"]
    assert 0 < result["seconds"] < 120
    assert 400 <= result["peak_mib"] < 2000


def test_notebook_summary_marks_the_budgets():
    nbs = {"book/01.ipynb": {"seconds": 70.0, "peak_mib": 500.0, "status": "ok"},
           "book/02.ipynb": {"seconds": 10.0, "peak_mib": 2500.0, "status": "ok"},
           "solutions/lab01/lab01.ipynb": {"seconds": 20.0, "peak_mib": 300.0, "status": "failed: ValueError: x"}}
    summary = bench.notebook_summary(nbs)
    t = summary["targets"]
    assert summary["total_s"] == 100.0 and summary["count"] == 3
    assert t["chapter_s"] == {"limit": 60.0, "over": ["book/01.ipynb"], "met": False}
    assert t["lab_s"]["met"] is True and t["peak_mib"]["over"] == ["book/02.ipynb"]
    assert t["book_s"]["met"] is True and summary["failed"] == ["solutions/lab01/lab01.ipynb"]
    assert bench.notebook_summary(nbs, expected=4)["targets"]["book_s"]["met"] is None  # one not timed
    nbs["book/02.ipynb"]["seconds"] = 500.0
    assert bench.notebook_summary(nbs, expected=4)["targets"]["book_s"]["met"] is False  # over, even so
    nbs["book/01.ipynb"]["peak_mib"] = None  # times from the book's cache: memory unknown
    assert bench.notebook_summary(nbs)["targets"]["peak_mib"]["met"] is None
