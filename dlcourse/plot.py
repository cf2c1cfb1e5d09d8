"""The figures the chapters draw again and again: image grids, training curves, decision
boundaries, feature maps, kernels and small matrices with their numbers. Each returns the matplotlib ``Figure`` (or ``Axes``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

__all__ = ["image_grid", "training_curves", "decision_boundary", "feature_maps", "kernels", "show_matrix"]


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x)


def _tile(imgs: np.ndarray, ncols: int, gap: int, label_rows: int) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Lay images out in one array, row by row, with ``gap`` blank pixels between them and
    ``label_rows`` blank rows above each row of images; blanks are NaN (grey) or transparent
    (colour). Also returns where each image's label goes: the centre of the blank strip above it.

    Shape:
        imgs: ``(N, H, W)`` or ``(N, H, W, C)``. Output: ``(rows, cols)`` or ``(rows, cols, 4)``.
    """
    n, H, W = imgs.shape[:3]
    nrows = math.ceil(n / ncols)
    step_y, step_x = label_rows + H + gap, W + gap
    colour = imgs.ndim == 4
    shape = (nrows * step_y - gap, ncols * step_x - gap) + ((4,) if colour else ())
    out = np.zeros(shape, dtype=np.float32) if colour else np.full(shape, np.nan, dtype=np.float32)
    anchors = []
    for i, img in enumerate(imgs):
        y, x = (i // ncols) * step_y + label_rows, (i % ncols) * step_x
        if colour:
            out[y:y + H, x:x + W, :img.shape[-1]] = img
            if img.shape[-1] == 3:
                out[y:y + H, x:x + W, 3] = 1.0  # opaque where there is an image
        else:
            out[y:y + H, x:x + W] = img
        anchors.append((x + (W - 1) / 2, y - 0.5 - label_rows / 2))
    return out, anchors


def image_grid(images: Any, labels: Sequence[Any] | None = None, ncols: int = 8,
               cmap: str = "gray", size: float = 1.2, title: str | None = None) -> plt.Figure:
    """Show images in a grid, each with an optional label above it.

    Grey images are each scaled to their own range, from their darkest to their brightest pixel
    (as ``imshow`` does with one image); colour images are shown as they are (floats in [0, 1]
    or integers in [0, 255]). The grid is drawn as one picture in one ``Axes``: a figure with
    one ``Axes`` per image takes about a second to lay out for 64 images, this a few
    hundredths.

    Args:
        images: the images; tensors may be on any device and carry gradients.
        labels: one label per image, shown above it.
        ncols: images per row (fewer if there are fewer images).
        cmap: colour map of grey images.
        size: inches per image.
        title: a title above the grid.

    Shape:
        images: ``(N, H, W)``, ``(N, 1, H, W)`` (grey) or ``(N, 3, H, W)`` (colour).
    """
    imgs = _numpy(images)
    if imgs.ndim == 4 and imgs.shape[1] in (1, 3):
        imgs = imgs.transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        if imgs.shape[-1] == 1:
            imgs = imgs[..., 0]  # (N, H, W)
    if imgs.ndim not in (3, 4) or (imgs.ndim == 4 and imgs.shape[-1] not in (3, 4)):
        raise ValueError(
            "image_grid: expected images (N, H, W), (N, 1, H, W) or (N, 3, H, W), "
            f"got shape {tuple(_numpy(images).shape)}"
        )
    n = len(imgs)
    if n == 0:
        raise ValueError("image_grid: got no images (N = 0)")
    if labels is not None and len(labels) != n:
        raise ValueError(f"image_grid: got {len(labels)} labels for {n} images")
    if imgs.shape[1] == 0 or imgs.shape[2] == 0:
        raise ValueError(f"image_grid: expected images of at least 1x1 pixels, got shape {tuple(imgs.shape)}")
    if imgs.ndim == 3:  # grey: each image to [0, 1] over its own range (a flat image: all 0)
        imgs = imgs.astype(np.float32)
        low = np.nanmin(imgs, axis=(1, 2), keepdims=True)
        span = np.nanmax(imgs, axis=(1, 2), keepdims=True) - low
        imgs = np.where(span > 0, (imgs - low) / np.where(span > 0, span, 1), 0.0).astype(np.float32)
    elif np.issubdtype(imgs.dtype, np.integer):
        imgs = imgs.astype(np.float32) / 255.0
    else:
        imgs = np.clip(imgs.astype(np.float32), 0.0, 1.0)
    ncols = max(1, min(ncols, n))
    H, W = imgs.shape[1:3]
    gap = max(1, round(0.08 * max(H, W)))  # blank pixels between images
    label_rows = math.ceil(0.22 * H / size) if labels is not None else 0  # about 0.22 inch for a label
    mosaic, anchors = _tile(imgs, ncols, gap, label_rows)
    title_inches = 0.35 if title else 0.0
    width = size * ncols
    height = width * mosaic.shape[0] / mosaic.shape[1]
    fig = plt.figure(figsize=(width, height + title_inches))
    ax = fig.add_axes((0.0, 0.0, 1.0, height / (height + title_inches)))
    ax.imshow(mosaic, cmap=cmap if imgs.ndim == 3 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.axis("off")
    if labels is not None:
        for (x, y), label in zip(anchors, labels):
            ax.text(x, y, str(label), ha="center", va="center", fontsize=9)
    if title:
        fig.suptitle(title, y=1 - 0.05 / (height + title_inches), va="top")
    return fig


def training_curves(history: Mapping[str, Sequence[float]], title: str | None = None) -> plt.Figure:
    """Plot a training history: one panel for the loss, one per metric; train and val together.

    Args:
        history: ``{"train_loss": [...], "val_loss": [...], "train_accuracy": [...], ...}``, one
            value per epoch (a :class:`dlcourse.train.History`); keys without a ``train_`` or
            ``val_`` prefix (e.g. ``"lr"``) get a panel of their own.
        title: a title above the panels.
    """
    if not history:
        raise ValueError("training_curves: the history is empty; train for at least one epoch")
    names = []
    for key in history:
        base = key.split("_", 1)[1] if key.startswith(("train_", "val_")) else key
        if base not in names:
            names.append(base)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for prefix, style in (("train_", "-o"), ("val_", "--s")):
            values = history.get(prefix + name)
            if values:
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, markersize=3, label=prefix.rstrip("_"))
        if name in history:
            ax.plot(np.arange(1, len(history[name]) + 1), history[name], "-o", markersize=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def decision_boundary(predict: Callable[[Tensor], Tensor], X: Any, y: Any, ax: plt.Axes | None = None,
                      resolution: int = 200, title: str | None = None, cmap: str = "coolwarm") -> plt.Axes:
    """Colour the plane by a classifier's prediction and scatter the 2-D data on top.

    Args:
        predict: maps a float32 CPU tensor ``(M, 2)`` to scores ``(M,)`` or ``(M, 1)`` (binary:
            probability of class 1, thresholded at 0.5) or ``(M, C)`` (arg-max class).
        X: points ``(N, 2)``. y: labels ``(N,)``.
        ax: the axes to draw on (default: a new figure).
        resolution: grid points per side of the coloured plane.
    """
    Xn, yn = _numpy(X), _numpy(y)
    if Xn.ndim != 2 or Xn.shape[1] != 2:
        raise ValueError(f"decision_boundary: expected X of shape (N, 2), got {Xn.shape}")
    if yn.shape != (len(Xn),):
        raise ValueError(f"decision_boundary: got {len(Xn)} points but {yn.size} labels (shape {yn.shape})")
    pad = 0.1 * (Xn.max(0) - Xn.min(0)) + 1e-9
    lo, hi = Xn.min(0) - pad, Xn.max(0) + pad
    xx, yy = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    grid = torch.as_tensor(np.c_[xx.ravel(), yy.ravel()], dtype=torch.float32)  # (R*R, 2)
    with torch.no_grad():
        scores = _numpy(predict(grid))
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]  # (M, 1), e.g. from nn.Linear(2, 1): one probability per point
    if scores.shape[:1] != (len(grid),) or scores.ndim not in (1, 2):
        raise ValueError(
            f"decision_boundary: predict should map ({len(grid)}, 2) points to ({len(grid)},) or "
            f"({len(grid)}, C) scores, got shape {scores.shape}"
        )
    zz = (scores > 0.5).astype(float) if scores.ndim == 1 else scores.argmax(1).astype(float)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.contourf(xx, yy, zz.reshape(xx.shape), alpha=0.3, cmap=cmap, levels=np.arange(zz.max() + 2) - 0.5)
    ax.scatter(Xn[:, 0], Xn[:, 1], c=yn, cmap=cmap, s=12, edgecolors="k", linewidths=0.3)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    if title:
        ax.set_title(title)
    return ax


def feature_maps(maps: Any, ncols: int = 8, title: str | None = None, cmap: str = "viridis") -> plt.Figure:
    """Show the channels of one feature map. Shape: ``(C, H, W)`` or ``(1, C, H, W)``."""
    m = _numpy(maps)
    if m.ndim == 4 and m.shape[0] == 1:
        m = m[0]  # (C, H, W)
    if m.ndim != 3:
        raise ValueError(f"feature_maps: expected (C, H, W) or (1, C, H, W), got shape {m.shape}")
    return image_grid(m, labels=[f"ch {i}" for i in range(len(m))], ncols=ncols, cmap=cmap, title=title)


def kernels(weight: Any, ncols: int = 8, title: str | None = None, cmap: str = "RdBu_r") -> plt.Figure:
    """Show convolution kernels. Shape: ``(C_out, C_in, kH, kW)`` (the first input channel is
    shown) or ``(C_out, kH, kW)``; a colour scale centred on zero separates signs."""
    w = _numpy(weight)
    if w.ndim == 4:
        w = w[:, 0]  # (C_out, kH, kW)
    if w.ndim == 2:
        w = w[None]
    if w.ndim != 3:
        raise ValueError(f"kernels: expected (C_out, C_in, kH, kW) or (C_out, kH, kW), got shape {w.shape}")
    n = len(w)
    if n == 0:
        raise ValueError("kernels: got no kernels (C_out = 0)")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.3 * nrows), squeeze=False)
    vmax = float(np.abs(w).max()) or 1.0
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(w[i], cmap=cmap, vmin=-vmax, vmax=vmax)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_matrix(matrix: Any, ax: plt.Axes | None = None, title: str | None = None, fmt: str = "{:g}",
                cmap: str = "Blues", mark: Any = None, window: tuple[int, int, int] | None = None,
                fontsize: float = 11) -> plt.Axes:
    """Draw a small matrix as a heat map with each number written in its cell.

    The colour scale runs from 0 (or from ``-top`` when there are negative entries, so that 0 is
    the middle) to ``top``, the largest absolute entry but at least 1; numbers on dark cells are
    written in white.

    Args:
        matrix: the matrix; a tensor may be on any device and carry gradients.
        ax: the axes to draw on (default: a new figure).
        title: a title above the matrix.
        fmt: how each number is written, a ``str.format`` pattern.
        cmap: the colour map.
        mark: a boolean mask of the matrix's shape; its ``True`` cells are outlined in red.
        window: ``(row, col, size)``: outline the ``size x size`` window whose top-left cell is
            ``(row, col)``, as a kernel lies on an image.
        fontsize: size of the numbers.

    Shape:
        matrix: ``(H, W)``; mark: ``(H, W)``.
    """
    m = _numpy(matrix).astype(np.float64)
    if m.ndim != 2:
        raise ValueError(f"show_matrix: expected a 2-D matrix (H, W), got shape {m.shape}")
    if m.size == 0:
        raise ValueError(f"show_matrix: got an empty matrix of shape {m.shape}")
    marked = None if mark is None else _numpy(mark).astype(bool)
    if marked is not None and marked.shape != m.shape:
        raise ValueError(f"show_matrix: mark has shape {marked.shape}, the matrix {m.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(0.5 * m.shape[1] + 0.6, 0.5 * m.shape[0] + 0.6))
    top = max(1.0, float(np.nanmax(np.abs(m))))
    low = -top if np.nanmin(m) < 0 else 0.0  # a scale centred on 0 when there are negatives
    ax.imshow(m, cmap=cmap, vmin=low, vmax=top)
    for (i, j), v in np.ndenumerate(m):
        dark = abs(v) > 0.6 * top
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=fontsize,
                color="white" if dark else "black")
        if marked is not None and marked[i, j]:
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2.5))
    if window is not None:
        row, col, size = window
        ax.add_patch(plt.Rectangle((col - 0.5, row - 0.5), size, size, fill=False, ec="red", lw=3))
    if title:
        ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax
