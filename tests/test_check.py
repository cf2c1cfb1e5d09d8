"""dlcourse.check, the checking API of the labs: every failure kind gives its documented
one-sentence message, passes pass, tolerances behave, forbid() catches every way of calling a
forbidden function (and nothing else), and check_function(grad=True) catches wrong gradients."""

from __future__ import annotations

import doctest
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from torch import sigmoid as aliased_sigmoid

import dlcourse.check as check_module
from dlcourse import functional as DF
from dlcourse.check import CheckError, ForbiddenCallError, check_function, close, equal, forbid, passed, shape


def message(call, *args, **kwargs) -> str:
    """The message of the CheckError that call(*args, **kwargs) must raise."""
    with pytest.raises(CheckError) as info:
        call(*args, **kwargs)
    text = str(info.value)
    assert "\n" not in text, "a check message is one sentence on one line"
    return text


def test_error_classes():
    assert issubclass(CheckError, AssertionError)  # nbgrader counts AssertionError as a failed test
    assert issubclass(ForbiddenCallError, CheckError)


def test_module_docstring_example():
    failures, tried = doctest.testmod(check_module, verbose=False)
    assert tried > 0 and failures == 0


# --------------------------------------------------------------------------------------------
# shape
# --------------------------------------------------------------------------------------------

def test_shape_passes_with_wildcards():
    shape(torch.zeros(2, 8, 16, 16), (None, 8, 16, 16))
    shape(torch.zeros(5, 8, 16, 16), [None, 8, 16, 16])
    shape(torch.zeros(3), (3,))
    shape(np.zeros((2, 2)), (2, 2))
    shape([[1, 2, 3]], (1, 3))


@pytest.mark.parametrize(
    ("got", "expected", "text"),
    [
        ((2, 8, 16), (None, 8, 16, 16), "conv output: wrong shape: expected (N, 8, 16, 16), got (2, 8, 16)"),
        ((2, 8, 15, 16), (None, 8, 16, 16), "conv output: wrong shape: expected (N, 8, 16, 16), got (2, 8, 15, 16)"),
        ((4,), (3,), "conv output: wrong shape: expected (3), got (4,)"),
        ((), (1,), "conv output: wrong shape: expected (1), got ()"),
    ],
)
def test_shape_message(got, expected, text):
    assert message(shape, torch.zeros(got), expected, name="conv output") == text


def test_shape_of_none_or_non_numbers():
    assert message(shape, None, (2,), name="y") == "y: expected a value, got None (did the function forget to return?)"
    assert message(shape, object(), (2,), name="y") == "y: expected a tensor or numbers, got object"


# --------------------------------------------------------------------------------------------
# close: passes, then each failure kind in the documented order
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.bool], ids=str)
def test_close_passes_for_equal_values(dtype, device, supported, capsys):
    supported(device, dtype)
    x = torch.tensor([[0, 1, 1], [1, 0, 1]], dtype=dtype, device=device)
    assert close(x.clone(), x, name="y") is None
    assert capsys.readouterr().out == ""  # quiet by default


def test_close_accepts_numbers_lists_arrays_and_grad_tensors():
    close(0.5, 0.5)
    close([1.0, 2.0], np.array([1.0, 2.0]))
    w = torch.ones(3, requires_grad=True)
    close(w * 2, torch.full((3,), 2.0))
    close(torch.zeros(0, 4), torch.zeros(0, 4))  # nothing to compare is not a failure


def test_close_prints_a_confirmation_when_not_quiet(capsys):
    close(torch.ones(2), torch.ones(2), name="sigmoid(x)", quiet=False)
    assert capsys.readouterr().out == "\u2714 sigmoid(x) matches the reference\n"


def test_passed_prints_one_line(capsys):
    passed("exercise 1")
    assert capsys.readouterr().out == "\u2714 exercise 1\n"


