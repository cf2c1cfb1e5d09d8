r"""Recurrent layers from their equations: an Elman RNN and an LSTM, cells and whole sequences.

A recurrent layer applies the same function, with the same weights, at every step of a
sequence, and carries a *hidden state* from one step to the next. With PyTorch's names
(``W_ih`` is ``weight_ih``, ``W_hh`` is ``weight_hh``, likewise the biases):

* **RNN cell** (tanh, or ReLU):

  .. math::

      h_t = \tanh(x_t W_{ih}^\top + b_{ih} + h_{t-1} W_{hh}^\top + b_{hh})

* **LSTM cell**: four gates from the same two matrix products, stacked in PyTorch's order
  input, forget, cell candidate, output (``i, f, g, o``), then the memory cell :math:`c_t`:

  .. math::

      \begin{aligned}
      (i_t, f_t, g_t, o_t) &= \text{split}_4(x_t W_{ih}^\top + b_{ih} + h_{t-1} W_{hh}^\top + b_{hh}) \\
      i_t, f_t, o_t &\leftarrow \sigma(i_t), \sigma(f_t), \sigma(o_t), \qquad g_t \leftarrow \tanh(g_t) \\
      c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
      h_t &= o_t \odot \tanh(c_t)
      \end{aligned}

:func:`rnn_cell` and :func:`lstm_cell` are one step, differentiated by autograd. :func:`rnn`
runs a whole sequence: one matrix product projects every step's input at once, then a loop
adds the recurrent term. :func:`lstm` is a loop of :func:`lstm_cell`; autograd does the
backpropagation through time. (Unless ``DLCOURSE_FAST=0``, :func:`lstm` hands over to a tuned
version with the backward pass written out, ``dlcourse._fast.rnn``.) The modules :class:`RNNCell`,
:class:`RNN`, :class:`LSTMCell` and :class:`LSTM` keep the parameter names and shapes of their
``torch.nn`` twins (one layer), so ``mine.load_state_dict(theirs.state_dict())`` works.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from dlcourse import _fast
from dlcourse._checks import require_bool, require_tensor, torch_signature

__all__ = ["rnn_cell", "lstm_cell", "rnn", "lstm", "RNNCell", "RNN", "LSTMCell", "LSTM"]

_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------

def _check_weights(weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None, bias_hh: Tensor | None,
                   gates: int, fn: str) -> tuple[int, int]:
    """(input_size, hidden_size) of the weights, or a clear error when their shapes disagree."""
    for name, w in (("weight_ih", weight_ih), ("weight_hh", weight_hh)):
        if not isinstance(w, Tensor) or w.dim() != 2:
            got = f"shape {tuple(w.shape)}" if isinstance(w, Tensor) else type(w).__name__
            raise ValueError(f"{fn}: expected a 2-D {name}, got {got}")
    rows, input_size = weight_ih.shape
    hidden_size = weight_hh.shape[1]
    if rows != gates * hidden_size or weight_hh.shape[0] != gates * hidden_size:
        raise ValueError(f"{fn}: expected weight_ih ({gates} * hidden_size, input_size) and weight_hh "
                         f"({gates} * hidden_size, hidden_size), got {tuple(weight_ih.shape)} and "
                         f"{tuple(weight_hh.shape)}")
    if (bias_ih is None) != (bias_hh is None):
        raise ValueError(f"{fn}: expected both biases or neither, got one")
    for name, b in (("bias_ih", bias_ih), ("bias_hh", bias_hh)):
        if b is not None and b.shape != (gates * hidden_size,):
            raise ValueError(f"{fn}: expected {name} of shape ({gates * hidden_size},), got {tuple(b.shape)}")
    return input_size, hidden_size


def _check_input(x: Tensor, input_size: int, ranks: tuple[int, ...], layout: str, fn: str,
                 dtype: torch.dtype | None = None) -> None:
    """A floating tensor of one of ``ranks`` dimensions whose last one is ``input_size`` (and of
    the weights' ``dtype``, when given: no silent cast, no internal error of PyTorch's)."""
    require_tensor(x, "the input", fn)
    if x.dim() not in ranks:
        raise ValueError(f"{fn}: expected a {layout} input, got {x.dim()}-D of shape {tuple(x.shape)}")
    if x.shape[-1] != input_size:
        raise ValueError(f"{fn}: expected the input's last dimension to be input_size={input_size} "
                         f"(a {layout} input), got input of shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: expected a floating-point input, got {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{fn}: expected the input in the weights' dtype {dtype}, got {x.dtype}")


def _check_state(h: Tensor, shape: tuple[int, ...], name: str, fn: str, dtype: torch.dtype | None = None) -> None:
    require_tensor(h, name, fn)
    if tuple(h.shape) != shape:
        raise ValueError(f"{fn}: expected {name} of shape {shape}, got {tuple(h.shape)}")
    if dtype is not None and h.dtype != dtype:
        raise TypeError(f"{fn}: expected {name} in the weights' dtype {dtype}, got {h.dtype}")


def _activation(nonlinearity: str, fn: str):
    if nonlinearity not in _ACTIVATIONS:
        raise ValueError(f"{fn}: expected nonlinearity 'tanh' or 'relu', got {nonlinearity!r}")
    return _ACTIVATIONS[nonlinearity]


def _affine(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ weight.T + bias``, for 2-D ``x``."""
    return x @ weight.T if bias is None else torch.addmm(bias, x, weight.T)


