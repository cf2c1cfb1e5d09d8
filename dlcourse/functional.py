"""Activations and layers written from their formulas, checked against ``torch.nn.functional``.

Every function here is built from elementary tensor operations (``exp``, ``where``,
matrix products), so autograd differentiates the formula itself. They accept tensors of any
shape, on any device and of any floating dtype, and return a tensor like their input.
"""

from __future__ import annotations

import operator

import torch
from torch import Tensor

from dlcourse._checks import torch_signature


def _require_tensor(x: object, fn: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: expected a torch.Tensor, got {type(x).__name__}")


@torch_signature(("out", None))
def sigmoid(x: Tensor) -> Tensor:
    r"""The logistic sigmoid, :math:`\sigma(x) = 1 / (1 + e^{-x})`.

    Computed as :math:`e^{-|x|}`-based branches so neither the value nor the gradient
    overflows for large :math:`|x|`.

    Shape:
        Input: any shape. Output: same shape as the input, values in (0, 1).
    """
    _require_tensor(x, "sigmoid")
    neg_abs = torch.where(x >= 0, -x, x)  # -|x|, with gradient 1 (not 0) at x = 0
    z = torch.exp(neg_abs)  # in (0, 1]: never overflows
    return torch.where(x >= 0, 1 / (1 + z), z / (1 + z))


@torch_signature(("out", None))
def tanh(x: Tensor) -> Tensor:
    r"""The hyperbolic tangent, :math:`\tanh(x) = (e^{x} - e^{-x}) / (e^{x} + e^{-x})`.

    Evaluated as :math:`\operatorname{sign}(x)\,(1 - e^{-2|x|}) / (1 + e^{-2|x|})` with
    ``expm1`` so it neither overflows for large :math:`|x|` nor loses digits near 0.

    Shape:
        Input: any shape. Output: same shape, values in (-1, 1).
    """
    _require_tensor(x, "tanh")
    pos = x >= 0
    a = torch.where(pos, x, -x)  # |x|, with gradient 1 at x = 0
    t = -torch.expm1(-2 * a) / (1 + torch.exp(-2 * a))
    return torch.where(pos, t, -t)


@torch_signature(("inplace", False))
def relu(x: Tensor) -> Tensor:
    r"""The rectified linear unit, :math:`\mathrm{ReLU}(x) = \max(0, x)`.

    Its gradient is 1 for :math:`x > 0` and 0 otherwise (0 at :math:`x = 0`, as in PyTorch).
    A NaN stays NaN, as in PyTorch, so a diverging run is not hidden.

    Shape:
        Input: any shape. Output: same shape.
    """
    _require_tensor(x, "relu")
    # Select the zeros where x <= 0 (not the input where x > 0): NaN compares False and passes through.
    return torch.where(x <= 0, torch.zeros((), dtype=x.dtype, device=x.device), x)


@torch_signature(("inplace", False))
def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    r"""Leaky ReLU, :math:`x` for :math:`x > 0`, else :math:`\text{negative\_slope} \cdot x`.

    The small slope keeps a gradient flowing for negative inputs, so units cannot "die".

    Args:
        x: input tensor.
        negative_slope: slope for negative inputs (default 0.01).

    Shape:
        Input: any shape. Output: same shape.
    """
    _require_tensor(x, "leaky_relu")
    return torch.where(x > 0, x, negative_slope * x)


@torch_signature(("inplace", False))
def elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    r"""The exponential linear unit, :math:`x` for :math:`x > 0`, else :math:`\alpha (e^{x} - 1)`.

    Args:
        x: input tensor.
        alpha: the value the function approaches as :math:`x \to -\infty` is :math:`-\alpha`.

    Shape:
        Input: any shape. Output: same shape.
    """
    _require_tensor(x, "elu")
    # Clamp before expm1 so the unused branch cannot overflow and poison the gradient with inf * 0.
    negative_part = alpha * torch.expm1(torch.clamp(x, max=0))
    return torch.where(x > 0, x, negative_part)


@torch_signature(("_stacklevel", 3), ("dtype", None))
def softmax(x: Tensor, dim: int | None = None, *, dtype: torch.dtype | None = None) -> Tensor:
    r"""Softmax along ``dim``, :math:`\mathrm{softmax}(x)_i = e^{x_i} / \sum_j e^{x_j}`.

    The maximum is subtracted first (the result does not change), so large logits do not
    overflow.

    Args:
        x: input tensor (logits).
        dim: the dimension whose entries sum to 1; ``-x.dim() <= dim < x.dim()`` (a 0-d input
            counts as one entry, as in PyTorch: its softmax is 1). It may be left out for inputs
            of up to 2 dimensions (then the last, which is also PyTorch's implicit choice); for
            more, give it: PyTorch's deprecated implicit choice there is not the last dimension.
        dtype: if given, ``x`` is cast to it first (as PyTorch's ``dtype``), e.g. to sum in float64.

    Shape:
        Input: any shape. Output: same shape; entries along ``dim`` are positive and sum to 1.
    """
    _require_tensor(x, "softmax")
    if dim is None:
        if x.dim() > 2:  # PyTorch would pick dim 0 (3-D) or 1 (4-D and more), with a deprecation warning
            raise ValueError(f"softmax: expected dim for a {x.dim()}-D input, e.g. softmax(x, dim=-1) (PyTorch's "
                             f"implicit choice would be dim={0 if x.dim() == 3 else 1}, not the last)")
        dim = -1
    if isinstance(dim, bool) or not hasattr(type(dim), "__index__"):
        raise TypeError(f"softmax: expected an int dim, got {type(dim).__name__}")
    dim = operator.index(dim)  # also accepts NumPy integers
    ndim = max(x.dim(), 1)  # a 0-d tensor accepts dim 0 or -1, like torch.softmax
    if not -ndim <= dim < ndim:
        raise ValueError(
            f"softmax: expected dim in [{-ndim}, {ndim - 1}] for a {x.dim()}-D input, got dim={dim}"
        )
    if dtype is not None:
        x = x.to(dtype)
    if x.numel() == 0:  # nothing to normalise (amax over an empty dimension would fail)
        return x.exp()
    shifted = x - x.amax(dim=dim, keepdim=True).detach()
    e = torch.exp(shifted)
    return e / e.sum(dim=dim, keepdim=True)


@torch_signature()
def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    r"""An affine map, :math:`y = x W^\top + b`, as in ``torch.nn.functional.linear``.

    Args:
        x: input of shape ``(*, in_features)``.
        weight: ``(out_features, in_features)``; one row per output unit.
        bias: ``(out_features,)`` or ``None``.

    Shape:
        Input: ``(*, in_features)``. Output: ``(*, out_features)``.
    """
    _require_tensor(x, "linear")
    if not isinstance(weight, Tensor):
        raise TypeError(f"linear: expected the weight to be a torch.Tensor, got {type(weight).__name__}")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"linear: expected the bias to be a torch.Tensor or None, got {type(bias).__name__}")
    if weight.dim() != 2:
        raise ValueError(
            f"linear: expected a 2-D weight (out_features, in_features), got shape {tuple(weight.shape)}"
        )
    if x.dim() == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: the input's last dimension must equal in_features={weight.shape[1]}, "
            f"got input of shape {tuple(x.shape)}"
        )
    y = x @ weight.T  # (*, in) @ (in, out) -> (*, out)
    if bias is not None:
        if bias.shape != (weight.shape[0],):
            raise ValueError(
                f"linear: expected bias of shape ({weight.shape[0]},), got {tuple(bias.shape)}"
            )
        y = y + bias
    return y


# Losses and dropout live in their own module (one concept per file); they are part of the
# functional API, like torch.nn.functional's.
from dlcourse.losses import (  # noqa: E402
    binary_cross_entropy,
    cross_entropy,
    dropout,
    huber_loss,
    l1_loss,
    mse_loss,
)

# Convolution and pooling live in their own modules too (dlcourse.conv, dlcourse.pool).
from dlcourse.conv import conv2d, conv_output_size, corr2d  # noqa: E402
from dlcourse.pool import avg_pool2d, max_pool2d  # noqa: E402
from dlcourse.attention import scaled_dot_product_attention  # noqa: E402
from dlcourse.rnn import lstm, lstm_cell, rnn, rnn_cell  # noqa: E402