def test_close_none_returned():
    assert message(close, None, torch.zeros(2), name="sigmoid(x)") == (
        "sigmoid(x): expected a tensor, got None (did the function forget to return?)")
    assert message(close, None, 0.5, name="loss") == "loss: expected a value, got None (did the function forget to return?)"


@pytest.mark.parametrize(("actual", "kind"), [([0.0, 0.0], "list"), (np.zeros(2), "ndarray"), (0.0, "float")])
def test_close_non_tensor_returned(actual, kind):
    assert message(close, actual, torch.zeros(2), name="sigmoid(x)") == f"sigmoid(x): expected a torch.Tensor, got {kind}"


def test_close_non_numeric_value():
    assert message(close, ["a", "b"], [1.0, 2.0], name="y") == "y: expected numbers, got list that is not numeric"


def test_close_wrong_shape():
    assert message(close, torch.zeros(2, 3), torch.zeros(2, 4), name="relu(x)") == (
        "relu(x): wrong shape: expected (2, 4), got (2, 3)")
    assert message(close, torch.zeros(8, 16, 16), torch.zeros(2, 8, 16, 16), name="conv(x)") == (
        "conv(x): wrong shape: expected (2, 8, 16, 16), got (8, 16, 16)")


def test_close_wrong_dtype():
    assert message(close, torch.zeros(3, dtype=torch.float64), torch.zeros(3), name="y") == (
        "y: wrong dtype: expected torch.float32, got torch.float64")
    close(torch.zeros(3, dtype=torch.float64), torch.zeros(3), check_dtype=False)


def test_close_wrong_device():
    # A meta tensor stands in for "a tensor on another device" on machines without a GPU.
    assert message(close, torch.zeros(3, device="meta"), torch.zeros(3), name="y") == (
        "y: on the wrong device: expected cpu, got meta")


def test_close_wrong_device_real(device):
    if device.type == "cpu":
        pytest.skip("needs a second device")
    assert message(close, torch.zeros(3), torch.zeros(3, device=device), name="y").startswith(
        f"y: on the wrong device: expected {device}")
    close(torch.ones(3), torch.ones(3, device=device), check_device=False)


def test_close_values_off_names_the_index_and_both_values():
    expected = torch.arange(6.0).reshape(2, 3)
    actual = expected.clone()
    actual[1, 2] += 0.5
    assert message(close, actual, expected, name="y") == (
        "y: values off by up to 0.5 at index (1, 2) (expected 5, got 5.5; "
        "1 of 6 entries outside rtol=1.3e-06, atol=1e-05)")


def test_close_values_off_reports_the_worst_entry():
    expected = torch.zeros(2, 4)
    actual = expected.clone()
    actual[0, 1] = 0.1
    actual[1, 3] = -0.7
    actual[1, 0] = 0.3
    text = message(close, actual, expected, name="y")
    assert "off by up to 0.7 at index (1, 3)" in text and "got -0.7" in text and "3 of 8 entries" in text


def test_close_values_off_for_a_scalar_has_no_index():
    text = message(close, torch.tensor(1.5), torch.tensor(1.0), name="loss")
    assert text.startswith("loss: values off by up to 0.5 (expected 1, got 1.5;")


def test_close_nan_where_a_number_was_expected():
    assert message(close, torch.tensor([1.0, math.nan]), torch.tensor([1.0, 2.0]), name="y") == (
        "y: got NaN at index (1,) where 2 was expected")


def test_close_number_where_nan_was_expected():
    assert message(close, torch.tensor([1.0, 2.0]), torch.tensor([math.nan, 2.0]), name="y") == (
        "y: expected NaN at index (0,), got 1")


def test_close_nan_matches_nan_in_the_same_place():
    close(torch.tensor([math.nan, 2.0]), torch.tensor([math.nan, 2.0]))


