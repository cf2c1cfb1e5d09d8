"""The two paths of each operation that has a tuned kernel: the readable code, and the kernel in
``dlcourse._fast`` it hands over to. Test modules import the ``path`` fixture from here, so an
oracle test that takes it runs once with ``DLCOURSE_FAST=0`` and once with ``DLCOURSE_FAST=1``."""

from __future__ import annotations

import pytest

from dlcourse import _fast

PATHS = ["readable", "fast"]


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``"readable"`` (the fast kernels switched off) or ``"fast"`` (on, the default), for the test's duration."""
    monkeypatch.setenv(_fast.ENV, "1" if request.param == "fast" else "0")
    return request.param
