"""Conformance with PyTorch on PyTorch's own test samples: same answer or a clear refusal.

Every dlcourse function and module with a ``torch`` twin runs on the samples PyTorch tests its
twin with: ``torch.testing._internal``'s OpInfo (``sample_inputs``, ``error_inputs``), ModuleInfo
(``module_inputs_func``, ``module_error_inputs_func``) and OptimizerInfo (``optim_inputs_func``),
in float64 and float32, values and gradients. Each sample ends as passed, refused (one of our
errors, naming the unsupported feature), wrong or crashed (see ``tests/conformance.py``); a test
fails on any wrong or crashed sample. ``pytest -s tests/test_conformance.py`` prints the tally.

Where PyTorch's samples never reach a configuration dlcourse implements (all of ModuleInfo's
RNN/LSTM samples have two layers; MultiheadAttention's take separate key and value), the same
samples also run in the nearest form dlcourse supports (one layer; self-attention), labelled
as such in the tally.
"""

from __future__ import annotations

import copy
import inspect
import zlib

import pytest
import torch
import torch.nn.functional as TF
from torch import nn as tnn

# torch.testing._internal imports expecttest, a test dependency (pyproject.toml's test extra, constraints.txt)
from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402
from torch.testing._internal.common_modules import module_db  # noqa: E402
from torch.testing._internal.common_optimizers import optim_db  # noqa: E402

from conformance import TALLY, OUTCOMES, Outcome, Report, clear_refusal, compare, describe, fresh, leaves  # noqa: E402
from dlcourse import _fast  # noqa: E402
from dlcourse import functional as F  # noqa: E402
from dlcourse._checks import same_value  # noqa: E402
from dlcourse import nn as dnn  # noqa: E402
from dlcourse import optim as doptim  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
DTYPES = [pytest.param(torch.float64, id="float64"), pytest.param(torch.float32, id="float32")]

# What has a tuned kernel in dlcourse._fast runs every sample twice: the readable code
# (DLCOURSE_FAST=0) and the kernel (DLCOURSE_FAST=1, the default).
WITH_FAST_PATH = {"conv2d", "cross_entropy", "max_pool2d", "avg_pool2d", "Conv2d", "LSTM", "MaxPool2d", "AvgPool2d"}


def _paths(name: str) -> list[tuple[str, str]]:
    """``(suffix for the tally, DLCOURSE_FAST value)`` for each path ``name`` has."""
    return [(" readable", "0"), (" fast", "1")] if name in WITH_FAST_PATH else [("", "1")]

# ------------------------------------------------------------------------------------------
# Functions: OpInfo name (and variant) -> (dlcourse function, PyTorch function)
# ------------------------------------------------------------------------------------------

OPS = {
    ("sigmoid", ""): (F.sigmoid, torch.sigmoid),
    ("tanh", ""): (F.tanh, torch.tanh),
    ("nn.functional.relu", ""): (F.relu, TF.relu),
    ("nn.functional.leaky_relu", ""): (F.leaky_relu, TF.leaky_relu),
    ("nn.functional.elu", ""): (F.elu, TF.elu),
    ("softmax", ""): (F.softmax, torch.softmax),
    ("softmax", "with_dtype"): (F.softmax, torch.softmax),
    ("nn.functional.linear", ""): (F.linear, TF.linear),
    ("nn.functional.mse_loss", ""): (F.mse_loss, TF.mse_loss),
    ("nn.functional.l1_loss", ""): (F.l1_loss, TF.l1_loss),
    ("nn.functional.huber_loss", ""): (F.huber_loss, TF.huber_loss),
    ("nn.functional.binary_cross_entropy", ""): (F.binary_cross_entropy, TF.binary_cross_entropy),
    ("nn.functional.cross_entropy", ""): (F.cross_entropy, TF.cross_entropy),
    ("nn.functional.dropout", ""): (F.dropout, TF.dropout),
    ("nn.functional.conv2d", ""): (F.conv2d, TF.conv2d),
    ("nn.functional.max_pool2d", ""): (F.max_pool2d, TF.max_pool2d),
    ("nn.functional.avg_pool2d", ""): (F.avg_pool2d, TF.avg_pool2d),
    ("nn.functional.scaled_dot_product_attention", ""): (F.scaled_dot_product_attention,
                                                          TF.scaled_dot_product_attention),
}
_OPINFO = {(op.name, op.variant_test_name): op for op in op_db}


