r"""A scalar reverse-mode automatic differentiation engine, and a tiny neural network on top.

Every :class:`Value` remembers the values it was computed from (``_prev``) and the operation
(``_op``), so the whole computation forms a graph. :meth:`Value.backward` walks that graph from
the output back to the inputs, applying the chain rule once per node:

.. math::

    \frac{\partial L}{\partial x} = \sum_{y \,\text{uses}\, x}
        \frac{\partial L}{\partial y} \frac{\partial y}{\partial x}

This is what ``torch.autograd`` does for tensors; here it fits in one file, after Andrej
Karpathy's micrograd. :class:`Neuron`, :class:`Layer` and :class:`MLP` build a multilayer
perceptron out of ``Value`` objects, with the same weight layout as ``torch.nn.Linear``
(one row of weights per output unit).

Example::

    >>> a, b = Value(2.0), Value(-3.0)
    >>> loss = (a * b + a.exp()).tanh()
    >>> loss.backward()
    >>> round(a.grad, 6), round(b.grad, 6)
    (0.967244, 0.440753)
"""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Callable, Sequence

__all__ = ["Value", "Module", "Neuron", "Layer", "MLP"]


def _as_value(x: object, op: str) -> Value:
    """``x`` as a :class:`Value`: Values pass through, real numbers are wrapped as constants."""
    if isinstance(x, Value):
        return x
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return Value(float(x))
    raise TypeError(f"Value {op}: expected a Value, int or float, got {type(x).__name__}")


