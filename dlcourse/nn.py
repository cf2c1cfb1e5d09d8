"""Layers written from scratch, with the same parameter names and shapes as ``torch.nn``.

Each module is a thin wrapper: its ``forward`` is one call to :mod:`dlcourse.functional`.
Because the parameter layout matches, ``mine.load_state_dict(theirs.state_dict())`` works and
the two can be compared output for output.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dlcourse import functional as F
from dlcourse._checks import require_bool, torch_signature


class Linear(nn.Module):
    r"""A dense (fully connected) layer, :math:`y = x W^\top + b`.

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        bias: learn an additive bias (default ``True``).
        device, dtype: where and in what precision to create the parameters.

    Attributes:
        weight: ``(out_features, in_features)``, initialised from
            :math:`\mathcal{U}(-1/\sqrt{\text{in}}, 1/\sqrt{\text{in}})` like ``torch.nn.Linear``.
        bias: ``(out_features,)``, same distribution.

    Shape:
        Input: ``(*, in_features)``. Output: ``(*, out_features)``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        require_bool(bias, "bias", "Linear")
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Linear: expected a positive int {name}, got {value!r}")
        self.in_features = in_features
        self.out_features = out_features
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            # Registered as a missing parameter (not a plain attribute), exactly like torch.nn.Linear.
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw weight and bias from U(-1/sqrt(in_features), 1/sqrt(in_features))."""
        bound = 1 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """``x @ weight.T + bias``; see :func:`dlcourse.functional.linear`."""
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


# The layers of a CNN. An int or (h, w) argument is checked by the same helper as in the functions.
from dlcourse._checks import int_pair as _pair  # noqa: E402


class Conv2d(nn.Module):
    r"""A 2-D convolution layer: ``out_channels`` learned filters slid over the input.

    .. math::

        y_{n,o,i,j} = b_o + \sum_{c,u,v} w_{o,c,u,v}\; x^{pad}_{n,\,c,\,s_h i + u,\,s_w j + v}

    Args:
        in_channels: channels of the input :math:`C_{in}`.
        out_channels: number of filters, the channels of the output :math:`C_{out}`.
        kernel_size: filter size, an int or a ``(kH, kW)`` pair.
        stride: step between windows, an int or a pair (default 1).
        padding: zeros added on each side, an int or a pair (default 0).
        bias: learn one additive bias per output channel (default ``True``).
        device, dtype: where and in what precision to create the parameters.

    Attributes:
        weight: ``(out_channels, in_channels, kH, kW)``, initialised from
            :math:`\mathcal{U}(-1/\sqrt{k}, 1/\sqrt{k})` with :math:`k = C_{in}\, kH\, kW` (the
            fan-in) like ``torch.nn.Conv2d``.
        bias: ``(out_channels,)``, same distribution.

    Shape:
        Input: ``(N, C_in, H, W)`` or ``(C_in, H, W)``. Output: ``(N, C_out, H_out, W_out)``
        with :math:`H_{out} = \lfloor (H + 2 p_h - kH) / s_h \rfloor + 1` and likewise
        :math:`W_{out}` (:func:`dlcourse.functional.conv_output_size`).
    """

    # torch.nn.Conv2d's sixth argument is dilation: bias, device and dtype are keyword-only here.
    @torch_signature(("dilation", 1), ("groups", 1), ("bias", True), ("padding_mode", "zeros"),
                     ("device", None), ("dtype", None))
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0, *, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        require_bool(bias, "bias", "Conv2d")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Conv2d: expected a positive int {name}, got {value!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size", "Conv2d", 1)
        self.stride = _pair(stride, "stride", "Conv2d", 1)
        self.padding = _pair(padding, "padding", "Conv2d", 0)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **factory))
        else:
            self.register_parameter("bias", None)  # a missing parameter, exactly like torch.nn.Conv2d
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw weight and bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in_channels * kH * kW.

        (PyTorch writes this as ``kaiming_uniform_(weight, a=sqrt(5))``, which is the same bound.)
        """
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        bound = 1 / math.sqrt(fan_in)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """The convolution; see :func:`dlcourse.functional.conv2d`."""
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.bias is None:
            s += ", bias=False"
        return s  # the same text as torch.nn.Conv2d's