def _op_id(key: tuple[str, str]) -> str:
    return key[0].removeprefix("nn.functional.") + (f"-{key[1]}" if key[1] else "")


def _unsupported(fn, args: tuple, kwargs: dict) -> tuple[str, ...]:
    """The PyTorch arguments a call passes that ``fn`` does not have (by keyword or by position)."""
    params = inspect.signature(fn).parameters
    positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    accepted = dict(getattr(fn, "torch_rest", ()))
    extra = list(accepted)[: max(0, len(args) - len(positional))]
    # a torch-only argument at the value dlcourse computes anyway is supported
    return tuple(k for k, v in kwargs.items() if k not in params and not (
        k in accepted and same_value(v, accepted[k]))) + tuple(extra)


def _dropout_check(p: float):
    """Dropout is random: check the structure (kept entries scaled by 1/(1-p), the gradient through the same mask)."""

    def check(got, got_leaves, grads, upstream) -> str:
        x = got_leaves[0].detach()
        kept = got.detach() != 0
        want = torch.where(kept, x / (1 - p), torch.zeros_like(x))
        if not torch.allclose(got.detach(), want):
            return "not x / (1 - p) where kept"
        if grads and grads[0] is not None:
            want_grad = torch.where(kept, upstream[0] / (1 - p), torch.zeros_like(x))
            if not torch.allclose(grads[0], want_grad):
                return "gradient is not the kept mask / (1 - p)"
        return ""

    return check


def _call(fn, sample):
    def run():
        x, args, kwargs = fresh(sample.input), fresh(tuple(sample.args)), fresh(dict(sample.kwargs))
        return fn(x, *args, **kwargs), leaves([x, args, kwargs])

    return run


def _seed(*key) -> int:
    return zlib.crc32(repr(key).encode())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("key", list(OPS), ids=_op_id)
def test_function_samples(key, dtype, device, supported, monkeypatch):
    """Every OpInfo sample: the same values and gradients as PyTorch, or a clear refusal."""
    supported(device, dtype)
    ours, theirs = OPS[key]
    for suffix, fast in _paths(ours.__name__):
        monkeypatch.setenv(_fast.ENV, fast)
        _function_samples(key, ours, theirs, dtype, device, suffix)


def _function_samples(key, ours, theirs, dtype, device, suffix):
    report = Report(f"{ours.__name__}{'/' + key[1] if key[1] else ''} {str(dtype)[6:]}{suffix}")
    for i, sample in enumerate(_OPINFO[key].sample_inputs(device, dtype, requires_grad=True)):
        kwargs = dict(sample.kwargs)
        check = None
        if ours is F.dropout and kwargs.get("training", True) and 0 < kwargs.get("p", 0.5) < 1:
            check = _dropout_check(kwargs.get("p", 0.5))
        outcome = compare(_call(ours, sample), _call(theirs, sample), (ours.__name__,),
                          _unsupported(ours, (sample.input, *sample.args), kwargs), dtype, _seed(key, i), check)
        report.add(outcome, f"{ours.__name__}({describe(sample.input)}, {describe(list(sample.args))}, "
                            f"{describe(kwargs)})")
    report.check()


@pytest.mark.parametrize("key", [k for k in OPS if _OPINFO[k].error_inputs_func is not None], ids=_op_id)
def test_function_error_inputs(key, device):
    """Every OpInfo error input: PyTorch raises, so must we, with one of our clear errors."""
    ours, _ = OPS[key]
    report = Report(f"{ours.__name__} error_inputs")
    for error in _OPINFO[key].error_inputs(device):
        s = error.sample_input
        report.add(_expect_error(lambda: ours(fresh(s.input), *fresh(tuple(s.args)), **fresh(dict(s.kwargs))),
                                 (ours.__name__,)),
                   f"{ours.__name__}({describe(s.input)}, {describe(list(s.args))}, {describe(dict(s.kwargs))}) "
                   f"(PyTorch: {error.error_type.__name__} {error.error_regex!r})")
    report.check()


