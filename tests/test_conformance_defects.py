"""The defects issue 19 lists (and those the conformance suite found), one test each.

Each of these failed before the fix: a silent different answer, a NaN, or an obscure crash
where PyTorch computes or where a clear refusal is due.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as TF

from dlcourse import functional as F
from dlcourse import nn as dnn
from dlcourse import optim
from dlcourse._checks import Unsupported
from fast_paths import path  # noqa: F401  (the fixture: readable code and dlcourse._fast kernel)

pytestmark = pytest.mark.usefixtures("one_thread")


# --- cross_entropy -----------------------------------------------------------------------------

@pytest.mark.parametrize("ignore_index", [-100, 1])
def test_cross_entropy_all_targets_ignored_gives_zero_gradient(device, ignore_index, path, supported):
    """An all-padding batch: the loss is NaN (0/0, as PyTorch), the gradient 0 (was NaN), so a
    step leaves the weights finite."""
    supported(device, torch.float64)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, generator=g, dtype=torch.float64).to(device).requires_grad_()
    target = torch.full((4,), ignore_index, device=device)
    ref = logits.detach().clone().requires_grad_()
    loss = F.cross_entropy(logits, target, ignore_index=ignore_index)
    want = TF.cross_entropy(ref, target, ignore_index=ignore_index)
    assert torch.isnan(loss) and torch.isnan(want)
    loss.backward()
    want.backward()
    torch.testing.assert_close(logits.grad, ref.grad)
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    w = torch.nn.Parameter(torch.randn(3, 3, dtype=torch.float64, device=device))
    opt = optim.SGD([w], lr=0.1)
    F.cross_entropy(torch.ones(2, 3, dtype=torch.float64, device=device) @ w,
                    torch.full((2,), -100, device=device)).backward()
    opt.step()
    assert torch.isfinite(w).all()


def test_cross_entropy_positional_weight_is_refused_by_name():
    """torch's third positional argument is weight: a clear error naming it (was "Boolean value of
    Tensor ... is ambiguous")."""
    x, y, w = torch.randn(4, 3), torch.tensor([0, 1, 2, 1]), torch.ones(3)
    with pytest.raises(TypeError, match=r"cross_entropy: .*weight"):
        F.cross_entropy(x, y, w)
    with pytest.raises(Unsupported, match=r"cross_entropy: .*weight"):
        F.cross_entropy(x, y, weight=w)
    with pytest.raises(Unsupported, match=r"cross_entropy: .*reduction='sum'"):
        F.cross_entropy(x, y, reduction="sum")
    torch.testing.assert_close(F.cross_entropy(x, y, weight=None, reduction="mean", label_smoothing=0.0),
                               TF.cross_entropy(x, y))


def test_loss_arguments_after_the_shared_ones_are_keyword_only():
    """huber_loss(x, y, "sum") is torch's reduction, not our delta."""
    x, y = torch.randn(5), torch.randn(5)
    with pytest.raises(TypeError, match=r"huber_loss: .*reduction"):
        F.huber_loss(x, y, "sum")
    with pytest.raises(Unsupported, match=r"mse_loss: .*reduction='none'"):
        F.mse_loss(x, y, reduction="none")
    torch.testing.assert_close(F.huber_loss(x, y, delta=0.5), TF.huber_loss(x, y, delta=0.5))


# --- attention, softmax --------------------------------------------------------------------------

