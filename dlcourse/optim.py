r"""Gradient-descent optimizers written from their update equations: SGD, RMSprop, Adagrad, Adam.

Each is a ``torch.optim.Optimizer``, so it takes ``model.parameters()`` or a list of parameter
groups (``[{"params": ..., "lr": 0.1}, ...]``), keeps its per-parameter memory in
``self.state[p]`` under the same names as ``torch.optim`` (so ``state_dict()`` loads into
either), and works with :func:`dlcourse.train.fit` and learning-rate schedulers. For the same
arguments, the updates equal ``torch.optim``'s (up to floating-point rounding):

=========  ==============================================================================
SGD        :math:`b \leftarrow \mu b + g` (:math:`b = g` at the first step),
           :math:`\theta \leftarrow \theta - \eta b`
RMSprop    :math:`v \leftarrow \alpha v + (1 - \alpha) g^2`,
           :math:`\theta \leftarrow \theta - \eta\, g / (\sqrt{v} + \epsilon)`
Adagrad    :math:`G \leftarrow G + g^2`, :math:`\theta \leftarrow \theta - \eta\, g / (\sqrt{G} + \epsilon)`
Adam       :math:`m \leftarrow \beta_1 m + (1 - \beta_1) g`,
           :math:`v \leftarrow \beta_2 v + (1 - \beta_2) g^2`,
           :math:`\theta \leftarrow \theta - \eta\, \hat m / (\sqrt{\hat v} + \epsilon)`
=========  ==============================================================================

Here :math:`g` is the gradient (plus :math:`\lambda \theta` with weight decay :math:`\lambda`),
:math:`\eta` the learning rate, and squares and roots act elementwise.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from dlcourse._checks import Unsupported, same_value as _same_value, torch_signature

__all__ = ["SGD", "RMSprop", "Adagrad", "Adam"]

Params = Iterable[Tensor] | Iterable[dict[str, Any]]


def _check_range(opt: str, name: str, value: object, low: float = 0.0, high: float | None = None,
                 high_open: bool = False) -> None:
    """Raise a clear error unless ``low <= value <= high`` (``< high`` if ``high_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{opt}: expected {name} to be a number, got {type(value).__name__}")
    if high is None:
        ok, wanted = value >= low, f">= {low}"
    elif high_open:
        ok, wanted = low <= value < high, f"in [{low}, {high})"
    else:
        ok, wanted = low <= value <= high, f"in [{low}, {high}]"
    if not ok:  # also catches NaN
        raise ValueError(f"{opt}: expected {name} {wanted}, got {value}")


def _closure_loss(closure: Callable[[], Tensor] | None) -> Tensor | None:
    """Re-evaluate the loss (with gradients on) if a closure is given, as ``torch.optim`` does."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _real(t: Tensor) -> Tensor:
    """A complex tensor as a real view with a trailing (real, imaginary) dimension, as torch.optim
    treats complex parameters: each part is a parameter of its own. A real tensor as itself."""
    return torch.view_as_real(t) if t.is_complex() else t


class _CheckedOptimizer(torch.optim.Optimizer):
    """An Optimizer that validates its hyperparameters, both the defaults and every param group.

    ``_torch_options`` lists the options of the ``torch.optim`` twin that this optimizer does not
    implement, each with the one value it computes the same as torch for. They are stored in
    every param group, so ``state_dict()`` loads into ``torch.optim``; a group (given, or loaded
    from a state dict) that asks for another value is refused by name, never ignored.
    """

    _torch_options: tuple[tuple[str, Any], ...] = ()

    def __init__(self, params: Params, defaults: dict[str, Any]) -> None:
        self._own_options = frozenset(defaults)
        defaults = {**defaults, **{k: v for k, v in self._torch_options if k not in defaults}}
        self._check_hyperparameters(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if isinstance(param_group, dict):
            self._check_options(param_group, "")
            self._check_hyperparameters({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def _check_options(self, group: dict[str, Any], where: str) -> None:
        """Refuse a torch.optim option this optimizer does not implement, naming it."""
        for key, accepted in self._torch_options:
            if key in group and key not in self._own_options and not _same_value(group[key], accepted):
                raise Unsupported(f"{type(self).__name__}{where}: dlcourse does not implement {key}={group[key]!r} "
                                  f"(torch.optim's {key}); expected {key}={accepted!r}")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict saved by this optimizer or by its ``torch.optim`` twin.

        A state saved with an option this optimizer does not implement (``nesterov=True``,
        ``amsgrad=True``, ...) is refused with an error naming it, before anything is loaded.
        """
        for group in state_dict.get("param_groups", []):
            self._check_options(group, ".load_state_dict")
            self._check_hyperparameters({**self.defaults, **group})
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # a state saved by an older torch may lack an option
            for key, value in self.defaults.items():
                group.setdefault(key, value)

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        raise NotImplementedError


class SGD(_CheckedOptimizer):
    r"""Stochastic gradient descent, with optional momentum and weight decay.

    Args:
        params: parameters to optimize, or a list of parameter groups (dicts).
        lr: learning rate :math:`\eta` (required).
        momentum: momentum factor :math:`\mu \ge 0` (default 0: plain SGD).
        weight_decay: L2 penalty :math:`\lambda \ge 0`; adds :math:`\lambda \theta` to the gradient.

    State per parameter: ``momentum_buffer`` :math:`b` (with momentum only).

    ``weight_decay`` is keyword-only (``torch.optim.SGD``'s fourth argument is ``dampening``).
    Complex parameters are updated as in ``torch.optim.SGD``.
    """

    _torch_options = (("dampening", 0), ("weight_decay", 0.0), ("nesterov", False), ("maximize", False),
                      ("foreach", None), ("differentiable", False), ("fused", None))

    @torch_signature(*_torch_options)
    def __init__(self, params: Params, lr: float, momentum: float = 0.0, *, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        _check_range("SGD", "lr", group["lr"])
        _check_range("SGD", "momentum", group["momentum"])
        _check_range("SGD", "weight_decay", group["weight_decay"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        r"""Update every parameter that has a gradient :math:`g`:

        .. math::

            g &\leftarrow g + \lambda \theta                  && \text{(weight decay)} \\
            b &\leftarrow \begin{cases} g & \text{first step} \\ \mu b + g & \text{later} \end{cases}
                                                               && \text{(momentum, if } \mu > 0) \\
            \theta &\leftarrow \theta - \eta\, b               && (\theta - \eta\, g \text{ if } \mu = 0)

        Args:
            closure: optional; re-evaluates the model and returns the loss.

        Returns:
            The loss returned by ``closure``, or ``None``.
        """
        loss = _closure_loss(closure)
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd != 0:
                    g = g + wd * p
                if mu != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state or state["momentum_buffer"] is None:
                        state["momentum_buffer"] = g.clone()  # b starts at the first gradient
                    else:
                        state["momentum_buffer"].mul_(mu).add_(g)  # b = mu b + g
                    g = state["momentum_buffer"]
                p.sub_(lr * g)
        return loss


class RMSprop(_CheckedOptimizer):
    r"""RMSprop: divide each gradient by a running root mean square of its recent values.

    Args:
        params: parameters to optimize, or a list of parameter groups.
        lr: learning rate :math:`\eta` (default 0.01).
        alpha: smoothing constant :math:`\alpha \in [0, 1]` of the running average (default 0.99).
        eps: :math:`\epsilon \ge 0`, added to the denominator so it is never 0 (default 1e-8).

    State per parameter: ``step`` (number of updates), ``square_avg`` :math:`v`. A complex
    parameter is two real ones (its real and imaginary parts), as in ``torch.optim.RMSprop``.
    """

    _torch_options = (("weight_decay", 0), ("momentum", 0), ("centered", False), ("capturable", False),
                      ("foreach", None), ("maximize", False), ("differentiable", False))

    @torch_signature(*_torch_options)
    def __init__(self, params: Params, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps})

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        _check_range("RMSprop", "lr", group["lr"])
        _check_range("RMSprop", "alpha", group["alpha"], 0.0, 1.0)
        _check_range("RMSprop", "eps", group["eps"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        r"""Update every parameter that has a gradient :math:`g` (:math:`v` starts at 0):

        .. math::

            v &\leftarrow \alpha v + (1 - \alpha)\, g^2 \\
            \theta &\leftarrow \theta - \eta\, \frac{g}{\sqrt{v} + \epsilon}

        Args:
            closure: optional; re-evaluates the model and returns the loss.

        Returns:
            The loss returned by ``closure``, or ``None``.
        """
        loss = _closure_loss(closure)
        for group in self.param_groups:
            lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["square_avg"] = torch.zeros_like(p)
                # int(): torch.optim stores the count as a 0-d tensor; state dicts load both ways.
                state["step"] = int(state["step"]) + 1
                g, v, p = _real(p.grad), _real(state["square_avg"]), _real(p)  # complex: as two real parts
                v.mul_(alpha).add_((1 - alpha) * g * g)
                p.sub_(lr * g / (v.sqrt() + eps))
        return loss


class Adagrad(_CheckedOptimizer):
    r"""Adagrad: divide each gradient by the root of the sum of all its past squares.

    Parameters that have had large gradients take smaller steps; the effective learning rate
    only ever shrinks.

    Args:
        params: parameters to optimize, or a list of parameter groups.
        lr: learning rate :math:`\eta` (default 0.01).
        eps: :math:`\epsilon \ge 0`, added to the denominator so it is never 0 (default 1e-10).

    State per parameter: ``step`` (number of updates), ``sum`` :math:`G`. A complex parameter is
    two real ones, as in ``torch.optim.Adagrad``.

    ``eps`` is keyword-only (``torch.optim.Adagrad``'s third argument is ``lr_decay``).
    """

    _torch_options = (("lr_decay", 0), ("weight_decay", 0), ("initial_accumulator_value", 0), ("eps", 1e-10),
                      ("foreach", None), ("maximize", False), ("differentiable", False), ("fused", None))

    @torch_signature(*_torch_options)
    def __init__(self, params: Params, lr: float = 0.01, *, eps: float = 1e-10) -> None:
        super().__init__(params, {"lr": lr, "eps": eps})

    def state_dict(self) -> dict[str, Any]:
        """The state, with zeros for parameters not updated yet: ``torch.optim.Adagrad`` expects a
        state for every parameter (it creates them with the optimizer)."""
        saved = super().state_dict()
        params = [p for group in self.param_groups for p in group["params"]]
        for i, p in enumerate(params):
            if not saved["state"].get(i):
                saved["state"][i] = {"step": torch.tensor(0.0), "sum": torch.zeros_like(p)}
        return saved

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        _check_range("Adagrad", "lr", group["lr"])
        _check_range("Adagrad", "eps", group["eps"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        r"""Update every parameter that has a gradient :math:`g` (:math:`G` starts at 0):

        .. math::

            G &\leftarrow G + g^2 \\
            \theta &\leftarrow \theta - \eta\, \frac{g}{\sqrt{G} + \epsilon}

        Args:
            closure: optional; re-evaluates the model and returns the loss.

        Returns:
            The loss returned by ``closure``, or ``None``.
        """
        loss = _closure_loss(closure)
        for group in self.param_groups:
            lr, eps = group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["sum"] = torch.zeros_like(p)
                state["step"] = int(state["step"]) + 1  # int(): torch.optim stores a 0-d tensor
                g, G, p = _real(p.grad), _real(state["sum"]), _real(p)  # complex: as two real parts
                G.add_(g * g)
                p.sub_(lr * g / (G.sqrt() + eps))
        return loss


class Adam(_CheckedOptimizer):
    r"""Adam: momentum on the gradient and RMSprop-style scaling, both with bias correction.

    Args:
        params: parameters to optimize, or a list of parameter groups.
        lr: learning rate :math:`\eta` (default 1e-3).
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1): decay rates of the running averages
            of the gradient and of its square (default (0.9, 0.999)).
        eps: :math:`\epsilon \ge 0`, added to the denominator so it is never 0 (default 1e-8).
        weight_decay: L2 penalty :math:`\lambda \ge 0`, added to the gradient as
            :math:`\lambda \theta` (as in ``torch.optim.Adam``; AdamW decays the weights instead).

    State per parameter: ``step`` :math:`t`, ``exp_avg`` :math:`m`, ``exp_avg_sq`` :math:`v`. A
    complex parameter is two real ones (its real and imaginary parts), as in ``torch.optim.Adam``.
    """

    _torch_options = (("amsgrad", False), ("foreach", None), ("maximize", False), ("capturable", False),
                      ("differentiable", False), ("fused", None), ("decoupled_weight_decay", False))

    @torch_signature(*_torch_options)
    def __init__(self, params: Params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Adam: expected betas to be a pair (beta1, beta2), got {betas!r}")
        _check_range("Adam", "lr", group["lr"])
        _check_range("Adam", "betas[0]", betas[0], 0.0, 1.0, high_open=True)
        _check_range("Adam", "betas[1]", betas[1], 0.0, 1.0, high_open=True)
        _check_range("Adam", "eps", group["eps"])
        _check_range("Adam", "weight_decay", group["weight_decay"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        r"""Update every parameter that has a gradient :math:`g`; at step :math:`t = 1, 2, \dots`
        (:math:`m` and :math:`v` start at 0):

        .. math::

            g &\leftarrow g + \lambda \theta \\
            m &\leftarrow \beta_1 m + (1 - \beta_1)\, g \\
            v &\leftarrow \beta_2 v + (1 - \beta_2)\, g^2 \\
            \hat m &= m / (1 - \beta_1^t), \qquad \hat v = v / (1 - \beta_2^t) \\
            \theta &\leftarrow \theta - \eta\, \frac{\hat m}{\sqrt{\hat v} + \epsilon}

        The bias corrections :math:`1 - \beta^t` undo the pull towards 0 of averages that
        start at 0: after the first step :math:`\hat m = g` and :math:`\hat v = g^2` exactly.

        Args:
            closure: optional; re-evaluates the model and returns the loss.

        Returns:
            The loss returned by ``closure``, or ``None``.
        """
        loss = _closure_loss(closure)
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                t = state["step"] = int(state["step"]) + 1  # int(): torch.optim stores a 0-d tensor
                m, v = _real(state["exp_avg"]), _real(state["exp_avg_sq"])  # complex: as two real parts
                g, p = _real(p.grad), _real(p)
                if wd != 0:
                    g = g + wd * p
                m.mul_(beta1).add_((1 - beta1) * g)
                v.mul_(beta2).add_((1 - beta2) * g * g)
                m_hat = m / (1 - beta1**t)
                v_hat = v / (1 - beta2**t)
                p.sub_(lr * m_hat / (v_hat.sqrt() + eps))
        return loss
