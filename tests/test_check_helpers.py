"""check.shortcuts, check.random_tensor and check.derivative: the helpers hidden tests use."""

import pytest
import torch

from dlcourse import check


def test_shortcuts_lists_every_existing_form():
    forms = check.shortcuts("sigmoid")
    for expected in ("torch.sigmoid", "torch.Tensor.sigmoid", "torch.Tensor.sigmoid_",
                     "torch.nn.functional.sigmoid", "dlcourse.functional.sigmoid"):
        assert expected in forms
    assert "torch.special.sigmoid" not in forms  # does not exist, so not listed


@pytest.mark.parametrize("call", [
    lambda x: torch.sigmoid(x), lambda x: x.sigmoid(), lambda x: x.clone().sigmoid_(),
    lambda x: torch.nn.functional.sigmoid(x),
])
def test_forbid_with_shortcuts_catches_every_form(call):
    x = torch.randn(4)
    with pytest.raises(check.ForbiddenCallError, match="sigmoid"):
        with check.forbid(*check.shortcuts("sigmoid")):
            call(x)


def test_forbid_with_shortcuts_allows_the_formula():
    x = torch.randn(4)
    with check.forbid(*check.shortcuts("sigmoid", "tanh")):
        y = 1 / (1 + torch.exp(-x))
    check.close(y, torch.sigmoid(x))


def test_shortcuts_rejects_unknown_and_bad_names():
    with pytest.raises(ValueError, match="no torch or dlcourse function"):
        check.shortcuts("no_such_function_anywhere")
    with pytest.raises(ValueError, match="function name"):
        check.shortcuts("torch.sigmoid")


def test_random_tensor_is_fresh_and_follows_dtype_device_scale():
    a = check.random_tensor(3, 4, dtype=torch.float64, scale=50.0)
    b = check.random_tensor(3, 4, dtype=torch.float64, scale=50.0)
    assert a.shape == (3, 4) and a.dtype == torch.float64 and a.device.type == "cpu"
    assert not torch.equal(a, b)
    big = check.random_tensor(10_000, scale=50.0)
    assert 40 < big.std().item() < 60
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(check.random_tensor(5, generator=g1), check.random_tensor(5, generator=g2))
    with pytest.raises(ValueError):
        check.random_tensor(-1)


def test_derivative_matches_known_derivatives():
    x = check.random_tensor(100, dtype=torch.float64, scale=3.0)
    check.close(check.derivative(torch.sin, x), torch.cos(x))
    s = torch.sigmoid(x)
    check.close(check.derivative(torch.sigmoid, x), s * (1 - s))
    assert not x.requires_grad


def test_derivative_rejects_non_elementwise_functions():
    with pytest.raises(ValueError, match="elementwise"):
        check.derivative(lambda t: t.sum(), torch.randn(3))
    with pytest.raises(TypeError):
        check.derivative(torch.sin, torch.arange(3))
