r"""Max and average pooling from scratch, with the semantics of ``torch.nn.functional``.

A pooling layer slides a ``kH x kW`` window over each channel and keeps one number per
position: the largest (max pooling) or the mean (average pooling). Both are computed here
*window offset by window offset*: for the offset :math:`(u, v)` inside the window, the input
entries that every window sees there form one strided view of the (padded) input,

.. code-block:: text

    x_pad[:, :, u : u + s_h (H_out - 1) + 1 : s_h,  v : v + s_w (W_out - 1) + 1 : s_w]   # (N, C, H_out, W_out)

so a pooling layer is ``kH * kW`` elementwise operations on ``(N, C, H_out, W_out)`` tensors:
a running maximum (and which offset holds it) or a running sum. The backward passes use the
same views: max pooling sends each output's gradient to the offset that held the maximum,
average pooling spreads it evenly over the window. Nothing here calls a PyTorch pooling
routine, and everything runs on any device.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from dlcourse._checks import int_pair, torch_signature
from dlcourse.conv import conv_output_size

__all__ = ["max_pool2d", "avg_pool2d"]

_IntPair = int | tuple[int, int]
_Geometry = tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]


def _window(t: Tensor, u: int, v: int, geometry: _Geometry) -> Tensor:
    """The entries that the windows see at offset ``(u, v)``: a strided view ``(N, C, H_out, W_out)``."""
    _, (sH, sW), _, (H_out, W_out) = geometry
    return t[:, :, u:u + sH * (H_out - 1) + 1:sH, v:v + sW * (W_out - 1) + 1:sW]


def _padded(x: Tensor, padding: tuple[int, int], value: float) -> Tensor:
    """``x`` with ``value`` added around each image, or ``x`` itself when there is no padding."""
    pH, pW = padding
    if pH == 0 and pW == 0:
        return x
    N, C, H, W = x.shape
    xp = x.new_full((N, C, H + 2 * pH, W + 2 * pW), value)  # (N, C, H + 2 pH, W + 2 pW)
    xp[:, :, pH:pH + H, pW:pW + W] = x
    return xp


def _input_grad(grad_of_window, x_shape: torch.Size, geometry: _Geometry, like: Tensor) -> Tensor:
    """Assemble the input gradient from each window offset's share, ``grad_of_window(u, v, out)``.

    Windows that do not overlap (stride >= kernel) touch each input entry at most once, so
    each share is written straight into its place (``out``); overlapping windows add them up.
    """
    (kH, kW), (sH, sW), (pH, pW), (H_out, W_out) = geometry
    N, C, H, W = x_shape
    Hp, Wp = H + 2 * pH, W + 2 * pW
    overlap = sH < kH or sW < kW
    covered = (sH, sW) == (kH, kW) and (H_out * kH, W_out * kW) == (Hp, Wp)  # every entry in one window
    grad = like.new_empty((N, C, Hp, Wp)) if covered else like.new_zeros((N, C, Hp, Wp))
    for u in range(kH):
        for v in range(kW):
            target = _window(grad, u, v, geometry)  # (N, C, H_out, W_out) view
            if overlap:
                target += grad_of_window(u, v)
            else:
                grad_of_window(u, v, out=target)
    return grad[:, :, pH:pH + H, pW:pW + W]  # drop the padding: (N, C, H, W)


class _MaxPool2dFunction(torch.autograd.Function):
    """Max pooling; the backward pass routes each gradient to its window's arg-max."""

    @staticmethod
    def forward(ctx, x: Tensor, geometry: _Geometry) -> Tensor:
        (kH, kW), (sH, sW), (pH, pW), (H_out, W_out) = geometry
        xp = _padded(x, (pH, pW), float("-inf"))  # -inf never wins a comparison
        best = _window(xp, 0, 0, geometry)  # (N, C, H_out, W_out), the running maximum
        if kH * kW == 1:
            best = best.clone()  # a 1x1 window: a copy of the input entries, not a view of them
        if not ctx.needs_input_grad[0]:  # inference: the maxima are enough
            for e in range(1, kH * kW):
                best = torch.maximum(best, _window(xp, *divmod(e, kW), geometry))
            return best
        # Which offset u * kW + v holds the maximum. Like PyTorch, start at the first offset that
        # is inside the image (not padding), and move only to a strictly larger value, so ties go
        # to the first maximum in row-major order.
        dtype = torch.uint8 if kH * kW <= 256 else torch.int32
        arg = None
        if pH or pW:
            i = torch.arange(H_out, device=x.device).view(-1, 1)  # (H_out, 1)
            j = torch.arange(W_out, device=x.device).view(1, -1)  # (1, W_out)
            first_u = (pH - sH * i).clamp(min=0)  # the first row of window i inside the image
            first_v = (pW - sW * j).clamp(min=0)
            arg = (first_u * kW + first_v).to(dtype).expand(best.shape).clone()  # (N, C, H_out, W_out)
        for e in range(1, kH * kW):
            candidate = _window(xp, *divmod(e, kW), geometry)  # (N, C, H_out, W_out) view
            larger = candidate > best
            if arg is None:  # e == 1 without padding: the arg-max is 1 where larger, else 0
                arg = larger.view(torch.uint8) if dtype == torch.uint8 else larger.to(dtype)
            else:
                arg.masked_fill_(larger, e)
            best = torch.maximum(best, candidate)  # NaN-propagating, like PyTorch's value
        if arg is None:  # a 1x1 window
            arg = torch.zeros(best.shape, dtype=dtype, device=x.device)
        ctx.save_for_backward(arg)
        ctx.geometry, ctx.x_shape = geometry, x.shape
        return best

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (arg,) = ctx.saved_tensors
        kW = ctx.geometry[0][1]
        zero = grad.new_zeros(())

        def share(u: int, v: int, out: Tensor | None = None) -> Tensor:  # the gradient at offset (u, v)
            return torch.where(arg == u * kW + v, grad, zero, out=out)  # (N, C, H_out, W_out)

        return _input_grad(share, ctx.x_shape, ctx.geometry, grad), None


