"""One training loop for the whole course: :func:`fit`, plus :func:`evaluate` and :func:`accuracy`.

Chapters call :func:`fit` instead of writing the loop again, except where the loop itself is
what a chapter teaches. It moves batches to the model's device, shows a ``tqdm`` progress bar,
uses automatic mixed precision on CUDA only, and returns a :class:`History`.

Started by ``torchrun --nproc_per_node=N``, the same call trains data-parallel: every process
trains a copy of the model on its own share of each epoch, gradients are averaged across the
processes after every backward pass (``DistributedDataParallel``), and the metrics in the
:class:`History` are averaged over all of them (see ``dlcourse.distributed``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from dlcourse import distributed as dd
from dlcourse.device import get_device

__all__ = ["fit", "evaluate", "accuracy", "History"]

Metric = Callable[[Tensor, Tensor], Tensor | float]


def accuracy(output: Tensor, target: Tensor) -> Tensor:
    """Fraction of rows whose arg-max class equals the target class.

    Shape:
        output: ``(N, C)`` scores or probabilities. target: ``(N,)`` class indices.
    """
    if output.dim() != 2 or target.shape != output.shape[:1]:
        raise ValueError(
            f"accuracy: expected output (N, C) and target (N,), got {tuple(output.shape)} and {tuple(target.shape)}"
        )
    return (output.argmax(dim=1) == target).float().mean()


class History(dict):
    """Per-epoch values, one list per key: ``train_loss``, ``val_loss``, ``train_<metric>``, ...

    A plain ``dict`` of lists (``history["val_loss"][-1]`` is the last validation loss) that
    also knows how many epochs it holds and how to plot itself.
    """

    @property
    def epochs(self) -> int:
        return len(self.get("train_loss", []))

    def plot(self, **kwargs: Any):
        """Loss and metric curves; see :func:`dlcourse.plot.training_curves`."""
        from dlcourse.plot import training_curves

        return training_curves(self, **kwargs)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(b, device) for b in batch)
    if isinstance(batch, Mapping):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch


def _split(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (list, tuple)) and len(batch) == 2:
        return batch[0], batch[1]
    raise ValueError(
        "fit/evaluate: expected each batch to be a pair (inputs, targets), "
        f"got {type(batch).__name__}{' of length ' + str(len(batch)) if isinstance(batch, (list, tuple)) else ''}"
    )


def _check_scalar(loss: Any, fn: str) -> None:
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        got = f"shape {tuple(loss.shape)}" if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(
            f"{fn}: expected loss_fn to return a scalar tensor (e.g. a mean over the batch), got {got}"
        )


def _autocast(device: torch.device, enabled: bool):
    if enabled:
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@torch.no_grad()
def _evaluate_sums(model: nn.Module, loader: Iterable, loss_fn: Callable[[Tensor, Tensor], Tensor] | None,
                   metrics: Mapping[str, Metric] | None, device: torch.device) -> tuple[dict[str, float], int]:
    # Totals over the samples (batch mean times batch size) and the sample count, in eval mode.
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    if loss_fn is not None:
        sums["loss"] = 0.0
    sums.update({name: 0.0 for name in metrics or {}})
    count = 0
    try:
        for batch in loader:
            x, y = _split(_to(batch, device))
            out = model(x)
            n = len(y)
            count += n
            if loss_fn is not None:
                loss = loss_fn(out, y)
                _check_scalar(loss, "evaluate")
                sums["loss"] += float(loss) * n
            for name, metric in (metrics or {}).items():
                sums[name] += float(metric(out, y)) * n
    finally:
        model.train(was_training)
    return sums, count


def _means(sums: dict[str, float], count: int, distributed: bool, empty_message: str) -> dict[str, float]:
    # Sample-weighted means: over this process's samples, or over those of every rank.
    if distributed:
        try:
            return dd.all_reduce_weighted_mean(sums, count)
        except ValueError:
            raise ValueError(empty_message) from None
    if count == 0:
        raise ValueError(empty_message)
    return {k: v / count for k, v in sums.items()}


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
             metrics: Mapping[str, Metric] | None = None, device: torch.device | str | None = None) -> dict[str, float]:
    """Average loss and metrics of ``model`` over ``loader``, in eval mode, without gradients.

    Averages are weighted by batch size, so a smaller last batch counts for what it holds
    (``loss_fn`` and the metrics are expected to return batch means). The model's mode
    (train or eval) is restored afterwards.

    Args:
        model: the network.
        loader: yields ``(inputs, targets)`` batches.
        loss_fn: ``loss_fn(model(inputs), targets)`` -> scalar tensor; optional.
        metrics: extra per-batch measures, e.g. ``{"accuracy": accuracy}``.
        device: where to move the batches; ``None`` means the model's device.

    Returns:
        ``{"loss": ..., "<metric>": ...}`` (``loss`` only when ``loss_fn`` is given).

    Raises:
        ValueError: the loader yields no batches, a batch is not a pair, or the loss is not a scalar.
    """
    device = get_device(device) if device is not None else _model_device(model)
    sums, count = _evaluate_sums(model, loader, loss_fn, metrics, device)
    return _means(sums, count, False, "evaluate: the loader yielded no batches")


def fit(model: nn.Module, train_loader: Iterable, loss_fn: Callable[[Tensor, Tensor], Tensor],
        optimizer: torch.optim.Optimizer, epochs: int, device: torch.device | str | None = None,
        val_loader: Iterable | None = None, metrics: Mapping[str, Metric] | None = None,
        scheduler: Any | None = None, amp: bool | None = None, grad_clip: float | None = None,
        progress: bool = True) -> History:
    """Train ``model`` for ``epochs`` passes over ``train_loader`` and return its :class:`History`.

    In a ``torchrun`` job of two or more processes (or with a process group already
    initialised), ``fit`` joins the group (``dlcourse.distributed.init``: gloo on CPU, NCCL on
    CUDA, where process ``LOCAL_RANK`` trains on ``cuda:<LOCAL_RANK>`` unless ``device`` names a
    GPU by number), wraps the model in ``DistributedDataParallel`` (which first copies rank 0's
    parameters to every rank), gives each rank its share of a ``DataLoader`` (a ``DistributedSampler``
    reseeded every epoch, the same batch size per process; the validation set is split
    without repeats), and averages every number in the History over all samples of all ranks,
    so it is the same on every rank. ``model`` itself holds the trained parameters afterwards.

    Args:
        model: the network; it is moved to ``device`` if one is given.
        train_loader: yields ``(inputs, targets)`` batches.
        loss_fn: ``loss_fn(model(inputs), targets)`` -> scalar tensor.
        optimizer: built on ``model.parameters()``.
        epochs: number of passes over the training data.
        device: where to train; ``None`` keeps the model where it is.
        val_loader: if given, evaluated after every epoch (``val_loss``, ``val_<metric>``).
        metrics: extra per-batch measures, e.g. ``{"accuracy": accuracy}``.
        scheduler: a learning-rate scheduler stepped once per epoch (``ReduceLROnPlateau`` is
            stepped with the epoch's validation loss, or the training loss without ``val_loader``).
        amp: automatic mixed precision; ``None`` turns it on for CUDA only (never on CPU/MPS).
        grad_clip: clip the global gradient norm to this value.
        progress: show a progress bar over epochs with the latest numbers (on rank 0 only).

    Returns:
        A :class:`History` with ``train_loss``, ``train_<metric>`` and, with ``val_loader``,
        ``val_loss`` and ``val_<metric>``: one value per epoch.

    Raises:
        ValueError: ``epochs`` is not a positive int, ``amp=True`` off CUDA, the loader yields
            no batches, a batch is not a pair, or the loss is not a scalar.
        RuntimeError: ``device`` is not available (see :func:`dlcourse.get_device`).
        FloatingPointError: the loss became NaN or infinite (on any rank: all of them stop).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"fit: expected a positive int number of epochs, got {epochs!r}")
    distributed = dd.launched_by_torchrun() or dd.is_distributed()
    if device is None and distributed and _model_device(model).type == "cuda":
        device = "cuda"  # each process on its own GPU, not all on the one the model was put on
    if device is not None:
        # An unavailable device fails here, with a clear message. In a distributed job a bare
        # "cuda" means this process's GPU, cuda:<LOCAL_RANK>.
        model.to(dd.process_device(device) if distributed else get_device(device))
    device = _model_device(model)
    if distributed:
        dd.init(device=device)
        net = dd.wrap_model(model)  # gradients are averaged across ranks in every backward pass
        train_loader = dd.shard_loader(train_loader, train=True)
        if val_loader is not None:
            val_loader = dd.shard_loader(val_loader, train=False)
    else:
        net = model
    use_amp = (device.type == "cuda") if amp is None else bool(amp)
    if use_amp and device.type != "cuda":
        raise ValueError(f"fit: mixed precision (amp=True) needs a CUDA device, the model is on {device}")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    metrics = dict(metrics or {})
    history = History()
    bar = tqdm(range(epochs), desc="epochs", unit="epoch", disable=not progress or not dd.is_main_process())
    for epoch in bar:
        if isinstance(getattr(train_loader, "sampler", None), torch.utils.data.DistributedSampler):
            train_loader.sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        net.train()
        sums = {"loss": 0.0, **{k: 0.0 for k in metrics}}
        count = 0
        for batch in train_loader:
            x, y = _split(_to(batch, device))
            with _autocast(device, use_amp):
                out = net(x)
                loss = loss_fn(out, y)
            _check_scalar(loss, "fit")
            finite = bool(torch.isfinite(loss))
            stop = not finite
            if distributed:
                stop = dd.any_rank(stop)  # all ranks stop together, or the others would wait forever
            if stop:
                where = loss.item() if not finite else "NaN or infinite on another rank"
                raise FloatingPointError(
                    f"fit: the loss became {where} at epoch {history.epochs + 1}; "
                    "try a smaller learning rate or check the inputs for NaN"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
            n = len(y)
            count += n
            sums["loss"] += loss.item() * n
            with torch.no_grad():
                for name, metric in metrics.items():
                    sums[name] += float(metric(out.float(), y)) * n
        for k, v in _means(sums, count, distributed, "fit: the training loader yielded no batches").items():
            history.setdefault(f"train_{k}", []).append(v)
        if val_loader is not None:
            # The plain model, not the DDP wrapper: each rank evaluates its own shard, no collective inside.
            val_sums, val_count = _evaluate_sums(model, val_loader, loss_fn, metrics, device)
            for k, v in _means(val_sums, val_count, distributed, "evaluate: the loader yielded no batches").items():
                history.setdefault(f"val_{k}", []).append(v)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(history["val_loss" if "val_loss" in history else "train_loss"][-1])
        elif scheduler is not None:
            scheduler.step()
        bar.set_postfix({k: f"{v[-1]:.4g}" for k, v in history.items() if not math.isnan(v[-1])})
    return history