def _expect_error(run, names: tuple[str, ...]) -> Outcome:
    try:
        run()
    except Exception as err:  # noqa: BLE001 - classified here
        if clear_refusal(err, names):
            return Outcome("passed")
        return Outcome("crashed", f"{type(err).__name__}: {str(err)[:300]}")
    return Outcome("wrong", "PyTorch raises, dlcourse returns a result")


# ------------------------------------------------------------------------------------------
# Modules: ModuleInfo -> dlcourse module
# ------------------------------------------------------------------------------------------

MODULES = {
    "Linear": dnn.Linear,
    "Conv2d": dnn.Conv2d,
    "MaxPool2d": dnn.MaxPool2d,
    "AvgPool2d": dnn.AvgPool2d,
    "RNNCell": dnn.RNNCell,
    "LSTMCell": dnn.LSTMCell,
    "RNN": dnn.RNN,
    "LSTM": dnn.LSTM,
    "MultiheadAttention": dnn.MultiHeadAttention,
}
_MODULEINFO = {m.module_cls.__name__: m for m in module_db}
# How our errors name each module: by itself, or by the function its forward calls.
NAMES = {"Linear": ("Linear", "linear"), "Conv2d": ("Conv2d", "conv2d"), "MaxPool2d": ("MaxPool2d", "max_pool2d"),
         "AvgPool2d": ("AvgPool2d", "avg_pool2d"), "RNNCell": ("RNNCell", "rnn_cell"),
         "LSTMCell": ("LSTMCell", "lstm_cell"), "RNN": ("RNN", "rnn"), "LSTM": ("LSTM", "lstm"),
         "MultiheadAttention": ("MultiHeadAttention", "scaled_dot_product_attention")}


def _module_case(torch_cls, our_cls, ctor_args, ctor_kwargs, fwd_args, fwd_kwargs, device, dtype, training,
                 seed, our_forward=None, torch_forward=None):
    """``(run_ours, run_torch)`` for one module sample: our module gets the torch module's parameters."""
    torch.manual_seed(seed)
    try:
        reference = torch_cls(*ctor_args, **ctor_kwargs).to(device=device, dtype=dtype)
    except Exception as err:  # noqa: BLE001 - then torch's run raises it again
        reference = err

    def run_torch():
        if isinstance(reference, Exception):
            raise reference
        m = copy.deepcopy(reference).train(training)
        args, kwargs = fresh(tuple(fwd_args)), fresh(dict(fwd_kwargs))
        params = [p for _, p in sorted(m.named_parameters())]
        out = torch_forward(m, args, kwargs) if torch_forward else m(*args, **kwargs)
        return out, leaves([args, kwargs]) + params

    def run_ours():
        m = our_cls(*ctor_args, **ctor_kwargs).to(device=device, dtype=dtype)
        if not isinstance(reference, Exception):
            m.load_state_dict(reference.state_dict())
        m.train(training)
        args, kwargs = fresh(tuple(fwd_args)), fresh(dict(fwd_kwargs))
        params = [p for _, p in sorted(m.named_parameters())]
        out = our_forward(m, args, kwargs) if our_forward else m(*args, **kwargs)
        return out, leaves([args, kwargs]) + params

    return run_ours, run_torch


def _derived_rnn(kwargs: dict, args: tuple):
    """A two-layer RNN/LSTM sample as a one-layer one: num_layers=1, the first layer's initial state."""
    if kwargs.get("num_layers", 1) == 1:
        return None
    layers = 2 if kwargs.get("bidirectional") else 1
    state = args[1:]
    if state:
        state = (tuple(s[:layers] for s in state[0]) if isinstance(state[0], tuple) else state[0][:layers],)
    return {**kwargs, "num_layers": 1}, (args[0], *state)


