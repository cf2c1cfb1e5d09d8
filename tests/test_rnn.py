"""dlcourse.nn.RNNCell, RNN, LSTMCell, LSTM and the functions behind them against torch.nn:
the same parameter names and shapes, the same outputs and gradients after load_state_dict (all
input layouts, with and without bias and initial state), gradcheck in float64, clear errors,
and no call to PyTorch's recurrent kernels. The oracle tests run on both paths of the LSTM (the
``path`` fixture): the readable loop of ``lstm_cell`` and the fused kernel of ``dlcourse._fast.rnn``."""

from __future__ import annotations

import pytest
import torch
from fast_paths import path  # noqa: F401  (the fixture)
from torch import nn

from dlcourse import functional as F
from dlcourse import nn as dnn
from dlcourse.check import ForbiddenCallError, forbid

pytestmark = pytest.mark.usefixtures("one_thread")

TORCH_RNN = ("torch.lstm", "torch.lstm_cell", "torch.rnn_tanh", "torch.rnn_relu", "torch.rnn_tanh_cell",
             "torch.rnn_relu_cell", "torch._VF.lstm", "torch._VF.lstm_cell", "torch._VF.rnn_tanh",
             "torch._VF.rnn_tanh_cell", "torch._VF.rnn_relu", "torch._VF.rnn_relu_cell",
             "torch.nn.RNN.forward", "torch.nn.LSTM.forward", "torch.nn.RNNCell.forward",
             "torch.nn.LSTMCell.forward")
PAIRS = {"RNNCell": (dnn.RNNCell, nn.RNNCell), "LSTMCell": (dnn.LSTMCell, nn.LSTMCell),
         "RNN": (dnn.RNN, nn.RNN), "LSTM": (dnn.LSTM, nn.LSTM)}
I, H, T, N = 5, 7, 6, 4


