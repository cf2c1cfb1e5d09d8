"""The scalar autograd engine (dlcourse.autograd) against torch.autograd in float64.

The engine is pure Python (CPU floats), so these tests are not parametrized over devices; the
PyTorch reference runs on the CPU in float64, the precision of a Python float.
"""

from __future__ import annotations

import math
import random
import sys

import pytest
import torch

from dlcourse.autograd import MLP, Layer, Neuron, Value


# Tiny tensors: one torch thread (the shared fixture in conftest.py) is faster and steadier.
pytestmark = pytest.mark.usefixtures("one_thread")

# ---------------------------------------------------------------------------------------------
# Random expression trees: the same program is run on Values and on float64 tensors
# ---------------------------------------------------------------------------------------------

# name -> f(a, b, c) for operands a, b (Values or tensors) and a Python number c. Values and
# tensors share these operators and methods, so one definition drives both.
OPS = {
    "add": lambda a, b, c: a + b,
    "sub": lambda a, b, c: a - b,
    "mul": lambda a, b, c: a * b,
    "div": lambda a, b, c: a / b,
    "add_const": lambda a, b, c: a + c,
    "sub_const": lambda a, b, c: a - c,
    "mul_const": lambda a, b, c: a * c,
    "div_const": lambda a, b, c: a / c,
    "radd": lambda a, b, c: c + a,
    "rsub": lambda a, b, c: c - a,
    "rmul": lambda a, b, c: c * a,
    "rtruediv": lambda a, b, c: c / a,
    "pow": lambda a, b, c: a**c,
    "neg": lambda a, b, c: -a,
    "exp": lambda a, b, c: a.exp(),
    "log": lambda a, b, c: a.log(),
    "tanh": lambda a, b, c: a.tanh(),
    "relu": lambda a, b, c: a.relu(),
    "sigmoid": lambda a, b, c: a.sigmoid(),
}
EXPONENTS = [2, 3, -1, -2, 0.5, 1.5, -0.5]


def _allowed(op: str, a: float, b: float, c: float) -> bool:
    """Keep each op inside its domain and away from kinks, so values and gradients are defined."""
    if op == "div":
        return abs(b) > 0.2
    if op == "rtruediv":
        return abs(a) > 0.2
    if op == "log":
        return a > 0.1
    if op == "exp":
        return a < 4
    if op == "relu":
        return abs(a) > 1e-3
    if op == "pow":
        if c < 0 and abs(a) < 0.2:
            return False
        return float(c).is_integer() or a > 0.1
    return True


def random_program(seed: int, n_leaves: int = 4, n_ops: int = 40):
    """Build a random expression with Values; return its leaves, nodes and the recorded program.

    Operands are drawn from all earlier nodes, so subexpressions are shared and reused.
    """
    rng = random.Random(seed)
    leaves = [Value(rng.uniform(-2, 2)) for _ in range(n_leaves)]
    nodes = list(leaves)
    program = []  # (op, index of a, index of b, constant)
    while len(program) < n_ops:
        op = rng.choice(list(OPS))
        i, j = rng.randrange(len(nodes)), rng.randrange(len(nodes))
        c = rng.choice(EXPONENTS) if op == "pow" else rng.choice([-1, 1]) * rng.uniform(0.3, 2.0)
        if not _allowed(op, nodes[i].data, nodes[j].data, c):
            continue
        out = OPS[op](nodes[i], nodes[j], c)
        if not abs(out.data) < 50:  # keep magnitudes tame so float64 rounding stays tiny
            continue
        nodes.append(out)
        program.append((op, i, j, c))
    return leaves, nodes, program


def run_program_torch(leaf_values, program):
    leaves = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in leaf_values]
    nodes = list(leaves)
    for op, i, j, c in program:
        nodes.append(OPS[op](nodes[i], nodes[j], c))
    return leaves, nodes


SEEDS = range(30)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_expression_matches_torch(seed):
    leaves, nodes, program = random_program(seed)
    out = nodes[-1] + nodes[-2] * nodes[-3]  # several recent nodes, so most of the graph counts
    out.backward()

    t_leaves, t_nodes = run_program_torch([v.data for v in leaves], program)
    t_out = t_nodes[-1] + t_nodes[-2] * t_nodes[-3]
    t_out.backward()

    for k, (v, t) in enumerate(zip(nodes, t_nodes)):
        assert v.data == pytest.approx(t.item(), rel=1e-9, abs=1e-12), f"node {k} ({v._op})"
    assert out.data == pytest.approx(t_out.item(), rel=1e-9, abs=1e-12)
    for k, (v, t) in enumerate(zip(leaves, t_leaves)):
        expected = 0.0 if t.grad is None else t.grad.item()
        assert v.grad == pytest.approx(expected, rel=1e-8, abs=1e-10), f"gradient of leaf {k}"