# ---------------------------------------------------------------------------------------------
# One step
# ---------------------------------------------------------------------------------------------

def rnn_cell(x: Tensor, h: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None = None,
             bias_hh: Tensor | None = None, nonlinearity: str = "tanh") -> Tensor:
    r"""One step of an Elman RNN, :math:`h' = \tanh(x W_{ih}^\top + b_{ih} + h W_{hh}^\top + b_{hh})`.

    Args:
        x: the inputs of this step.
        h: the previous hidden state.
        weight_ih: ``(hidden_size, input_size)``.
        weight_hh: ``(hidden_size, hidden_size)``.
        bias_ih, bias_hh: ``(hidden_size,)`` each, or both ``None``.
        nonlinearity: ``"tanh"`` (default) or ``"relu"``.

    Shape:
        x: ``(N, input_size)``; h: ``(N, hidden_size)``. Returns ``(N, hidden_size)``.
    """
    act = _activation(nonlinearity, "rnn_cell")
    _check_weights(weight_ih, weight_hh, bias_ih, bias_hh, 1, "rnn_cell")
    pre = x @ weight_ih.T + h @ weight_hh.T  # (N, H)
    if bias_ih is not None:
        pre = pre + bias_ih + bias_hh
    return act(pre)


def lstm_cell(x: Tensor, state: tuple[Tensor, Tensor], weight_ih: Tensor, weight_hh: Tensor,
              bias_ih: Tensor | None = None, bias_hh: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""One step of an LSTM: gates, then the new memory cell and hidden state.

    .. math::

        \begin{aligned}
        i, f, g, o &= \text{split}_4(x W_{ih}^\top + b_{ih} + h W_{hh}^\top + b_{hh}) \\
        c' &= \sigma(f) \odot c + \sigma(i) \odot \tanh(g) \\
        h' &= \sigma(o) \odot \tanh(c')
        \end{aligned}

    Args:
        x: the inputs of this step.
        state: ``(h, c)``, the previous hidden state and memory cell.
        weight_ih: ``(4 * hidden_size, input_size)``, the four gates' rows stacked in the order
            input, forget, cell candidate, output, as in ``torch.nn.LSTMCell``.
        weight_hh: ``(4 * hidden_size, hidden_size)``, same order.
        bias_ih, bias_hh: ``(4 * hidden_size,)`` each, or both ``None``.

    Shape:
        x: ``(N, input_size)``; h and c: ``(N, hidden_size)``. Returns ``(h', c')``, each
        ``(N, hidden_size)``.
    """
    _check_weights(weight_ih, weight_hh, bias_ih, bias_hh, 4, "lstm_cell")
    h, c = state
    gates = x @ weight_ih.T + h @ weight_hh.T  # (N, 4H)
    if bias_ih is not None:
        gates = gates + bias_ih + bias_hh
    i, f, g, o = gates.chunk(4, dim=-1)  # 4 x (N, H), PyTorch's gate order
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    return h_new, c_new


# ---------------------------------------------------------------------------------------------
# Whole sequences
# ---------------------------------------------------------------------------------------------

def rnn(x: Tensor, h0: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None = None,
        bias_hh: Tensor | None = None, nonlinearity: str = "tanh") -> Tensor:
    r"""An Elman RNN over a whole sequence: :func:`rnn_cell` applied at every step.

    The input part :math:`x_t W_{ih}^\top + b_{ih} + b_{hh}` does not depend on the previous
    step, so it is one matrix product for all steps; only :math:`h_{t-1} W_{hh}^\top` stays in
    the loop. Autograd differentiates the loop (backpropagation through time).

    Args:
        x: the input sequence, time first.
        h0: the initial hidden state.
        weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity: as in :func:`rnn_cell`.

    Shape:
        x: ``(T, N, input_size)``; h0: ``(N, hidden_size)``. Returns the hidden states of all
        steps, ``(T, N, hidden_size)``; the last one is the final state.
    """
    act = _activation(nonlinearity, "rnn")
    input_size, hidden_size = _check_weights(weight_ih, weight_hh, bias_ih, bias_hh, 1, "rnn")
    _check_input(x, input_size, (3,), "3-D (T, N, input_size)", "rnn", weight_ih.dtype)
    T, N, _ = x.shape
    if T == 0:
        raise ValueError(f"rnn: expected a sequence of at least one step, got input of shape {tuple(x.shape)}")
    _check_state(h0, (N, hidden_size), "h0", "rnn", weight_ih.dtype)
    bias = None if bias_ih is None else bias_ih + bias_hh
    projected = _affine(x.reshape(T * N, input_size), weight_ih, bias).view(T, N, hidden_size)  # (T, N, H)
    h, outputs = h0, []
    for t in range(T):
        h = act(torch.addmm(projected[t], h, weight_hh.T))  # (N, H)
        outputs.append(h)
    return torch.stack(outputs)  # (T, N, H)


def lstm(x: Tensor, state: tuple[Tensor, Tensor], weight_ih: Tensor, weight_hh: Tensor,
         bias_ih: Tensor | None = None, bias_hh: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    r"""A one-layer LSTM over a whole sequence: :func:`lstm_cell` at every step.

    The loop carries the hidden state :math:`h_t` and the memory cell :math:`c_t` from one step
    to the next; autograd differentiates it (backpropagation through time). Unless
    ``DLCOURSE_FAST=0``, a tuned version of the same computation runs instead
    (``dlcourse._fast.rnn``: all steps' input products in one, the gates fused, the backward
    pass written out).

    Args:
        x: the input sequence, time first.
        state: ``(h0, c0)``, the initial hidden state and memory cell.
        weight_ih, weight_hh, bias_ih, bias_hh: as in :func:`lstm_cell`.

    Shape:
        x: ``(T, N, input_size)``; h0 and c0: ``(N, hidden_size)``. Returns ``(output, (h_n, c_n))``:
        the hidden states of all steps ``(T, N, hidden_size)`` and the final state and cell,
        ``(N, hidden_size)`` each.
    """
    input_size, hidden_size = _check_weights(weight_ih, weight_hh, bias_ih, bias_hh, 4, "lstm")
    _check_input(x, input_size, (3,), "3-D (T, N, input_size)", "lstm", weight_ih.dtype)
    T, N, _ = x.shape
    if T == 0:
        raise ValueError(f"lstm: expected a sequence of at least one step, got input of shape {tuple(x.shape)}")
    h, c = state
    _check_state(h, (N, hidden_size), "h0", "lstm", weight_ih.dtype)
    _check_state(c, (N, hidden_size), "c0", "lstm", weight_ih.dtype)
    if _fast.enabled():  # the same LSTM, tuned for speed (dlcourse/_fast/rnn.py)
        return _fast.lstm(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh)
    outputs = []
    for x_t in x:  # (N, input_size): one step after the other
        h, c = lstm_cell(x_t, (h, c), weight_ih, weight_hh, bias_ih, bias_hh)  # (N, H) each
        outputs.append(h)
    return torch.stack(outputs), (h, c)  # (T, N, H), and the final (N, H) state and cell


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------

def _check_sizes(input_size: int, hidden_size: int, name: str) -> None:
    for arg, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int {arg}, got {value!r}")


class _Recurrent(nn.Module):
    """Parameters shared by all four modules: ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``
    (with ``suffix``, e.g. ``_l0``), drawn from :math:`\\mathcal{U}(-1/\\sqrt{H}, 1/\\sqrt{H})`."""

    def __init__(self, input_size: int, hidden_size: int, gates: int, bias: bool, suffix: str,
                 device: torch.device | str | None, dtype: torch.dtype | None) -> None:
        super().__init__()
        _check_sizes(input_size, hidden_size, type(self).__name__)
        require_bool(bias, "bias", type(self).__name__)  # bias="False" would be a true string
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self._suffix = suffix
        factory = {"device": device, "dtype": dtype}
        G = gates * hidden_size
        self.register_parameter("weight_ih" + suffix, nn.Parameter(torch.empty(G, input_size, **factory)))
        self.register_parameter("weight_hh" + suffix, nn.Parameter(torch.empty(G, hidden_size, **factory)))
        for name in ("bias_ih", "bias_hh"):
            param = nn.Parameter(torch.empty(G, **factory)) if bias else None
            self.register_parameter(name + suffix, param)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw every parameter from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as torch.nn does."""
        bound = 1 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-bound, bound)

    def _check_dtype(self, x: Tensor, states: list[Tensor | None]) -> None:
        """The input and given states in the parameters' dtype, or a clear error (no silent cast)."""
        name, dtype = type(self).__name__, getattr(self, "weight_ih" + self._suffix).dtype
        for what, t in (("input", x), *zip(("the first state", "the second state"), states)):
            if isinstance(t, Tensor) and t.dtype != dtype:
                raise TypeError(f"{name}: expected {what} of the parameters' dtype {dtype}, got {t.dtype} "
                                f"(convert one of them, e.g. x.to({dtype}) or module.to({t.dtype}))")

    def _weights(self) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        s = self._suffix
        return (getattr(self, "weight_ih" + s), getattr(self, "weight_hh" + s),
                getattr(self, "bias_ih" + s), getattr(self, "bias_hh" + s))

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        return s


