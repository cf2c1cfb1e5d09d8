"""Known mistakes (issue 22): the checks recognise the common wrong answers and name them.

Three parts. The API of ``dlcourse.check`` (``Mistake``, ``mistakes=`` of ``close``, ``equal`` and
``check_function``): a value that fails and matches a mistake gets its hint and ``.mistake``; a
correct value never does; any other wrong value gets the generic message.

Then every lab's catalogue (``MISTAKES`` in its locked set-up cell, keyed by the function the
student writes, each entry a function of that function's arguments): for every catalogued
mistake, the lab's test cells (visible and hidden, with their fresh random inputs) are run on
a student's function that makes that mistake, and the failure must name it (in the test cell's
output as the autograded notebook shows it, and counted once in the report's table); the
solution passes; a solution with noise added fails with the generic message. Plus a few wrong
solutions written the way a student writes them (the flipped kernel of ``corr2d`` as loops),
to show the catalogue entry is the mistake and not just a copy of itself.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
import torch

from dlcourse import check

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")

HINT = "you computed a true convolution (kernel flipped); deep-learning layers compute the cross-correlation"


# ---------------------------------------------------------------------------------------------
# The API
# ---------------------------------------------------------------------------------------------

def corr(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.conv2d(x[None, None], k[None, None])[0, 0]


def catalogue(x: torch.Tensor, k: torch.Tensor) -> list[check.Mistake]:
    return [check.Mistake("kernel_flipped", lambda: corr(x, k.flip(0, 1)), HINT),
            check.Mistake("size_too_large", (x.shape[0] - k.shape[0] + 2, x.shape[1] - k.shape[1] + 2),
                          "your output is one row and column too large", shape_only=True)]


def test_a_value_that_matches_a_mistake_gets_its_hint_and_id():
    x, k = torch.randn(6, 7), torch.randn(3, 3)
    with pytest.raises(check.CheckError) as info:
        check.close(corr(x, k.flip(0, 1)), corr(x, k), name="corr2d(x, k)", mistakes=catalogue(x, k))
    assert str(info.value) == f"corr2d(x, k): {HINT}"
    assert info.value.mistake == "kernel_flipped"


def test_the_named_mistake_reveals_no_reference_value():
    x, k = torch.randn(6, 7), torch.randn(3, 3)
    with pytest.raises(check.CheckError) as info:
        check.close(corr(x, k.flip(0, 1)), corr(x, k), name="the output", mistakes=catalogue(x, k))
    assert not re.search(r"\d", str(info.value))  # no number at all, so no value of the reference


def test_a_shape_mistake_is_recognised_by_its_shape():
    x, k = torch.randn(6, 7), torch.randn(3, 3)
    with pytest.raises(check.CheckError, match="one row and column too large") as info:
        check.close(torch.zeros(5, 6), corr(x, k), name="corr2d", mistakes=catalogue(x, k))
    assert info.value.mistake == "size_too_large"
    with pytest.raises(check.CheckError, match="wrong shape") as info:  # too small: not catalogued
        check.close(torch.zeros(3, 4), corr(x, k), name="corr2d", mistakes=catalogue(x, k))
    assert info.value.mistake is None


def test_a_correct_value_never_triggers_a_mistake():
    x, k = torch.randn(6, 7), torch.randn(3, 3)
    computed = []
    mistakes = [check.Mistake("kernel_flipped", lambda: computed.append(1) or corr(x, k.flip(0, 1)), HINT)]
    check.close(corr(x, k), corr(x, k), name="corr2d", mistakes=mistakes)
    assert computed == []  # not even computed: mistakes are looked at only when the check fails


def test_a_random_wrong_value_gets_the_generic_message():
    x, k = torch.randn(6, 7), torch.randn(3, 3)
    with pytest.raises(check.CheckError, match=r"values off by up to .* at index") as info:
        check.close(corr(x, k) + torch.randn(4, 5), corr(x, k), name="corr2d", mistakes=catalogue(x, k))
    assert info.value.mistake is None


def test_a_mistake_that_equals_the_reference_on_these_inputs_is_not_named():
    # A symmetric kernel: flipping changes nothing, so a wrong value cannot be the flipped one.
    x, k = torch.randn(6, 7), torch.ones(3, 3)
    wrong = corr(x, k) + 1
    with pytest.raises(check.CheckError, match="values off") as info:
        check.close(wrong, corr(x, k), name="corr2d",
                    mistakes=[check.Mistake("kernel_flipped", lambda: wrong * 0 + corr(x, k), HINT)])
    assert info.value.mistake is None


def test_dtype_device_and_none_errors_are_never_taken_for_a_mistake():
    x, k = torch.randn(6, 7), torch.randn(3, 3)
    flipped = corr(x, k.flip(0, 1))
    for wrong, says in [(flipped.double(), "wrong dtype"), (None, "forget to return"), (flipped.tolist(), "torch.Tensor")]:
        with pytest.raises(check.CheckError, match=says) as info:
            check.close(wrong, corr(x, k), name="corr2d", mistakes=catalogue(x, k))
        assert info.value.mistake is None


def test_a_dict_catalogue_and_equal():
    mistakes = {"no_floor": (7, "the size is not an integer: round down"), "no_bias": (lambda: 12, "no bias")}
    with pytest.raises(check.CheckError, match="^n: the size is not an integer") as info:
        check.equal(7, 6, name="n", mistakes=mistakes)
    assert info.value.mistake == "no_floor"
    with pytest.raises(check.CheckError, match="no bias"):
        check.equal(12, 6, name="n", mistakes=mistakes)
    with pytest.raises(check.CheckError, match="expected 6, got 5") as info:
        check.equal(5, 6, name="n", mistakes=mistakes)
    assert info.value.mistake is None
    check.equal(6, 6, name="n", mistakes=mistakes)


def test_check_function_computes_mistakes_from_the_inputs():
    x = torch.randn(4, 5)
    mistakes = {"sign_flipped": (lambda t: -torch.sigmoid(t).neg_().neg_(), "sign flipped")}  # in place: a copy
    with pytest.raises(check.CheckError, match=r"^f\(\.\.\.\): sign flipped$") as info:
        check.check_function(lambda t: -torch.sigmoid(t), torch.sigmoid, x, name="f", mistakes=mistakes)
    assert info.value.mistake == "sign_flipped"
    check.check_function(torch.sigmoid, torch.sigmoid, x, name="f", mistakes=mistakes)


def test_a_mistake_that_cannot_be_computed_for_these_inputs_is_skipped():
    mistakes = [check.Mistake("broken", lambda: torch.zeros(2) @ torch.zeros(3), "never"),
                check.Mistake("doubled", lambda: torch.ones(3) * 2, "doubled")]
    with pytest.raises(check.CheckError, match="doubled"):
        check.close(torch.ones(3) * 2, torch.ones(3), mistakes=mistakes)


def test_bad_catalogues_get_clear_errors():
    with pytest.raises(ValueError, match="expected an id"):
        check.Mistake("kernel flipped", 0, "hint")
    with pytest.raises(ValueError, match="one-sentence hint"):
        check.Mistake("flipped", 0, "")
    with pytest.raises(ValueError, match=r"mistakes\['x'\]"):
        check.close(torch.ones(2), torch.zeros(2), mistakes={"x": 3})
    with pytest.raises(ValueError, match="Mistake objects"):
        check.close(torch.ones(2), torch.zeros(2), mistakes=["flipped"])


# ---------------------------------------------------------------------------------------------
# The catalogues of the labs
# ---------------------------------------------------------------------------------------------

LABS = sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir())
SKIP_SOLUTIONS = {"train_cnn", "train_recall", "train_autoencoder", "train_lm"}  # training runs: not needed here


def meta(cell: Any) -> dict[str, Any]:
    return cell.get("metadata", {}).get("nbgrader", {})


def transform(code: str) -> str:
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(code)


def lab_cells(lab: str) -> list[Any]:
    return [c for c in nbformat.read(ROOT / "solutions" / lab / f"{lab}.ipynb", as_version=4).cells
            if c.cell_type == "code"]


def catalogue_keys(lab: str) -> list[str]:
    """The functions a lab catalogues mistakes for: the keys of MISTAKES in its set-up cells."""
    keys = []
    for cell in lab_cells(lab):
        if meta(cell).get("locked") and "MISTAKES = {" in cell.source:
            body = cell.source.split("MISTAKES = {", 1)[1]
            keys += re.findall(r'^    "(\w+)": lambda', body, flags=re.M)
    return keys


CASES = [(lab, key) for lab in LABS for key in catalogue_keys(lab)]


_NAMESPACES: dict[str, dict[str, Any]] = {}


def namespace(lab: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The lab's set-up and solution cells run in one namespace (once per lab). The functions of its
    set-up cells look their globals up there: change it with ``monkeypatch.setitem`` only."""
    monkeypatch.chdir(ROOT / "solutions" / lab)
    if lab not in _NAMESPACES:
        ns: dict[str, Any] = {"__name__": "__main__"}
        for cell in lab_cells(lab):
            m = meta(cell)
            if (m.get("locked") and not m.get("grade")) or (m.get("solution") and m.get("grade_id") not in SKIP_SOLUTIONS):
                exec(compile(transform(cell.source), f"<{lab}:{m.get('grade_id')}>", "exec"), ns)  # noqa: S102
        _NAMESPACES[lab] = ns
    return _NAMESPACES[lab]


