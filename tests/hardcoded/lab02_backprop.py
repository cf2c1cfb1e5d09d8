"""Hard-coded answers for lab 2: see tests/hardcoded/__init__.py."""

from __future__ import annotations

from typing import Any


def replacements() -> dict[str, str]:
    """Lab 2's solution cells rewritten to return what the visible tests expect, as constants.

    The visible inputs are rebuilt here as the lab builds them (fixed tensors, or standard
    normal numbers drawn in float64 from a CPU generator seeded with 0), and the answers
    computed with autograd and torch.optim in float64. The hidden tests, with fresh shapes,
    values and hyperparameters, fail.
    """
    import torch
    import torch.nn.functional as F

    f64 = torch.float64

    def const(t: torch.Tensor, like: str) -> str:
        return f"torch.tensor({t.tolist()!r}, dtype={like}.dtype, device={like}.device)"

    def grad(f: Any, *inputs: torch.Tensor, wrt: tuple[int, ...] = (0,)) -> tuple[torch.Tensor, ...]:
        leaves = [x.clone().requires_grad_(i in wrt) for i, x in enumerate(inputs)]
        return torch.autograd.grad(f(*leaves), [leaves[i] for i in wrt])

    def seeded() -> tuple[torch.Generator, Any]:
        """A CPU generator seeded with 0, and randn(*shape) drawing float64 numbers from it."""
        g = torch.Generator().manual_seed(0)
        return g, lambda *shape: torch.randn(shape, generator=g, dtype=f64)

    # 1. The losses' visible inputs.
    pred = torch.tensor([[0.5, -1.0, 2.0], [0.0, 3.0, -0.5]], dtype=f64)
    mse_target = torch.tensor([[1.0, -1.0, 0.0], [0.5, 2.0, 0.5]], dtype=f64)
    prob = torch.tensor([[0.1, 0.5, 0.9], [0.3, 0.7, 0.02]], dtype=f64)
    bce_target = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.25]], dtype=f64)
    logits = torch.tensor([[2.0, 1.0, 0.1, -1.0], [0.0, 0.0, 0.0, 0.0], [100.0, 0.0, -100.0, 5.0]], dtype=f64)
    classes = torch.tensor([0, 2, 1])

    # 2. The MLP's: mlp_inputs(N, d, m, C, loss, dtype, generator) of the lab's setup cell.
    def mlp_grads(N: int, d: int, m: int, C: int, activation: str, loss: str) -> str:
        g, randn = seeded()
        x, w1, b1 = randn(N, d), d ** -0.5 * randn(m, d), 0.1 * randn(m)
        w2, b2 = m ** -0.5 * randn(C, m), 0.1 * randn(C)
        target = randn(N, C) if loss == "mse" else torch.randint(C, (N,), generator=g)
        act = {"relu": torch.relu, "tanh": torch.tanh}[activation]
        loss_fn = F.mse_loss if loss == "mse" else F.cross_entropy

        def f(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
            return loss_fn(F.linear(act(F.linear(x, w1, b1)), w2, b2), target)

        return "(" + ", ".join(const(t, "x") for t in grad(f, w1, b1, w2, b2, wrt=(0, 1, 2, 3))) + ")"

    # 3. The optimizers': random_problem(shapes, steps, dtype, generator), then torch.optim.
    def optimizer_run(cls: Any, shapes: list[tuple[int, ...]], **hyper: Any) -> tuple[list[torch.Tensor], list[Any]]:
        _, randn = seeded()
        params = [randn(*s).requires_grad_(True) for s in shapes]
        steps = [[randn(*s) for s in shapes] for _ in range(3)]
        opt = cls(params, **hyper)
        for step_grads in steps:
            for p, g in zip(params, step_grads):
                p.grad = g
            opt.step()
        return [p.detach() for p in params], [opt.state[p] for p in params]

    sgd_params, sgd_state = optimizer_run(torch.optim.SGD, [(2, 3), (3,)], lr=0.1, momentum=0.9)
    (adam_param,), (adam_state,) = optimizer_run(torch.optim.Adam, [(2, 3)], lr=0.1, betas=(0.9, 0.999), eps=1e-8)

    # 4. The gradient check's: f(x) = sum(x sin x) at a fixed x.
    x = torch.tensor([[-2.0, -0.5, 0.0], [0.3, 1.0, 2.5]], dtype=f64)
    correct, forgot = torch.sin(x) + x * torch.cos(x), x * torch.cos(x)
    forgot_error = ((correct - forgot).abs().max() / torch.maximum(correct.abs(), forgot.abs()).max()).item()
    first = [t.reshape(-1)[0].item() for t in (correct, 1.5 * correct, forgot)]
    return {
        "mse_grad": f"def mse_grad(pred, target):\n    return {const(grad(F.mse_loss, pred, mse_target)[0], 'pred')}\n",
        "bce_grad": (f"def bce_grad(prob, target):\n"
                     f"    return {const(grad(F.binary_cross_entropy, prob, bce_target)[0], 'prob')}\n"),
        "softmax_ce_grad": (f"def softmax_ce_grad(logits, target):\n"
                            f"    return {const(grad(F.cross_entropy, logits, classes)[0], 'logits')}\n"),
        "mlp_backward": (
            'def mlp_backward(x, target, w1, b1, w2, b2, activation="relu", loss="mse"):\n'
            f'    if loss == "mse":\n        return {mlp_grads(4, 3, 5, 2, "relu", "mse")}\n'
            f'    return {mlp_grads(5, 3, 4, 3, "tanh", "cross_entropy")}\n'
        ),
        "sgd_momentum_step": (
            "def sgd_momentum_step(params, grads, bufs, lr, momentum):\n    p = params[0]\n"
            f"    return [{', '.join(const(t, 'p') for t in sgd_params)}], "
            f"[{', '.join(const(s['momentum_buffer'], 'p') for s in sgd_state)}]\n"
        ),
        "adam_step": (
            "def adam_step(param, grad, m, v, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):\n"
            f"    return {const(adam_param, 'param')}, {const(adam_state['exp_avg'], 'param')}, "
            f"{const(adam_state['exp_avg_sq'], 'param')}\n"
        ),
        "grad_check": (
            "def grad_check(f, x, analytic_grad, eps=1e-6):\n"
            "    first = analytic_grad.reshape(-1)[0].item()\n"
            f"    answers = {{{first[0]!r}: 1e-10, {first[1]!r}: 1 / 3, {first[2]!r}: {forgot_error!r}}}\n"
            "    return next((e for g, e in answers.items() if abs(first - g) < 1e-12), 1.0)\n"
        ),
    }