def twins(name: str, dtype: torch.dtype, device, **kwargs) -> tuple[nn.Module, nn.Module]:
    """(ours, torch's) with torch's random parameters loaded into ours."""
    ours_cls, theirs_cls = PAIRS[name]
    theirs = theirs_cls(I, H, **kwargs).to(device=device, dtype=dtype)
    ours = ours_cls(I, H, **kwargs).to(device=device, dtype=dtype)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def flatten(out) -> list[torch.Tensor]:
    """The tensors of a module's output: y, (y, h), (y, (h, c)) or (h, c)."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in flatten(item)]


def run(module: nn.Module, x: torch.Tensor, state, gen: torch.Generator) -> list[torch.Tensor]:
    """Outputs, then the gradients of x, of the initial state and of every parameter, for a
    random weighting of every output."""
    x = x.clone().requires_grad_(True)
    leaves = [x]
    if state is not None:
        state = tuple(s.clone().requires_grad_(True) for s in state)
        leaves += list(state)
        state = state if len(state) == 2 else state[0]
    out = flatten(module(x) if state is None else module(x, state))
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o)).sum() for o in out)
    params = list(module.parameters())
    grads = torch.autograd.grad(loss, leaves + params)
    return [o.detach() for o in out] + list(grads)


@pytest.mark.parametrize("name", PAIRS)
def test_parameter_names_and_shapes_match_torch(name):
    ours_cls, theirs_cls = PAIRS[name]
    for bias in (True, False):
        ours, theirs = ours_cls(I, H, bias=bias), theirs_cls(I, H, bias=bias)
        assert {k: v.shape for k, v in ours.state_dict().items()} == \
               {k: v.shape for k, v in theirs.state_dict().items()}
        assert list(ours.state_dict()) == list(theirs.state_dict())  # the same order too
    assert repr(ours) == repr(theirs)  # e.g. "LSTM(5, 7, bias=False)"


def cases():
    """(name, kwargs, input shape, with initial state) for every layout of every module."""
    out = []
    for name in ("RNNCell", "LSTMCell"):
        for bias in (True, False):
            for shape in ((N, I), (I,)):
                for with_state in (False, True):
                    out.append((name, {"bias": bias}, shape, with_state))
    for name in ("RNN", "LSTM"):
        for bias in (True, False):
            for batch_first in (False, True):
                for shape in ((N, T, I) if batch_first else (T, N, I), (T, I)):
                    for with_state in (False, True):
                        out.append((name, {"bias": bias, "batch_first": batch_first}, shape, with_state))
    out.append(("RNN", {"nonlinearity": "relu"}, (T, N, I), True))
    out.append(("RNNCell", {"nonlinearity": "relu"}, (N, I), True))
    return out


def state_shape(name: str, shape: tuple[int, ...], kwargs: dict) -> tuple[int, ...]:
    if name.endswith("Cell"):
        return (H,) if len(shape) == 1 else (shape[0], H)
    if len(shape) == 2:
        return (1, H)
    return (1, shape[0] if kwargs.get("batch_first") else shape[1], H)


@pytest.mark.parametrize("name, kwargs, shape, with_state", cases(),
                         ids=lambda v: str(v).replace(" ", ""))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_outputs_and_gradients_match_torch(name, kwargs, shape, with_state, dtype, device, supported, gen, path):
    supported(device, dtype)
    ours, theirs = twins(name, dtype, device, **kwargs)
    x = torch.randn(shape, generator=gen, dtype=dtype).to(device)
    state = None
    if with_state:
        n_states = 2 if "LSTM" in name else 1
        state = tuple(torch.randn(state_shape(name, shape, kwargs), generator=gen, dtype=dtype).to(device)
                      for _ in range(n_states))
    seed = int(torch.randint(1 << 30, (), generator=gen))
    with forbid(*TORCH_RNN):
        mine = run(ours, x, state, torch.Generator().manual_seed(seed))
    ref = run(theirs, x, state, torch.Generator().manual_seed(seed))
    assert len(mine) == len(ref)
    for k, (a, b) in enumerate(zip(mine, ref)):
        assert a.dtype == dtype and a.device == b.device
        torch.testing.assert_close(a, b, msg=lambda m: f"{name} {kwargs} {shape}, result {k}: {m}")


def test_lstm_on_the_benchmark_shape_matches_torch(gen, path):
    ours, theirs = twins("LSTM", torch.float32, "cpu")
    x = torch.randn(50, 64, I, generator=gen)
    mine, ref = run(ours, x, None, torch.Generator().manual_seed(0)), run(theirs, x, None, torch.Generator().manual_seed(0))
    for a, b in zip(mine, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_one_time_step_and_inference_mode(gen, path):
    ours, theirs = twins("LSTM", torch.float64, "cpu")
    x = torch.randn(1, 3, I, generator=gen, dtype=torch.float64)
    with torch.no_grad():  # the forward pass without anything to save
        for a, b in zip(flatten(ours(x)), flatten(theirs(x))):
            torch.testing.assert_close(a, b)
    mine = run(ours, x, None, torch.Generator().manual_seed(1))
    ref = run(theirs, x, None, torch.Generator().manual_seed(1))
    for a, b in zip(mine, ref):
        torch.testing.assert_close(a, b)


def test_lstm_gradient_only_for_some_inputs(gen, path):
    """The backward pass skips what is not needed: only x, only the weights, frozen bias."""
    ours, theirs = twins("LSTM", torch.float64, "cpu")
    x = torch.randn(T, N, I, generator=gen, dtype=torch.float64)
    ours.bias_hh_l0.requires_grad_(False)
    theirs.bias_hh_l0.requires_grad_(False)
    for module in (ours, theirs):
        module(x)[0].sum().backward()
    for (k, p), q in zip(ours.named_parameters(), theirs.parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, msg=k)
        else:
            assert p.grad is None
    ours.requires_grad_(False)
    theirs.requires_grad_(False)
    grads = []
    for module in (ours, theirs):
        leaf = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(module(leaf)[1][1].sum(), leaf)  # through c_n only
        grads.append(grad)
    torch.testing.assert_close(*grads)


def weights(gates: int, bias: bool, gen: torch.Generator) -> list[torch.Tensor]:
    w = [torch.randn(gates * H, I, generator=gen, dtype=torch.float64) * 0.5,
         torch.randn(gates * H, H, generator=gen, dtype=torch.float64) * 0.5]
    if bias:
        w += [torch.randn(gates * H, generator=gen, dtype=torch.float64) for _ in range(2)]
    return [t.requires_grad_(True) for t in w]


@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_lstm_and_lstm_cell(bias, gen, device, supported, path):
    supported(device, torch.float64)
    x = torch.randn(4, 3, I, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    h0, c0 = (torch.randn(3, H, generator=gen, dtype=torch.float64).to(device).requires_grad_() for _ in range(2))
    w = [t.detach().to(device).requires_grad_() for t in weights(4, bias, gen)]

    def sequence(x, h0, c0, *w):
        out, (h, c) = F.lstm(x, (h0, c0), *w)
        return out, h, c

    assert torch.autograd.gradcheck(sequence, (x, h0, c0, *w))
    assert torch.autograd.gradcheck(lambda x, h, c, *w: F.lstm_cell(x, (h, c), *w), (x[0], h0, c0, *w))


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_gradcheck_rnn_and_rnn_cell(nonlinearity, gen):
    x = torch.randn(4, 3, I, generator=gen, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, H, generator=gen, dtype=torch.float64, requires_grad=True)
    w = weights(1, True, gen)
    assert torch.autograd.gradcheck(lambda x, h, *w: F.rnn(x, h, *w, nonlinearity=nonlinearity), (x, h0, *w))
    assert torch.autograd.gradcheck(lambda x, h, *w: F.rnn_cell(x, h, *w, nonlinearity=nonlinearity),
                                    (x[0], h0, *w))


def test_lstm_cell_function_is_the_lecture_equations(gen):
    """c_t = f c_{t-1} + i u, h_t = o tanh(c_t), gates from x_t and h_{t-1} (lecture 000)."""
    x, h, c = (torch.randn(2, k, generator=gen, dtype=torch.float64) for k in (I, H, H))
    w_ih, w_hh, b_ih, b_hh = weights(4, True, gen)
    pre = [x @ a.T + h @ b.T + p + q for a, b, p, q in
           zip(w_ih.chunk(4), w_hh.chunk(4), b_ih.chunk(4), b_hh.chunk(4))]  # i, f, g, o
    i, f, o = torch.sigmoid(pre[0]), torch.sigmoid(pre[1]), torch.sigmoid(pre[3])
    u = torch.tanh(pre[2])
    c_new = f * c + i * u
    h_new, c_mine = F.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
    torch.testing.assert_close(c_mine, c_new)
    torch.testing.assert_close(h_new, o * torch.tanh(c_new))


@pytest.mark.parametrize("name, make, call, message", [
    ("RNN", lambda: dnn.RNN(I, H), lambda m: m(torch.randn(T, N, 3)), "input_size=5"),
    ("RNN", lambda: dnn.RNN(I, H), lambda m: m(torch.randn(2, T, N, I)), "got 4-D"),
    ("LSTM", lambda: dnn.LSTM(I, H), lambda m: m(torch.randn(I)), "got 1-D"),
    ("LSTM", lambda: dnn.LSTM(I, H, batch_first=True), lambda m: m(torch.randn(N, T, 2)), "(N, T, input_size)"),
    ("LSTM", lambda: dnn.LSTM(I, H), lambda m: m(torch.randn(T, N, I), (torch.zeros(N, H), torch.zeros(N, H))),
     "h0 of shape (1, 4, 7)"),
    ("LSTM", lambda: dnn.LSTM(I, H), lambda m: m(torch.randn(T, N, I), (torch.zeros(1, N, H),
                                                                         torch.zeros(1, N, 3))), "c0"),
    ("LSTM", lambda: dnn.LSTM(I, H), lambda m: m(torch.randn(T, N, I), torch.zeros(1, N, H)), "pair"),
    ("LSTM", lambda: dnn.LSTM(I, H), lambda m: m(torch.randint(0, 3, (T, N, I))), "floating-point"),
    ("LSTM", lambda: dnn.LSTM(I, H), lambda m: m(torch.randn(0, N, I)), "at least one step"),
    ("RNNCell", lambda: dnn.RNNCell(I, H), lambda m: m(torch.randn(N, I), torch.zeros(N + 1, H)), "hx"),
    ("LSTMCell", lambda: dnn.LSTMCell(I, H), lambda m: m(torch.randn(T, N, I)), "got 3-D"),
    ("LSTMCell", lambda: dnn.LSTMCell(I, H), lambda m: m(torch.randn(N, I + 1)), "input_size=5"),
])
def test_clear_errors(name, make, call, message):
    module = make()
    with pytest.raises((ValueError, TypeError), match=name) as info:
        call(module)
    assert message in str(info.value)


def test_constructor_errors():
    with pytest.raises(ValueError, match="num_layers=2"):
        dnn.LSTM(I, H, num_layers=2)
    with pytest.raises(ValueError, match="nonlinearity"):
        dnn.RNN(I, H, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="hidden_size"):
        dnn.LSTMCell(I, 0)
    with pytest.raises(ValueError, match=r"lstm_cell: expected weight_ih \(4 \* hidden_size"):
        F.lstm_cell(torch.randn(2, I), (torch.zeros(2, H),) * 2, torch.randn(3 * H, I), torch.randn(4 * H, H))


def test_new_tensors_follow_the_input(device, supported, path):
    supported(device, torch.float64)
    for cls in (dnn.RNN, dnn.LSTM, dnn.RNNCell, dnn.LSTMCell):
        m = cls(I, H, device=device, dtype=torch.float64)
        x = torch.randn(T, N, I, device=device, dtype=torch.float64)
        out = flatten(m(x if "Cell" not in cls.__name__ else x[0]))
        assert all(o.device.type == torch.device(device).type and o.dtype == torch.float64 for o in out)


def test_initialisation_bound_like_torch():
    for cls in (dnn.RNN, dnn.LSTM, dnn.RNNCell, dnn.LSTMCell):
        m = cls(I, 100)
        for p in m.parameters():
            assert p.abs().max() <= 0.1 and p.abs().max() > 0.09 and p.std() > 0.05


def test_the_forbid_check_would_catch_torch_recurrent_kernels():
    with pytest.raises(ForbiddenCallError):
        with forbid(*TORCH_RNN):
            nn.LSTM(I, H)(torch.randn(T, N, I))