def test_close_infinities():
    close(torch.tensor([math.inf, -math.inf]), torch.tensor([math.inf, -math.inf]))
    assert "at index (0,)" in message(close, torch.tensor([-math.inf]), torch.tensor([math.inf]))
    assert "at index (0,)" in message(close, torch.tensor([1e30]), torch.tensor([math.inf]))
    assert "at index (0,)" in message(close, torch.tensor([math.inf]), torch.tensor([1e30]))


def test_close_complex_values_compare_both_parts():
    close(torch.tensor([1 + 2j, -1j]), torch.tensor([1 + 2j, -1j]))
    assert message(close, torch.tensor([1 + 1j, 0j]), torch.tensor([1 + 2j, 0j]), name="z").startswith(
        "z: values off by up to 1 at index (0,) (expected 1+2j, got 1+1j;")


def test_close_integer_values_must_match_exactly():
    assert message(close, torch.tensor([1, 2, 3]), torch.tensor([1, 2, 4]), name="labels") == (
        "labels: values differ at index (2,): expected 4, got 3")
    assert message(close, torch.tensor([[True, False]]), torch.tensor([[True, True]]), name="mask") == (
        "mask: values differ at index (0, 1): expected True, got False")
    assert message(close, torch.tensor(3), torch.tensor(4), name="n") == "n: values differ: expected 4, got 3"


@pytest.mark.parametrize(
    ("dtype", "ok", "bad"),
    [
        (torch.float64, 1e-8, 1e-6),   # default rtol=atol=1e-7
        (torch.float32, 1e-6, 1e-4),   # default rtol=1.3e-6, atol=1e-5
        (torch.bfloat16, 1e-2, 1e-1),  # default rtol=1.6e-2, atol=1e-2
        (torch.float16, 1e-3, 1e-2),   # default rtol=atol=1e-3
    ],
    ids=str,
)
def test_close_default_tolerance_follows_the_dtype(dtype, ok, bad):
    expected = torch.tensor([1.0, 0.0, -2.0], dtype=dtype)
    close(expected + torch.tensor([ok, 0.0, 0.0]).to(dtype), expected)
    with pytest.raises(CheckError, match="values off"):
        close(expected + torch.tensor([bad, 0.0, 0.0]).to(dtype), expected)


def test_close_explicit_tolerances():
    expected = torch.tensor([10.0, 0.0])
    close(torch.tensor([10.0, 0.009]), expected, atol=0.01)
    assert "atol=0.01" in message(close, torch.tensor([10.0, 0.011]), expected, atol=0.01)
    close(torch.tensor([10.9, 0.0]), expected, rtol=0.1, atol=0.0)
    assert "rtol=0.1" in message(close, torch.tensor([11.1, 0.0]), expected, rtol=0.1, atol=0.0)


def test_close_tolerance_follows_the_less_precise_of_the_two_values():
    # A correct float32 computation checked against a float64 (or Python float) reference must
    # get float32's tolerance, not float64's.
    x = torch.linspace(0, 5, 1001, dtype=torch.float64)
    close(torch.exp(x.float()), torch.exp(x), check_dtype=False)
    close(torch.exp(torch.tensor(5.0)), math.exp(5.0))
    # ... and still catches a wrong one.
    with pytest.raises(CheckError, match="values off"):
        close(torch.exp(x.float()) * (1 + 1e-4), torch.exp(x), check_dtype=False)


# --------------------------------------------------------------------------------------------
# equal
# --------------------------------------------------------------------------------------------

def test_equal_passes():
    equal(10, 10)
    equal(torch.tensor(10), 10)
    equal(np.int64(10), 10)
    equal(torch.zeros(2, 3).shape, (2, 3))
    equal("relu", "relu")
    equal(torch.tensor([1, 2]), torch.tensor([1, 2]))
    equal(np.array([1, 2]), [1, 2])
    equal(torch.tensor([1, 2]), (1, 2))