def test_sdpa_torch_positional_order_is_refused_not_silently_non_causal(device):
    """(q, k, v, None, 0.0, True): torch's fifth argument is dropout_p, the sixth is_causal. It ran
    non-causal attention with scale 1; now it is an error naming both."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 5, 4, generator=g).to(device) for _ in range(3))
    with pytest.raises(TypeError, match=r"scaled_dot_product_attention: .*dropout_p, is_causal"):
        F.scaled_dot_product_attention(q, k, v, None, 0.0, True)
    got = F.scaled_dot_product_attention(q, k, v, None, dropout_p=0.0, is_causal=True)
    torch.testing.assert_close(got, TF.scaled_dot_product_attention(q, k, v, None, 0.0, True))
    with pytest.raises(Unsupported, match=r"dropout_p=0.1"):
        F.scaled_dot_product_attention(q, k, v, dropout_p=0.1)
    with pytest.raises(TypeError, match=r"is_causal"):
        F.scaled_dot_product_attention(q, k, v, is_causal="False")


def test_attention_with_zero_keys_gives_zeros_as_torch(device, supported):
    supported(device, torch.float64)
    q = torch.randn(2, 3, 4, dtype=torch.float64, device=device, requires_grad=True)
    k = torch.randn(2, 0, 4, dtype=torch.float64, device=device, requires_grad=True)
    v = torch.randn(2, 0, 5, dtype=torch.float64, device=device, requires_grad=True)
    out = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, TF.scaled_dot_product_attention(q, k, v))
    out.sum().backward()
    assert torch.equal(q.grad, torch.zeros_like(q)) and k.grad.shape == k.shape


@pytest.mark.parametrize("shape, dim", [((5, 0, 0), -1), ((3, 0), 1), ((0,), 0), ((2, 0), 0)])
def test_softmax_of_a_zero_size_tensor(shape, dim, device, supported):
    supported(device, torch.float64)
    x = torch.randn(shape, dtype=torch.float64, device=device, requires_grad=True)
    out = F.softmax(x, dim)
    torch.testing.assert_close(out, torch.softmax(x, dim))
    out.sum().backward()
    assert x.grad.shape == x.shape


def test_softmax_without_dim_is_torch_implicit_choice_or_refused():
    """Without dim, PyTorch (deprecated) normalises dim 0 of a 3-D input; ours took the last: a
    silent different answer. Up to 2-D both take the last; beyond, dim is required."""
    for shape in [(), (5,), (3, 4)]:
        x = torch.randn(shape)
        with pytest.warns(UserWarning, match="Implicit dimension"):
            want = TF.softmax(x)
        torch.testing.assert_close(F.softmax(x), want)
    for shape, torch_dim in [((2, 3, 4), 0), ((2, 3, 4, 5), 1)]:
        with pytest.raises(ValueError, match=rf"softmax: expected dim for a {len(shape)}-D input.*dim={torch_dim}"):
            F.softmax(torch.randn(shape))


def test_softmax_dtype_casts_first_as_torch():
    x = torch.randn(3, 4)
    out = F.softmax(x, 1, dtype=torch.float64)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, torch.softmax(x, 1, dtype=torch.float64))


# --- modules -------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [dnn.RNN, dnn.LSTM])
@pytest.mark.parametrize("arg", ["bias", "batch_first"])
@pytest.mark.parametrize("value", ["False", 0, 1, None])
def test_rnn_flags_must_be_bool(cls, arg, value):
    """batch_first="False" built a batch-first module (a true string); now a clear error."""
    with pytest.raises(TypeError, match=rf"{cls.__name__}: expected {arg} to be a bool"):
        cls(3, 4, **{arg: value})


@pytest.mark.parametrize("cls", [dnn.RNN, dnn.LSTM, dnn.RNNCell, dnn.LSTMCell])
def test_recurrent_input_of_another_dtype_is_our_error(cls, path):
    """float32 input to a float64 module: our error naming both dtypes (was torch's internal one)."""
    m = cls(3, 4).double()
    x = torch.randn(2, 3)
    with pytest.raises(TypeError, match=rf"{cls.__name__}: expected input of the parameters' dtype torch.float64, "
                                        r"got torch.float32"):
        m(x)


@pytest.mark.parametrize("fn, gates", [(F.rnn, 1), (F.lstm, 4)])
def test_functional_recurrent_input_of_another_dtype_is_our_error(fn, gates, path):
    w_ih, w_hh = torch.randn(gates * 4, 3, dtype=torch.float64), torch.randn(gates * 4, 4, dtype=torch.float64)
    h = torch.zeros(2, 4, dtype=torch.float64)
    state = h if fn is F.rnn else (h, h)
    with pytest.raises(TypeError, match=rf"{fn.__name__}: expected the input in the weights' dtype torch.float64"):
        fn(torch.randn(5, 2, 3), state, w_ih, w_hh)
    with pytest.raises(TypeError, match=rf"{fn.__name__}: expected h0 in the weights' dtype torch.float64"):
        fn(torch.randn(5, 2, 3, dtype=torch.float64), h.float() if fn is F.rnn else (h.float(), h), w_ih, w_hh)


def test_module_arguments_torch_reads_differently_are_refused():
    """torch.nn.Conv2d's sixth argument is dilation, not bias; MultiheadAttention's forward takes
    key and value; LSTM's sixth argument is dropout."""
    with pytest.raises(TypeError, match=r"Conv2d: .*dilation"):
        dnn.Conv2d(3, 8, 3, 1, 1, 2)
    with pytest.raises(Unsupported, match=r"Conv2d: .*groups=2"):
        dnn.Conv2d(4, 8, 3, groups=2)
    with pytest.raises(TypeError, match=r"LSTM: .*dropout"):
        dnn.LSTM(3, 4, 1, True, False, 0.5)
    with pytest.raises(Unsupported, match=r"MaxPool2d: .*ceil_mode=True"):
        dnn.MaxPool2d(2, ceil_mode=True)
    mha = dnn.MultiHeadAttention(8, 2)
    x = torch.randn(2, 5, 8)
    with pytest.raises(TypeError, match=r"MultiHeadAttention.forward: .*key, value"):
        mha(x, x, x)
    with pytest.raises(Unsupported, match=r"batch_first=False"):
        dnn.MultiHeadAttention(8, 2, batch_first=False)


def test_flatten_out_of_range_dim_is_our_error():
    with pytest.raises(ValueError, match=r"Flatten: start_dim=1 is out of range for a 1-D input"):
        dnn.Flatten()(torch.randn(5))


# --- optimizers ----------------------------------------------------------------------------------

def _params():
    g = torch.Generator().manual_seed(3)
    return [torch.randn(3, 2, generator=g, dtype=torch.float64).requires_grad_(),
            torch.randn(4, generator=g, dtype=torch.complex128).requires_grad_()]


def _run(opt, params, steps, start=0):
    for t in range(start, start + steps):
        for p in params:
            p.grad = (0.5 * p + 0.05 * (t % 7)).detach()  # a bounded gradient field, the same for both
        opt.step()
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("name, kwargs", [
    ("SGD", {"lr": 0.1, "nesterov": True, "momentum": 0.9}), ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.5}),
    ("SGD", {"lr": 0.1, "maximize": True}), ("RMSprop", {"centered": True}), ("RMSprop", {"momentum": 0.5}),
    ("Adagrad", {"lr_decay": 0.1}), ("Adagrad", {"initial_accumulator_value": 0.1}), ("Adam", {"amsgrad": True}),
    ("Adam", {"maximize": True}), ("Adam", {"foreach": True}), ("RMSprop", {"weight_decay": 0.1}),
])
def test_loading_a_torch_state_with_an_unsupported_option_is_refused(name, kwargs):
    """It loaded and the option was silently ignored; now the error names it."""
    params = _params()
    theirs = getattr(torch.optim, name)(params, **kwargs)
    _run(theirs, params, 2)
    ours = getattr(optim, name)(_params(), **({"lr": 0.1} if name == "SGD" else {}))
    option = next(k for k in kwargs if k not in ("lr", "momentum") or name == "RMSprop")
    with pytest.raises(Unsupported, match=rf"{name}.load_state_dict: .*{option}="):
        ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    with pytest.raises(Unsupported, match=rf"{name}: .*{option}="):
        getattr(optim, name)(_params(), **kwargs)


@pytest.mark.parametrize("name, kwargs", [("SGD", {"lr": 0.1}), ("SGD", {"lr": 0.1, "momentum": 0.9}),
                                          ("RMSprop", {}), ("Adagrad", {"lr": 0.1}), ("Adam", {"weight_decay": 0.1})])
@pytest.mark.parametrize("direction", ["ours->torch", "torch->ours"])
def test_state_dicts_round_trip_with_torch_optim(name, kwargs, direction):
    """Save in one, load in the other, 50 more steps: the same trajectory. (Our SGD, RMSprop and
    Adagrad states loaded into torch.optim and its next step raised KeyError.)"""
    first_cls, second_cls = getattr(optim, name), getattr(torch.optim, name)
    if direction == "torch->ours":
        first_cls, second_cls = second_cls, first_cls
    a = _params()
    first = first_cls(a, **kwargs)
    _run(first, a, 5)
    b = [p.detach().clone().requires_grad_() for p in a]
    second = second_cls(b, **kwargs)
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    for x, y in zip(_run(first, a, 50, start=5), _run(second, b, 50, start=5)):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, kwargs", [("SGD", {"lr": 0.1, "momentum": 0.9}), ("RMSprop", {}),
                                          ("Adagrad", {"lr": 0.1}), ("Adam", {"lr": 0.01, "weight_decay": 0.1})])
