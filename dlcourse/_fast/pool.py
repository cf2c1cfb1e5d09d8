r"""The tuned pooling behind :mod:`dlcourse.pool`: window offset by window offset, backward written out.

:func:`dlcourse.pool.max_pool2d` and :func:`~dlcourse.pool.avg_pool2d` view every window with
``Tensor.unfold`` and take its maximum or mean under autograd, the version to read. Here the
window is visited *offset by offset* instead: for the offset :math:`(u, v)` inside the window,
the input entries that every window sees there form one strided view of the (padded) input,

.. code-block:: text

    x_pad[:, :, u : u + s_h (H_out - 1) + 1 : s_h,  v : v + s_w (W_out - 1) + 1 : s_w]   # (N, C, H_out, W_out)

so a pooling layer is ``kH * kW`` elementwise operations on ``(N, C, H_out, W_out)`` tensors,
with no copy of the windows: a running maximum (and which offset holds it, in one byte) or a
running sum. The backward passes use the same views: max pooling sends each output's gradient
to the offset that held the maximum, average pooling spreads it evenly over the window; where
windows do not overlap, each offset's share is written straight into its place.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["max_pool2d", "avg_pool2d"]

_Geometry = tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]  # kernel, stride, padding, out


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


def max_pool2d(x: Tensor, geometry: _Geometry) -> Tensor:
    """:func:`dlcourse.pool.max_pool2d` for checked arguments: ``x`` ``(N, C, H, W)``, ``geometry``
    (kernel, stride, padding, output size)."""
    return _MaxPool2dFunction.apply(x, geometry)


def avg_pool2d(x: Tensor, geometry: _Geometry) -> Tensor:
    """:func:`dlcourse.pool.avg_pool2d` for checked arguments (see :func:`max_pool2d`)."""
    return _AvgPool2dFunction.apply(x, geometry)