def cells_calling(lab: str, function: str) -> list[tuple[str, str]]:
    """(grade_id, source) of the graded test cells that call ``function`` (visible and hidden parts)."""
    names = [function]  # the function, and the helpers of the set-up cells that call it
    for cell in lab_cells(lab):
        if meta(cell).get("locked") and not meta(cell).get("grade") and calls(cell.source, function):
            names += [n for n in re.findall(r"^def (\w+)", cell.source, flags=re.M) if calls(cell.source, n, function)]
    return [(meta(c)["grade_id"], c.source) for c in lab_cells(lab)
            if meta(c).get("grade") and any(calls(c.source, n) for n in names)]


def calls(source: str, function: str, inside: str | None = None) -> bool:
    """Whether ``source`` calls ``function`` or passes it on (or, with ``inside``, whether ``function``
    is defined there with a body that does)."""
    if inside is None:
        return re.search(rf"(?<![\w.]){function}\b", source) is not None
    body = re.search(rf"^def {function}\(.*?(?=^\S|\Z)", source, flags=re.M | re.S)
    return body is not None and calls(body.group(0), inside)


def run_tests(lab: str, function: str, ns: dict[str, Any]) -> list[tuple[str, BaseException | None]]:
    out = []
    for gid, source in cells_calling(lab, function):
        try:
            exec(compile(transform(source), f"<{lab}:{gid}>", "exec"), dict(ns))  # noqa: S102
        except Exception as err:  # noqa: BLE001 (the outcome is what is tested)
            out.append((gid, err))
        else:
            out.append((gid, None))
    return out