class _Cell(_Recurrent):
    """What both cells do with their input: accept ``(N, input_size)`` or an unbatched ``(input_size,)``."""

    def _batched(self, x: Tensor, states: list[Tensor | None]) -> tuple[Tensor, list[Tensor], bool]:
        name = type(self).__name__
        _check_input(x, self.input_size, (1, 2), "2-D (N, input_size) or a 1-D (input_size,)", name)
        self._check_dtype(x, states)
        unbatched = x.dim() == 1
        x = x.unsqueeze(0) if unbatched else x  # (N, input_size)
        shape = (self.hidden_size,) if unbatched else (x.shape[0], self.hidden_size)
        out = []
        for k, s in enumerate(states):
            if s is None:
                s = x.new_zeros(shape)
            else:
                _check_state(s, shape, ("hx", "cx")[k], name)
            out.append(s.unsqueeze(0) if unbatched else s)  # (N, hidden_size)
        return x, out, unbatched


class RNNCell(_Cell):
    r"""One step of an Elman RNN, :math:`h' = \tanh(x W_{ih}^\top + b_{ih} + h W_{hh}^\top + b_{hh})`.

    Args:
        input_size: features of each input :math:`x`.
        hidden_size: features of the hidden state :math:`h`.
        bias: learn ``bias_ih`` and ``bias_hh`` (default ``True``).
        nonlinearity: ``"tanh"`` (default) or ``"relu"``.
        device, dtype: where and in what precision to create the parameters.

    Attributes:
        weight_ih: ``(hidden_size, input_size)``.
        weight_hh: ``(hidden_size, hidden_size)``.
        bias_ih, bias_hh: ``(hidden_size,)``. All drawn from
            :math:`\mathcal{U}(-1/\sqrt{H}, 1/\sqrt{H})` like ``torch.nn.RNNCell``.

    Shape:
        Input: ``(N, input_size)`` or ``(input_size,)``; hx (default zeros): ``(N, hidden_size)``
        or ``(hidden_size,)``. Output: the new hidden state, shaped like hx.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        _activation(nonlinearity, "RNNCell")
        super().__init__(input_size, hidden_size, 1, bias, "", device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, x: Tensor, hx: Tensor | None = None) -> Tensor:
        """See :func:`rnn_cell`."""
        x, (h,), unbatched = self._batched(x, [hx])
        h = rnn_cell(x, h, *self._weights(), nonlinearity=self.nonlinearity)  # (N, H)
        return h.squeeze(0) if unbatched else h

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.nonlinearity == "tanh" else f"{s}, nonlinearity={self.nonlinearity!r}"


class LSTMCell(_Cell):
    r"""One step of an LSTM: gates input, forget, cell candidate, output, then :math:`c'` and :math:`h'`.

    See :func:`lstm_cell` for the equations.

    Args:
        input_size: features of each input :math:`x`.
        hidden_size: features of the hidden state :math:`h` and of the memory cell :math:`c`.
        bias: learn ``bias_ih`` and ``bias_hh`` (default ``True``).
        device, dtype: where and in what precision to create the parameters.

    Attributes:
        weight_ih: ``(4 * hidden_size, input_size)``, the rows of the gates i, f, g, o stacked.
        weight_hh: ``(4 * hidden_size, hidden_size)``.
        bias_ih, bias_hh: ``(4 * hidden_size,)``. All drawn from
            :math:`\mathcal{U}(-1/\sqrt{H}, 1/\sqrt{H})` like ``torch.nn.LSTMCell``.

    Shape:
        Input: ``(N, input_size)`` or ``(input_size,)``; ``(hx, cx)`` (default zeros): each
        ``(N, hidden_size)`` or ``(hidden_size,)``. Output: ``(h', c')``, shaped like hx.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(input_size, hidden_size, 4, bias, "", device, dtype)

    def forward(self, x: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """See :func:`lstm_cell`."""
        if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"LSTMCell: expected hx to be a pair (h, c), got {type(hx).__name__}")
        x, (h, c), unbatched = self._batched(x, [None, None] if hx is None else list(hx))
        h, c = lstm_cell(x, (h, c), *self._weights())  # (N, H) each
        return (h.squeeze(0), c.squeeze(0)) if unbatched else (h, c)


