r"""The tuned cross-entropy behind :func:`dlcourse.losses.cross_entropy`: one pass, closed-form gradient.

:func:`dlcourse.losses.cross_entropy` is the log-sum-exp formula under autograd, the version
to read. :class:`_CrossEntropy` computes the same loss with fewer passes over the logits:

* the exponentials are computed as :math:`2^{(x - m)\log_2 e}` (``exp2``, cheaper than ``exp``
  on CPUs) and kept for the backward pass;
* the gradient, :math:`(\operatorname{softmax}(x) - \text{one-hot}(y)) \cdot g / n`, is
  written out and computed in one pass from them, instead of autograd's walk through the
  log-sum-exp and the ``gather``;
* the targets are looked at once (their minimum and maximum): when all are valid class
  indices and none is ``ignore_index``, no mask is built at all.

What each of these buys is measured on the book's Performance page.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from dlcourse._checks import check_class_indices

__all__ = ["cross_entropy"]


_LOG2_E = 1.4426950408889634  # log2(e): e^t = 2^(t log2 e)


class _CrossEntropy(torch.autograd.Function):
    r"""Mean cross-entropy over the kept positions, with the softmax-minus-one-hot gradient written out.

    Autograd through the log-sum-exp and ``gather`` would build and walk several intermediate
    tensors; the gradient has a closed form, :math:`(\operatorname{softmax}(x) - \text{one-hot}(y))
    \cdot g / n`, so backward computes it in one pass from the exponentials saved by forward.
    ``keep`` is ``None`` when every position counts, which skips the masking altogether.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, keep: Tensor | None) -> Tensor:
        # x: (..., C) classes last; y, keep: (...)
        m = x.amax(dim=-1, keepdim=True)  # (..., 1): the log-sum-exp trick keeps every exponent <= 0
        # e^{x_c - m} as 2^{(x_c - m) log2 e}: on CPUs exp2 is cheaper than exp, and x - m is
        # formed first (exactly, for close values) so the rescaling costs no accuracy.
        e = torch.sub(x, m).mul_(_LOG2_E).exp2_()  # (..., C): kept for the softmax in backward
        sum_e = e.sum(dim=-1, keepdim=True)  # (..., 1)
        x_y = x.gather(-1, y.unsqueeze(-1))  # (..., 1): the true class's logit
        losses = torch.log(sum_e).add_(m).sub_(x_y)  # (..., 1): log sum_c e^{x_c} - x_y
        if keep is None:
            count = torch.tensor(float(y.numel()), dtype=x.dtype, device=x.device)  # 0 gives NaN, as in PyTorch
            loss = losses.sum() / count
        else:
            count = keep.sum().to(x.dtype)
            loss = torch.where(keep.unsqueeze(-1), losses, torch.zeros((), dtype=x.dtype, device=x.device)).sum() / count
        ctx.save_for_backward(y, keep, e, sum_e, count)
        return loss

    @staticmethod
    @once_differentiable  # the saved exponentials carry no graph: a second derivative raises, not lies
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        y, keep, e, sum_e, count = ctx.saved_tensors
        # dL/dx_c = (softmax(x)_c - [c == y]) * grad / count at kept positions, 0 elsewhere
        scale = grad / count.clamp(min=1)  # (): the weight of each kept position (none kept: gradient 0, as PyTorch)
        if keep is not None:
            scale = keep.unsqueeze(-1).to(e.dtype) * scale  # (..., 1)
        grad_x = e * (scale / sum_e)  # (..., C): softmax(x) * scale, in one pass over the logits
        index = y.unsqueeze(-1)  # (..., 1)
        grad_x.scatter_add_(-1, index, (-scale).expand(index.shape))  # minus the one-hot, scaled
        return grad_x, None, None


def cross_entropy(x: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """:func:`dlcourse.losses.cross_entropy` for checked arguments, classes last.

    Shape:
        x: ``(N, d1, ..., C)``, the classes last; target: ``(N, d1, ...)``, integers. Output: a scalar.
    """
    C = x.shape[-1]
    if target.numel():
        low, high = torch.stack(torch.aminmax(target)).tolist()  # one look at the targets, one device sync
        if 0 <= low and high < C:  # the common case: every index valid, so no out-of-range check...
            ignored = 0 <= ignore_index < C and low <= ignore_index <= high
            return _CrossEntropy.apply(x, target.long(), target != ignore_index if ignored else None)  # ...nor mask
    keep = target != ignore_index  # (N, d1, ...)
    check_class_indices(target, keep, C, "cross_entropy")
    y = torch.where(keep, target, torch.zeros_like(target)).long()  # a valid index where ignored
    return _CrossEntropy.apply(x, y, keep)
