r"""Max and average pooling from scratch, with the semantics of ``torch.nn.functional``.

A pooling layer slides a ``kH x kW`` window over each channel and keeps one number per
position: the largest (max pooling) or the mean (average pooling). Here ``Tensor.unfold``
views the padded input as one window per output position, ``(N, C, H_out, W_out, kH, kW)``,
without copying anything, and the maximum or the mean over the last two dimensions is the
output; autograd differentiates it. Max pooling pads with :math:`-\infty` (which never wins) and
sends each gradient to the first maximum of its window, as PyTorch; average pooling pads with
zeros (which count in the mean, PyTorch's default). Nothing here calls a
PyTorch pooling routine, and everything runs on any device.

Unless ``DLCOURSE_FAST=0``, both hand over to a tuned version that visits the window offset by
offset, with the backward pass written out (``dlcourse._fast.pool``).
"""

from __future__ import annotations

import torch.nn.functional as TF
from torch import Tensor

from dlcourse import _fast
from dlcourse._checks import int_pair, require_tensor, torch_signature
from dlcourse.conv import conv_output_size

__all__ = ["max_pool2d", "avg_pool2d"]

_IntPair = int | tuple[int, int]
_Geometry = tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]


def _geometry(x: Tensor, kernel_size: _IntPair, stride: _IntPair | None, padding: _IntPair,
              fn: str) -> _Geometry:
    """Check the arguments of a pooling function; return kernel, stride, padding, output size."""
    require_tensor(x, "x", fn)
    if x.dim() not in (3, 4):
        raise ValueError(f"{fn}: expected a 4-D input (N, C, H, W) or a 3-D one (C, H, W), "
                         f"got {x.dim()}-D of shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: expected a floating-point input, got {x.dtype}")
    kernel = int_pair(kernel_size, "kernel_size", fn, 1)
    step = kernel if stride is None else int_pair(stride, "stride", fn, 1)
    pad = int_pair(padding, "padding", fn, 0)
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError(f"{fn}: padding should be at most half of the kernel size, "
                         f"got padding={pad} for kernel_size={kernel}")
    H, W = x.shape[-2:]
    if H < 1 or W < 1 or H + 2 * pad[0] < kernel[0] or W + 2 * pad[1] < kernel[1]:
        raise ValueError(f"{fn}: the {kernel[0]}x{kernel[1]} window does not fit the input of shape "
                         f"{tuple(x.shape)} with padding={pad}")
    out = (conv_output_size(H, kernel[0], step[0], pad[0]), conv_output_size(W, kernel[1], step[1], pad[1]))
    return kernel, step, pad, out