def test_random_programs_cover_every_op():
    used = {op for seed in SEEDS for op, *_ in random_program(seed)[2]}
    assert used == set(OPS)


# ---------------------------------------------------------------------------------------------
# Graph structure: reuse, accumulation, depth
# ---------------------------------------------------------------------------------------------

def test_reused_node_accumulates_gradient():
    a = Value(3.0)
    (a * a).backward()
    assert a.grad == 6.0  # d(a^2)/da = 2a, from both uses of a

    b = Value(-2.0)
    (b + b + b).backward()
    assert b.grad == 3.0


def test_shared_subexpression_matches_torch():
    def f(x, y):
        s = x * y + x  # used three times below
        return s * s + s.tanh() - s / (y * y + 1)

    x, y = Value(0.7), Value(-1.3)
    out = f(x, y)
    out.backward()
    tx = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    ty = torch.tensor(-1.3, dtype=torch.float64, requires_grad=True)
    t_out = f(tx, ty)
    t_out.backward()
    assert out.data == pytest.approx(t_out.item(), rel=1e-12)
    assert x.grad == pytest.approx(tx.grad.item(), rel=1e-12)
    assert y.grad == pytest.approx(ty.grad.item(), rel=1e-12)


def test_backward_twice_accumulates_like_torch():
    a, b = Value(0.5), Value(2.0)
    out = (a * b).tanh() * a
    out.backward()
    first = a.grad, b.grad
    out.backward()  # leaves accumulate; intermediate nodes are not counted twice
    assert a.grad == pytest.approx(2 * first[0], rel=1e-15)
    assert b.grad == pytest.approx(2 * first[1], rel=1e-15)


def test_deep_chain_does_not_hit_the_recursion_limit():
    depth = 5000
    assert depth > sys.getrecursionlimit()  # a recursive topological sort would fail here

    def chain(x):
        for i in range(depth):
            x = (x * 1.001).tanh() if i % 2 else x + 0.001
        return x

    x = Value(0.3)
    out = chain(x)
    out.backward()
    tx = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    t_out = chain(tx)
    t_out.backward()
    assert out.data == pytest.approx(t_out.item(), rel=1e-9)
    assert x.grad == pytest.approx(tx.grad.item(), rel=1e-8)
    assert x.grad != 0


def test_graph_records_children_and_op():
    a, b = Value(2.0, label="a"), Value(3.0, label="b")
    c = a * b
    d = c.tanh()
    assert c._prev == (a, b) and c._op == "*"
    assert d._prev == (c,) and d._op == "tanh"
    assert a._prev == () and a._op == ""
    assert "data=6" in repr(c) and "grad=0" in repr(c) and "'*'" in repr(c)
    assert "label='a'" in repr(a)


# ---------------------------------------------------------------------------------------------
# Single operations at special points
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("x", [-800.0, -30.0, 0.0, 30.0, 800.0])
def test_sigmoid_and_tanh_are_stable_for_large_inputs(x):
    for name in ("sigmoid", "tanh"):
        v = Value(x)
        out = getattr(v, name)()
        out.backward()
        t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        t_out = getattr(t, name)()
        t_out.backward()
        assert out.data == pytest.approx(t_out.item(), rel=1e-12, abs=1e-300), name
        assert v.grad == pytest.approx(t.grad.item(), rel=1e-9, abs=1e-300), name


@pytest.mark.parametrize("k", [0, 0.5, 1, 2, 3])
def test_power_gradient_at_zero_matches_torch(k):
    v = Value(0.0)
    (v**k).backward()
    t = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    (t**k).backward()
    assert v.grad == t.grad.item()


def test_relu_gradient_is_zero_at_zero_and_for_negatives():
    for x, expected in [(-1.0, 0.0), (0.0, 0.0), (2.0, 1.0)]:
        v = Value(x)
        v.relu().backward()
        assert v.grad == expected


def test_numbers_on_either_side():
    a = Value(2.0)
    assert (3 + a).data == 5 and (a + 3).data == 5
    assert (3 - a).data == 1 and (a - 3).data == -1
    assert (3 * a).data == 6 and (a * 3).data == 6
    assert (3 / a).data == 1.5 and (a / 4).data == 0.5
    assert (-a).data == -2 and (a**3).data == 8


# ---------------------------------------------------------------------------------------------
# The tiny MLP against an equal torch model
# ---------------------------------------------------------------------------------------------

TORCH_ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid}


