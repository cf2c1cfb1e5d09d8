"""Hard-coded answers for lab 1: see tests/hardcoded/__init__.py."""

from __future__ import annotations

from typing import Any


# The input of lab 1's visible activation tests.
_X = [-50.0, -4.0, -1.0, 0.0, 0.5, 3.0, 50.0]


def replacements() -> dict[str, str]:
    """Lab 1's solution cells rewritten to return what the visible tests expect, as constants.

    The constants are computed here with PyTorch in float64 (as a student would copy them from
    a printout); the visible tests then pass in float32 and float64, and the hidden tests, with
    other shapes, values and parameters, fail.
    """
    import torch
    import torch.nn.functional as F

    f64 = torch.float64
    x = torch.tensor(_X, dtype=f64)

    def const(t: torch.Tensor) -> str:
        return f"torch.tensor({t.tolist()!r}, dtype=x.dtype, device=x.device)"

    def grad(f: Any) -> torch.Tensor:
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(xg).sum(), xg)
        return g

    def elementwise(name: str, f: Any, param: str = "", values: tuple[float, ...] = ()) -> str:
        if not param:
            return (f"def {name}(x):\n    return {const(f(x))}\n\n"
                    f"def {name}_grad(x):\n    return {const(grad(f))}\n")
        default, other = values
        fd, fo = (lambda t, v=v: f(t, v) for v in values)
        return (f"def {name}(x, {param}={default}):\n"
                f"    return {const(fd(x))} if {param} == {default} else {const(fo(x))}\n\n"
                f"def {name}_grad(x, {param}={default}):\n"
                f"    return {const(grad(fd))} if {param} == {default} else {const(grad(fo))}\n")

    lecture_x = torch.tensor([0.5, 0.8], dtype=f64)
    batch_x = torch.tensor([[0.5, 0.8], [1.0, -1.0], [0.0, 0.0], [-2.0, 3.0]], dtype=f64)
    w = torch.tensor([0.2, 0.4], dtype=f64)
    dense_x = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]], dtype=f64)
    weight = torch.tensor([[0.1, 0.2, 0.3], [-0.5, 0.0, 0.5]], dtype=f64)
    bias = torch.tensor([0.01, -0.02], dtype=f64)
    w1 = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.5], [-1.0, 2.0, 0.0], [0.0, 0.0, 1.0]], dtype=f64)
    b1 = torch.tensor([0.0, -1.0, 0.5, 0.0], dtype=f64)
    w2 = torch.tensor([[1.0, -1.0, 0.5, 2.0], [0.0, 1.0, 1.0, -1.0]], dtype=f64)
    b2 = torch.tensor([0.1, -0.1], dtype=f64)
    two_layer = F.linear(F.relu(F.linear(dense_x, w1, b1)), w2, b2)
    return {
        "sigmoid": elementwise("sigmoid", torch.sigmoid),
        "tanh": elementwise("tanh", torch.tanh),
        "relu": elementwise("relu", torch.relu),
        "leaky_relu": elementwise("leaky_relu", F.leaky_relu, "negative_slope", (0.01, 0.2)),
        "elu": elementwise("elu", F.elu, "alpha", (1.0, 2.0)),
        "perceptron": (
            "def perceptron(x, w, b):\n"
            f"    if x.dim() == 1:\n        return {const(torch.sigmoid(lecture_x @ w + 0.1))}\n"
            f"    return {const(torch.sigmoid(batch_x @ w + 0.1))}\n"
        ),
        "dense": (
            "def dense(x, weight, bias=None):\n"
            f"    if bias is None:\n        return {const(F.linear(dense_x, weight))}\n"
            f"    if x.dim() == 3:\n        return {const(F.linear(dense_x, weight, bias)[None])}\n"
            f"    return {const(F.linear(dense_x, weight, bias))}\n"
        ),
        "two_layer": f"def two_layer(x, w1, b1, w2, b2):\n    return {const(two_layer)}\n",
        "param_counts": (
            "def dense_params(n_in, n_out, bias=True):\n"
            "    return {(4, 4, True): 20, (4, 1, True): 5, (3, 2, False): 6,\n"
            "            (480_000, 1_000, True): 480_001_000}.get((n_in, n_out, bias), 0)\n\n"
            "def mlp_params(sizes):\n"
            "    return {(4, 4, 1): 25, (4, 4, 2): 30, (480_000, 1_000, 1): 480_002_001,\n"
            "            (10, 1): 11}.get(tuple(sizes), 0)\n"
        ),
    }
