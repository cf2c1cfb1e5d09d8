r"""Loss functions and dropout written from their formulas, checked against ``torch.nn.functional``.

Every loss averages over all elements (PyTorch's default ``reduction="mean"``) and returns a
0-d tensor on the input's device and in its dtype. Autograd differentiates the formulas
themselves, except in :func:`binary_cross_entropy`, whose gradient PyTorch defines by its own
(clamped) formula; there the backward pass is written out. :func:`cross_entropy` hands over to
a tuned version of the same formula (``dlcourse._fast.losses``) unless ``DLCOURSE_FAST=0``.

These functions are re-exported by :mod:`dlcourse.functional`. They do not import it (that
module imports this one), so the small input checks live here.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from dlcourse import _fast
from dlcourse._checks import check_class_indices, require_tensor, torch_signature

__all__ = ["mse_loss", "l1_loss", "huber_loss", "binary_cross_entropy", "cross_entropy", "dropout"]


def _require_same_shape(a: Tensor, b: Tensor, fn: str, names: tuple[str, str]) -> None:
    require_tensor(a, names[0], fn)
    require_tensor(b, names[1], fn)
    if a.shape != b.shape:
        raise ValueError(
            f"{fn}: {names[0]} and {names[1]} must have the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


@torch_signature(("size_average", None), ("reduce", None), ("reduction", "mean"), ("weight", None))
def mse_loss(pred: Tensor, target: Tensor) -> Tensor:
    r"""Mean squared error, :math:`\frac{1}{n} \sum_i (\hat y_i - y_i)^2`.

    Args:
        pred: predictions :math:`\hat y`.
        target: targets :math:`y`, same shape.

    Shape:
        pred, target: any shape, the same for both. Output: a scalar (0-d tensor).
    """
    _require_same_shape(pred, target, "mse_loss", ("pred", "target"))
    return ((pred - target) ** 2).mean()


@torch_signature(("size_average", None), ("reduce", None), ("reduction", "mean"), ("weight", None))
def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    r"""Mean absolute error, :math:`\frac{1}{n} \sum_i |\hat y_i - y_i|`.

    Its gradient is :math:`\operatorname{sign}(\hat y_i - y_i) / n` (0 where the two are equal).

    Shape:
        pred, target: any shape, the same for both. Output: a scalar.
    """
    _require_same_shape(pred, target, "l1_loss", ("pred", "target"))
    return (pred - target).abs().mean()


@torch_signature(("reduction", "mean"), ("delta", 1.0), ("weight", None))
def huber_loss(pred: Tensor, target: Tensor, *, delta: float = 1.0) -> Tensor:
    r"""Huber loss: squared error for small errors, absolute error for large ones.

    With :math:`d_i = \hat y_i - y_i`,

    .. math::

        \ell_i = \begin{cases} \tfrac12 d_i^2 & |d_i| < \delta \\
                               \delta \,(|d_i| - \tfrac12 \delta) & \text{otherwise,} \end{cases}
        \qquad L = \frac{1}{n} \sum_i \ell_i .

    The two pieces meet with the same value and slope at :math:`|d| = \delta`, so outliers
    pull with a bounded force :math:`\delta` instead of one growing with the error.

    Args:
        pred: predictions. target: targets, same shape.
        delta: where the quadratic turns linear; must be positive (default 1).

    Shape:
        pred, target: any shape, the same for both. Output: a scalar.
    """
    _require_same_shape(pred, target, "huber_loss", ("pred", "target"))
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real):
        raise TypeError(f"huber_loss: expected delta to be a number, got {type(delta).__name__}")
    if not delta > 0:  # also rejects NaN
        raise ValueError(f"huber_loss: expected a positive delta, got {delta}")
    d = pred - target
    abs_d = d.abs()
    quadratic = 0.5 * d**2
    linear = delta * (abs_d - 0.5 * delta)
    return torch.where(abs_d < delta, quadratic, linear).mean()


class _BinaryCrossEntropy(torch.autograd.Function):
    """Elementwise BCE with PyTorch's clamped logarithms and PyTorch's gradient formulas."""

    @staticmethod
    def forward(ctx, prob: Tensor, target: Tensor) -> Tensor:
        ctx.save_for_backward(prob, target)
        log_p = torch.log(prob).clamp(min=-100)  # log 0 = -inf becomes -100
        log_1mp = torch.log1p(-prob).clamp(min=-100)  # log(1 - p), accurate for p near 0
        return -(target * log_p + (1 - target) * log_1mp)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        prob, target = ctx.saved_tensors
        grad_prob = grad_target = None
        if ctx.needs_input_grad[0]:
            # dl/dp = -t/p + (1-t)/(1-p) = (p - t) / (p (1 - p)), its denominator kept >= 1e-12
            grad_prob = grad * (prob - target) / (prob * (1 - prob)).clamp(min=1e-12)
        if ctx.needs_input_grad[1]:
            # dl/dt = log(1 - p) - log p, not clamped (so +-inf at p = 0 or 1, as in PyTorch)
            grad_target = grad * (torch.log1p(-prob) - torch.log(prob))
        return grad_prob, grad_target


@torch_signature(("weight", None), ("size_average", None), ("reduce", None), ("reduction", "mean"))
def binary_cross_entropy(prob: Tensor, target: Tensor) -> Tensor:
    r"""Binary cross-entropy between predicted probabilities and targets in [0, 1].

    .. math::

        L = -\frac{1}{n} \sum_i \big[ y_i \log p_i + (1 - y_i) \log(1 - p_i) \big]

    As in PyTorch, each logarithm is clamped at :math:`-100`, so :math:`p = 0` or :math:`p = 1`
    gives a large but finite loss (100 per element) instead of ``inf``. The gradient is also
    PyTorch's: :math:`\partial L / \partial p_i = (p_i - y_i) / \max(p_i (1 - p_i), 10^{-12}) / n`,
    which is the exact derivative wherever :math:`p_i (1 - p_i) \ge 10^{-12}` and a large finite
    push elsewhere. (The derivative of the clamped formula would be 0 or NaN there.)

    For raw scores (logits) prefer ``cross_entropy`` with two classes or
    ``torch.nn.functional.binary_cross_entropy_with_logits``, which never need the clamp.

    Args:
        prob: predicted probabilities :math:`p`, each in [0, 1] (e.g. a sigmoid output).
        target: targets :math:`y` in [0, 1] (usually 0 or 1), same shape and dtype.

    Shape:
        prob, target: any shape, the same for both. Output: a scalar.
    """
    _require_same_shape(prob, target, "binary_cross_entropy", ("prob", "target"))
    if not prob.is_floating_point():
        raise TypeError(f"binary_cross_entropy: expected floating-point probabilities, got {prob.dtype}")
    if prob.numel() and (prob.detach().amin() < 0 or prob.detach().amax() > 1):
        raise ValueError(
            f"binary_cross_entropy: expected probabilities in [0, 1], got values from "
            f"{prob.detach().amin().item():.4g} to {prob.detach().amax().item():.4g} "
            "(apply a sigmoid first, or use a loss that takes logits)"
        )
    return _BinaryCrossEntropy.apply(prob, target).mean()


@torch_signature(("weight", None), ("size_average", None), ("ignore_index", -100), ("reduce", None),
                 ("reduction", "mean"), ("label_smoothing", 0.0))
def cross_entropy(logits: Tensor, target: Tensor, *, ignore_index: int = -100) -> Tensor:
    r"""Cross-entropy between raw class scores (logits) and class indices.

    For one sample with logits :math:`x \in \mathbb{R}^C` and true class :math:`y`,

    .. math::

        \ell = -\log \operatorname{softmax}(x)_y = \log \sum_{c} e^{x_c} - x_y
             = m + \log \sum_c e^{x_c - m} - x_y, \qquad m = \max_c x_c ,

    and :math:`L` is the mean of :math:`\ell` over the samples (and positions, for inputs
    with extra dimensions) whose target is not ``ignore_index``. Subtracting the maximum
    :math:`m` (the log-sum-exp trick) keeps every exponent :math:`\le 0`, so logits of any
    size give a finite loss.

    Args:
        logits: unnormalised scores, the class dimension second (or only).
        target: integer class indices in :math:`[0, C)`.
        ignore_index: targets with this value (e.g. padding) do not count (default -100,
            as in PyTorch).

    Shape:
        logits: ``(N, C)``, ``(N, C, d1, d2, ...)`` or ``(C,)``.
        target: ``(N,)``, ``(N, d1, d2, ...)`` or ``()`` respectively.
        Output: a scalar.
    """
    require_tensor(logits, "logits", "cross_entropy")
    require_tensor(target, "target", "cross_entropy")
    if not logits.is_floating_point():
        raise TypeError(f"cross_entropy: expected floating-point logits, got {logits.dtype}")
    if target.is_floating_point() or target.dtype == torch.bool or target.is_complex():
        raise TypeError(
            f"cross_entropy: expected integer class indices as target (e.g. torch.long), got {target.dtype}"
        )
    if logits.dim() == 0:
        raise ValueError("cross_entropy: expected logits of shape (N, C) or (C,), got a scalar")
    if logits.dim() == 1:  # one unbatched sample
        logits, target = logits.unsqueeze(0), target.unsqueeze(0)  # (1, C), (1,)
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        shape = "(N, C" + "".join(f", d{i}" for i in range(1, logits.dim() - 1)) + ")"
        raise ValueError(
            f"cross_entropy: for logits {shape} = {tuple(logits.shape)} the target must have shape "
            f"{expected}, got {tuple(target.shape)}"
        )
    x = logits.movedim(1, -1)  # (N, d1, ..., C): classes last
    if _fast.enabled():  # the same loss, tuned for speed (dlcourse/_fast/losses.py)
        return _fast.cross_entropy(x, target, ignore_index)
    keep = target != ignore_index  # (N, d1, ...): the positions that count
    check_class_indices(target, keep, x.shape[-1], "cross_entropy")
    y = torch.where(keep, target, torch.zeros_like(target)).long()  # (N, d1, ...): any valid class where ignored
    m = x.detach().amax(dim=-1, keepdim=True)  # (..., 1): the largest logit, a constant that cancels out
    log_sum_exp = m + (x - m).exp().sum(dim=-1, keepdim=True).log()  # (..., 1): every exponent <= 0
    losses = (log_sum_exp - x.gather(-1, y.unsqueeze(-1))).squeeze(-1)  # (N, d1, ...): -log softmax(x)_y
    return losses[keep].sum() / keep.sum()  # the mean over the kept positions (none kept: NaN, as PyTorch)


@torch_signature(("inplace", False))
def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    r"""Inverted dropout: zero each element with probability :math:`p`, scale the rest by :math:`1/(1-p)`.

    .. math::

        y_i = \frac{m_i\, x_i}{1 - p}, \qquad m_i \sim \operatorname{Bernoulli}(1 - p)

    The scaling keeps the expected value unchanged, :math:`\mathbb{E}[y_i] = x_i`, so nothing
    needs rescaling at test time: with ``training=False`` (or ``p=0``) the input is returned
    as is. With ``p=1`` every element is dropped and the output is zero.

    Args:
        x: input tensor (floating point).
        p: probability of zeroing each element, in [0, 1] (default 0.5).
        training: apply dropout (``True``) or return ``x`` unchanged (``False``).

    Shape:
        Input: any shape. Output: same shape.
    """
    require_tensor(x, "x", "dropout")
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"dropout: expected p to be a number, got {type(p).__name__}")
    if not 0 <= p <= 1:  # also rejects NaN
        raise ValueError(f"dropout: expected a probability p in [0, 1], got {p}")
    if not training or p == 0:
        return x
    if not x.is_floating_point():
        raise TypeError(f"dropout: expected a floating-point tensor, got {x.dtype}")
    # Uniform draws in float32 whatever x's dtype: fine-grained enough for any p, even for float16 x.
    keep = torch.rand(x.shape, dtype=torch.float32, device=x.device) >= p  # True with probability 1 - p
    if p == 1:
        return x * keep  # all zeros (scaling by 1 / 0 would give NaN)
    return x * keep / (1 - p)
