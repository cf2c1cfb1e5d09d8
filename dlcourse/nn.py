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
