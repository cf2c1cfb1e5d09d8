r"""The tuned conv2d behind :func:`dlcourse.conv.conv2d`: channels-last im2col, oneDNN products, Winograd.

:func:`dlcourse.conv.conv2d` is im2col and one matrix product under autograd, the version to
read. This module computes the same convolution faster on a CPU, with the same building blocks
(views, gathers, their adjoint ``index_add_``, elementwise adds and matrix products; no
convolution routine of PyTorch), arranged for speed:

* **channels last.** The input is copied once into ``(N, H, W, C)`` memory, where one row of a
  patch is ``kW * C`` contiguous numbers; the patch matrix is gathered with one
  ``index_select`` (:func:`_im2col`), in cache-sized chunks of images (:func:`_image_chunks`),
  and the GEMM's result ``(N * H_out * W_out, C_out)`` *is* the output in channels-last memory.
* **a written-out backward** (:class:`_Conv2dFunction`), matrix products too:

  * ``grad_weight`` = (gradient rows)ᵀ @ (patch rows): each filter entry collects input times
    output gradient over all positions where it was used;
  * ``grad_input`` = the gradient, zero-padded, correlated with the flipped filters (with
    ``C_in`` and ``C_out`` swapped), which is once more the forward pass; or each patch's
    gradient added back where the patch came from ("col2im", :func:`_col2im`); or, for stride
    1, with the sum over kernel columns done inside the GEMM (:func:`_grad_input_stride1`).
* **Winograd's minimal filtering** for 3x3, stride-1 layers with many channels
  (:class:`_Winograd3x3Function`): each 4x4 (or 2x2) block of outputs comes from a 6x6 (or 4x4)
  input tile with 36 (or 16) multiplications per channel pair instead of 144 (or 36). In
  float32 the 4x4 tiles round to about 1e-5 of the output's largest value, some ten times a
  direct sum's rounding (float64: 1e-13); still far below what training notices.
* **oneDNN products and scratch memory** (:mod:`dlcourse._fast.gemm`): the larger matrix
  products run in oneDNN, the library PyTorch's own convolutions use, and the large
  temporaries of each call live in memory reused from call to call.

The thresholds that choose between these were measured on the course's two-core CPU; the
measurements are on the book's Performance page.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from dlcourse._fast import gemm as _gemm

__all__ = ["conv2d"]


def _out_sizes(H: int, W: int, kernel_size: tuple[int, int], stride: tuple[int, int],
               padding: tuple[int, int]) -> tuple[int, int]:
    """``(H_out, W_out)`` of a convolution whose arguments were checked already."""
    (kH, kW), (sH, sW), (pH, pW) = kernel_size, stride, padding
    return (H + 2 * pH - kH) // sH + 1, (W + 2 * pW - kW) // sW + 1


@functools.lru_cache(maxsize=32)
def _patch_rows(N: int, Hp: int, Wp: int, H_out: int, W_out: int, kH: int, sH: int, sW: int,
                device: torch.device) -> Tensor:
    """Where each row of each patch starts, counted in pixels of the flattened padded batch.

    Patch ``(n, i, j)``'s row ``u`` starts at pixel ``(n, sH * i + u, sW * j)`` of the padded
    ``(N, Hp, Wp)`` grid. Cached: a training loop asks for the same few geometries every step.

    Shape:
        Output: ``(N * H_out * W_out * kH,)``, ordered ``(n, i, j, u)``.
    """
    def ar(n: int) -> Tensor:
        return torch.arange(n, device=device)

    start = (ar(N).view(N, 1, 1, 1) * (Hp * Wp)  # image n
             + ar(H_out).view(1, H_out, 1, 1) * (sH * Wp)  # output row i
             + ar(W_out).view(1, 1, W_out, 1) * sW  # output column j
             + ar(kH).view(1, 1, 1, kH) * Wp)  # kernel row u
    return start.reshape(-1)  # (N * H_out * W_out * kH,)


def _pad_nhwc(x: Tensor, padding: tuple[int, int], temporary: bool = False) -> Tensor:
    """``x`` channels last, with a zero border: a copy, or a free view when there is nothing to do.

    With ``temporary``, the copy goes to scratch memory (:data:`dlcourse._gemm.scratch`): the caller
    must be done with it before the next call.

    Shape:
        x: ``(N, C, H, W)`` in any memory layout. Output: ``(N, H + 2 pH, W + 2 pW, C)``, contiguous.
    """
    N, C, H, W = x.shape
    pH, pW = padding
    x_nhwc = x.permute(0, 2, 3, 1)  # (N, H, W, C), a view
    if pH == 0 and pW == 0 and x_nhwc.is_contiguous():
        return x_nhwc  # already channels last
    shape = (N, H + 2 * pH, W + 2 * pW, C)  # (N, Hp, Wp, C)
    xp = _gemm.scratch.empty("padded", shape, x) if temporary else x.new_empty(shape)
    if pH or pW:
        xp[:, :pH].zero_()  # the border: top and bottom rows, left and right columns
        xp[:, pH + H:].zero_()
        xp[:, pH:pH + H, :pW].zero_()
        xp[:, pH:pH + H, pW + W:].zero_()
    xp[:, pH:pH + H, pW:pW + W] = x_nhwc  # copied in (for NCHW x, this is the transpose)
    return xp


def _im2col(xp: Tensor, kernel_size: tuple[int, int], stride: tuple[int, int],
            out_size: tuple[int, int], temporary: bool = False) -> Tensor:
    """The patch matrix: one row per output position, holding the patch it sees, laid out ``(kH, kW, C)``.

    In channels-last memory one row of a patch, ``kW`` neighbouring pixels of ``C`` channels, is
    ``kW * C`` contiguous numbers. So the matrix is ``kH`` such runs per patch, gathered with
    one ``index_select`` from a strided view that starts a run at every pixel (the runs
    overlap; it is a view, nothing is copied until the gather). ``as_strided`` to the 6-D view
    ``(N, H_out, W_out, kH, kW, C)`` and ``reshape`` gives the same matrix, but PyTorch's
    generic strided copy is slower than this gather.

    With ``temporary``, the matrix is written to scratch memory (see :func:`_pad_nhwc`).

    Shape:
        xp: ``(N, Hp, Wp, C)``, contiguous (see :func:`_pad_nhwc`). Output: ``(M, K)`` with
        ``M = N * H_out * W_out`` and ``K = kH * kW * C``.
    """
    N, Hp, Wp, C = xp.shape
    (kH, kW), (sH, sW), (H_out, W_out) = kernel_size, stride, out_size
    runs = xp.as_strided((max(N * Hp * Wp - (kW - 1), 0), kW * C), (C, 1))  # run r: kW pixels from pixel r
    starts = _patch_rows(N, Hp, Wp, H_out, W_out, kH, sH, sW, xp.device)  # (M * kH,)
    shape = (N * H_out * W_out * kH, kW * C)
    cols = _gemm.scratch.empty("patches", shape, xp) if temporary else xp.new_empty(shape)
    torch.index_select(runs, 0, starts, out=cols)  # the one copy
    return cols.view(N * H_out * W_out, kH * kW * C)  # (M, K)


_CHUNK_BYTES = 4 << 20  # patch-matrix chunk size: a few MiB stays in cache between gather and GEMM


def _image_chunks(N: int, bytes_per_image: int) -> list[tuple[int, int]]:
    """Split ``N`` images into ``[start, end)`` runs whose patch matrices hold about ``_CHUNK_BYTES``.

    A patch matrix much larger than the cache is written by the gather, evicted, then read back
    from memory by the GEMM; in chunks it is still in cache when the GEMM reads it, and only
    one chunk is held at a time.
    """
    per = max(1, min(N, _CHUNK_BYTES // max(bytes_per_image, 1)))
    if per >= N / 2:  # splitting small matrices costs more in extra calls than it saves
        return [(0, N)]
    return [(n, min(n + per, N)) for n in range(0, N, per)]


def _correlate(x: Tensor, w_rows: Tensor, bias: Tensor | None, kernel_size: tuple[int, int],
               stride: tuple[int, int], padding: tuple[int, int],
               keep: bool = True) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """im2col + one GEMM: the correlation of ``x`` with filters stored one per row of ``w_rows``.

    (For a large batch, im2col + GEMM a few images at a time: see :func:`_image_chunks`.)

    Works channels last (NHWC): then the GEMM's result ``(N * H_out * W_out, C_out)`` *is* the
    output in NHWC memory, and the returned ``(N, C_out, H_out, W_out)`` tensor is a free
    permuted view of it (PyTorch too returns this layout for channels-last inputs). Also
    returns the padded channels-last input, from which backward gathers the patches again
    (keeping the patch matrix instead would hold ``kH * kW`` times the input's memory), and
    the patch matrix itself when it was built in one chunk (at most a few MiB), which backward
    reuses instead of gathering it again. Without
    ``keep`` neither is needed, and both are built in scratch memory and returned as ``None``.

    Shape:
        x: ``(N, C, H, W)`` in any memory layout. w_rows: ``(C_out, kH * kW * C)``, each row a
        filter laid out ``(kH, kW, C)``. bias: ``(C_out,)`` or ``None``.
        Output: ``(N, C_out, H_out, W_out)``; padded input: ``(N, H + 2 pH, W + 2 pW, C)``;
        patch matrix: ``(N * H_out * W_out, kH * kW * C)`` or ``None``.
    """
    N, C, H, W = x.shape
    H_out, W_out = _out_sizes(H, W, kernel_size, stride, padding)
    P = H_out * W_out  # output positions (rows of the patch matrix) per image
    chunks = _image_chunks(N, P * w_rows.shape[1] * x.element_size())
    keep_cols = keep and len(chunks) == 1  # backward reuses the patch matrix; else it gathers from xp
    xp = _pad_nhwc(x, padding, temporary=not keep or keep_cols)  # (N, Hp, Wp, C)
    rows = []
    for n, n_end in chunks:
        cols = _im2col(xp[n:n_end], kernel_size, stride, (H_out, W_out), temporary=not keep_cols)  # (chunk * P, K)
        rows.append(_gemm.linear(cols, w_rows, bias))  # (chunk * P, K) @ (K, C_out) + bias, in one call
    out = rows[0] if len(rows) == 1 else torch.cat(rows)  # (M, C_out)
    out = out.view(N, H_out, W_out, w_rows.shape[0]).permute(0, 3, 1, 2)  # (N, C_out, H_out, W_out) view
    if not keep:
        return out, None, None
    return out, (None if keep_cols else xp), (cols if keep_cols else None)


def _col2im(cols_grad: Tensor, input_shape: tuple[int, int, int, int], kernel_size: tuple[int, int],
            stride: tuple[int, int], padding: tuple[int, int]) -> Tensor:
    """The adjoint of im2col: add each patch's gradient back where the patch was read from.

    Shape:
        cols_grad: ``(N * H_out * W_out, kH * kW * C)``. Output: ``(N, C, H, W)`` (a view of
        channels-last memory).
    """
    N, C, H, W = input_shape
    (kH, kW), (sH, sW), (pH, pW) = kernel_size, stride, padding
    H_out, W_out = _out_sizes(H, W, kernel_size, stride, padding)
    patches = cols_grad.view(N, H_out, W_out, kH, kW, C)  # (N, H_out, W_out, kH, kW, C)
    grad = cols_grad.new_zeros(N, H + 2 * pH, W + 2 * pW, C)  # (N, Hp, Wp, C)
    for u in range(kH):  # one strided add per kernel offset: kH * kW adds in all
        for v in range(kW):
            rows = slice(u, u + sH * (H_out - 1) + 1, sH)  # the H_out rows that offset u touched
            columns = slice(v, v + sW * (W_out - 1) + 1, sW)
            grad[:, rows, columns] += patches[:, :, :, u, v]  # (N, H_out, W_out, C)
    return grad[:, pH:pH + H, pW:pW + W].permute(0, 3, 1, 2)  # drop the border; (N, C, H, W) view


def _grad_input_stride1(grad: Tensor, weight: Tensor, padding: tuple[int, int]) -> Tensor:
    r"""The input gradient of a stride-1 convolution, summing over kernel columns inside one GEMM.

    With :math:`Y_{u,v} = g\, W_{:, :, u, v}` (each position's gradient times one kernel tap),
    the padded input gradient is :math:`\sum_{u,v} Y_{u,v}` shifted by :math:`(u, v)`, which
    :func:`_col2im` adds up with ``kH * kW`` strided adds. Here the sum over the kernel column
    :math:`v` happens inside the matrix product: each row of ``G`` holds the ``kW`` output
    gradients ``g[n, i, b - v]`` that reach input column ``b`` (from a zero-padded copy of
    ``g``, so no index runs off the edge), and ``G @ W_catᵀ`` gives, for every ``(n, i, b)``,
    the gradient that output row ``i`` sends through each kernel row ``u``. Only ``kH`` adds
    remain, on a product ``kW`` times smaller than col2im's: faster when ``C_in`` is large
    enough for an efficient GEMM.

    Shape:
        grad: ``(N, C_out, H_out, W_out)``. weight: ``(C_out, C_in, kH, kW)``.
        Output: ``(N, C_in, H, W)`` with ``H = H_out + kH - 1 - 2 p_h`` (a view of channels-last memory).
    """
    N, C_out, H_out, W_out = grad.shape
    _, C_in, kH, kW = weight.shape
    pH, pW = padding
    Hp, Wp = H_out + kH - 1, W_out + kW - 1  # the padded input's size
    scratch = _gemm.scratch  # memory for the temporaries, reused from call to call
    g_wide = scratch.empty("grad_pad", (N, H_out, W_out + 2 * (kW - 1), C_out), grad)
    g_wide[:, :, :kW - 1].zero_()  # kW - 1 zeros each side
    g_wide[:, :, kW - 1 + W_out:].zero_()
    g_wide[:, :, kW - 1:kW - 1 + W_out] = grad.permute(0, 2, 3, 1)  # channels last in between
    sN, sH, _, _ = g_wide.stride()
    # Row (n, i, b) of G: g_wide[n, i, b + v'] for v' = 0 .. kW-1, that is g[n, i, b - v] with v = kW-1-v'.
    G = scratch.empty("patches", (N, H_out, Wp, kW * C_out), grad)
    G.copy_(g_wide.as_strided((N, H_out, Wp, kW * C_out), (sN, sH, C_out, 1)))
    G = G.view(N * H_out * Wp, kW * C_out)
    W_cat = weight.flip(3).permute(2, 1, 3, 0).reshape(kH * C_in, kW * C_out)  # rows (u, c), columns (v', o)
    Z = _gemm.linear(G, W_cat).view(N, H_out, Wp, kH, C_in)  # G @ W_catᵀ: row i's gradient through row u
    grad_xp = grad.new_empty(N, Hp, Wp, C_in)  # (N, Hp, Wp, C_in)
    grad_xp[:, :H_out] = Z[:, :, :, 0]  # output row i reaches padded input row i + u through kernel row u
    grad_xp[:, H_out:].zero_()
    for u in range(1, kH):
        grad_xp[:, u:u + H_out] += Z[:, :, :, u]
    return grad_xp[:, pH:Hp - pH, pW:Wp - pW].permute(0, 3, 1, 2)  # drop the border; (N, C_in, H, W) view


# ---------------------------------------------------------------------------------------------
# Winograd's minimal filtering for 3x3, stride-1 convolutions
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _WinogradTile:
    r"""The three matrices of Winograd's :math:`F(m \times m, 3 \times 3)` (Lavin & Gray, 2016).

    A 3x3 correlation of an :math:`a \times a` input tile :math:`d` (:math:`a = m + 2`) with a
    filter :math:`g` gives an :math:`m \times m` output tile as

    .. math::

        Y = A^\top \big[ (G\, g\, G^\top) \odot (B^\top d\, B) \big] A

    with :math:`a^2` multiplications instead of :math:`9 m^2`; the transforms only add and
    scale by small constants.
    """

    m: int  # output tile size; the input tile is (m + 2) x (m + 2)
    BT: tuple[tuple[float, ...], ...]  # Bᵀ, (a, a): input transform
    G: tuple[tuple[float, ...], ...]  # G, (a, 3): filter transform
    AT: tuple[tuple[float, ...], ...]  # Aᵀ, (m, a): output transform


_F2 = _WinogradTile(  # F(2x2, 3x3): 16 products per 2x2 output tile instead of 36 (2.25x fewer)
    m=2,
    BT=((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
    G=((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1)),
    AT=((1, 1, 1, 0), (0, 1, -1, -1)),
)
_F4 = _WinogradTile(  # F(4x4, 3x3): 36 products per 4x4 output tile instead of 144 (4x fewer)
    m=4,
    BT=((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
        (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
    G=((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
       (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
    AT=((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)),
)


def _kron(f: _WinogradTile, which: str, like: Tensor) -> Tensor:
    r"""A transform applied to a whole tile at once: :math:`P \otimes P` for ``P = f.<which>``.

    With a tile flattened row by row (:math:`\operatorname{vec}(d)`, entry ``(i, j)`` at
    ``a i + j``), :math:`\operatorname{vec}(P\, d\, P^\top) = (P \otimes P)\operatorname{vec}(d)`.
    So one matrix product with this ``(r², c²)`` matrix transforms every tile of the batch,
    instead of a dozen elementwise passes per side (few large calls are much faster than many
    small ones on a busy two-core CPU, where each call waits for both threads).

    Shape:
        Output: ``(r², c²)`` for ``P`` of shape ``(r, c)``, in ``like``'s dtype and on its device.
    """
    P = torch.tensor(getattr(f, which), dtype=like.dtype, device=like.device)  # (r, c)
    return torch.kron(P, P)  # (r², c²): [(k, l), (i, j)] = P[k, i] P[l, j]


@functools.lru_cache(maxsize=32)
def _tile_pixels(N: int, H: int, W: int, padding: tuple[int, int], m: int, device: torch.device,
                 tile_major: bool = False) -> Tensor:
    """Which input pixel each entry of each Winograd tile reads, or ``N * H * W`` (a zero row) in the padding.

    Tile ``(n, t_h, t_w)``'s entry ``(i, j)`` reads pixel ``(m t_h + i - p_h, m t_w + j - p_w)``
    of image ``n``, counted in rows of the channels-last ``(N * H * W, C)`` input. Entries in the
    zero padding, or where the last tiles stick out past it, read row ``N * H * W``, which holds
    zeros (and in backward collects the gradient that falls there, to be dropped). Cached: a
    training loop asks for the same few geometries every step.

    Shape:
        Output: ``(a² * T,)`` with ``a = m + 2`` and ``T = N * tH * tW`` tiles, ordered
        ``(i, j, n, t_h, t_w)``: entry ``(i, j)`` of all tiles, then the next entry; or, with
        ``tile_major``, ``(n, t_h, t_w, i, j)``: all entries of one tile, then the next tile.
    """
    (pH, pW), a = padding, m + 2
    tH, tW = -(-(H + 2 * pH - 2) // m), -(-(W + 2 * pW - 2) // m)  # tiles per column and row
    rows = (torch.arange(tH, device=device).view(1, tH, 1) * m + torch.arange(a, device=device).view(a, 1, 1)
            - pH)  # (a, tH, 1): pixel row of tile row t_h's entry i
    cols = (torch.arange(tW, device=device).view(1, 1, tW) * m + torch.arange(a, device=device).view(a, 1, 1)
            - pW)  # (a, 1, tW): pixel column of tile column t_w's entry j
    rows, cols = rows.view(a, 1, 1, tH, 1), cols.view(1, a, 1, 1, tW)  # (i, j, n, t_h, t_w) axes
    inside = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)  # (a, a, 1, tH, tW)
    image = torch.arange(N, device=device).view(1, 1, N, 1, 1) * (H * W)
    index = torch.where(inside, image + rows * W + cols, N * H * W)  # (a, a, N, tH, tW)
    if tile_major:
        index = index.permute(2, 3, 4, 0, 1)  # (N, tH, tW, a, a)
    return index.reshape(-1)  # (a² T,)


class _Winograd3x3Function(torch.autograd.Function):
    r"""A 3x3, stride-1 convolution by Winograd's :math:`F(m \times m, 3 \times 3)`; see :func:`conv2d`.

    The output is cut into :math:`m \times m` tiles, each computed from an :math:`(m+2) \times
    (m+2)` input tile :math:`d` as :math:`A^\top [ (G g G^\top) \odot (B^\top d B) ] A`. Summed
    over input channels, the elementwise products become :math:`a^2` matrix products, one per
    tile entry:

    .. math::

        M_{kl} = V_{kl}\, U_{kl}, \qquad V_{kl} = (B^\top d B)_{kl} \in \mathbb{R}^{T \times C_{in}},
        \quad U_{kl} = (G g G^\top)_{kl} \in \mathbb{R}^{C_{in} \times C_{out}}

    over all :math:`T` tiles of the batch. Each transform is one matrix product with a
    Kronecker matrix (:func:`_kron`), :math:`a^2` tile entries on one side:
    :math:`V = (B^\top \otimes B^\top) D`, :math:`Y = (A^\top \otimes A^\top) M`,
    :math:`U = (G \otimes G)\, g`. Every step is linear, so the backward pass runs the same
    steps transposed: :math:`\partial M = (A \otimes A)\, \partial Y`, then
    :math:`\partial U_{kl} = V_{kl}^\top \partial M_{kl}` (so :math:`\partial g = (G \otimes
    G)^\top \partial U`) and :math:`\partial V_{kl} = \partial M_{kl} U_{kl}^\top` (so
    :math:`\partial D = (B \otimes B)\, \partial V`, each tile entry added back to the pixel it
    was read from).

    Where a transform's input comes from a gather or a copy anyway (:math:`D` and
    :math:`\partial Y`), it is laid out tile by tile, ``(T, a², C)``, and the product is one
    broadcast ``matmul``, which MKL runs faster than the same product as
    ``(a², a²) @ (a², T C)``. The result serves as an ``(a², T, C)`` transposed view, which
    :func:`torch.bmm` reads without a copy.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int],
                f: _WinogradTile) -> Tensor:
        N, C_in, H, W = x.shape
        C_out = weight.shape[0]
        (pH, pW), m, a = padding, f.m, f.m + 2
        H_out, W_out = H + 2 * pH - 2, W + 2 * pW - 2
        tH, tW = -(-H_out // m), -(-W_out // m)  # tiles per column and row (the last may stick out)
        T = N * tH * tW  # tiles in the batch
        scratch = _gemm.scratch  # memory for the temporaries, reused from call to call
        pixels = scratch.empty("pixels", (N * H * W + 1, C_in), x)  # channels last, plus a zero row for the padding
        pixels[:-1].view(N, H, W, C_in).copy_(x.permute(0, 2, 3, 1))
        pixels[-1].zero_()
        index = _tile_pixels(N, H, W, padding, m, x.device, tile_major=True)  # (T a²,): tile by tile
        D = scratch.empty("tiles", (T, a * a, C_in), x)  # every tile, entry (i, j)
        torch.index_select(pixels, 0, index, out=D.view(T * a * a, C_in))
        V = torch.matmul(_kron(f, "BT", x), D).transpose(0, 1)  # Bᵀ d B: (a², T, C_in), a view of (T, a², C_in)
        g = weight.permute(2, 3, 1, 0).reshape(9, C_in * C_out)  # (9, C_in C_out): the filters' 3x3 taps
        U = (_kron(f, "G", x) @ g).view(a * a, C_in, C_out)  # G g Gᵀ: (a², C_in, C_out)
        M = scratch.empty("products", (a * a, T, C_out), x)
        torch.bmm(V, U, out=M)  # (a², T, C_out): a² matrix products
        Y = scratch.empty("out_tiles", (T, m * m, C_out), x)
        torch.matmul(_kron(f, "AT", x), M.transpose(0, 1), out=Y)  # Aᵀ M A: (T, m², C_out), tile by tile
        y = x.new_empty(N, tH, m, tW, m, C_out)  # tile (t_h, t_w) entry (i, j) at [:, t_h, i, t_w, j]
        Y = Y.view(N, tH, tW, m, m, C_out).permute(0, 1, 3, 2, 4, 5)  # (N, tH, m, tW, m, C_out), a view
        if bias is None:
            y.copy_(Y)
        else:
            torch.add(Y, bias, out=y)  # the tiles put in place and the bias added, in one pass
        y = y.view(N, m * tH, m * tW, C_out)[:, :H_out, :W_out]  # (N, H_out, W_out, C_out), tiles cut to size
        ctx.save_for_backward(V if ctx.needs_input_grad[1] else None, U)
        ctx.conf = (tuple(x.shape), padding, f)
        return y.permute(0, 3, 1, 2)  # (N, C_out, H_out, W_out), a view of channels-last memory

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        V, U = ctx.saved_tensors
        (N, C_in, H, W), padding, f = ctx.conf
        m, a = f.m, f.m + 2
        _, C_out, H_out, W_out = grad.shape
        tH, tW = -(-H_out // m), -(-W_out // m)
        T = N * tH * tW
        scratch = _gemm.scratch
        g = grad.permute(0, 2, 3, 1)  # (N, H_out, W_out, C_out); free if grad is channels last
        if (H_out, W_out) != (m * tH, m * tW):
            g = scratch.empty("grad_pad", (N, m * tH, m * tW, C_out), grad).zero_()  # zeros where the tiles stick out
            g[:, :H_out, :W_out] = grad.permute(0, 2, 3, 1)
        dY = scratch.empty("out_tiles", (N, tH, tW, m, m, C_out), grad)  # every output tile, entry (i, j)
        dY.copy_(g.reshape(N, tH, m, tW, m, C_out).permute(0, 1, 3, 2, 4, 5))
        dM = scratch.empty("products", (T, a * a, C_out), grad)
        torch.matmul(_kron(f, "AT", grad).T, dY.view(T, m * m, C_out), out=dM)  # A ∂Y Aᵀ: (T, a², C_out)
        dM = dM.transpose(0, 1)  # (a², T, C_out), a view
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            dU = torch.bmm(V.transpose(1, 2), dM)  # (a², C_in, T) @ (a², T, C_out) -> (a², C_in, C_out)
            dg = _kron(f, "G", grad).T @ dU.view(a * a, C_in * C_out)  # Gᵀ ∂U G: (9, C_in C_out)
            grad_w = dg.view(3, 3, C_in, C_out).permute(3, 2, 0, 1)  # (C_out, C_in, 3, 3)
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum(dim=(0, 2, 3))  # (C_out,)
        if ctx.needs_input_grad[0]:
            dV = scratch.empty("transformed", (a * a, T, C_in), grad)
            torch.bmm(dM, U.transpose(1, 2), out=dV)  # (a², T, C_out) @ (a², C_out, C_in) -> (a², T, C_in)
            dD = scratch.empty("tiles", (T, a * a, C_in), grad)
            torch.matmul(_kron(f, "BT", grad).T, dV.transpose(0, 1), out=dD)  # B ∂V Bᵀ: (T, a², C_in), tile by tile
            index = _tile_pixels(N, H, W, padding, m, grad.device, tile_major=True)  # (T a²,)
            d_pixels = grad.new_zeros(N * H * W + 1, C_in)  # (N H W + 1, C_in); the last row: the padding's
            d_pixels.index_add_(0, index, dD.view(T * a * a, C_in))  # each tile entry back to its pixel
            grad_x = d_pixels[:-1].view(N, H, W, C_in).permute(0, 3, 1, 2)  # (N, C_in, H, W) view
        return grad_x, grad_w, grad_b, None, None


def _winograd_tile(weight: Tensor, stride: tuple[int, int], out_size: tuple[int, int]) -> _WinogradTile | None:
    """The Winograd tile for this convolution, or ``None`` where im2col + GEMM is as fast.

    Winograd saves multiplications but pays with transforms, matrix products over data a few
    times the size of the input and of the output, while the products cost ``C_in * C_out`` per
    pixel: it pays off only with many channels in and out (from 48, on the course's CPU). It needs a 3x3 kernel, stride 1 and float32 or float64
    (in half precision its rounding is too coarse). The 4x4 tile saves more products than the
    2x2 one, unless its tiles overhang the output by much (a 14x14 output needs 16x16 of tiles).
    """
    C_out, C_in, kH, kW = weight.shape
    if (kH, kW) != (3, 3) or stride != (1, 1) or weight.dtype not in (torch.float32, torch.float64):
        return None
    if min(C_in, C_out) < _WINOGRAD_MIN_CHANNELS:
        return None
    H_out, W_out = out_size
    tiled = (-(-H_out // 4) * 4) * (-(-W_out // 4) * 4)  # the output area that 4x4 tiles cover
    return _F4 if tiled <= 1.15 * H_out * W_out else _F2


_WINOGRAD_MIN_CHANNELS = 48  # from this min(C_in, C_out) on, 3x3 stride-1 convolutions use Winograd


class _Conv2dFunction(torch.autograd.Function):
    """conv2d with a hand-written backward pass; see the module docstring for the formulas."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None,
                stride: tuple[int, int], padding: tuple[int, int]) -> Tensor:
        C_out, C_in, kH, kW = weight.shape
        w_rows = weight.permute(0, 2, 3, 1).reshape(C_out, kH * kW * C_in)  # (C_out, K), K as (kH, kW, C_in)
        # (N, C_out, H_out, W_out); and for the weight's gradient, the padded input or the patch matrix
        out, xp, cols = _correlate(x, w_rows, bias, (kH, kW), stride, padding, keep=ctx.needs_input_grad[1])
        ctx.save_for_backward(cols if cols is not None else xp, weight)
        ctx.conf = (tuple(x.shape), stride, padding)
        return out

    @staticmethod
    @once_differentiable  # the saved input copy carries no graph: a second derivative raises, not lies
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        xp, weight = ctx.saved_tensors
        x_shape, stride, padding = ctx.conf
        C_out, C_in, kH, kW = weight.shape
        N, _, H_out, W_out = grad.shape
        K = kH * kW * C_in
        grad_x = grad_w = grad_b = None
        g = grad.permute(0, 2, 3, 1).reshape(N * H_out * W_out, C_out)  # (M, C_out); free if grad is NHWC
        if ctx.needs_input_grad[1]:
            # dL/dw[o, k] = sum over images and positions m of cols[m, k] * g[m, o]
            P = H_out * W_out  # positions per image
            grad_w = None
            for n, n_end in _image_chunks(N, P * K * xp.element_size()):
                if xp.dim() == 2:  # the forward pass kept the whole patch matrix
                    cols = xp
                else:
                    cols = _im2col(xp[n:n_end], (kH, kW), stride, (H_out, W_out), temporary=True)  # gathered again
                g_n = g[n * P:n_end * P]  # (chunk * P, C_out)
                if grad_w is None:
                    grad_w = cols.T @ g_n  # (K, chunk * P) @ (chunk * P, C_out) -> (K, C_out); MKL prefers this order
                else:
                    grad_w.addmm_(cols.T, g_n)  # accumulate the next chunk's share
            grad_w = grad_w.T  # (C_out, K)
            grad_w = grad_w.view(C_out, kH, kW, C_in).permute(0, 3, 1, 2)  # (C_out, C_in, kH, kW)
        if ctx.needs_input_grad[2]:
            grad_b = g.sum(dim=0)  # (C_out,)
        if ctx.needs_input_grad[0]:
            (sH, sW), (pH, pW) = stride, padding
            if sH == sW == 1 and pH < kH and pW < kW and 2 * C_out <= 3 * C_in:
                # A stride-1 convolution's input gradient is the "full" correlation of the output
                # gradient with the flipped filters, C_in and C_out swapped: the forward pass again.
                # (Cheaper than col2im when C_out is not much larger than C_in.)
                w_flip = weight.flip(2, 3).permute(1, 2, 3, 0).reshape(C_in, kH * kW * C_out)  # (C_in, K')
                grad_x, _, _ = _correlate(grad, w_flip, None, (kH, kW), (1, 1), (kH - 1 - pH, kW - 1 - pW),
                                          keep=False)
            elif sH == sW == 1 and C_in >= 16:
                # Fewer adds than col2im, but its GEMM yields only kH * C_in columns, which MKL runs
                # slowly when narrow (slower than col2im at C_in = 1, no gain at 8).
                grad_x = _grad_input_stride1(grad, weight, padding)  # (N, C_in, H, W)
            else:
                w_rows = weight.permute(0, 2, 3, 1).reshape(C_out, K)  # (C_out, K)
                cols_grad = _gemm.linear(g, w_rows.T)  # (M, C_out) @ (C_out, K) -> (M, K): each patch's gradient
                grad_x = _col2im(cols_grad, x_shape, (kH, kW), stride, padding)  # (N, C_in, H, W)
        return grad_x, grad_w, grad_b, None, None


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int],
           padding: tuple[int, int]) -> Tensor:
    """:func:`dlcourse.conv.conv2d` for checked arguments: Winograd where it pays, else im2col + GEMM.

    Shape:
        x: ``(N, C_in, H, W)``; weight: ``(C_out, C_in, kH, kW)``; bias: ``(C_out,)`` or ``None``;
        stride, padding: ``(h, w)`` pairs. Output: ``(N, C_out, H_out, W_out)`` (channels-last memory).
    """
    out_size = _out_sizes(x.shape[2], x.shape[3], tuple(weight.shape[2:]), stride, padding)
    tile = _winograd_tile(weight, stride, out_size)
    if tile is not None:
        return _Winograd3x3Function.apply(x, weight, bias, padding, tile)
    return _Conv2dFunction.apply(x, weight, bias, stride, padding)
