"""One matrix product, ``a @ w.T + bias``, run by the fastest kernel at hand; and scratch memory.

PyTorch's own CPU convolutions run on oneDNN. ``torch.mm`` on the CPU calls MKL's ``sgemm``
instead, which is slower on some processors (the AMD EPYC this course is tested on among them;
the Performance page has the numbers). So that the fast convolution is compared with PyTorch's
algorithm against algorithm, with the same matrix-product library underneath, :func:`linear`
uses oneDNN's inner product where PyTorch has it (float32 and bfloat16 on the CPU, for products
large enough to repay its set-up) and ``torch.addmm`` everywhere else (CUDA, MPS, float64,
builds without oneDNN). Both compute the same product; only the order of the float additions
differs.

Set the environment variable ``DLCOURSE_GEMM=torch`` to always use ``torch.addmm`` (to compare
the two, or if a PyTorch build's oneDNN misbehaves).

:data:`scratch` holds the large temporaries of the fast kernels from call to call;
:func:`release_scratch` gives that memory back.
"""

from __future__ import annotations

import functools
import math
import os
import threading

import torch
from torch import Tensor

__all__ = ["linear", "scratch", "release_scratch"]

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
    touch, a cost PyTorch's own convolution (which keeps such a scratchpad) does not pay. So
    each *role* (``"tiles"``, ``"products"``, ...) gets one flat buffer that grows to the
    largest size asked for and is reused; layers run one after the other, so they share it.
    Only CPU tensors (CUDA's caching allocator already reuses memory), and only buffers up to
    ``MAX_BYTES`` (bigger ones are allocated as usual). :meth:`release` frees them.
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

    def nbytes(self) -> int:
        """The bytes this thread's buffers hold."""
        return sum(b.numel() * b.element_size() for b in self.buffers.values())

    def release(self) -> int:
        """Drop this thread's buffers (tensors still using them keep their memory); the bytes dropped."""
        dropped = self.nbytes()
        self.buffers.clear()
        return dropped


scratch = _Scratch()  # the temporaries' memory, per thread


def release_scratch() -> int:
    """Give back the scratch memory of the fast kernels (this thread's); returns the bytes released.

    The buffers grow to the largest layer run so far and stay allocated between calls, so that
    the next training step reuses them. Call this after training a large model, before doing
    something else in the same process; the next fast call allocates afresh.
    """
    return scratch.release()
