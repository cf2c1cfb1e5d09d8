"""dlcourse.doctor(): runs, prints the key lines, returns them as a dict, and never raises."""

from __future__ import annotations

import io
import platform
import re

import pytest
import torch

import dlcourse
from dlcourse.device import get_device


@pytest.fixture(scope="module")
def report():
    """(printed text, returned dict) of one run, with the automatic device choice."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DLCOURSE_DEVICE", raising=False)
        out = io.StringIO()
        result = dlcourse.doctor(file=out)
        return out.getvalue(), result


def lines_by_key(text: str) -> dict[str, str]:
    """'  key   value' or 'FAIL key   value' lines -> {key: the whole line}."""
    found = {}
    for line in text.splitlines()[1:]:
        match = re.match(r"^(FAIL|  ) (.{22}) (.*)$", line)
        assert match, f"not a report line: {line!r}"
        found[match.group(2).strip()] = line
    return found


def test_header_and_key_lines(report):
    text, _ = report
    assert text.splitlines()[0] == "dlcourse doctor"
    lines = lines_by_key(text)
    for key in ("python", "platform", "torch", "device", "gpu", "data: MNIST 5k", "data: digits 8x8", "compute check"):
        assert key in lines, f"no {key!r} line in:\n{text}"
        assert not lines[key].startswith("FAIL"), lines[key]
    assert platform.python_version() in lines["python"]
    assert torch.__version__ in lines["torch"]


def test_data_lines_say_ok_with_the_split_sizes(report):
    lines = lines_by_key(report[0])
    assert re.search(r"ok: 4000 train \+ 1000 test \(\d+\.\d\d s\)", lines["data: MNIST 5k"])
    assert re.search(r"ok: 1437 train \+ 360 test \(\d+\.\d\d s\)", lines["data: digits 8x8"])
    assert "ok on" in lines["compute check"] and "8.0 == 8.0" in lines["compute check"]


def test_returns_what_it_printed(report):
    text, result = report
    assert isinstance(result, dict)
    lines = lines_by_key(text)
    assert set(result) == set(lines)
    for key, value in result.items():
        assert lines[key].endswith(str(value)), key
    assert result["torch"] == torch.__version__


def test_reports_every_runtime_dependency(report):
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    names = {re.split(r"[<>=!~ \[;]", dep, maxsplit=1)[0] for dep in pyproject["project"]["dependencies"]}
    lines = lines_by_key(report[0])
    assert names <= set(lines), f"doctor does not report {sorted(names - set(lines))}"
    for name in names:
        assert not lines[name].startswith("FAIL") and "not installed" not in lines[name], lines[name]


def test_device_line_is_get_device(report, no_device_env):
    lines = lines_by_key(report[0])
    assert str(get_device()) in lines["device"]


def test_device_from_the_environment_variable(monkeypatch):
    monkeypatch.setenv("DLCOURSE_DEVICE", "cpu")
    out = io.StringIO()
    result = dlcourse.doctor(file=out)
    assert result["device"] == "cpu (from DLCOURSE_DEVICE)"
    assert "compute check" in result and str(result["compute check"]).startswith("ok on cpu")


def test_bad_device_is_reported_not_raised(monkeypatch):
    monkeypatch.setenv("DLCOURSE_DEVICE", "banana")
    out = io.StringIO()
    result = dlcourse.doctor(file=out)  # must not raise
    lines = lines_by_key(out.getvalue())
    assert lines["device"].startswith("FAIL") and "ValueError" in lines["device"]
    assert str(result["compute check"]).startswith("ok on cpu")  # falls back to the CPU


def test_broken_data_is_reported_not_raised(monkeypatch):
    import dlcourse.data

    def broken():
        raise FileNotFoundError("the bundled MNIST file is missing")

    monkeypatch.setattr(dlcourse.data, "load_mnist", broken)
    out = io.StringIO()
    dlcourse.doctor(file=out)
    line = lines_by_key(out.getvalue())["data: MNIST 5k"]
    assert line.startswith("FAIL") and "FileNotFoundError: the bundled MNIST file is missing" in line


def test_prints_to_stdout_by_default(capsys, monkeypatch):
    monkeypatch.setenv("DLCOURSE_DEVICE", "cpu")
    dlcourse.doctor()
    assert capsys.readouterr().out.startswith("dlcourse doctor\n")