def test_complex_parameters_as_torch_optim(name, kwargs):
    """RMSprop, Adagrad and Adam squared a complex gradient (g * g) instead of treating its real
    and imaginary parts as parameters: wrong from the first step."""
    a, b = _params(), _params()
    for x, y in zip(_run(getattr(optim, name)(a, **kwargs), a, 20),
                    _run(getattr(torch.optim, name)(b, **kwargs), b, 20)):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_optimizer_arguments_torch_reads_differently_are_refused():
    """torch.optim.SGD's fourth argument is dampening, Adagrad's third lr_decay."""
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(TypeError, match=re.escape("SGD: expected at most 3 positional arguments")):
        optim.SGD(p, 0.1, 0.9, 1e-4)
    with pytest.raises(TypeError, match=r"Adagrad: .*lr_decay"):
        optim.Adagrad(p, 0.1, 1e-5)
    with pytest.raises(Unsupported, match=r"SGD: .*nesterov=True"):
        optim.SGD([{"params": p, "nesterov": True}], lr=0.1)
    assert optim.SGD(p, 0.1, 0.9, weight_decay=1e-4, dampening=0, nesterov=False).defaults["weight_decay"] == 1e-4


def test_torch_arguments_at_the_value_we_compute_are_accepted():
    """A call written for PyTorch that spells out its defaults works the same."""
    g = torch.Generator().manual_seed(5)
    x, w = torch.randn(2, 3, 6, 6, generator=g), torch.randn(4, 3, 3, 3, generator=g)
    torch.testing.assert_close(F.conv2d(x, w, None, 1, 1, dilation=(1, 1), groups=1),
                               TF.conv2d(x, w, None, 1, 1, dilation=(1, 1), groups=1))
    torch.testing.assert_close(F.max_pool2d(x, 2, dilation=1, ceil_mode=False, return_indices=False),
                               TF.max_pool2d(x, 2))
    torch.testing.assert_close(F.avg_pool2d(x, 2, ceil_mode=False, count_include_pad=True, divisor_override=None),
                               TF.avg_pool2d(x, 2))
    y = torch.tensor([0, 1])
    torch.testing.assert_close(F.cross_entropy(x[:, :, 0, 0], y, reduction="mean", label_smoothing=0),
                               TF.cross_entropy(x[:, :, 0, 0], y))
    torch.testing.assert_close(F.dropout(x, 0.0, True, inplace=False), x)
    opt = optim.Adam([torch.zeros(2, requires_grad=True)], amsgrad=False, foreach=None, maximize=False)
    assert opt.param_groups[0]["amsgrad"] is False