def _self_attention(m, args, kwargs):
    """Our MultiHeadAttention on torch's self-attention call ``m(x, x, x, ...)``: ``m(x, ...)``."""
    return m(args[0], **{k: v for k, v in kwargs.items() if k != "need_weights"})


def _torch_self_attention(m, args, kwargs):
    """torch.nn.MultiheadAttention as self-attention, ``m(x, x, x, need_weights=False)[0]``."""
    return m(args[0], args[0], args[0], **kwargs)[0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(MODULES))
def test_module_samples(name, dtype, device, supported, monkeypatch):
    """Every ModuleInfo sample, in training and in evaluation mode: our module, loaded with the torch
    module's parameters, gives the same outputs and gradients (input and parameters), or refuses."""
    supported(device, dtype)
    for suffix, fast in _paths(name):
        monkeypatch.setenv(_fast.ENV, fast)
        _module_samples(name, dtype, device, suffix)


def _module_samples(name, dtype, device, suffix):
    info, ours = _MODULEINFO[name], MODULES[name]
    report = Report(f"{ours.__name__} {str(dtype)[6:]}{suffix}")
    derived = Report(f"{ours.__name__} ({'one layer' if name in ('RNN', 'LSTM') else 'self-attention'}) "
                     f"{str(dtype)[6:]}{suffix}")
    names = NAMES[name]
    for training in (True, False):
        inputs = info.module_inputs_func(info, device=device, dtype=dtype, requires_grad=True, training=training)
        for i, mi in enumerate(inputs):
            c, f = mi.constructor_input, mi.forward_input
            seed = _seed(name, training, i)
            run_ours, run_torch = _module_case(info.module_cls, ours, c.args, c.kwargs, f.args, f.kwargs, device,
                                               dtype, training, seed)
            what = f"{name}(*{describe(c.args)}, **{describe(c.kwargs)})({describe(f.args)}, {describe(f.kwargs)})"
            report.add(compare(run_ours, run_torch, names, _unsupported(ours.__init__, (None, *c.args), c.kwargs)
                               + _unsupported(ours.forward, (None, *f.args), f.kwargs), dtype, seed), what)
            if name in ("RNN", "LSTM") and (variant := _derived_rnn(c.kwargs, tuple(f.args))):
                kwargs, args = variant
                run_ours, run_torch = _module_case(info.module_cls, ours, c.args, kwargs, args, f.kwargs, device,
                                                   dtype, training, seed)
                derived.add(compare(run_ours, run_torch, names, _unsupported(ours.__init__, (None,), kwargs), dtype,
                                    seed), f"one layer: {what}")
            if name == "MultiheadAttention":
                x = f.args[0].unsqueeze(0) if f.args[0].dim() == 2 else f.args[0]  # (B, T, E)
                kwargs = {**c.kwargs, "batch_first": True}
                fwd = {**f.kwargs, "need_weights": False}
                if isinstance(fwd.get("attn_mask"), torch.Tensor) and fwd["attn_mask"].dtype == torch.bool:
                    continue  # torch's bool mask means "may not attend", ours "may attend" (documented)
                run_ours, run_torch = _module_case(info.module_cls, ours, c.args, kwargs, (x,), fwd, device, dtype,
                                                   training, seed, _self_attention, _torch_self_attention)
                unsupported = _unsupported(ours.__init__, (None,), kwargs) + tuple(
                    k for k, v in fwd.items() if k == "key_padding_mask" and v is not None)
                derived.add(compare(run_ours, run_torch, names, unsupported, dtype, seed), f"self-attention: {what}")
    report.check()
    if derived.counts:
        derived.check()


@pytest.mark.parametrize("name", [n for n in MODULES if _MODULEINFO[n].module_error_inputs_func is not None])
def test_module_error_inputs(name, device):
    """Every ModuleInfo error input: PyTorch raises (at construction or forward), so must we, clearly."""
    info, ours = _MODULEINFO[name], MODULES[name]
    report = Report(f"{ours.__name__} error_inputs")
    for error in info.module_error_inputs_func(info, device=device, dtype=torch.float32, requires_grad=False,
                                               training=True):
        mi = error.module_error_input
        c, f = mi.constructor_input, mi.forward_input

        def run(c=c, f=f):
            m = ours(*c.args, **c.kwargs)
            if f is not None:
                m(*fresh(tuple(f.args)), **fresh(dict(f.kwargs)))

        report.add(_expect_error(run, NAMES[name]),
                   f"{name}(*{describe(c.args)}, **{describe(c.kwargs)}) on "
                   f"{describe(f.args) if f is not None else '-'} (PyTorch: {error.error_regex!r})")
    report.check()