def torch_twin(mlp: MLP, activation: str) -> torch.nn.Sequential:
    """A float64 torch.nn.Sequential with the same weights as ``mlp``."""
    modules = []
    for i, layer in enumerate(mlp.layers):
        lin = torch.nn.Linear(len(layer.neurons[0].w), len(layer.neurons), dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.tensor([[w.data for w in n.w] for n in layer.neurons], dtype=torch.float64))
            lin.bias.copy_(torch.tensor([n.b.data for n in layer.neurons], dtype=torch.float64))
        modules.append(lin)
        if i < len(mlp.layers) - 1:
            modules.append(TORCH_ACTIVATIONS[activation]())
    return torch.nn.Sequential(*modules)


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
@pytest.mark.parametrize("nouts", [[4, 4, 1], [5, 2], [1, 3]])
def test_mlp_forward_and_backward_match_torch(activation, nouts):
    rng = random.Random(len(nouts) * 10 + len(activation))
    mlp = MLP(3, nouts, activation=activation, rng=rng)
    twin = torch_twin(mlp, activation)
    assert len(mlp.parameters()) == sum(p.numel() for p in twin.parameters())

    xs = [[rng.uniform(-2, 2) for _ in range(3)] for _ in range(6)]
    ys = [[rng.uniform(-1, 1) for _ in range(nouts[-1])] for _ in range(6)]
    loss = Value(0.0)
    for x, y in zip(xs, ys):
        out = mlp(x)
        outs = [out] if isinstance(out, Value) else out
        assert len(outs) == nouts[-1]
        loss = loss + sum((o - t) ** 2 for o, t in zip(outs, y))
    loss.backward()

    t_loss = ((twin(torch.tensor(xs, dtype=torch.float64)) - torch.tensor(ys, dtype=torch.float64)) ** 2).sum()
    t_loss.backward()
    assert loss.data == pytest.approx(t_loss.item(), rel=1e-10)
    for layer, lin in zip(mlp.layers, [m for m in twin if isinstance(m, torch.nn.Linear)]):
        grad_w = [[w.grad for w in n.w] for n in layer.neurons]
        grad_b = [n.b.grad for n in layer.neurons]
        torch.testing.assert_close(torch.tensor(grad_w, dtype=torch.float64), lin.weight.grad, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(torch.tensor(grad_b, dtype=torch.float64), lin.bias.grad, rtol=1e-9, atol=1e-12)

    mlp.zero_grad()
    assert all(p.grad == 0.0 for p in mlp.parameters())


def test_training_the_mlp_lowers_the_loss():
    rng = random.Random(0)
    mlp = MLP(2, [8, 1], rng=rng)
    data = [([rng.uniform(-1, 1), rng.uniform(-1, 1)], 0.0) for _ in range(8)]
    data = [(x, math.sin(2 * x[0]) * x[1]) for x, _ in data]

    def loss_fn():
        return sum((mlp(x) - y) ** 2 for x, y in data) / len(data)

    first = loss_fn().data
    for _ in range(50):
        loss = loss_fn()
        mlp.zero_grad()
        loss.backward()
        for p in mlp.parameters():
            p.data -= 0.2 * p.grad
    assert loss_fn().data < 0.5 * first


def test_layer_and_neuron_shapes():
    assert len(Neuron(3).parameters()) == 4
    layer = Layer(3, 2)
    assert len(layer.parameters()) == 8 and len(layer([1.0, 2.0, 3.0])) == 2
    assert isinstance(Layer(3, 1)([1.0, 2.0, 3.0]), Value)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("x", [0.0, -1.5])
def test_log_of_non_positive_number_raises(x):
    with pytest.raises(ValueError, match=r"log: expected a positive number, got"):
        Value(x).log()


def test_value_exponent_is_rejected():
    with pytest.raises(TypeError, match="exponent must be an int or float"):
        Value(2.0) ** Value(3.0)
    with pytest.raises(TypeError, match="exponent must be an int or float"):
        2.0 ** Value(3.0)


def test_bad_operands_raise():
    with pytest.raises(TypeError, match="expected an int or float, got str"):
        Value("1.0")
    with pytest.raises(TypeError, match="got str"):
        Value(1.0) + "a"
    with pytest.raises(ValueError, match="non-integer power"):
        Value(-8.0) ** 0.5
    with pytest.raises(ZeroDivisionError):
        Value(0.0) ** -1
    with pytest.raises(ZeroDivisionError):
        Value(1.0) / 0
    with pytest.raises(ZeroDivisionError):
        1.0 / Value(0.0)
    with pytest.raises(OverflowError, match="overflows"):
        Value(1000.0).exp()


def test_bad_network_arguments_raise():
    with pytest.raises(ValueError, match="expected 3 inputs, got 2"):
        Neuron(3)([1.0, 2.0])
    with pytest.raises(ValueError, match="positive int number of inputs"):
        Neuron(0)
    with pytest.raises(ValueError, match="activation"):
        Neuron(2, activation="gelu")
    with pytest.raises(ValueError, match="at least one layer"):
        MLP(3, [])