def ids_of(mistakes: list[check.Mistake]) -> list[str]:
    return [m.id for m in mistakes]


@pytest.mark.parametrize(("lab", "function"), CASES, ids=[f"{lab[:5]}-{f}" for lab, f in CASES])
def test_every_catalogued_mistake_is_named_by_the_lab_tests(lab, function, monkeypatch, tmp_path):
    ns = namespace(lab, monkeypatch)
    solution, catalogue = ns[function], ns["MISTAKES"][function]
    assert cells_calling(lab, function), f"no test cell of {lab} calls {function}"
    seen: dict[str, None] = {}

    def spy(*args: Any, **kwargs: Any) -> Any:
        profiler = sys.getprofile()  # the test's check.forbid: the catalogue may use torch's functions
        sys.setprofile(None)
        try:
            for m in catalogue(*args, **kwargs):
                seen.setdefault(m.id)
        finally:
            sys.setprofile(profiler)
        return solution(*args, **kwargs)

    torch.manual_seed(22)
    monkeypatch.setitem(ns, function, spy)
    # 1. The solution passes every test that calls it: a correct answer never triggers a mistake.
    for gid, err in run_tests(lab, function, ns):
        assert err is None, f"{gid} fails on the solution: {err}"
    assert len(seen) >= 1, f"{lab}: MISTAKES[{function!r}] is empty"
    # 2. Each mistake, made by the student's function on every call where it applies, is named.
    named: dict[str, list[tuple[str, BaseException]]] = {}
    for mistake_id in seen:
        applied, hints = [], set()

        def wrong(*args: Any, mistake_id: str = mistake_id, **kwargs: Any) -> Any:
            profiler = sys.getprofile()  # the test's check.forbid: the catalogue may use torch's functions
            sys.setprofile(None)
            try:
                (m,) = [m for m in catalogue(*args, **kwargs) if m.id == mistake_id]
                hints.add(m.hint)
                value = m.value()
            except Exception:  # noqa: BLE001 (this mistake cannot happen for these inputs)
                value = None
            finally:
                sys.setprofile(profiler)
            if value is None or m.shape_only:
                value = shape_mistake(solution(*args, **kwargs), value) if m.shape_only else None
            if value is None:
                return solution(*args, **kwargs)
            applied.append(True)
            return value

        torch.manual_seed(22)
        monkeypatch.setitem(ns, function, wrong)
        outcomes = run_tests(lab, function, ns)
        assert applied, f"{lab}: mistake {function}.{mistake_id} never applies to the inputs of its tests"
        failures = [(gid, err) for gid, err in outcomes if err is not None]
        assert failures, f"{lab}: {function} with mistake {mistake_id} passes every test"
        for gid, err in failures:
            assert isinstance(err, check.CheckError), f"{gid}: {type(err).__name__}: {err}"
            assert err.mistake == mistake_id, f"{gid}: {function} with mistake {mistake_id} got: {err}"
            (hint,) = hints
            assert str(err).endswith(": " + hint)
        named[mistake_id] = failures
    # 3. As graded: the autograded notebook shows the message, and the report counts each mistake.
    assert_graded_and_counted(lab, named, tmp_path)
    # 4. A wrong answer that is no known mistake gets the generic message.
    monkeypatch.setitem(ns, function, noisy(solution))
    torch.manual_seed(22)
    failures = [(gid, err) for gid, err in run_tests(lab, function, ns) if err is not None]
    assert failures, f"{lab}: {function} with noise added passes"
    for gid, err in failures:
        assert isinstance(err, check.CheckError) and err.mistake is None, f"{gid}: {err!r}"


