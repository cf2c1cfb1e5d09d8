"""get_device (explicit choice, the DLCOURSE_DEVICE override, clear errors) and seed_everything."""

from __future__ import annotations

import doctest
import random

import numpy as np
import pytest
import torch

import dlcourse
from dlcourse import device as device_module
from dlcourse.device import ENV_VAR, get_device, seed_everything


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present, so it cannot be unavailable")
needs_no_mps = pytest.mark.skipif(mps_available(), reason="MPS is present, so it cannot be unavailable")


def test_env_var_name_is_the_documented_one():
    assert ENV_VAR == "DLCOURSE_DEVICE"


@pytest.mark.parametrize("preferred", ["cpu", torch.device("cpu")], ids=["str", "torch.device"])
def test_preferred_cpu(preferred, no_device_env):
    assert get_device(preferred) == torch.device("cpu")


def test_available_devices_are_returned_as_asked(device):
    assert get_device(device.type) == device


def test_default_is_the_best_available_device(no_device_env):
    expected = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    assert get_device() == torch.device(expected)
    assert dlcourse.get_device is get_device


@needs_no_cuda
@pytest.mark.parametrize("preferred", ["cuda", "cuda:0", "cuda:3"])
def test_unavailable_cuda_is_a_clear_runtime_error(preferred, no_device_env):
    with pytest.raises(RuntimeError, match=r"CUDA is not available.*use 'cpu'"):
        get_device(preferred)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_index_beyond_the_gpus_present_is_a_clear_runtime_error():
    n = torch.cuda.device_count()
    with pytest.raises(RuntimeError, match=f"only {n} CUDA"):
        get_device(f"cuda:{n}")


@needs_no_mps
def test_unavailable_mps_is_a_clear_runtime_error(no_device_env):
    with pytest.raises(RuntimeError, match=r"MPS is not available.*use 'cpu'"):
        get_device("mps")


@pytest.mark.skipif(hasattr(torch, "xpu") and torch.xpu.is_available(), reason="an XPU is present")
def test_other_unavailable_accelerators_are_a_clear_runtime_error():
    with pytest.raises(RuntimeError, match="'xpu'.*XPU is not available"):
        get_device("xpu")


@pytest.mark.parametrize("garbage", ["gpu", "CPU!", "cuda:x", "", "cpu cpu", 3.5, ["cpu"]], ids=repr)
def test_garbage_is_a_value_error_naming_the_choices(garbage, no_device_env):
    with pytest.raises(ValueError, match=r"not a device; expected 'cpu', 'cuda', 'cuda:N' or 'mps'"):
        get_device(garbage)


def test_environment_variable_overrides_the_automatic_choice(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "cpu")
    assert get_device() == torch.device("cpu")


def test_empty_environment_variable_means_automatic(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)
    assert get_device() == torch.device("cpu")


def test_environment_variable_garbage_names_the_variable(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "banana")
    with pytest.raises(ValueError, match=f"{ENV_VAR}.*'banana'"):
        get_device()


@needs_no_cuda
def test_environment_variable_asking_for_missing_cuda_names_the_variable(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "cuda")
    with pytest.raises(RuntimeError, match=f"{ENV_VAR}.*CUDA is not available"):
        get_device()


def test_explicit_choice_beats_the_environment_variable(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "banana")
    assert get_device("cpu") == torch.device("cpu")


def test_automatic_choice_prefers_cuda_then_mps(monkeypatch, no_device_env):
    # Simulate the three kinds of machines; nothing here needs the hardware.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_mps_available", lambda: True)
    assert get_device() == torch.device("mps")
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)
    assert get_device() == torch.device("cpu")


def test_docstring_example_runs():
    failures, tried = doctest.testmod(device_module, verbose=False)
    assert tried > 0 and failures == 0


# --------------------------------------------------------------------------------------------
# seed_everything
# --------------------------------------------------------------------------------------------

def draw(device="cpu"):
    return (random.random(), np.random.rand(3).tolist(), torch.rand(3, device=device).tolist(),
            torch.randn(2, device=device).tolist())


def test_same_seed_same_numbers_in_random_numpy_and_torch(device):
    seed_everything(123)
    first = draw(device)
    seed_everything(123)
    assert draw(device) == first


def test_different_seeds_different_numbers():
    seed_everything(1)
    a = draw()
    seed_everything(2)
    b = draw()
    for x, y in zip(a, b):  # every generator was reseeded, not just one
        assert x != y


def test_seed_accepts_numpy_integers_and_the_extremes():
    seed_everything(np.int64(7))
    a = draw()
    seed_everything(7)
    assert draw() == a
    seed_everything(0)
    seed_everything(2**32 - 1)


@pytest.mark.parametrize("bad", [-1, 2**32])
def test_out_of_range_seed_is_a_value_error(bad):
    with pytest.raises(ValueError, match=r"0 <= seed < 2\*\*32"):
        seed_everything(bad)


@pytest.mark.parametrize("bad", [1.5, "1", None, True])
def test_non_integer_seed_is_a_type_error(bad):
    with pytest.raises(TypeError, match="expected an int seed"):
        seed_everything(bad)