# Flatten and Dropout have no ModuleInfo: they run on the OpInfo samples of torch.flatten and F.dropout.
@pytest.mark.parametrize("dtype", DTYPES)
def test_flatten_module_samples(dtype, device, supported):
    supported(device, dtype)
    report = Report(f"Flatten {str(dtype)[6:]}")
    for i, sample in enumerate(_OPINFO[("flatten", "")].sample_inputs(device, dtype, requires_grad=True)):
        kwargs = dict(sample.kwargs)
        run_ours, run_torch = _module_case(tnn.Flatten, dnn.Flatten, (), kwargs, (sample.input,), {}, device,
                                           dtype, True, i)
        report.add(compare(run_ours, run_torch, ("Flatten",), (), dtype, _seed("Flatten", i)),
                   f"Flatten(**{describe(kwargs)})({describe(sample.input)})")
    report.check()


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_module_samples(dtype, device, supported):
    supported(device, dtype)
    report = Report(f"Dropout {str(dtype)[6:]}")
    for i, sample in enumerate(_OPINFO[("nn.functional.dropout", "")].sample_inputs(device, dtype,
                                                                                    requires_grad=True)):
        p, training = sample.kwargs.get("p", 0.5), sample.kwargs.get("training", True)
        run_ours, run_torch = _module_case(tnn.Dropout, dnn.Dropout, (p,), {}, (sample.input,), {}, device, dtype,
                                           training, i)
        check = _dropout_check(p) if training and 0 < p < 1 else None
        report.add(compare(run_ours, run_torch, ("Dropout",), (), dtype, _seed("Dropout", i), check),
                   f"Dropout({p}).train({training})({describe(sample.input)})")
    report.check()


# ------------------------------------------------------------------------------------------
# Optimizers: OptimizerInfo's configurations, trajectories and state dicts both ways
# ------------------------------------------------------------------------------------------

OPTIMIZERS = {"SGD": doptim.SGD, "RMSprop": doptim.RMSprop, "Adagrad": doptim.Adagrad, "Adam": doptim.Adam}
_OPTIMINFO = {o.optim_cls.__name__: o for o in optim_db}


def _params(device) -> list[torch.Tensor]:
    """A real matrix, a real vector and a complex vector (torch.optim treats its parts as real parameters)."""
    g = torch.Generator().manual_seed(7)
    return [torch.randn(4, 3, generator=g, dtype=torch.float64).to(device).requires_grad_(),
            torch.randn(3, generator=g, dtype=torch.float64).to(device).requires_grad_(),
            torch.randn(5, generator=g, dtype=torch.complex128).to(device).requires_grad_()]


def _steps(opt, params, n: int, start: int = 0) -> list[list[torch.Tensor]]:
    """``n`` steps on a fixed gradient field (the same for both optimizers); the parameters after each."""
    out = []
    for t in range(start, start + n):
        for k, p in enumerate(params):
            with torch.no_grad():
                p.grad = torch.sin(p * (1 + 0.1 * k)) + 0.01 * (t % 3)
        opt.step()
        out.append([p.detach().clone() for p in params])
    return out


def _same_trajectory(a, b) -> str:
    for t, (pa, pb) in enumerate(zip(a, b)):
        for k, (x, y) in enumerate(zip(pa, pb)):
            if not torch.allclose(x, y, rtol=1e-9, atol=1e-10):
                return f"step {t}, parameter {k}: max difference {(x - y).abs().max().item():.3g}"
    return ""