def assert_graded_and_counted(lab: str, named: dict[str, list[tuple[str, BaseException]]], course: Path) -> None:
    """One student per mistake, failing the tests as the judge records them (``one_line`` of the
    error, ``.mistake``): the test cell's output shows the message, and the report counts each once."""
    import json

    from dlcourse_tools.grading.autograde import _outputs
    from dlcourse_tools.grading.judge import one_line
    from dlcourse_tools.grading.report import mistake_lines, mistakes

    graded = {}
    for mistake_id, failures in named.items():
        tests = {}
        for gid, err in failures:
            (output,) = _outputs("", one_line(err))
            assert output.output_type == "error" and output.ename == "CheckError"
            assert output.evalue == " ".join(str(err).split()), output.evalue
            tests[gid] = {"score": 0.0, "points": 1.0, "error": one_line(err), "mistake": err.mistake}
        graded[f"made_{mistake_id}"] = {"tests": tests}
    (course / "grading").mkdir(exist_ok=True)
    (course / "grading" / f"{lab}.json").write_text(json.dumps({"autograde": graded}))
    n, counts, _ = mistakes(course, lab)
    assert n == len(named)
    assert {(t, m): c for t, counter in counts.items() for m, c in counter.items()} == \
        {(gid, m): 1 for m, failures in named.items() for gid, _ in failures}
    table = "\n".join(mistake_lines(course, lab))
    for mistake_id, failures in named.items():
        for gid, _ in failures:
            assert f"| {gid} | {mistake_id} | 1 |" in table, table