class _Pool2d(nn.Module):
    """What both pooling layers store: window, stride (default: the window) and padding."""

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        name = type(self).__name__
        _pair(kernel_size, "kernel_size", name, 1)  # fail here, not at the first forward
        _pair(padding, "padding", name, 0)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride  # as torch.nn stores it
        _pair(self.stride, "stride", name, 1)
        self.padding = padding

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    r"""2-D max pooling: the largest entry of each ``kernel_size`` window (no parameters).

    Args:
        kernel_size: window size, an int or a ``(kH, kW)`` pair.
        stride: step between windows (default: ``kernel_size``).
        padding: :math:`-\infty` added on each side, at most half the window (default 0).

    Shape:
        Input: ``(N, C, H, W)`` or ``(C, H, W)``. Output: ``(N, C, H_out, W_out)`` with
        :math:`H_{out} = \lfloor (H + 2 p_h - kH) / s_h \rfloor + 1`, likewise :math:`W_{out}`.
    """

    @torch_signature(("dilation", 1), ("return_indices", False), ("ceil_mode", False))
    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__(kernel_size, stride, padding)

    def forward(self, x: Tensor) -> Tensor:
        """See :func:`dlcourse.functional.max_pool2d`."""
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(_Pool2d):
    r"""2-D average pooling: the mean of each ``kernel_size`` window, zero padding included (no parameters).

    Args:
        kernel_size: window size, an int or a ``(kH, kW)`` pair.
        stride: step between windows (default: ``kernel_size``).
        padding: zeros added on each side, at most half the window; they count in the mean.

    Shape:
        Input: ``(N, C, H, W)`` or ``(C, H, W)``. Output: ``(N, C, H_out, W_out)``, sizes as in
        :class:`MaxPool2d`.
    """

    @torch_signature(("ceil_mode", False), ("count_include_pad", True), ("divisor_override", None))
    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__(kernel_size, stride, padding)

    def forward(self, x: Tensor) -> Tensor:
        """See :func:`dlcourse.functional.avg_pool2d`."""
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class Flatten(nn.Module):
    r"""Merge the dimensions ``start_dim`` .. ``end_dim`` into one, e.g. feature maps into a vector.

    Between the last convolution or pooling layer and the first ``Linear`` layer, ``Flatten()``
    turns ``(N, C, H, W)`` into ``(N, C * H * W)``, keeping the batch dimension.

    Args:
        start_dim: first dimension to merge (default 1: keep the batch dimension).
        end_dim: last dimension to merge (default -1: up to the last).

    Shape:
        Input: ``(*, S_start, ..., S_end, *)``. Output: ``(*, S_start * ... * S_end, *)``.
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        for name, value in (("start_dim", start_dim), ("end_dim", end_dim)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Flatten: expected an int {name}, got {type(value).__name__}")
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, x: Tensor) -> Tensor:
        """``x.flatten(start_dim, end_dim)``: a view where the memory allows, else a copy."""
        if not isinstance(x, Tensor):
            raise TypeError(f"Flatten: expected a torch.Tensor, got {type(x).__name__}")
        ndim = max(x.dim(), 1)  # a 0-d tensor flattens like a 1-D one, as in PyTorch
        for name, dim in (("start_dim", self.start_dim), ("end_dim", self.end_dim)):
            if not -ndim <= dim < ndim:
                raise ValueError(f"Flatten: {name}={dim} is out of range for a {x.dim()}-D input of shape "
                                 f"{tuple(x.shape)}: expected {name} in [{-ndim}, {ndim - 1}]")
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Dropout(nn.Module):
    r"""Inverted dropout while training, the identity in evaluation mode (``model.eval()``).

    Args:
        p: probability of zeroing each element, in [0, 1] (default 0.5).

    Shape:
        Input: any shape. Output: same shape.
    """

    @torch_signature(("inplace", False))
    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f"Dropout: expected p to be a number, got {type(p).__name__}")
        if not 0 <= p <= 1:  # also rejects NaN
            raise ValueError(f"Dropout: expected a probability p in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        """See :func:`dlcourse.functional.dropout`; uses ``self.training`` (set by ``train()``/``eval()``)."""
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# Recurrent layers live in their own module (dlcourse.rnn), like convolution and pooling.
from dlcourse.rnn import LSTM, RNN, LSTMCell, RNNCell  # noqa: E402


# The transformer's modules live in their own module (dlcourse.transformer).
from dlcourse.transformer import GPT, GPTConfig, MultiHeadAttention, TransformerBlock  # noqa: E402


# Layers whose every output (input, when transposed) sums one product per weight of a filter row.
_WEIGHTED = (Linear, Conv2d, nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
             nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """The number of parameters of ``model``: ``sum(p.numel() for p in model.parameters())``.

    Works on the ``"meta"`` device (shapes without memory), so a layer too large for the
    machine can still be counted. A parameter shared by two layers is counted once.

    Args:
        model: any ``nn.Module``.
        trainable_only: count only the parameters with ``requires_grad`` (those training changes).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_parameters: expected an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def layer_table(model: nn.Module, x: Tensor, skip: tuple[type, ...] = ()) -> list[dict]:
    """What every layer of ``model`` does to the input ``x``: one row per leaf layer, in running order.

    A *forward hook* (a function PyTorch calls with a layer's input and output) on every leaf
    module records the shapes while ``x`` runs through the model once, without gradients. Works
    on the ``"meta"`` device too (shapes without numbers), so a large network costs nothing.

    Each row is a dict with the keys ``"layer"`` (the module's name in ``model``), ``"type"`` (its
    class name), ``"module"`` (the module itself), ``"input shape"`` and ``"output shape"`` (for
    one sample: without the batch dimension), ``"parameters"`` (the module's own) and
    ``"multiply-adds"`` per sample. The multiply-adds are counted for dense layers and
    convolutions, whose every output sums one product per weight of a filter (a dense layer:
    :math:`n_{in}` per output; a convolution: :math:`C_{in} k_h k_w / \\text{groups}` per output;
    a transposed convolution: as many per *input* element); other layers count 0. A layer run
    twice gets two rows.

    Args:
        model: the network (any ``nn.Module``; its leaf modules are the rows).
        x: one batch of inputs, ``(N, ...)``.
        skip: module types to leave out of the table (e.g. ``(nn.ReLU, nn.Dropout)``).

    Returns:
        The list of rows (``pandas.DataFrame(rows)`` makes it a table).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"layer_table: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(x, Tensor) or x.dim() < 1:
        raise TypeError(f"layer_table: expected a batch tensor x of shape (N, ...), got {x!r:.60}")
    rows: list[dict] = []

    def record(name: str, module: nn.Module, inputs: tuple, out: Tensor) -> None:
        if isinstance(module, skip) or not isinstance(out, Tensor):
            return
        shape_in = tuple(inputs[0].shape[1:]) if inputs and isinstance(inputs[0], Tensor) else None
        weight = getattr(module, "weight", None)
        macs = 0
        if isinstance(weight, Tensor) and weight.dim() >= 2 and isinstance(module, _WEIGHTED):
            per_weight_row = weight[0].numel()  # n_in for a dense layer, C_in/groups * kh * kw for a convolution
            if getattr(module, "transposed", False):  # each input element spreads over a whole filter
                macs = inputs[0][0].numel() * per_weight_row
            else:
                macs = out[0].numel() * per_weight_row
        rows.append({"layer": name, "type": type(module).__name__, "module": module, "input shape": shape_in,
                     "output shape": tuple(out.shape[1:]),
                     "parameters": sum(p.numel() for p in module.parameters()), "multiply-adds": macs})

    hooks = [m.register_forward_hook(lambda m, i, o, n=n: record(n, m, i, o))
             for n, m in model.named_modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return rows