class Value:
    r"""A scalar that remembers how it was computed, so it can backpropagate gradients to its inputs.

    Args:
        data: the number it holds (an ``int`` or ``float``; stored as ``float``).
        label: an optional name, shown when the graph is drawn (e.g. ``"w1"``).

    Attributes:
        data: the value, a Python ``float``.
        grad: :math:`\partial L / \partial \text{self}` after ``L.backward()``; starts at 0.
        _prev: the Values this one was computed from (empty for inputs and parameters).
        _op: the operation that produced it (``"+"``, ``"*"``, ``"tanh"``, ...; ``""`` for inputs).
    """

    def __init__(self, data: float, _children: tuple[Value, ...] = (), _op: str = "",
                 label: str = "") -> None:
        if isinstance(data, bool) or not isinstance(data, numbers.Real):
            raise TypeError(f"Value: expected an int or float, got {type(data).__name__}")
        self.data = float(data)
        self.grad = 0.0
        self.label = label
        self._prev = tuple(_children)
        self._op = _op
        # Adds this node's contribution to its children's gradients; set by the op that made it.
        self._backward: Callable[[], None] = lambda: None

    # ---- arithmetic ------------------------------------------------------------------------

    def __add__(self, other: Value | float) -> Value:
        other = _as_value(other, "+")
        out = Value(self.data + other.data, (self, other), "+")

        def _backward() -> None:  # d(a + b)/da = d(a + b)/db = 1
            self.grad += out.grad
            other.grad += out.grad

        out._backward = _backward
        return out

    def __mul__(self, other: Value | float) -> Value:
        other = _as_value(other, "*")
        out = Value(self.data * other.data, (self, other), "*")

        def _backward() -> None:  # d(a * b)/da = b, d(a * b)/db = a
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out

    def __pow__(self, exponent: int | float) -> Value:
        """``self ** exponent`` for a number ``exponent``, with derivative :math:`k x^{k-1}`."""
        if isinstance(exponent, Value):
            raise TypeError(
                "Value **: the exponent must be an int or float, got a Value; "
                "for x > 0 write (y * x.log()).exp() to get x ** y with gradients for both"
            )
        if isinstance(exponent, bool) or not isinstance(exponent, numbers.Real):
            raise TypeError(f"Value **: expected an int or float exponent, got {type(exponent).__name__}")
        k = float(exponent)
        x = self.data
        if x == 0 and k < 0:
            raise ZeroDivisionError(f"Value **: 0 to the negative power {exponent} is undefined (division by zero)")
        if x < 0 and not k.is_integer():
            raise ValueError(
                f"Value **: a negative base ({x}) to a non-integer power ({exponent}) is not a real number"
            )
        out = Value(x**k, (self,), f"**{exponent}")

        def _backward() -> None:  # d(x^k)/dx = k x^(k-1)
            if k == 0:
                slope = 0.0
            elif x == 0 and k < 1:
                slope = math.inf  # e.g. sqrt at 0: the tangent is vertical (PyTorch also gives inf)
            else:
                slope = k * x ** (k - 1)
            self.grad += slope * out.grad

        out._backward = _backward
        return out

    def __rpow__(self, base: float) -> Value:  # base ** self
        raise TypeError(
            "Value **: the exponent must be an int or float, got a Value; "
            "for base > 0 write (self * math.log(base)).exp() to get base ** self"
        )

    def __neg__(self) -> Value:  # -a
        return self * -1

    def __radd__(self, other: float) -> Value:  # other + self
        return self + other

    def __sub__(self, other: Value | float) -> Value:  # self - other
        return self + (-_as_value(other, "-"))

    def __rsub__(self, other: float) -> Value:  # other - self
        return _as_value(other, "-") + (-self)

    def __rmul__(self, other: float) -> Value:  # other * self
        return self * other

    def __truediv__(self, other: Value | float) -> Value:  # self / other = self * other^-1
        other = _as_value(other, "/")
        if other.data == 0:
            raise ZeroDivisionError("Value /: division by zero")
        return self * other**-1

    def __rtruediv__(self, other: float) -> Value:  # other / self
        return _as_value(other, "/") / self

    # ---- elementary functions --------------------------------------------------------------

    def exp(self) -> Value:
        r""":math:`e^x`, whose derivative is itself."""
        try:
            e = math.exp(self.data)
        except OverflowError:
            raise OverflowError(
                f"Value.exp: e**{self.data:g} overflows a float (the largest is about e**709.78)"
            ) from None
        out = Value(e, (self,), "exp")

        def _backward() -> None:  # d(e^x)/dx = e^x
            self.grad += out.data * out.grad

        out._backward = _backward
        return out

    def log(self) -> Value:
        r"""The natural logarithm :math:`\ln x`, for :math:`x > 0`; its derivative is :math:`1/x`."""
        if self.data <= 0:
            raise ValueError(f"Value.log: expected a positive number, got {self.data}")
        out = Value(math.log(self.data), (self,), "log")

        def _backward() -> None:  # d(ln x)/dx = 1/x
            self.grad += out.grad / self.data

        out._backward = _backward
        return out

    def tanh(self) -> Value:
        r""":math:`\tanh x = (e^{x} - e^{-x}) / (e^{x} + e^{-x})`; its derivative is :math:`1 - \tanh^2 x`."""
        t = math.tanh(self.data)
        out = Value(t, (self,), "tanh")

        def _backward() -> None:
            self.grad += (1 - t * t) * out.grad

        out._backward = _backward
        return out

    def relu(self) -> Value:
        r""":math:`\max(0, x)`; its derivative is 1 for :math:`x > 0`, else 0 (0 at 0, as in PyTorch)."""
        out = Value(self.data if self.data > 0 else 0.0, (self,), "relu")

        def _backward() -> None:
            self.grad += (1.0 if self.data > 0 else 0.0) * out.grad

        out._backward = _backward
        return out

    def sigmoid(self) -> Value:
        r""":math:`\sigma(x) = 1 / (1 + e^{-x})`; its derivative is :math:`\sigma(x)(1 - \sigma(x))`."""
        # Two branches so that e^{-x} is never evaluated for a large negative x (it would overflow).
        if self.data >= 0:
            s = 1 / (1 + math.exp(-self.data))
        else:
            z = math.exp(self.data)
            s = z / (1 + z)
        out = Value(s, (self,), "sigmoid")

        def _backward() -> None:
            self.grad += s * (1 - s) * out.grad

        out._backward = _backward
        return out

    # ---- backpropagation -------------------------------------------------------------------

    def backward(self) -> None:
        r"""Fill in ``.grad`` of every Value this one depends on: :math:`\partial\,\text{self} / \partial v`.

        Nodes are visited in reverse topological order, so a node's gradient is complete (all
        its uses have added their share) before it is passed on to its inputs. The order is
        found with an explicit stack rather than recursion, so graphs thousands of operations
        deep work. As in PyTorch, gradients *accumulate* in the leaves (inputs, parameters):
        call ``zero_grad()`` between steps. Intermediate nodes are reset on each call.
        """
        topo: list[Value] = []  # children before parents
        visited: set[Value] = set()
        stack: list[tuple[Value, bool]] = [(self, False)]
        while stack:
            node, children_done = stack.pop()
            if children_done:
                topo.append(node)  # every node it depends on is already in topo
                continue
            if node in visited:
                continue
            visited.add(node)
            stack.append((node, True))  # comes back after all its children
            stack.extend((child, False) for child in node._prev if child not in visited)

        for node in topo:
            if node._prev:
                node.grad = 0.0
        self.grad += 1.0  # d self / d self
        for node in reversed(topo):
            node._backward()

    def __repr__(self) -> str:
        op = f", op={self._op!r}" if self._op else ""
        label = f", label={self.label!r}" if self.label else ""
        return f"Value(data={self.data:.6g}, grad={self.grad:.6g}{op}{label})"