def test_equal_integer_mismatch():
    assert message(equal, 11, 10, name="n_params") == "n_params: expected 10, got 11"
    assert message(equal, torch.tensor([1, 2, 4]), torch.tensor([1, 2, 3]), name="labels") == (
        "labels: values differ at index (2,): expected 3, got 4")
    assert "values differ at index (1,)" in message(equal, np.array([1, 3]), [1, 2], name="labels")


def test_equal_is_exact_for_floats():
    with pytest.raises(CheckError, match="values off"):
        equal(torch.tensor([1.0 + 1e-6]), torch.tensor([1.0]))


def test_equal_wrong_kinds():
    assert message(equal, None, 10, name="n") == "n: expected 10, got None (did the function forget to return?)"
    assert message(equal, "10", 10, name="n") == "n: expected a number, got str"
    assert message(equal, True, 1, name="n") == "n: expected a number, got bool"
    assert message(equal, torch.zeros(2, 4).shape, (2, 3), name="shape") == (
        "shape: expected (2, 3), got torch.Size([2, 4])")
    assert message(equal, "tanh", "relu", name="act") == "act: expected 'relu', got 'tanh'"


# --------------------------------------------------------------------------------------------
# forbid
# --------------------------------------------------------------------------------------------

def from_scratch_sigmoid(x):
    return 1 / (1 + torch.exp(-x))


def uses_torch_sigmoid(x):
    return torch.sigmoid(x)


def calls_dlcourse_indirectly(x):
    return from_scratch_sigmoid(x) + DF.relu(x)


SIGMOID_SHORTCUTS = ("torch.sigmoid", "torch.Tensor.sigmoid", "torch.nn.functional.sigmoid")


@pytest.mark.parametrize(
    ("targets", "call", "label"),
    [
        (["torch.sigmoid"], uses_torch_sigmoid, "torch.sigmoid"),
        (["torch.sigmoid"], lambda x: aliased_sigmoid(x), "torch.sigmoid"),
        ([torch.sigmoid], uses_torch_sigmoid, "torch.sigmoid"),
        ([torch.Tensor.sigmoid], lambda x: x.sigmoid(), "torch.Tensor.sigmoid"),
        ([TF.relu], lambda x: TF.relu(x), "torch.nn.functional.relu"),
        (["torch.Tensor.sigmoid"], lambda x: x.sigmoid(), "torch.Tensor.sigmoid"),
        (["torch.Tensor.sigmoid"], lambda x: torch.Tensor.sigmoid(x), "torch.Tensor.sigmoid"),
        (["torch.Tensor.sigmoid"], lambda x: torch.nn.Parameter(x).sigmoid(), "torch.Tensor.sigmoid"),
        (["torch.nn.functional.sigmoid"], lambda x: TF.sigmoid(x), "torch.nn.functional.sigmoid"),
        (["torch.nn.functional.relu"], lambda x: TF.relu(x), "torch.nn.functional.relu"),
        (["torch.nn.functional.softmax"], lambda x: TF.softmax(x, dim=0), "torch.nn.functional.softmax"),
        (["torch.nn.functional.max_pool2d"], lambda x: TF.max_pool2d(x.view(1, 1, 2, 3), 2), "torch.nn.functional.max_pool2d"),
        (["dlcourse.functional.relu"], calls_dlcourse_indirectly, "dlcourse.functional.relu"),
        ([DF.relu], calls_dlcourse_indirectly, "dlcourse.functional.relu"),
        ([*SIGMOID_SHORTCUTS, "torch.exp"], from_scratch_sigmoid, "torch.exp"),
    ],
    ids=["direct", "alias", "object", "method-object", "F-object", "method", "unbound-method", "parameter-method", "F.sigmoid", "F.relu",
         "F.softmax", "F.max_pool2d", "dlcourse-by-name", "dlcourse-by-object", "one-of-many"],
)
def test_forbid_catches_every_way_of_calling(targets, call, label):
    x = torch.randn(6)
    with pytest.raises(ForbiddenCallError) as info:
        with forbid(*targets):
            call(x)
    assert str(info.value) == f"your code calls {label}, which this exercise forbids: write it yourself from the formula"