class _Sequence(_Recurrent):
    """What both sequence layers do with their input: time first or batch first, or unbatched."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, gates: int, bias: bool,
                 batch_first: bool, device: torch.device | str | None, dtype: torch.dtype | None) -> None:
        name = type(self).__name__
        if num_layers != 1:
            raise ValueError(f"{name}: only one layer is implemented, got num_layers={num_layers!r} "
                             f"(stack several {name} modules instead)")
        require_bool(batch_first, "batch_first", name)  # batch_first="False" would be a true string
        super().__init__(input_size, hidden_size, gates, bias, "_l0", device, dtype)
        self.num_layers, self.batch_first = 1, batch_first

    def _time_first(self, x: Tensor, states: list[Tensor | None]) -> tuple[Tensor, list[Tensor], bool]:
        """x as (T, N, input_size) and each state as (N, hidden_size); and whether x was unbatched."""
        name = type(self).__name__
        layout = "(N, T, input_size)" if self.batch_first else "(T, N, input_size)"
        _check_input(x, self.input_size, (2, 3), f"3-D {layout} or a 2-D (T, input_size)", name)
        self._check_dtype(x, states)
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(1)  # (T, 1, input_size)
        elif self.batch_first:
            x = x.transpose(0, 1)  # (N, T, input_size) -> (T, N, input_size)
        if x.shape[0] == 0:
            raise ValueError(f"{name}: expected a sequence of at least one step, got input of shape "
                             f"{tuple(x.shape)}")
        N = x.shape[1]
        shape = (1, self.hidden_size) if unbatched else (1, N, self.hidden_size)  # (num_layers, [N,] H)
        out = []
        for k, s in enumerate(states):
            if s is None:
                out.append(x.new_zeros((N, self.hidden_size)))
            else:
                _check_state(s, shape, ("h0", "c0")[k], name)
                out.append(s.reshape(N, self.hidden_size))  # (1, [N,] H) -> (N, H)
        return x, out, unbatched

    def _shaped(self, output: Tensor, finals: list[Tensor], unbatched: bool) -> tuple[Tensor, list[Tensor]]:
        """Back from (T, N, H) and (N, H) to the caller's layout."""
        if unbatched:
            return output.squeeze(1), finals  # (T, H); finals (1, H)
        if self.batch_first:
            output = output.transpose(0, 1)  # (T, N, H) -> (N, T, H)
        return output, [s.unsqueeze(0) for s in finals]  # (1, N, H)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (", batch_first=True" if self.batch_first else "")


