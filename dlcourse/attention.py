r"""Scaled dot-product attention written from its formula, checked against PyTorch's.

.. math::

    \operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\Big(\frac{Q K^\top}{\sqrt{E}} + M\Big)\, V

Each of the :math:`L` queries (rows of :math:`Q`) is compared with each of the :math:`S` keys
(rows of :math:`K`) by a dot product; the softmax over the keys turns a row of scores into
weights that sum to 1, and the output row is the weighted average of the values (rows of
:math:`V`). :math:`M` is a mask: 0 where a query may look, :math:`-\infty` where it may not.

The forward pass is three lines of tensor algebra (two batched matrix products and a softmax).
The backward pass is written out too, because its closed form is cheaper than autograd's walk
through the pieces: with :math:`P` the attention weights, :math:`O = PV` and :math:`G` the
gradient arriving at :math:`O`,

.. math::

    \frac{\partial L}{\partial V} = P^\top G, \qquad
    \frac{\partial L}{\partial S} = P \odot \big(G V^\top - \operatorname{rowsum}(G \odot O)\big), \qquad
    \frac{\partial L}{\partial Q} = \frac{1}{\sqrt{E}}\,\frac{\partial L}{\partial S} K, \qquad
    \frac{\partial L}{\partial K} = \frac{1}{\sqrt{E}}\,\Big(\frac{\partial L}{\partial S}\Big)^{\!\top} Q,

where :math:`S` are the (masked, scaled) scores. The row sum uses
:math:`\sum_j P_{ij} (G V^\top)_{ij} = \sum_e G_{ie} O_{ie}`, an :math:`L \times E_v` product
instead of an :math:`L \times S` one (the trick of FlashAttention's backward pass).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from dlcourse._checks import require_bool, torch_signature

__all__ = ["scaled_dot_product_attention", "causal_mask"]


def causal_mask(L: int, S: int | None = None, device: torch.device | str | None = None) -> Tensor:
    """A boolean ``(L, S)`` mask, ``True`` where query ``i`` may attend to key ``j``, i.e. ``j <= i``.

    The lower-triangular mask of a decoder (a GPT): position ``i`` sees itself and the past,
    never the future. It is aligned at the top left, as PyTorch's ``is_causal=True``.

    Args:
        L: number of queries. S: number of keys (default ``L``).
        device: where to create the mask.
    """
    S = L if S is None else S
    return torch.ones(L, S, dtype=torch.bool, device=device).tril()  # (L, S)


class _Attention(torch.autograd.Function):
    """softmax(scale * q k^T + mask) v on 3-D tensors (B, L, E), with the closed-form backward."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, add_mask: Tensor | None, forbid: Tensor | None,
                scale: float) -> Tensor:
        B, L, _ = q.shape
        S = k.shape[1]
        kt = k.transpose(1, 2)  # (B, E, S)
        if add_mask is not None:
            # scores = mask + scale * q k^T in one GEMM call; the mask is broadcast, not copied
            scores = torch.baddbmm(add_mask.expand(B, L, S), q, kt, alpha=scale)  # (B, L, S)
        else:
            scores = torch.bmm(q, kt).mul_(scale)  # (B, L, S)
        if forbid is not None:
            scores.masked_fill_(forbid, -math.inf)
        # softmax over the keys, in place: exp(s - max) / sum
        # (B, L, 1); with no key at all (S = 0) the output is 0, as in PyTorch, and there is no maximum
        row_max = scores.amax(dim=-1, keepdim=True) if S else scores.new_zeros(B, L, 1)
        masked = add_mask is not None or forbid is not None
        if masked:  # a row that sees no key at all: max = -inf; give it weights 0 (as PyTorch)
            row_max.masked_fill_(row_max == -math.inf, 0.0)
        probs = scores.sub_(row_max).exp_()  # (B, L, S), reuses the scores' memory
        total = probs.sum(dim=-1, keepdim=True)  # (B, L, 1)
        if masked:
            total.masked_fill_(total == 0, 1.0)
        probs.div_(total)
        out = torch.bmm(probs, v)  # (B, L, Ev)
        ctx.scale = scale
        ctx.mask_needs_grad = add_mask is not None and ctx.needs_input_grad[3]
        ctx.mask_shape = None if add_mask is None else add_mask.shape
        ctx.save_for_backward(q, k, v, probs, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        q, k, v, probs, out = ctx.saved_tensors
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        grad_q = grad_k = grad_v = grad_mask = None
        if need_v:
            grad_v = torch.bmm(probs.transpose(1, 2), grad_out)  # (B, S, L) @ (B, L, Ev) -> (B, S, Ev)
        if need_q or need_k or ctx.mask_needs_grad:
            delta = (grad_out * out).sum(dim=-1, keepdim=True)  # (B, L, 1) = rowsum(P * (G V^T))
            grad_s = torch.bmm(grad_out, v.transpose(1, 2))  # (B, L, S) = G V^T
            grad_s.sub_(delta).mul_(probs)  # dL/dscores, in place
            if ctx.mask_needs_grad:
                grad_mask = grad_s.sum_to_size(ctx.mask_shape)  # summed over the broadcast dimensions
            if need_q:
                grad_q = torch.bmm(grad_s, k).mul_(ctx.scale)  # (B, L, S) @ (B, S, E) -> (B, L, E)
            if need_k:
                grad_k = torch.bmm(grad_s.transpose(1, 2), q).mul_(ctx.scale)  # (B, S, L) @ (B, L, E)
        return grad_q, grad_k, grad_v, grad_mask, None, None


def _require_tensor(x: object, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"scaled_dot_product_attention: expected {name} to be a torch.Tensor, "
                        f"got {type(x).__name__}")


@torch_signature(("dropout_p", 0.0), ("is_causal", False), ("scale", None), ("enable_gqa", False))
def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None, *,
                                 is_causal: bool = False, scale: float | None = None) -> Tensor:
    r"""Attention :math:`\operatorname{softmax}(Q K^\top / \sqrt{E} + M)\,V`, as ``torch.nn.functional``'s.

    Args:
        q: queries :math:`Q`, ``(..., L, E)``.
        k: keys :math:`K`, ``(..., S, E)``.
        v: values :math:`V`, ``(..., S, E_v)``.
        attn_mask: ``None``; a **boolean** mask, ``True`` where a query may attend to a key
            (``False`` becomes :math:`-\infty`); or a **float** mask *added* to the scores
            (use ``-inf`` to forbid). Broadcastable to ``(..., L, S)``.
        is_causal: let query ``i`` see only keys ``j <= i`` (:func:`~dlcourse.attention.causal_mask`); do not
            combine it with ``attn_mask``.
        scale: the factor of the scores (default :math:`1/\sqrt{E}`).

    ``is_causal`` and ``scale`` are keyword-only: PyTorch's fifth positional argument is
    ``dropout_p``, which is not implemented (only ``dropout_p=0.0``), so
    ``scaled_dot_product_attention(q, k, v, None, 0.0, True)`` is an error naming them, not a
    silently non-causal attention.

    Shape:
        q: ``(..., L, E)``, k: ``(..., S, E)``, v: ``(..., S, E_v)``; their leading dimensions
        broadcast against each other. Output: ``(..., L, E_v)``. A query row that may see no key
        at all gets an output (and gradients) of 0, as in PyTorch.

    Returns:
        The attention output, on the inputs' device and in their dtype. Gradients flow to ``q``,
        ``k``, ``v`` and to a float ``attn_mask`` that requires them.
    """
    for x, name in ((q, "q"), (k, "k"), (v, "v")):
        _require_tensor(x, name)
        if x.dim() < 2:
            raise ValueError(f"scaled_dot_product_attention: expected {name} of shape (..., seq, features), "
                             f"got {x.dim()}-D")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"scaled_dot_product_attention: q and k must have the same feature size E, "
                         f"got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: k and v must have the same length S, "
                         f"got k {tuple(k.shape)} and v {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or not q.dtype.is_floating_point:
        raise ValueError(f"scaled_dot_product_attention: expected q, k, v of one floating dtype, "
                         f"got {q.dtype}, {k.dtype}, {v.dtype}")
    require_bool(is_causal, "is_causal", "scaled_dot_product_attention")
    if is_causal and attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: give either attn_mask or is_causal=True, not both")
    L, E = q.shape[-2:]
    S, Ev = v.shape[-2:]
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    B = math.prod(batch)
    # Flatten the batch dimensions into one: expand is a view, reshape copies only if it must.
    q3 = q.expand(*batch, L, E).reshape(B, L, E)  # (B, L, E)
    k3 = k.expand(*batch, S, E).reshape(B, S, E)  # (B, S, E)
    v3 = v.expand(*batch, S, Ev).reshape(B, S, Ev)  # (B, S, Ev)
    add_mask = forbid = None
    if is_causal:
        forbid = torch.ones(L, S, dtype=torch.bool, device=q.device).triu(1)  # (L, S): the future, j > i
    elif attn_mask is not None:
        _require_tensor(attn_mask, "attn_mask")
        try:
            full = torch.broadcast_shapes(attn_mask.shape, (*batch, L, S))
        except RuntimeError:
            full = None
        if full != (*batch, L, S):
            raise ValueError(f"scaled_dot_product_attention: attn_mask of shape {tuple(attn_mask.shape)} "
                             f"does not broadcast to (..., L, S) = {(*batch, L, S)}")
        mask = attn_mask
        if mask.dim() > 2 and math.prod(mask.shape[:-2]) > 1:
            mask = mask.expand(*batch, L, S).reshape(B, L, S)  # (B, L, S): one mask per batch entry
        else:
            mask = mask.reshape(1, *mask.shape[-2:]) if mask.dim() >= 2 else mask.reshape(1, 1, -1)  # (1, ., .)
        if mask.dtype == torch.bool:
            forbid = mask.logical_not()  # True where a query may NOT look
        elif mask.dtype == q.dtype:
            add_mask = mask
        else:
            raise ValueError(f"scaled_dot_product_attention: expected a bool attn_mask or one of the "
                             f"inputs' dtype {q.dtype}, got {mask.dtype}")
    scale = 1.0 / math.sqrt(E) if scale is None else float(scale)
    out = _Attention.apply(q3, k3, v3, add_mask, forbid, scale)  # (B, L, Ev)
    return out.reshape(*batch, L, Ev)  # (..., L, Ev)
