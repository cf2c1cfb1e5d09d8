"""One matrix product, ``a @ w.T + bias``, run by the fastest kernel at hand; and scratch memory.

PyTorch's own CPU convolutions run on oneDNN. ``torch.mm`` on the CPU calls MKL's ``sgemm``
instead, which is slower on some processors: on the two-core AMD EPYC this course is tested
on, oneDNN's inner product runs the matrix products of :mod:`dlcourse.conv` 1.1-1.8x faster
than ``torch.mm`` (for example ``(8192, 576) @ (576, 64)`` on two threads: 86 vs 50 GFLOP/s).
So that a from-scratch convolution measured against PyTorch's is compared algorithm against
algorithm, with the same matrix-product library underneath, :func:`linear` uses oneDNN's
inner product where PyTorch has it (float32 and bfloat16 on the CPU, for products large
enough to repay its set-up) and ``torch.addmm`` everywhere else (CUDA, MPS, float64, builds
without oneDNN). Both compute the same product; only the order of the float additions differs.

Set the environment variable ``DLCOURSE_GEMM=torch`` to always use ``torch.addmm`` (to compare
the two, or if a PyTorch build's oneDNN misbehaves).
"""

from __future__ import annotations

import functools
import math
import os
import threading

import torch
from torch import Tensor

__all__ = ["linear", "scratch"]

_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)
_ONEDNN_MIN_WORK = 1 << 19  # multiply-adds; below, oneDNN's set-up per call (~10-20 us) outweighs its speed
_onednn_works: bool | None = None  # None: not tried yet; then whether the first call succeeded


@functools.cache
def _onednn_inner_product():
    """oneDNN's inner product as PyTorch registers it (used by ``torch.compile`` on the CPU), or ``None``."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):  # a build without it
        return None


def _onednn_op():
    """The inner product to use, or ``None`` where there is none or ``DLCOURSE_GEMM=torch`` asks for ``torch.addmm``."""
    if os.environ.get("DLCOURSE_GEMM", "").lower() == "torch":
        return None
    return _onednn_inner_product()


def linear(a: Tensor, w: Tensor, bias: Tensor | None = None) -> Tensor:
    """``a @ w.T + bias``, as ``torch.nn.functional.linear``, with oneDNN's kernel on the CPU where it exists.

    Args:
        a: the left matrix (any strides).
        w: the right matrix, transposed: one row per output column (any strides).
        bias: added to every row, or ``None``.

    Shape:
        a: ``(M, K)``. w: ``(N, K)``. bias: ``(N,)``. Output: ``(M, N)``, contiguous.
    """
    global _onednn_works
    if (_onednn_works is not False and a.device.type == "cpu" and a.dtype in _ONEDNN_DTYPES
            and a.shape[0] * a.shape[1] * w.shape[0] >= _ONEDNN_MIN_WORK):
        op = _onednn_op()
        if op is not None:
            try:
                out = op(a, w, bias, "none", [], "")
                _onednn_works = True
                return out
            except RuntimeError:  # torch.addmm below computes it, or says what is wrong with the inputs
                if _onednn_works is None:  # it never worked in this build: use torch.addmm from now on
                    _onednn_works = False
    if bias is None:
        return a @ w.T
    return torch.addmm(bias, a, w.T)


class _Scratch(threading.local):
    """Memory reused from call to call for temporaries that never leave a function (one set per thread).

    A convolution's fast paths build a few large intermediate tensors (gathered tiles, their
    transforms, products) that are dead when the call returns. Allocated afresh every step,
    each is handed out by ``malloc`` as new pages that the kernel must map and zero on first
    touch: on the two-core test machine, ~2,500 page faults per forward + backward of a
    ``(32, 64, 16, 16)`` layer, 10-15% of its time (PyTorch's own convolution keeps such a
    scratchpad and pays none). So each *role* (``"tiles"``, ``"products"``, ...) gets one flat
    buffer that grows to the largest size asked for and is reused; layers run one after the
    other, so they share it. Only CPU tensors (CUDA's caching allocator already reuses memory),
    and only buffers up to ``MAX_BYTES`` (bigger ones are allocated as usual).
    """

    MAX_BYTES = 64 << 20

    def __init__(self) -> None:
        self.buffers: dict[tuple[str, torch.dtype, torch.device], Tensor] = {}

    def empty(self, role: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """An uninitialised contiguous tensor of ``shape`` in ``like``'s dtype and device, valid until the next ask for ``role``."""
        numel = math.prod(shape)
        if like.device.type != "cpu" or numel * like.element_size() > self.MAX_BYTES:
            return like.new_empty(shape)
        key = (role, like.dtype, like.device)
        buffer = self.buffers.get(key)
        if buffer is None or buffer.numel() < numel:
            buffer = self.buffers[key] = like.new_empty(numel)
        return buffer[:numel].view(shape)


scratch = _Scratch()  # the temporaries' memory, per thread