class _AvgPool2dFunction(torch.autograd.Function):
    """Average pooling (zero padding counted in the mean); the gradient is spread evenly."""

    @staticmethod
    def forward(ctx, x: Tensor, geometry: _Geometry) -> Tensor:
        (kH, kW), _, padding, _ = geometry
        xp = _padded(x, padding, 0.0)
        total = _window(xp, 0, 0, geometry)  # (N, C, H_out, W_out), the running sum
        total = total.clone() if kH * kW == 1 else total + _window(xp, *divmod(1, kW), geometry)  # a new tensor
        for e in range(2, kH * kW):
            total += _window(xp, *divmod(e, kW), geometry)
        ctx.geometry, ctx.x_shape = geometry, x.shape
        return total.div_(kH * kW)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (kH, kW) = ctx.geometry[0]
        share = grad / (kH * kW)  # (N, C, H_out, W_out): each window entry gets an equal part
        def share_at(u: int, v: int, out: Tensor | None = None) -> Tensor:  # the same at every offset
            return share if out is None else out.copy_(share)

        return _input_grad(share_at, ctx.x_shape, ctx.geometry, grad), None


def _geometry(x: Tensor, kernel_size: _IntPair, stride: _IntPair | None, padding: _IntPair,
              fn: str) -> _Geometry:
    """Check the arguments of a pooling function; return kernel, stride, padding, output size."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: expected x to be a torch.Tensor, got {type(x).__name__}")
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
        return _MaxPool2dFunction.apply(x.unsqueeze(0), geometry).squeeze(0)
    return _MaxPool2dFunction.apply(x, geometry)


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
        return _AvgPool2dFunction.apply(x.unsqueeze(0), geometry).squeeze(0)
    return _AvgPool2dFunction.apply(x, geometry)
