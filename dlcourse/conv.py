r"""2-D convolution from scratch: the output-size formula, a loop version, and im2col.

A convolution layer (strictly a *cross-correlation*, as in every deep-learning library) slides
``C_out`` filters of shape ``(C_in, kH, kW)`` over the input and takes a dot product at each
position:

.. math::

    y_{n,o,i,j} = b_o + \sum_{c=0}^{C_{in}-1} \sum_{u=0}^{kH-1} \sum_{v=0}^{kW-1}
                  w_{o,c,u,v}\; x^{pad}_{n,\,c,\,s_h i + u,\,s_w j + v}

:func:`corr2d` is that formula with two Python loops, for reading. :func:`conv2d` computes the
same thing as one matrix product ("im2col"): every input patch becomes a row of a matrix, every
filter a column of another, and a single matrix product does all the dot products. Autograd
differentiates it. No convolution routine of PyTorch is called, only a view (``Tensor.unfold``),
a copy, a matrix product and an add, so it runs on any device and in any floating dtype.

On the way, :func:`conv2d` hands over to a tuned version of the same computation
(``dlcourse._fast.conv``: channels-last memory, a written-out backward pass, Winograd's
algorithm for 3x3 layers, oneDNN's matrix products) unless the environment variable
``DLCOURSE_FAST=0`` turns it off. The book's Performance page measures both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF
from torch import Tensor

from dlcourse import _fast
from dlcourse._checks import check_int, int_pair, require_tensor, torch_signature

__all__ = ["conv_output_size", "corr2d", "conv2d"]

_IntPair = int | tuple[int, int]


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    r"""How many positions a window of ``kernel_size`` takes along one spatial dimension.

    .. math::

        \text{out} = \left\lfloor \frac{\text{size} + 2p - d\,(k - 1) - 1}{s} \right\rfloor + 1

    With ``dilation=1`` this is the lectures' :math:`(W - K + 2P)/S + 1`, rounded down: a
    window that would run past the padded border is dropped. The same formula gives the
    output size of convolution and of pooling layers.

    Args:
        size: input size along the dimension (height or width), at least 1.
        kernel_size: window size :math:`k`, at least 1.
        stride: step :math:`s` between windows, at least 1.
        padding: zeros :math:`p` added on *each* side, at least 0.
        dilation: spacing :math:`d` between window elements (1 for a plain window).

    Returns:
        The number of output positions, at least 1.

    Raises:
        ValueError: a non-positive size, kernel, stride or dilation, a negative padding, or a
            (dilated) kernel larger than the padded input.

    Example: ``conv_output_size(32, 5)`` is 28; ``conv_output_size(32, 5, padding=2)`` is 32.
    """
    fn = "conv_output_size"
    size = check_int(size, "size", fn, 1)
    kernel_size = check_int(kernel_size, "kernel_size", fn, 1)
    stride = check_int(stride, "stride", fn, 1)
    padding = check_int(padding, "padding", fn, 0)
    dilation = check_int(dilation, "dilation", fn, 1)
    span = dilation * (kernel_size - 1) + 1  # how far a (dilated) window reaches
    if span > size + 2 * padding:
        raise ValueError(
            f"{fn}: the kernel does not fit: a window of {span} (kernel_size={kernel_size}, "
            f"dilation={dilation}) is larger than the padded input of {size + 2 * padding} "
            f"(size={size}, padding={padding})"
        )
    return (size + 2 * padding - span) // stride + 1



def corr2d(x: Tensor, kernel: Tensor) -> Tensor:
    r"""The 2-D cross-correlation of one image with one kernel, with two plain loops (for teaching).

    .. math::

        y_{i,j} = \sum_{u=0}^{kH-1} \sum_{v=0}^{kW-1} k_{u,v}\, x_{i+u,\,j+v}

    One dot product per output position: slow, but it is the definition. Use :func:`conv2d`
    for real work; it gives the same numbers (see the tests).

    Args:
        x: the image, a 2-D tensor.
        kernel: the filter, a 2-D tensor no larger than ``x``.

    Shape:
        x: ``(H, W)``; kernel: ``(kH, kW)``. Output: ``(H - kH + 1, W - kW + 1)``.
    """
    for name, t in (("x", x), ("kernel", kernel)):
        require_tensor(t, name, "corr2d")
        if t.dim() != 2:
            raise ValueError(f"corr2d: expected a 2-D {name}, got shape {tuple(t.shape)}")
    kH, kW = kernel.shape
    H_out = conv_output_size(x.shape[0], kH)
    W_out = conv_output_size(x.shape[1], kW)
    dtype = torch.result_type(x, kernel)
    y = torch.zeros(H_out, W_out, dtype=dtype, device=x.device)
    for i in range(H_out):
        for j in range(W_out):
            y[i, j] = (x[i:i + kH, j:j + kW] * kernel).sum()  # the window at (i, j), times the kernel
    return y


def _check_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: _IntPair,
                  padding: _IntPair) -> tuple[tuple[int, int], tuple[int, int]]:
    """Check the arguments of :func:`conv2d`; return ``stride`` and ``padding`` as ``(h, w)`` pairs."""
    fn = "conv2d"
    require_tensor(x, "x", fn)
    require_tensor(weight, "weight", fn)
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"{fn}: expected bias to be a torch.Tensor or None, got {type(bias).__name__}")
    if x.dim() not in (3, 4):
        raise ValueError(f"{fn}: expected a 4-D input (N, C, H, W) or a 3-D one (C, H, W), got {x.dim()}-D "
                         f"of shape {tuple(x.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"{fn}: expected a 4-D weight (C_out, C_in, kH, kW), got shape {tuple(weight.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: expected a floating-point input, got {x.dtype}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if t.dtype != x.dtype:
            raise TypeError(f"{fn}: expected {name} of the input's dtype {x.dtype}, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{fn}: expected {name} on the input's device {x.device}, got {t.device}")
    C_out, C_in, kH, kW = weight.shape
    if x.shape[-3] != C_in:
        raise ValueError(f"{fn}: the weight {tuple(weight.shape)} expects {C_in} input channels, "
                         f"got an input of shape {tuple(x.shape)} with {x.shape[-3]}")
    if bias is not None and tuple(bias.shape) != (C_out,):
        raise ValueError(f"{fn}: expected bias of shape ({C_out},), got {tuple(bias.shape)}")
    stride = int_pair(stride, "stride", fn, 1)
    padding = int_pair(padding, "padding", fn, 0)
    for dim, (size, k, s, p) in enumerate(zip(x.shape[-2:], (kH, kW), stride, padding)):
        try:
            conv_output_size(size, k, s, p)
        except ValueError as err:
            raise ValueError(
                f"{fn}: the {kH}x{kW} kernel does not fit the input of shape {tuple(x.shape)} with "
                f"padding={padding}: {'height' if dim == 0 else 'width'} {size} + 2*{p} < {k}"
            ) from err
    return stride, padding


@torch_signature(("dilation", 1), ("groups", 1))
def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: _IntPair = 1,
           padding: _IntPair = 0) -> Tensor:
    r"""2-D convolution (cross-correlation) of a batch of images, as ``torch.nn.functional.conv2d``.

    .. math::

        y_{n,o,i,j} = b_o + \sum_{c,u,v} w_{o,c,u,v}\; x^{pad}_{n,\,c,\,s_h i + u,\,s_w j + v}

    computed by im2col: ``Tensor.unfold`` views the padded input as one ``(C_in, kH, kW)``
    patch per output position, the patches become the rows of a matrix, and one matrix
    product with the filters (one per column) takes every dot product at once. Autograd
    differentiates it. Unless ``DLCOURSE_FAST=0``, the tuned version of the same computation
    runs instead (``dlcourse._fast.conv``).

    Args:
        x: input images.
        weight: the filters, one ``(C_in, kH, kW)`` block per output channel.
        bias: one number per output channel, or ``None``.
        stride: step between windows, an int or an ``(s_h, s_w)`` pair (default 1).
        padding: zeros added on each side, an int or a ``(p_h, p_w)`` pair (default 0).

    Shape:
        x: ``(N, C_in, H, W)`` or ``(C_in, H, W)``. weight: ``(C_out, C_in, kH, kW)``.
        bias: ``(C_out,)``. Output: ``(N, C_out, H_out, W_out)`` (or ``(C_out, H_out, W_out)``) with

        .. math::

            H_{out} = \left\lfloor \frac{H + 2 p_h - kH}{s_h} \right\rfloor + 1, \qquad
            W_{out} = \left\lfloor \frac{W + 2 p_w - kW}{s_w} \right\rfloor + 1

        (:func:`conv_output_size`).
    """
    stride, padding = _check_conv2d(x, weight, bias, stride, padding)
    if x.dim() == 3:  # one unbatched image: (C, H, W) -> (1, C, H, W) -> back to (C, H_out, W_out)
        return conv2d(x.unsqueeze(0), weight, bias, stride, padding).squeeze(0)
    if _fast.enabled():  # the same convolution, tuned for speed (dlcourse/_fast/conv.py)
        return _fast.conv2d(x, weight, bias, stride, padding)
    N, C_in, H, W = x.shape
    C_out, _, kH, kW = weight.shape
    (sH, sW), (pH, pW) = stride, padding
    xp = TF.pad(x, (pW, pW, pH, pH))  # (N, C_in, H + 2 pH, W + 2 pW): zeros around each image
    patches = xp.unfold(2, kH, sH).unfold(3, kW, sW)  # (N, C_in, H_out, W_out, kH, kW): a view, no copy
    H_out, W_out = patches.shape[2], patches.shape[3]
    rows = patches.permute(0, 2, 3, 1, 4, 5).reshape(N * H_out * W_out, C_in * kH * kW)  # (M, K): a patch per row
    filters = weight.reshape(C_out, C_in * kH * kW)  # (C_out, K): a filter per row, laid out (C_in, kH, kW)
    out = rows @ filters.T  # (M, C_out): every dot product in one matrix product
    if bias is not None:
        out = out + bias  # (M, C_out): one bias per output channel
    return out.view(N, H_out, W_out, C_out).permute(0, 3, 1, 2)  # (N, C_out, H_out, W_out)