# ---------------------------------------------------------------------------------------------
# A tiny neural network made of Values
# ---------------------------------------------------------------------------------------------

_ACTIVATIONS: dict[str, Callable[[Value], Value]] = {
    "tanh": Value.tanh,
    "relu": Value.relu,
    "sigmoid": Value.sigmoid,
    "linear": lambda v: v,
}


class Module:
    """Base class: something with parameters (``Value`` objects) whose gradients can be reset."""

    def parameters(self) -> list[Value]:
        return []

    def zero_grad(self) -> None:
        """Set every parameter's ``.grad`` to 0 (gradients accumulate across ``backward`` calls)."""
        for p in self.parameters():
            p.grad = 0.0


class Neuron(Module):
    r"""One unit, :math:`y = f(\sum_i w_i x_i + b)`.

    Args:
        nin: number of inputs.
        activation: ``"tanh"`` (default), ``"relu"``, ``"sigmoid"`` or ``"linear"`` (none).
        rng: the random number generator for the weights (default: the ``random`` module).

    Attributes:
        w: ``nin`` weights and ``b`` the bias, drawn from
            :math:`\mathcal{U}(-1/\sqrt{\text{nin}}, 1/\sqrt{\text{nin}})` like ``torch.nn.Linear``.
    """

    def __init__(self, nin: int, activation: str = "tanh", rng: random.Random | None = None) -> None:
        if isinstance(nin, bool) or not isinstance(nin, int) or nin < 1:
            raise ValueError(f"Neuron: expected a positive int number of inputs, got {nin!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"Neuron: expected activation in {sorted(_ACTIVATIONS)}, got {activation!r}")
        draw = (rng or random).uniform
        bound = 1 / math.sqrt(nin)
        self.w = [Value(draw(-bound, bound)) for _ in range(nin)]
        self.b = Value(draw(-bound, bound))
        self.activation = activation

    def __call__(self, x: Sequence[Value | float]) -> Value:
        if len(x) != len(self.w):
            raise ValueError(f"Neuron: expected {len(self.w)} inputs, got {len(x)}")
        act = sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
        return _ACTIVATIONS[self.activation](act)

    def parameters(self) -> list[Value]:
        return self.w + [self.b]

    def __repr__(self) -> str:
        return f"Neuron({len(self.w)}, activation={self.activation!r})"


class Layer(Module):
    """``nout`` neurons that all read the same ``nin`` inputs: a dense layer.

    Calling it returns a list of ``nout`` Values, or a single Value when ``nout == 1``.
    """

    def __init__(self, nin: int, nout: int, activation: str = "tanh", rng: random.Random | None = None) -> None:
        if isinstance(nout, bool) or not isinstance(nout, int) or nout < 1:
            raise ValueError(f"Layer: expected a positive int number of outputs, got {nout!r}")
        self.neurons = [Neuron(nin, activation, rng) for _ in range(nout)]

    def __call__(self, x: Sequence[Value | float]) -> Value | list[Value]:
        out = [n(x) for n in self.neurons]
        return out[0] if len(out) == 1 else out

    def parameters(self) -> list[Value]:
        return [p for n in self.neurons for p in n.parameters()]

    def __repr__(self) -> str:
        return f"Layer of [{', '.join(str(n) for n in self.neurons)}]"


class MLP(Module):
    """A multilayer perceptron: dense layers with ``activation`` between them, none after the last.

    Args:
        nin: number of inputs.
        nouts: the width of each layer, e.g. ``[16, 16, 1]``.
        activation: the hidden layers' nonlinearity (see :class:`Neuron`).
        rng: the random number generator for the weights.

    Example: ``MLP(3, [4, 4, 1])`` maps 3 numbers to 1, like
    ``nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1))``.
    """

    def __init__(self, nin: int, nouts: Sequence[int], activation: str = "tanh",
                 rng: random.Random | None = None) -> None:
        if len(nouts) == 0:
            raise ValueError("MLP: expected at least one layer width in nouts, got none")
        sizes = [nin, *nouts]
        last = len(nouts) - 1
        self.layers = [Layer(sizes[i], sizes[i + 1], activation if i < last else "linear", rng)
                       for i in range(len(nouts))]

    def __call__(self, x: Sequence[Value | float]) -> Value | list[Value]:
        for layer in self.layers:
            x = layer(x)
            x = [x] if isinstance(x, Value) else x  # a 1-unit layer's output feeds the next as a list
        return x[0] if len(x) == 1 else x

    def parameters(self) -> list[Value]:
        return [p for layer in self.layers for p in layer.parameters()]

    def __repr__(self) -> str:
        return f"MLP of [{', '.join(str(layer) for layer in self.layers)}]"