@pytest.mark.parametrize(
    ("targets", "call"),
    [
        (SIGMOID_SHORTCUTS, from_scratch_sigmoid),
        (SIGMOID_SHORTCUTS, DF.sigmoid),
        (["torch.Tensor.sigmoid"], lambda x: x.exp()),
        (["dlcourse.functional.relu"], DF.leaky_relu),
        (["torch.nn.functional.max_pool2d"], lambda x: TF.max_pool1d(x.view(1, 2, 3), 2)),
        (["torch.nn.functional.max_pool2d"], lambda x: TF.adaptive_max_pool2d(x.view(1, 1, 2, 3), 1)),
    ],
    ids=["scratch", "dlcourse-sigmoid", "other-method", "other-dlcourse", "sibling-max_pool1d", "sibling-adaptive"],
)
def test_forbid_does_not_fire_when_the_function_is_not_called(targets, call):
    x = torch.randn(6)
    with forbid(*targets):
        y = call(x)
    assert y is not None  # the block's results are there as usual


def test_forbid_ignores_calls_outside_the_block():
    x = torch.randn(3)
    torch.sigmoid(x)
    with forbid("torch.sigmoid"):
        y = from_scratch_sigmoid(x)
    torch.sigmoid(y)


def test_forbid_custom_reason():
    with pytest.raises(ForbiddenCallError, match=r"forbids: build it from torch\.exp$"):
        with forbid("torch.sigmoid", reason="build it from torch.exp"):
            torch.sigmoid(torch.zeros(1))


def test_forbid_restores_and_keeps_feeding_the_previous_profiler():
    events = []

    def previous(frame, event, arg):
        events.append(event)

    old = sys.getprofile()
    sys.setprofile(previous)
    try:
        with forbid("torch.sigmoid"):
            from_scratch_sigmoid(torch.zeros(2))
        assert sys.getprofile() is previous
        assert "c_call" in events  # the previous profiler still saw the calls made inside the block
        with pytest.raises(ForbiddenCallError):
            with forbid("torch.sigmoid"):
                torch.sigmoid(torch.zeros(2))
        assert sys.getprofile() is previous
        with pytest.raises(KeyError):  # an error inside the block propagates unchanged
            with forbid("torch.sigmoid"):
                raise KeyError("student bug")
        assert sys.getprofile() is previous
    finally:
        sys.setprofile(old)


def test_forbid_leaves_no_profiler_when_there_was_none():
    old = sys.getprofile()
    sys.setprofile(None)
    try:
        with forbid("torch.sigmoid"):
            pass
        assert sys.getprofile() is None
    finally:
        sys.setprofile(old)


def test_nested_forbids_both_apply():
    x = torch.zeros(2)
    with pytest.raises(ForbiddenCallError, match="torch.exp"):
        with forbid("torch.exp"):
            with forbid("torch.sigmoid"):
                torch.exp(x)
    with pytest.raises(ForbiddenCallError, match="torch.sigmoid"):
        with forbid("torch.exp"):
            with forbid("torch.sigmoid"):
                torch.sigmoid(x)


@pytest.mark.parametrize(
    "bad",
    ["torch.nonexistent", "torch.nn.functional.no_such_thing", "no_such_module.f", "sigmoid", "", "torch..sigmoid",
     "torch.float32", 42],
)
def test_forbid_bad_targets_raise_value_error(bad):
    with pytest.raises(ValueError, match="forbid"):
        with forbid(bad):
            pass


def test_forbid_needs_a_target():
    with pytest.raises(ValueError, match="at least one"):
        with forbid():
            pass


# --------------------------------------------------------------------------------------------
# check_function
# --------------------------------------------------------------------------------------------

