"""``make bench`` times both paths of the operations that have a fast kernel: the readable code
(``DLCOURSE_FAST=0``) and the kernel (``DLCOURSE_FAST=1``), next to torch's, and the JSON keeps
them apart (``paths``, ``path_details``) while ``ratios`` and ``details`` keep their meaning: the
path the environment selects. Nothing here asserts a speed."""

from __future__ import annotations

import math

import pytest

from dlcourse import _fast
from dlcourse_tools import bench

FAST_CASES = {c.key for c in bench.CASES if c.fast}


def test_the_operations_with_a_fast_kernel_are_marked():
    assert {"conv2d_64x1x28x28", "conv2d_64x16x14x14", "conv2d_32x64x16x16", "max_pool2d", "avg_pool2d",
            "cross_entropy", "lstm"} == FAST_CASES
    assert "attention" not in FAST_CASES


@pytest.mark.parametrize("setting", ["1", "0"])
def test_both_paths_are_timed_and_the_details_follow_the_switch(setting, monkeypatch):
    monkeypatch.setenv(_fast.ENV, setting)
    results = bench.run(bench.get_device("cpu"), quick=True, repeats=2, only=["conv2d", "cross_entropy", "attention"])
    assert results["fast_default"] is (setting == "1")
    assert set(results["paths"]) == {"readable", "fast"} and set(results["path_details"]) == set(results["ratios"])
    for key, detail in results["details"].items():
        paths = results["path_details"][key]
        readable, fast = paths["readable"], paths["fast"]
        assert set(readable) == {"mine_ms", "ratio", "ratio_q1", "ratio_q3"}
        assert readable["ratio_q1"] <= readable["ratio"] <= readable["ratio_q3"]
        for p in (readable, fast):
            if p is not None:
                assert math.isfinite(p["ratio"]) and p["ratio"] > 0 and p["mine_ms"] > 0
        if key in FAST_CASES:
            assert fast is not None and results["paths"]["fast"][key] == fast["ratio"]
            chosen = fast if setting == "1" else readable
        else:  # no fast kernel: the readable code is all there is
            assert fast is None and results["paths"]["fast"][key] is None
            chosen = readable
        assert detail["ratio"] == chosen["ratio"] and detail["mine_ms"] == chosen["mine_ms"]
        assert results["paths"]["readable"][key] == readable["ratio"]
    assert {"readable", "fast"} <= set(bench.table(results).splitlines()[0].split())
    assert _fast.enabled() is (setting == "1")  # the bench put the switch back