@torch_signature(("dilation", 1), ("ceil_mode", False), ("return_indices", False))
def max_pool2d(x: Tensor, kernel_size: _IntPair, stride: _IntPair | None = None,
               padding: _IntPair = 0) -> Tensor:
    r"""2-D max pooling, as ``torch.nn.functional.max_pool2d``: the largest entry of each window.

    .. math::

        y_{n,c,i,j} = \max_{0 \le u < kH,\; 0 \le v < kW} x^{pad}_{n,\,c,\,s_h i + u,\,s_w j + v}

    The padding is :math:`-\infty`, so it never wins. The gradient of each output goes to
    the entry that held the maximum; on a tie, to the first one in row-major order within
    the window, as in PyTorch. (Only in a window containing NaN may the chosen entry differ
    from PyTorch's; the output value, NaN, is the same.)

    Args:
        x: input images.
        kernel_size: window size, an int or a ``(kH, kW)`` pair.
        stride: step between windows, an int or a pair; default: ``kernel_size``.
        padding: :math:`-\infty` added on each side, at most half the window (default 0).

    Shape:
        Input: ``(N, C, H, W)`` or ``(C, H, W)``. Output: ``(N, C, H_out, W_out)`` (or
        ``(C, H_out, W_out)``) with

        .. math::

            H_{out} = \left\lfloor \frac{H + 2 p_h - kH}{s_h} \right\rfloor + 1, \qquad
            W_{out} = \left\lfloor \frac{W + 2 p_w - kW}{s_w} \right\rfloor + 1

    Example: a 2x2 window with stride 2 turns ``[[1,3,5,3],[4,2,3,1],[3,1,1,3],[0,1,0,4]]`` into
    ``[[4,5],[3,4]]``.
    """
    geometry = _geometry(x, kernel_size, stride, padding, "max_pool2d")
    if x.dim() == 3:  # one unbatched image: (C, H, W) -> (1, C, H, W) -> back to (C, H_out, W_out)
        return max_pool2d(x.unsqueeze(0), kernel_size, stride, padding).squeeze(0)
    if _fast.enabled():  # the same pooling, tuned for speed (dlcourse/_fast/pool.py)
        return _fast.max_pool2d(x, geometry)
    (kH, kW), (sH, sW), (pH, pW), _ = geometry
    xp = TF.pad(x, (pW, pW, pH, pH), value=float("-inf"))  # (N, C, H + 2 pH, W + 2 pW): -inf never wins
    windows = xp.unfold(2, kH, sH).unfold(3, kW, sW).flatten(-2)  # (N, C, H_out, W_out, kH * kW): a window per row
    # Which entry is the maximum, as PyTorch decides: the first in the window (NaN wins; an input
    # of -inf ties with the padding, so only entries inside the image count).
    inside = TF.pad(x.new_ones(x.shape[-2:]), (pW, pW, pH, pH)).unfold(0, kH, sH).unfold(1, kW, sW).flatten(-2)
    w = windows.detach()  # (inside: (H_out, W_out, kH * kW), 1 in the image, 0 in the padding)
    is_max = ((w == w.amax(dim=-1, keepdim=True)) | w.isnan()) & (inside == 1)  # (N, C, H_out, W_out, kH * kW)
    first = is_max.float().argmax(dim=-1, keepdim=True)  # (N, C, H_out, W_out, 1): the first True
    return windows.gather(-1, first).squeeze(-1)  # (N, C, H_out, W_out); the gradient goes to that entry


@torch_signature(("ceil_mode", False), ("count_include_pad", True), ("divisor_override", None))
def avg_pool2d(x: Tensor, kernel_size: _IntPair, stride: _IntPair | None = None,
               padding: _IntPair = 0) -> Tensor:
    r"""2-D average pooling, as ``torch.nn.functional.avg_pool2d``: the mean of each window.

    .. math::

        y_{n,c,i,j} = \frac{1}{kH\, kW} \sum_{u=0}^{kH-1} \sum_{v=0}^{kW-1}
                      x^{pad}_{n,\,c,\,s_h i + u,\,s_w j + v}

    The padding is zeros and counts in the mean (PyTorch's default ``count_include_pad=True``).
    Each input entry receives :math:`1/(kH\,kW)` of the gradient of every window it is in.

    Args:
        x: input images.
        kernel_size: window size, an int or a ``(kH, kW)`` pair.
        stride: step between windows, an int or a pair; default: ``kernel_size``.
        padding: zeros added on each side, at most half the window (default 0).

    Shape:
        Input: ``(N, C, H, W)`` or ``(C, H, W)``. Output: ``(N, C, H_out, W_out)`` (or
        ``(C, H_out, W_out)``), with :math:`H_{out}, W_{out}` as in :func:`max_pool2d`.
    """
    geometry = _geometry(x, kernel_size, stride, padding, "avg_pool2d")
    if x.dim() == 3:  # one unbatched image: (C, H, W) -> (1, C, H, W) -> back to (C, H_out, W_out)
        return avg_pool2d(x.unsqueeze(0), kernel_size, stride, padding).squeeze(0)
    if _fast.enabled():  # the same pooling, tuned for speed (dlcourse/_fast/pool.py)
        return _fast.avg_pool2d(x, geometry)
    (kH, kW), (sH, sW), (pH, pW), _ = geometry
    xp = TF.pad(x, (pW, pW, pH, pH))  # (N, C, H + 2 pH, W + 2 pW): zeros, which count in the mean
    windows = xp.unfold(2, kH, sH).unfold(3, kW, sW)  # (N, C, H_out, W_out, kH, kW): a view, no copy
    return windows.mean(dim=(-2, -1))  # (N, C, H_out, W_out)
