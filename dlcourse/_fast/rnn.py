r"""The tuned LSTM behind :func:`dlcourse.rnn.lstm`: all gates fused, backpropagation through time written out.

:func:`dlcourse.rnn.lstm` is a loop of :func:`dlcourse.rnn.lstm_cell` under autograd, the
version to read. :class:`_LSTMFunction` computes the same thing with fewer, larger operations:

* **forward**: one matrix product projects every step's input; each step then adds
  :math:`h_{t-1} W_{hh}^\top` in place (all four gates in one product) and activates all four
  gates with one in-place sigmoid: the cell candidate's rows of the weights are doubled
  beforehand, so that :math:`\tanh(a) = 2\sigma(2a) - 1` comes out of the same call.
* **backward**: a loop backwards in time carries :math:`\partial L/\partial h_t` and
  :math:`\partial L/\partial c_t` (with :math:`\partial L/\partial c_t = \partial L/\partial
  c_{t+1}\, f_{t+1} + \dots`, the path through the memory cell along which gradients survive),
  with every local derivative rewritten as one or two elementwise calls; the gradients of the
  weights, summed over all steps, are then one matrix product each.

What each of these buys is measured on the book's Performance page.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["lstm"]


def _affine(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ weight.T + bias``, for 2-D ``x``."""
    return x @ weight.T if bias is None else torch.addmm(bias, x, weight.T)


def _tanh(t: Tensor, out: Tensor) -> Tensor:
    """``tanh(t)`` written into ``out``, as :math:`2 \\sigma(2t) - 1`: on the CPU PyTorch's
    sigmoid is faster than its tanh, and this runs at every time step."""
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
            grad_b = torch.mv(flat.T, flat.new_ones(T * N))  # (4H,): the sum over steps and batch, as a GEMV
            grad_b_ih = grad_b if need[5] else None
            grad_b_hh = grad_b.clone() if need[6] else None  # not the same tensor as grad_b_ih
        return grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh


def lstm(x: Tensor, h0: Tensor, c0: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None,
         bias_hh: Tensor | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """:func:`dlcourse.rnn.lstm` for checked arguments.

    Shape:
        x: ``(T, N, input_size)``; h0, c0: ``(N, hidden_size)``. Returns ``(output, (h_n, c_n))``:
        ``(T, N, hidden_size)`` and ``(N, hidden_size)`` each.
    """
    out, h_n, c_n = _LSTMFunction.apply(x.contiguous(), h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
    return out, (h_n, c_n)