def straight_through_sigmoid(x):
    # Right values, wrong slope: the forward pass is sigmoid, the gradient is the identity's.
    return x + (torch.sigmoid(x) - x).detach()


def detached_sigmoid(x):
    return 1 / (1 + torch.exp(-x.detach()))


def detached_softmax(x):
    # Right values, zero gradient; the gradient of sum(softmax) is 0 too, so summing is not enough.
    return torch.softmax(x, dim=-1).detach() + 0 * x


@pytest.mark.parametrize("grad", [False, True])
def test_check_function_passes_a_correct_function(grad, device):
    x = torch.randn(4, 5, device=device)
    check_function(DF.sigmoid, torch.sigmoid, x, grad=grad)
    check_function(DF.softmax, torch.softmax, x, 0, grad=grad)  # non-tensor arguments pass through
    w, b = torch.randn(3, 5, device=device), torch.randn(3, device=device)
    check_function(DF.linear, TF.linear, x, w, b, grad=grad)


def test_check_function_wrong_values():
    x = torch.randn(4, 5)
    text = message(check_function, lambda t: 1 / (1 + torch.exp(t)), torch.sigmoid, x, name="sigmoid")
    assert text.startswith("sigmoid(...): values off by up to")


def test_check_function_names_the_function_by_default():
    text = message(check_function, straight_through_sigmoid, torch.sigmoid, torch.randn(3), grad=True)
    assert "straight_through_sigmoid" in text


def test_check_function_none_returned():
    text = message(check_function, lambda t: None, torch.sigmoid, torch.randn(3), name="sigmoid")
    assert text == "sigmoid(...): expected a tensor, got None (did the function forget to return?)"


def test_check_function_detach_passes_values_but_fails_the_gradient_check():
    x = torch.randn(4, 5)
    check_function(detached_sigmoid, torch.sigmoid, x, name="sigmoid")
    text = message(check_function, detached_sigmoid, torch.sigmoid, x, name="sigmoid", grad=True)
    assert text.startswith("sigmoid: the output carries no gradient")


def test_check_function_catches_right_values_with_wrong_gradient():
    x = torch.randn(4, 5)
    check_function(straight_through_sigmoid, torch.sigmoid, x, name="sigmoid")
    text = message(check_function, straight_through_sigmoid, torch.sigmoid, x, name="sigmoid", grad=True)
    assert text.startswith("gradient of sigmoid with respect to argument 0: values off")


def test_check_function_gradient_is_not_just_that_of_the_sum():
    x = torch.randn(4, 5)
    text = message(check_function, detached_softmax, lambda t: torch.softmax(t, dim=-1), x, name="softmax", grad=True)
    assert text.startswith("gradient of softmax with respect to argument 0")


def test_check_function_missing_gradient_for_one_argument():
    x, w, b = torch.randn(4, 5), torch.randn(3, 5), torch.randn(3)
    text = message(check_function, lambda x, w, b: DF.linear(x, w.detach(), b), TF.linear, x, w, b,
                   name="linear", grad=True)
    assert text == "gradient of linear with respect to argument 1: got no gradient (None); is it detached or unused?"


def test_check_function_gives_each_function_its_own_copy_of_the_inputs():
    def zeroes_its_input(t):
        t.zero_()  # the student's bug: the reference must not see this
        return torch.sigmoid(t)

    x = torch.randn(4, 5)
    before = x.clone()
    with pytest.raises(CheckError, match="values off"):
        check_function(zeroes_its_input, torch.sigmoid, x)
    assert torch.equal(x, before), "check_function must not change the caller's tensors"


def test_check_function_passes_tolerances_through():
    x = torch.randn(4, 5)
    nearly = lambda t: torch.sigmoid(t) + 1e-3  # noqa: E731
    with pytest.raises(CheckError):
        check_function(nearly, torch.sigmoid, x)
    check_function(nearly, torch.sigmoid, x, atol=1e-2)
