"""Tuned kernels behind dlcourse's readable functions: on by default, ``DLCOURSE_FAST=0`` turns them off.

Every from-scratch operation in :mod:`dlcourse` is written to be read: :func:`dlcourse.conv.conv2d`
is im2col and one matrix product, :func:`dlcourse.rnn.lstm` a loop of ``lstm_cell``,
:func:`dlcourse.losses.cross_entropy` the log-sum-exp formula, each differentiated by autograd.
Where a faster kernel exists, the readable function hands over to it in one visible line::

    if _fast.enabled():
        return _fast.conv2d(x, weight, bias, stride, padding)

The kernels compute the same numbers (up to the order of float additions) and are tested
against PyTorch exactly as the readable versions are. They live here, one module each:

* :mod:`dlcourse._fast.conv`: channels-last im2col in cache-sized chunks, a written-out backward
  with three input-gradient algorithms, Winograd's F(2x2, 3x3) and F(4x4, 3x3);
* :mod:`dlcourse._fast.rnn`: an LSTM with all gates fused and backpropagation through time
  written out;
* :mod:`dlcourse._fast.losses`: cross-entropy with ``exp2`` and a closed-form gradient;
* :mod:`dlcourse._fast.pool`: max and average pooling window offset by window offset, the
  backward passes written out;
* :mod:`dlcourse._fast.gemm`: matrix products in oneDNN, and scratch memory reused from call to
  call (:func:`release_scratch` gives it back).

Their backward passes are written out, so a second derivative through them raises an error;
turn them off (``DLCOURSE_FAST=0``) for gradients of gradients. The switch is read at every
call, so it can also be changed inside a running program (:func:`switched`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from dlcourse._fast.conv import conv2d
from dlcourse._fast.gemm import release_scratch
from dlcourse._fast.losses import cross_entropy
from dlcourse._fast.pool import avg_pool2d, max_pool2d
from dlcourse._fast.rnn import lstm

__all__ = ["ENV", "enabled", "switched", "conv2d", "lstm", "cross_entropy", "max_pool2d", "avg_pool2d",
           "release_scratch"]

ENV = "DLCOURSE_FAST"  # the environment variable: "0" turns the fast kernels off, "1" (the default) on


def enabled() -> bool:
    """Whether the readable functions hand over to the fast kernels: ``DLCOURSE_FAST`` is ``1`` or unset.

    Raises:
        ValueError: ``DLCOURSE_FAST`` is set to anything else than ``0`` or ``1``.
    """
    value = os.environ.get(ENV, "1").strip()
    if value not in ("0", "1", ""):
        raise ValueError(f"dlcourse: expected the environment variable {ENV} to be 0 (readable code only) "
                         f"or 1 (fast kernels, the default), got {value!r}")
    return value != "0"


@contextlib.contextmanager
def switched(on: bool) -> Iterator[None]:
    """Run a block with the fast kernels on (``True``) or off (``False``), then restore the setting."""
    if not isinstance(on, bool):
        raise TypeError(f"switched: expected on to be True or False, got {type(on).__name__} {on!r}")
    previous = os.environ.get(ENV)
    os.environ[ENV] = "1" if on else "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[ENV]
        else:
            os.environ[ENV] = previous
