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
adds the recurrent term. :func:`lstm` does the same and has a hand-written backward pass
(backpropagation through time): the loop runs backwards over the steps carrying
:math:`\partial L / \partial h_t` and :math:`\partial L / \partial c_t`, and the weight
gradients of all steps are then one matrix product each. The modules :class:`RNNCell`,
:class:`RNN`, :class:`LSTMCell` and :class:`LSTM` keep the parameter names and shapes of their
``torch.nn`` twins (one layer), so ``mine.load_state_dict(theirs.state_dict())`` works.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from dlcourse._checks import require_bool, torch_signature

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


def _check_input(x: Tensor, input_size: int, ranks: tuple[int, ...], layout: str, fn: str) -> None:
    """A floating tensor of one of ``ranks`` dimensions whose last one is ``input_size``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: expected the input to be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in ranks:
        raise ValueError(f"{fn}: expected a {layout} input, got {x.dim()}-D of shape {tuple(x.shape)}")
    if x.shape[-1] != input_size:
        raise ValueError(f"{fn}: expected the input's last dimension to be input_size={input_size} "
                         f"(a {layout} input), got input of shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: expected a floating-point input, got {x.dtype}")


def _check_state(h: Tensor, shape: tuple[int, ...], name: str, fn: str) -> None:
    if not isinstance(h, Tensor):
        raise TypeError(f"{fn}: expected {name} to be a torch.Tensor, got {type(h).__name__}")
    if tuple(h.shape) != shape:
        raise ValueError(f"{fn}: expected {name} of shape {shape}, got {tuple(h.shape)}")


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
    _check_input(x, input_size, (3,), "3-D (T, N, input_size)", "rnn")
    T, N, _ = x.shape
    if T == 0:
        raise ValueError(f"rnn: expected a sequence of at least one step, got input of shape {tuple(x.shape)}")
    _check_state(h0, (N, hidden_size), "h0", "rnn")
    bias = None if bias_ih is None else bias_ih + bias_hh
    projected = _affine(x.reshape(T * N, input_size), weight_ih, bias).view(T, N, hidden_size)  # (T, N, H)
    h, outputs = h0, []
    for t in range(T):
        h = act(torch.addmm(projected[t], h, weight_hh.T))  # (N, H)
        outputs.append(h)
    return torch.stack(outputs)  # (T, N, H)


def _tanh(t: Tensor, out: Tensor) -> Tensor:
    """``tanh(t)`` written into ``out``, as :math:`2 \\sigma(2t) - 1`: on the CPU PyTorch's
    sigmoid is several times faster than its tanh, and this runs at every time step."""
    return torch.mul(t, 2, out=out).sigmoid_().mul_(2).sub_(1)


class _LSTMFunction(torch.autograd.Function):
    """A one-layer LSTM over a whole sequence, with backpropagation through time written out.

    Gates are kept in PyTorch's order (i, f, g, o) throughout. The cell candidate is computed as
    :math:`g = \\tanh(a) = 2\\sigma(2a) - 1`, with the g rows of the weights and biases doubled
    beforehand, so one in-place sigmoid activates all four gates.
    """

    @staticmethod
    def forward(ctx, x: Tensor, h0: Tensor, c0: Tensor, weight_ih: Tensor, weight_hh: Tensor,
                bias_ih: Tensor | None, bias_hh: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        T, N, I = x.shape
        H = h0.shape[1]
        scale = x.new_ones(4 * H, 1)
        scale[2 * H:3 * H] = 2  # the g rows, doubled: sigmoid(2a) gives tanh(a) = 2 sigmoid(2a) - 1
        w_ih = weight_ih * scale  # (4H, I)
        w_hh_t = (weight_hh * scale).T.contiguous()  # (H, 4H)
        bias = None if bias_ih is None else (bias_ih + bias_hh) * scale[:, 0]  # (4H,)
        # All steps' input projections in one GEMM; each step then adds h W_hh^T in place and
        # activates in place, so `gates` ends up holding the activated gates i, f, g, o.
        gates = _affine(x.reshape(T * N, I), w_ih, bias).view(T, N, 4 * H)  # (T, N, 4H)
        cells = x.new_empty((T, N, H))  # c_t
        tanh_cells = x.new_empty((T, N, H))  # tanh(c_t)
        hidden = x.new_empty((T, N, H))  # h_t: the output
        h, c = h0, c0
        for t in range(T):
            z = gates[t].addmm_(h, w_hh_t).sigmoid_()  # (N, 4H): i, f, 2a_g -> sigmoid, o
            i, f, g, o = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H].mul_(2).sub_(1), z[:, 3 * H:]
            c = torch.mul(f, c, out=cells[t]).addcmul_(i, g)  # c_t = f c_{t-1} + i g
            tc = _tanh(c, out=tanh_cells[t])
            h = torch.mul(o, tc, out=hidden[t])  # h_t = o tanh(c_t)
        ctx.save_for_backward(x, h0, c0, weight_ih, weight_hh, hidden)
        ctx.gates, ctx.cells, ctx.tanh_cells = gates, cells, tanh_cells
        ctx.has_bias = bias is not None
        return hidden, hidden[-1].clone(), cells[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hidden: Tensor, grad_hn: Tensor, grad_cn: Tensor):
        x, h0, c0, w_ih, w_hh, hidden = ctx.saved_tensors
        gates, cells, tanh_cells = ctx.gates, ctx.cells, ctx.tanh_cells
        T, N, I = x.shape
        H = h0.shape[1]
        grad_gates = torch.empty_like(gates)  # (T, N, 4H): dL/d(pre-activations), order i, f, g, o
        grad_c = grad_cn.clone()  # (N, H): dL/dc_t
        dh = torch.empty_like(grad_c)  # (N, H): dL/dh_t
        gain = torch.empty_like(grad_c)  # (N, H): dh_t -> dc_t
        local_o = torch.empty_like(grad_c)  # (N, H): dh_t -> d(pre o)
        local = x.new_empty((N, 3 * H))  # dc_t -> d(pre i), d(pre f), d(pre g)
        tmp = torch.empty_like(grad_c)
        # The local derivatives are rewritten with h_t = o tanh(c_t) so that each is one or two
        # elementwise calls on (N, H) tensors (sigma' = s(1 - s), tanh' = 1 - tanh^2):
        #   dh_t -> dc_t:     o (1 - tanh(c_t)^2)  = o - h_t tanh(c_t)
        #   dh_t -> d(pre o): tanh(c_t) o (1 - o)  = h_t - h_t o
        #   dc_t -> d(pre i): g i (1 - i)          = ig - ig i
        #   dc_t -> d(pre f): c_{t-1} f (1 - f)    = fc - fc f,  fc = f c_{t-1}
        #   dc_t -> d(pre g): i (1 - g^2)          = i - ig g
        for t in range(T - 1, -1, -1):
            z, tc, h = gates[t], tanh_cells[t], hidden[t]
            i, f, g, o = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
            if t == T - 1:
                torch.add(grad_hidden[t], grad_hn, out=dh)
            else:
                torch.addmm(grad_hidden[t], grad_gates[t + 1], w_hh, out=dh)  # through h_t -> gates_{t+1}
                grad_c.mul_(gates[t + 1, :, H:2 * H])  # through c_t -> c_{t+1} = f_{t+1} c_t + ...
            grad_c.addcmul_(dh, torch.addcmul(o, h, tc, value=-1, out=gain))  # ... + dL/dh_t * gain
            torch.mul(dh, torch.addcmul(h, h, o, value=-1, out=local_o), out=grad_gates[t, :, 3 * H:])
            ig = torch.mul(i, g, out=tmp)
            torch.addcmul(ig, ig, i, value=-1, out=local[:, :H])
            torch.addcmul(i, ig, g, value=-1, out=local[:, 2 * H:])
            fc = torch.mul(f, c0 if t == 0 else cells[t - 1], out=tmp)
            torch.addcmul(fc, fc, f, value=-1, out=local[:, H:2 * H])
            # gates i, f, g: dL/dc_t times their local derivatives, in one multiplication
            torch.mul(local.view(N, 3, H), grad_c.unsqueeze(1), out=grad_gates[t, :, :3 * H].view(N, 3, H))
        flat = grad_gates.view(T * N, 4 * H)  # (T N, 4H)
        need = ctx.needs_input_grad
        grad_x = (flat @ w_ih).view(T, N, I) if need[0] else None  # (T, N, I)
        grad_h0 = grad_gates[0] @ w_hh if need[1] else None  # (N, H)
        grad_c0 = grad_c * gates[0, :, H:2 * H] if need[2] else None  # (N, H): through c_1 = f_1 c_0 + ...
        grad_w_ih = flat.T @ x.reshape(T * N, I) if need[3] else None  # (4H, I), summed over all steps
        grad_w_hh = None
        if need[4]:  # sum over t of dG_t^T h_{t-1}: step 0 with h0, the others in one GEMM
            grad_w_hh = grad_gates[0].T @ h0  # (4H, H)
            if T > 1:
                grad_w_hh.addmm_(flat[N:].T, hidden[:-1].reshape((T - 1) * N, H))
        grad_b_ih = grad_b_hh = None
        if ctx.has_bias and (need[5] or need[6]):
            grad_b = torch.mv(flat.T, flat.new_ones(T * N))  # (4H,): the sum over steps and batch, as a GEMV (faster than sum(0))
            grad_b_ih = grad_b if need[5] else None
            grad_b_hh = grad_b.clone() if need[6] else None  # not the same tensor as grad_b_ih
        return grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh


def lstm(x: Tensor, state: tuple[Tensor, Tensor], weight_ih: Tensor, weight_hh: Tensor,
         bias_ih: Tensor | None = None, bias_hh: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    r"""A one-layer LSTM over a whole sequence: :func:`lstm_cell` at every step, fast.

    The forward pass projects all steps' inputs with one matrix product, then loops over the
    steps with one more matrix product (:math:`h_{t-1} W_{hh}^\top`, all four gates fused) and a
    few in-place elementwise operations each. The backward pass is written by hand: a loop
    backwards in time carries :math:`\partial L/\partial h_t` and :math:`\partial L/\partial c_t`
    (with :math:`\partial L/\partial c_t = \partial L/\partial c_{t+1}\, f_{t+1} + \dots`, the
    path through the memory cell along which gradients survive), and the gradients of the
    weights, summed over all steps, are then one matrix product each.

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
    _check_input(x, input_size, (3,), "3-D (T, N, input_size)", "lstm")
    T, N, _ = x.shape
    if T == 0:
        raise ValueError(f"lstm: expected a sequence of at least one step, got input of shape {tuple(x.shape)}")
    h0, c0 = state
    _check_state(h0, (N, hidden_size), "h0", "lstm")
    _check_state(c0, (N, hidden_size), "c0", "lstm")
    out, h_n, c_n = _LSTMFunction.apply(x.contiguous(), h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
    return out, (h_n, c_n)


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
    r"""A one-layer LSTM over whole sequences, with a hand-written backpropagation through time.

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
