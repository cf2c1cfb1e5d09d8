"""The optimizers (dlcourse.optim) against torch.optim: 100 steps from the same start, same loss."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch

from dlcourse import optim


# (name, keyword arguments): the same for ours and torch's.
CONFIGS = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("SGD", {"lr": 0.1, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.05, "momentum": 0.5, "weight_decay": 0.1}),
    ("RMSprop", {}),
    ("RMSprop", {"lr": 0.003, "alpha": 0.9}),
    ("RMSprop", {"lr": 0.01, "alpha": 0.5, "eps": 1e-4}),
    ("Adagrad", {}),
    ("Adagrad", {"lr": 0.1}),
    ("Adagrad", {"lr": 0.05, "eps": 1e-3}),
    ("Adam", {}),
    ("Adam", {"lr": 0.01, "betas": (0.8, 0.99)}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.02, "betas": (0.0, 0.5), "eps": 1e-3, "weight_decay": 0.01}),
]
IDS = [f"{name}-{kw}" for name, kw in CONFIGS]

# Float64 tolerance after 100 steps. Rounding differences (e.g. torch's lerp for beta m + (1 - beta) g)
# grow along a trajectory: torch itself, started one rounding error away, ends up at most ~1e-11
# (relative) away on these problems, so these bounds leave a wide margin for rounding, and none
# for a wrong formula (a misplaced eps or an off-by-one bias correction is off by >1e-6).
RTOL, ATOL = 1e-8, 1e-10


# Tiny tensors: one torch thread (the shared fixture in conftest.py) is faster and steadier.
pytestmark = pytest.mark.usefixtures("one_thread")


class Problem:
    """A fixed regression task for a small tanh MLP: the deterministic loss every optimizer runs on."""

    def __init__(self, device: str, dtype: torch.dtype = torch.float64, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(32, 5, generator=g).to(device, dtype)  # (N, in)
        self.y = torch.sin(self.x.sum(dim=1, keepdim=True))  # (N, 1)
        self.start = [
            torch.randn(8, 5, generator=g) * 0.5,  # W1
            torch.randn(8, generator=g) * 0.1,  # b1
            torch.randn(1, 8, generator=g) * 0.5,  # W2
            torch.randn(1, generator=g) * 0.1,  # b2
        ]
        self.start = [p.to(device, dtype) for p in self.start]

    def params(self) -> list[torch.Tensor]:
        """A fresh copy of the starting parameters."""
        return [p.clone().requires_grad_(True) for p in self.start]

    def loss(self, params: list[torch.Tensor]) -> torch.Tensor:
        w1, b1, w2, b2 = params
        h = torch.tanh(self.x @ w1.T + b1)  # (N, 8)
        return ((h @ w2.T + b2 - self.y) ** 2).mean()


def run(opt: torch.optim.Optimizer, params: list[torch.Tensor], problem: Problem, steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = problem.loss(params)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def assert_params_close(ours, theirs, rtol, atol):
    for i, (a, b) in enumerate(zip(ours, theirs)):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m: f"parameter {i}: {m}")


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=IDS)
def test_100_steps_match_torch_float64(name, kwargs, device):
    if torch.device(device).type == "mps":
        pytest.skip("MPS has no float64")
    problem = Problem(device)
    ours, theirs = problem.params(), problem.params()
    our_losses = run(getattr(optim, name)(ours, **kwargs), ours, problem, 100)
    their_losses = run(getattr(torch.optim, name)(theirs, **kwargs), theirs, problem, 100)
    assert_params_close(ours, theirs, rtol=RTOL, atol=ATOL)
    assert our_losses == pytest.approx(their_losses, rel=RTOL)
    assert their_losses[-1] < their_losses[0]  # the comparison is between optimizers that moved
    assert not torch.equal(ours[0], problem.start[0])


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS[::2], ids=IDS[::2])
def test_20_steps_match_torch_float32(name, kwargs, device):
    problem = Problem(device, torch.float32)
    ours, theirs = problem.params(), problem.params()
    run(getattr(optim, name)(ours, **kwargs), ours, problem, 20)
    run(getattr(torch.optim, name)(theirs, **kwargs), theirs, problem, 20)
    assert_params_close(ours, theirs, rtol=1e-4, atol=1e-5)


GROUP_OVERRIDES = {
    "SGD": ({"lr": 0.1}, {"lr": 0.02, "momentum": 0.9}, {"momentum": 0.5, "weight_decay": 0.01}),
    "RMSprop": ({"lr": 0.005}, {"lr": 0.002, "alpha": 0.9}, {"eps": 1e-4}),
    "Adagrad": ({}, {"lr": 0.2}, {"eps": 1e-4}),
    "Adam": ({}, {"lr": 0.005, "betas": (0.8, 0.99)}, {"weight_decay": 0.05, "eps": 1e-4}),
}


@pytest.mark.parametrize("name", list(GROUP_OVERRIDES))
def test_param_groups_match_torch(name, device):
    if torch.device(device).type == "mps":
        pytest.skip("MPS has no float64")
    defaults, first, second = GROUP_OVERRIDES[name]
    problem = Problem(device, seed=1)
    ours, theirs = problem.params(), problem.params()

    def groups(p):
        return [{"params": p[:2], **first}, {"params": p[2:], **second}]

    opt = getattr(optim, name)(groups(ours), **defaults)
    assert len(opt.param_groups) == 2 and opt.param_groups[0]["params"][0] is ours[0]
    run(opt, ours, problem, 100)
    run(getattr(torch.optim, name)(groups(theirs), **defaults), theirs, problem, 100)
    assert_params_close(ours, theirs, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS[1::3], ids=IDS[1::3])
def test_closure_matches_torch(name, kwargs, device):
    if torch.device(device).type == "mps":
        pytest.skip("MPS has no float64")
    problem = Problem(device, seed=2)
    ours, theirs = problem.params(), problem.params()
    results = []
    for cls, params in ((getattr(optim, name), ours), (getattr(torch.optim, name), theirs)):
        opt = cls(params, **kwargs)

        def closure(opt=opt, params=params):
            opt.zero_grad()
            loss = problem.loss(params)
            loss.backward()
            return loss

        results.append([opt.step(closure).item() for _ in range(20)])
    assert results[0] == pytest.approx(results[1], rel=RTOL)
    assert_params_close(ours, theirs, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS[1::2], ids=IDS[1::2])
def test_parameters_without_gradient_are_left_alone(name, kwargs):
    used = torch.ones(3, requires_grad=True)
    unused = torch.ones(3, requires_grad=True)
    opt = getattr(optim, name)([used, unused], **kwargs)
    (used**2).sum().backward()
    opt.step()
    assert not torch.equal(used, torch.ones(3))
    assert torch.equal(unused, torch.ones(3)) and len(opt.state[unused]) == 0


# ---------------------------------------------------------------------------------------------
# State dicts: ours round-trips, and torch.optim's loads into ours (same state names). The other
# way does not work: torch's load_state_dict replaces its param groups by the saved ones, which
# lack torch-only options such as SGD's ``nesterov``.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "kwargs"), [c for c in CONFIGS if c[0] != "SGD" or "momentum" in c[1]],
                         ids=[i for c, i in zip(CONFIGS, IDS) if c[0] != "SGD" or "momentum" in c[1]])
@pytest.mark.parametrize("direction", ["ours->ours", "torch->ours"])
def test_state_dict_round_trip(name, kwargs, direction):
    source_cls, target_cls = {
        "ours->ours": (getattr(optim, name), getattr(optim, name)),
        "torch->ours": (getattr(torch.optim, name), getattr(optim, name)),
    }[direction]
    problem = Problem("cpu", seed=3)
    params = problem.params()
    source = source_cls(params, **kwargs)
    run(source, params, problem, 30)
    assert len(source.state_dict()["state"]) == 4

    resumed = [p.detach().clone().requires_grad_(True) for p in params]
    target = target_cls(resumed, **kwargs)
    target.load_state_dict(copy.deepcopy(source.state_dict()))  # a copy: state_dict() shares tensors
    run(source, params, problem, 30)
    run(target, resumed, problem, 30)
    assert_params_close(resumed, params, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# Bad arguments
# ---------------------------------------------------------------------------------------------

BAD = [
    ("SGD", {"lr": -0.1}, ValueError, "SGD: expected lr >= 0.0, got -0.1"),
    ("SGD", {"lr": 0.1, "momentum": -0.5}, ValueError, "SGD: expected momentum >= 0.0, got -0.5"),
    ("SGD", {"lr": 0.1, "weight_decay": -1}, ValueError, "SGD: expected weight_decay >= 0.0, got -1"),
    ("SGD", {"lr": "0.1"}, TypeError, "SGD: expected lr to be a number, got str"),
    ("SGD", {"lr": math.nan}, ValueError, "SGD: expected lr >= 0.0, got nan"),
    ("RMSprop", {"alpha": 1.5}, ValueError, "RMSprop: expected alpha in [0.0, 1.0], got 1.5"),
    ("RMSprop", {"eps": -1e-8}, ValueError, "RMSprop: expected eps >= 0.0, got -1e-08"),
    ("RMSprop", {"lr": -1}, ValueError, "RMSprop: expected lr >= 0.0, got -1"),
    ("Adagrad", {"lr": -0.01}, ValueError, "Adagrad: expected lr >= 0.0, got -0.01"),
    ("Adagrad", {"eps": -1}, ValueError, "Adagrad: expected eps >= 0.0, got -1"),
    ("Adam", {"betas": (1.0, 0.999)}, ValueError, "Adam: expected betas[0] in [0.0, 1.0), got 1.0"),
    ("Adam", {"betas": (0.9, -0.1)}, ValueError, "Adam: expected betas[1] in [0.0, 1.0), got -0.1"),
    ("Adam", {"betas": 0.9}, ValueError, "Adam: expected betas to be a pair (beta1, beta2), got 0.9"),
    ("Adam", {"eps": -1e-8}, ValueError, "Adam: expected eps >= 0.0, got -1e-08"),
    ("Adam", {"weight_decay": -0.1}, ValueError, "Adam: expected weight_decay >= 0.0, got -0.1"),
    ("Adam", {"lr": None}, TypeError, "Adam: expected lr to be a number, got NoneType"),
]


@pytest.mark.parametrize(("name", "kwargs", "error", "message"), BAD, ids=[f"{b[0]}-{b[1]}" for b in BAD])
def test_bad_arguments_raise(name, kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        getattr(optim, name)([torch.zeros(2, requires_grad=True)], **kwargs)


@pytest.mark.parametrize("name", ["SGD", "RMSprop", "Adagrad", "Adam"])
def test_bad_group_override_raises(name):
    p, q = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=f"{name}: expected lr >= 0.0, got -1"):
        getattr(optim, name)([{"params": [p]}, {"params": [q], "lr": -1}], lr=0.1)
    opt = getattr(optim, name)([p], lr=0.1)
    with pytest.raises(ValueError, match=f"{name}: expected lr >= 0.0, got -2"):
        opt.add_param_group({"params": [q], "lr": -2})
    assert len(opt.param_groups) == 1


def test_required_lr_and_empty_params():
    with pytest.raises(TypeError):
        optim.SGD([torch.zeros(2, requires_grad=True)])  # SGD has no default learning rate
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])


@pytest.mark.parametrize("name", ["SGD", "RMSprop", "Adagrad", "Adam"])
def test_bad_default_raises_even_if_every_group_overrides_it(name):
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=f"{name}: expected lr >= 0.0, got -1"):
        getattr(optim, name)([{"params": [p], "lr": 0.1}], lr=-1)
