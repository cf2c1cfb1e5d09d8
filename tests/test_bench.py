"""`python -m dlcourse.bench --quick` runs and writes JSON of the agreed shape, so `make bench`
cannot rot. Nothing here asserts a speed: a shared test machine's timings mean nothing."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from dlcourse import bench

ROOT = Path(__file__).resolve().parents[1]
CASE_KEYS = ["conv2d_64x1x28x28", "conv2d_64x16x14x14", "conv2d_32x64x16x16", "max_pool2d", "avg_pool2d",
             "cross_entropy", "lstm", "attention"]
DETAIL_FIELDS = {"op", "shape", "mine_ms", "torch_ms", "ratio", "ratio_q1", "ratio_q3", "repeats", "target", "met",
                 "quick", "load_avg", "status"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``--quick`` run in a subprocess, as ``make bench`` would start it: (stdout, results)."""
    out = tmp_path_factory.mktemp("bench") / "nested" / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "dlcourse.bench", "--quick", "--device", "cpu", "--output", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(out.read_text())


def test_the_json_has_the_agreed_top_level_shape(quick_run):
    _, results = quick_run
    # Later benchmarks may add keys (lstm, attention, time_to_accuracy, notebooks); these stay.
    assert {"device", "date", "torch", "threads", "ratios", "details"} <= set(results)
    assert results["device"] == "cpu"
    assert isinstance(results["threads"], int) and results["threads"] >= 1
    assert results["torch"] and results["date"][:2] == "20"
    assert set(CASE_KEYS) <= set(results["ratios"])
    assert set(results["details"]) == set(results["ratios"])


def test_every_ratio_is_a_positive_finite_number(quick_run):
    _, results = quick_run
    for key, ratio in results["ratios"].items():
        if results["details"][key]["status"].startswith("not available yet"):  # written by another issue, later
            assert ratio is None, key
            continue
        assert isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0, key


def test_the_details_say_what_was_measured(quick_run):
    _, results = quick_run
    for key, d in results["details"].items():
        assert set(d) == DETAIL_FIELDS, key
        assert d["ratio"] == results["ratios"][key]
        if d["ratio"] is None:
            assert d["status"].startswith("not available yet (") and d["met"] is None and d["repeats"] == 0, key
            continue
        assert d["status"] == "ok", key
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
    for key in CASE_KEYS:
        assert key in stdout
    assert bench.table(results).splitlines()[0].split()[:2] == ["op", "shape"]


def test_only_selects_cases_and_rejects_unknown_names():
    results = bench.run(bench.get_device("cpu"), quick=True, repeats=1, only=["max_pool2d"])
    assert list(results["ratios"]) == ["max_pool2d"]
    with pytest.raises(ValueError, match="no case"):
        bench.run(bench.get_device("cpu"), quick=True, repeats=1, only=["no_such_case"])
