"""Shared fixtures of the test suite: the devices to run on, dtypes, a seeded generator, and a
headless matplotlib whose figures are closed after every test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

# Choose the headless backend before anything imports pyplot. Then put the environment back,
# so notebook kernels that other tests start (they inherit os.environ) keep their inline backend.
_previous_backend = os.environ.get("MPLBACKEND")
os.environ["MPLBACKEND"] = "Agg"
import matplotlib.pyplot as plt  # noqa: E402

if _previous_backend is None:
    del os.environ["MPLBACKEND"]
else:
    os.environ["MPLBACKEND"] = _previous_backend

import pytest  # noqa: E402
import torch  # noqa: E402


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


# Every oracle test runs on each of these; the accelerators skip themselves where absent.
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda",
                 marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")),
    pytest.param("mps", id="mps", marks=pytest.mark.skipif(not mps_available(), reason="Apple MPS is not available")),
]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """Each available device in turn: cpu, then cuda and mps where present."""
    return torch.device(request.param)


@pytest.fixture
def gen() -> torch.Generator:
    """A CPU generator with a fixed seed: random inputs that do not touch the global RNG."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(autouse=True)
def _close_figures():
    """Close every matplotlib figure a test opened, so none leak into the next test."""
    yield
    plt.close("all")


@pytest.fixture
def no_device_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run without the DLCOURSE_DEVICE override, whatever the shell that started pytest set."""
    monkeypatch.delenv("DLCOURSE_DEVICE", raising=False)


@pytest.fixture
def supported():
    """``supported(device, dtype)`` skips the test where the device cannot hold the dtype (MPS: no float64)."""

    def check(device: torch.device, dtype: torch.dtype) -> None:
        if device.type == "mps" and dtype == torch.float64:
            pytest.skip("MPS has no float64")

    return check


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one torch thread, then restore the setting.

    Tiny tensors gain nothing from a thread pool, and on a busy 2-core machine two threads that
    share the cores stall each other (small training steps measured ~10x slower). Use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def build() -> subprocess.CompletedProcess:
    """The strict book build (``jupyter-book build . -W -n --keep-going`` into ``_build``), run once
    per test session and shared by test_book.py and the browser tests of test_site.py."""
    from dlcourse_tools.notebooks import cache_guard

    root = Path(__file__).resolve().parents[1]
    cache_guard(root / "_build")
    jb = Path(sys.executable).with_name("jupyter-book")
    # The notebooks run one at a time, as in a student's session: with PyTorch's default thread
    # settings, not the passive waiting the Makefile sets for the tests (see its comment).
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    start = time.perf_counter()
    proc = subprocess.run([str(jb), "build", ".", "-W", "-n", "--keep-going"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=1800)
    proc.elapsed = time.perf_counter() - start  # type: ignore[attr-defined]
    return proc


@pytest.fixture(autouse=True)
def _thawed_backend_flags():
    """Importing ``torch.testing._internal`` (the conformance suite) freezes ``torch.backends``' global
    flags for the whole pytest process; other tests, and the labs' set-up cells they run in-process
    (lab 3 sets ``cudnn.allow_tf32``), set such flags as a notebook would: thaw them before each test."""
    torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True
    yield


def pytest_collection_finish(session):
    """Collection imported the conformance suite (and froze the flags): thaw them before any fixture runs."""
    torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True