def shape_mistake(correct: Any, wanted: Any) -> Any:
    """A value of the mistaken shape (``wanted``: a shape or a value having it): zeros."""
    shape = tuple(wanted.shape) if isinstance(wanted, torch.Tensor) else wanted
    if not isinstance(correct, torch.Tensor) or not isinstance(shape, tuple):
        return None
    return torch.zeros(shape, dtype=correct.dtype, device=correct.device)


def noisy(solution: Any) -> Any:
    """The solution with a random term added to every floating-point or integer result."""
    def add(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value + (0.37 + torch.rand_like(value))
        if isinstance(value, torch.Tensor) and value.dtype == torch.bool and value.numel() > 1:
            flip = torch.zeros(value.numel(), dtype=torch.bool)
            flip[torch.randperm(value.numel())[:2]] = True  # two random entries flipped
            return value ^ flip.reshape(value.shape).to(value.device)
        if isinstance(value, int) and not isinstance(value, bool):
            return value + 7919
        if isinstance(value, float):
            return value + 0.37
        if isinstance(value, (list, tuple)):
            return type(value)(add(v) for v in value)
        return value

    return lambda *args, **kwargs: add(solution(*args, **kwargs))


# ---------------------------------------------------------------------------------------------
# Wrong solutions as students write them (not computed from the catalogue)
# ---------------------------------------------------------------------------------------------

WRITTEN = [
    ("lab01_perceptron", "sigmoid", "sign_flipped", '''
def sigmoid(x):
    return 1 / (1 + torch.exp(x))
'''),
    ("lab01_perceptron", "tanh_grad", "one_minus_tanh", '''
def tanh_grad(x):
    return 1 - tanh(x)
'''),
    ("lab01_perceptron", "relu_grad", "one_at_zero", '''
def relu_grad(x):
    return (x >= 0).to(x.dtype)
'''),
    ("lab01_perceptron", "dense", "no_bias", '''
def dense(x, weight, bias=None):
    return x @ weight.T
'''),
    ("lab02_backprop", "softmax_ce_grad", "summed", '''
def softmax_ce_grad(logits, target):
    e = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
    return e / e.sum(dim=1, keepdim=True) - F.one_hot(target, logits.shape[1]).to(logits.dtype)
'''),
    ("lab02_backprop", "softmax_ce_grad", "overflow", '''
def softmax_ce_grad(logits, target):
    e = torch.exp(logits)
    return (e / e.sum(dim=1, keepdim=True) - F.one_hot(target, logits.shape[1]).to(logits.dtype)) / len(logits)
'''),
    ("lab02_backprop", "adam_step", "no_bias_correction", '''
def adam_step(param, grad, m, v, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    m = betas[0] * m + (1 - betas[0]) * grad
    v = betas[1] * v + (1 - betas[1]) * grad * grad
    return param - lr * m / (v.sqrt() + eps), m, v
'''),
    ("lab02_backprop", "sgd_momentum_step", "momentum_twice", '''
def sgd_momentum_step(params, grads, bufs, lr, momentum):
    new_bufs = [momentum * b + g for b, g in zip(bufs, grads)]
    return [p - lr * (g + momentum * b) for p, g, b in zip(params, grads, new_bufs)], new_bufs
'''),
    ("lab03_convolution", "corr2d", "kernel_flipped", '''
def corr2d(x, kernel):
    kH, kW = kernel.shape
    y = torch.zeros(x.shape[0] - kH + 1, x.shape[1] - kW + 1, dtype=x.dtype, device=x.device)
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            y[i, j] = (x[i:i + kH, j:j + kW] * kernel.flip(0, 1)).sum()
    return y
'''),
    ("lab03_convolution", "corr2d", "one_short", '''
def corr2d(x, kernel):
    kH, kW = kernel.shape
    y = torch.zeros(x.shape[0] - kH, x.shape[1] - kW, dtype=x.dtype, device=x.device)
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            y[i, j] = (x[i:i + kH, j:j + kW] * kernel).sum()
    return y
'''),
    ("lab03_convolution", "conv_out", "no_plus_one", '''
def conv_out(size, k, s=1, p=0):
    return (size + 2 * p - k) // s
'''),
    ("lab04_pooling_cnn", "max_pool2d", "stride_one", '''
def max_pool2d(x, kernel_size, stride=None):
    s = 1 if stride is None else stride
    return x.unfold(2, kernel_size, s).unfold(3, kernel_size, s).amax(dim=(-2, -1))
'''),
    ("lab04_pooling_cnn", "avg_pool2d_backward", "not_divided", '''
def avg_pool2d_backward(x, grad_out, kernel_size, stride=None):
    k, s = kernel_size, kernel_size if stride is None else stride
    H_out, W_out = grad_out.shape[2:]
    grad_x = torch.zeros_like(x)
    for u in range(k):
        for v in range(k):
            grad_x[:, :, u:u + s * (H_out - 1) + 1:s, v:v + s * (W_out - 1) + 1:s] += grad_out
    return grad_x
'''),
    ("lab05_rnn_lstm", "lstm_cell_step", "gates_out_of_order", '''
def lstm_cell_step(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh):
    z_i, z_f, z_o, z_g = (x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh).chunk(4, dim=1)
    c_new = torch.sigmoid(z_f) * c + torch.sigmoid(z_i) * torch.tanh(z_g)
    return torch.sigmoid(z_o) * torch.tanh(c_new), c_new
'''),
    ("lab06_generative", "kl_divergence", "not_halved", '''
def kl_divergence(mu, logvar):
    return (mu**2 + logvar.exp() - 1 - logvar).sum(dim=1)
'''),
    ("lab07_transformers", "attention", "no_scale", '''
def attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
'''),
    ("lab07_transformers", "attention", "softmax_over_queries", '''
def attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-2) @ v
'''),
]


@pytest.mark.parametrize(("lab", "function", "mistake", "source"), WRITTEN,
                         ids=[f"{lab[:5]}-{f}-{m}" for lab, f, m, _ in WRITTEN])
def test_a_mistake_written_by_hand_is_named(lab, function, mistake, source, monkeypatch):
    ns = namespace(lab, monkeypatch)
    mine: dict[str, Any] = {}
    exec(compile(source, f"<{lab}: a student's {function}>", "exec"), ns, mine)  # noqa: S102
    monkeypatch.setitem(ns, function, mine[function])
    torch.manual_seed(22)
    failures = [(gid, err) for gid, err in run_tests(lab, function, ns) if err is not None]
    assert failures, f"{lab}: {function} with mistake {mistake} passes"
    for gid, err in failures:
        assert isinstance(err, check.CheckError) and err.mistake == mistake, f"{gid}: {err!r}"


def test_a_sampler_written_with_the_variance_as_the_std_is_named(monkeypatch):
    ns = namespace("lab06_generative", monkeypatch)
    mine: dict[str, Any] = {}
    exec("def reparameterize(mu, logvar):\n    return mu + torch.exp(logvar) * torch.randn_like(mu)\n", ns, mine)  # noqa: S102
    monkeypatch.setitem(ns, "reparameterize", mine["reparameterize"])
    torch.manual_seed(22)
    failures = [(gid, err) for gid, err in run_tests("lab06_generative", "reparameterize", ns) if err is not None]
    assert failures and all(getattr(err, "mistake", None) == "variance_as_std" for _, err in failures), failures