class RNN(_Sequence):
    r"""A one-layer Elman RNN over whole sequences: :func:`rnn_cell` applied at every step.

    Args:
        input_size: features of each step's input.
        hidden_size: features of the hidden state.
        num_layers: must be 1 (kept for the argument order of ``torch.nn.RNN``).
        nonlinearity: ``"tanh"`` (default) or ``"relu"``.
        bias: learn ``bias_ih_l0`` and ``bias_hh_l0`` (default ``True``).
        batch_first: inputs and outputs are ``(N, T, features)`` instead of ``(T, N, features)``.
        device, dtype: where and in what precision to create the parameters.

    Attributes:
        weight_ih_l0: ``(hidden_size, input_size)``.
        weight_hh_l0: ``(hidden_size, hidden_size)``.
        bias_ih_l0, bias_hh_l0: ``(hidden_size,)``; all from
            :math:`\mathcal{U}(-1/\sqrt{H}, 1/\sqrt{H})` like ``torch.nn.RNN``.

    Shape:
        Input: ``(T, N, input_size)`` (``(N, T, input_size)`` with ``batch_first``) or unbatched
        ``(T, input_size)``; h0 (default zeros): ``(1, N, hidden_size)`` or ``(1, hidden_size)``.
        Output: ``(output, h_n)``, the hidden states of all steps ``(T, N, hidden_size)`` (or
        ``(N, T, hidden_size)``, or ``(T, hidden_size)``) and the last one, shaped like h0.
    """

    # torch.nn.RNN's seventh and eighth arguments are dropout and bidirectional: device and dtype
    # are keyword-only here.
    @torch_signature(("dropout", 0.0), ("bidirectional", False), ("device", None), ("dtype", None))
    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        _activation(nonlinearity, "RNN")
        super().__init__(input_size, hidden_size, num_layers, 1, bias, batch_first, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """See :func:`rnn`."""
        x, (h,), unbatched = self._time_first(x, [h0])
        output = rnn(x, h, *self._weights(), nonlinearity=self.nonlinearity)  # (T, N, H)
        output, (h_n,) = self._shaped(output, [output[-1]], unbatched)
        return output, h_n

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.nonlinearity == "tanh" else f"{s}, nonlinearity={self.nonlinearity!r}"


class LSTM(_Sequence):
    r"""A one-layer LSTM over whole sequences: :func:`lstm_cell` applied at every step.

    See :func:`lstm` for how it is computed and :func:`lstm_cell` for the equations.

    Args:
        input_size: features of each step's input.
        hidden_size: features of the hidden state and the memory cell.
        num_layers: must be 1 (kept for the argument order of ``torch.nn.LSTM``).
        bias: learn ``bias_ih_l0`` and ``bias_hh_l0`` (default ``True``).
        batch_first: inputs and outputs are ``(N, T, features)`` instead of ``(T, N, features)``.
        device, dtype: where and in what precision to create the parameters.

    Attributes:
        weight_ih_l0: ``(4 * hidden_size, input_size)``, gates i, f, g, o stacked.
        weight_hh_l0: ``(4 * hidden_size, hidden_size)``.
        bias_ih_l0, bias_hh_l0: ``(4 * hidden_size,)``; all from
            :math:`\mathcal{U}(-1/\sqrt{H}, 1/\sqrt{H})` like ``torch.nn.LSTM``.

    Shape:
        Input: ``(T, N, input_size)`` (``(N, T, input_size)`` with ``batch_first``) or unbatched
        ``(T, input_size)``; ``(h0, c0)`` (default zeros): each ``(1, N, hidden_size)`` or
        ``(1, hidden_size)``. Output: ``(output, (h_n, c_n))``, the hidden states of all steps
        ``(T, N, hidden_size)`` (or ``(N, T, hidden_size)``, or ``(T, hidden_size)``) and the
        final state and memory cell, shaped like h0.
    """

    # torch.nn.LSTM's sixth to eighth arguments are dropout, bidirectional and proj_size: device and
    # dtype are keyword-only here.
    @torch_signature(("dropout", 0.0), ("bidirectional", False), ("proj_size", 0), ("device", None),
                     ("dtype", None))
    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(input_size, hidden_size, num_layers, 4, bias, batch_first, device, dtype)

    def forward(self, x: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """See :func:`lstm`."""
        if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"LSTM: expected hx to be a pair (h0, c0), got {type(hx).__name__}")
        x, (h, c), unbatched = self._time_first(x, [None, None] if hx is None else list(hx))
        output, (h_n, c_n) = lstm(x, (h, c), *self._weights())  # (T, N, H), (N, H), (N, H)
        output, (h_n, c_n) = self._shaped(output, [h_n, c_n], unbatched)
        return output, (h_n, c_n)