def _trajectory(ours_cls, torch_cls, kwargs, device) -> Outcome:
    """20 steps of ours and of torch.optim from the same start: the same parameters after every step."""
    pa, pb = _params(device), _params(device)
    mine = _steps(ours_cls(pa, **kwargs), pa, 20)
    theirs = _steps(torch_cls(pb, **kwargs), pb, 20)
    problem = _same_trajectory(mine, theirs)
    return Outcome("wrong", problem) if problem else Outcome("passed")


def _round_trip(save_cls, load_cls, kwargs, device) -> Outcome:
    """5 steps in one, state_dict() -> load_state_dict() into the other, then 50 more steps in
    both the original and the loaded copy: the same trajectory."""
    pa = _params(device)
    first = save_cls(pa, **kwargs)
    _steps(first, pa, 5)
    state = copy.deepcopy(first.state_dict())
    pb = [p.detach().clone().requires_grad_() for p in pa]
    second = load_cls(pb, **kwargs)
    second.load_state_dict(state)
    problem = _same_trajectory(_steps(first, pa, 50, start=5), _steps(second, pb, 50, start=5))
    return Outcome("wrong", problem) if problem else Outcome("passed")


def _guard(run) -> Outcome:
    try:
        return run()
    except Exception as err:  # noqa: BLE001
        return Outcome("crashed", f"{type(err).__name__}: {str(err)[:300]}")


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_inputs(name, device, supported):
    """Each OptimizerInfo configuration: construction refused by name, or the same trajectory as
    torch.optim, and state dicts that round-trip both ways (50 steps after loading); a torch.optim
    state made with a refused option is refused by name when loaded."""
    supported(device, torch.float64)  # the parameters are float64 and complex128
    ours, theirs = OPTIMIZERS[name], _OPTIMINFO[name].optim_cls
    report = Report(f"{name}")
    trips = Report(f"{name} state_dict round trips")
    loads = Report(f"{name} load of unsupported torch.optim state")
    for oi in _OPTIMINFO[name].optim_inputs_func(device=device, dtype=torch.float64):
        kwargs = {"lr": 0.01, **oi.kwargs} if name == "SGD" and "lr" not in oi.kwargs else dict(oi.kwargs)
        what = f"{name}({describe(kwargs)}) [{oi.desc}]"
        try:
            ours(_params(device), **kwargs)
        except Exception as err:  # noqa: BLE001 - classified here
            if not clear_refusal(err, (name,), tuple(kwargs)):
                report.add(Outcome("crashed", f"{type(err).__name__}: {err}"), what)
                continue
            report.add(Outcome("refused", str(err)), what)
            # torch's state with that option, loaded into ours built from what we do support
            pt = _params(device)
            topt = theirs(pt, **kwargs)
            _steps(topt, pt, 2)
            state = copy.deepcopy(topt.state_dict())
            plain = {k: v for k, v in kwargs.items() if k == "lr" and not isinstance(v, torch.Tensor)}
            mine = ours(_params(device), **{**({"lr": 0.01} if name == "SGD" else {}), **plain})
            loads.add(_expect_error(lambda: mine.load_state_dict(state), (name,)), f"load of {what}")
            continue
        report.add(_guard(lambda: _trajectory(ours, theirs, kwargs, device)), what)
        trips.add(_guard(lambda: _round_trip(ours, theirs, kwargs, device)), f"dlcourse -> torch.optim: {what}")
        trips.add(_guard(lambda: _round_trip(theirs, ours, kwargs, device)), f"torch.optim -> dlcourse: {what}")
    for r in (report, trips, loads):
        if r.counts:
            r.check()
    assert trips.counts["passed"] > 0, f"{name}: no configuration ran the round trip"


@pytest.fixture(scope="module", autouse=True)
def _print_tally():
    """After the module, print the tally per op and module (shown with ``pytest -s``)."""
    yield
    if TALLY:
        width = max(len(k) for k in TALLY)
        print("\nconformance tally:", " ".join(f"{o:>8}" for o in OUTCOMES))
        for key in sorted(TALLY):
            print(f"  {key:<{width}} " + " ".join(f"{TALLY[key][o]:>8}" for o in OUTCOMES))

