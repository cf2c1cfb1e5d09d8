"""Data-parallel training helpers: one process per device, started by ``torchrun``.

``torchrun --nproc_per_node=N script.py`` starts ``N`` copies of a script and tells each one who
it is through environment variables (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``). This module turns those into a process group (``gloo`` on CPUs, ``NCCL`` on
CUDA GPUs), answers "which rank am I, how many are we", splits data loaders so every rank sees
its own share, wraps models in ``DistributedDataParallel`` and averages numbers across ranks.

Outside ``torchrun`` (and without a process group) every helper answers as a single process
would: rank 0 of 1, main process, averages that are the number itself. So
:func:`dlcourse.train.fit` and scripts call them unconditionally.
"""

from __future__ import annotations

import atexit
import os
import socket
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler, Sampler

from dlcourse.device import get_device

__all__ = [
    "launched_by_torchrun", "init", "teardown", "is_distributed", "get_rank", "get_world_size",
    "get_local_rank", "is_main_process", "all_reduce_mean", "all_reduce_weighted_mean", "any_rank",
    "barrier",
    "shard_loader", "ShardSampler", "wrap_model", "process_device", "free_port", "run_on_processes",
]

# What torchrun (and torch.multiprocessing scripts that follow its convention) set in every process.
_ENV_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (or anything that sets its variables)
    as one of two or more processes.

    True when ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` are all set and
    ``WORLD_SIZE`` is above 1; a one-process ``torchrun`` job runs as a plain single process.
    """
    if not all(name in os.environ for name in _ENV_VARS):
        return False
    return int(os.environ["WORLD_SIZE"]) > 1


def is_distributed() -> bool:
    """Whether a process group of two or more processes is initialised in this process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank in the group, 0 to ``world_size - 1``; 0 outside a process group."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """The number of processes in the group; 1 outside a process group."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_local_rank() -> int:
    """This process's rank on its own machine (``LOCAL_RANK``, set by ``torchrun``); 0 otherwise.

    On a node with several GPUs, process ``local_rank`` drives GPU number ``local_rank``.
    """
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one process that prints, logs and saves."""
    return get_rank() == 0


def process_device(preferred: str | torch.device | None = None) -> torch.device:
    """The device this process should compute on.

    In a distributed job on CUDA, process ``local_rank`` gets ``cuda:<local_rank>`` (one GPU per
    process); elsewhere this is :func:`dlcourse.get_device`.

    Args:
        preferred: passed to :func:`dlcourse.get_device`; a bare ``"cuda"`` in a distributed job
            is made specific to this process's GPU.
    """
    device = get_device(preferred)
    if device.type == "cuda" and device.index is None and (launched_by_torchrun() or is_distributed()):
        local_rank = get_local_rank()
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"process_device: local rank {local_rank} needs GPU {local_rank}, but only "
                f"{torch.cuda.device_count()} CUDA device(s) are present; start at most that many "
                "processes per node (torchrun --nproc_per_node=gpu)"
            )
        device = torch.device("cuda", local_rank)
    return device


def init(backend: str | None = None, device: str | torch.device | None = None) -> torch.device:
    """Join the process group that ``torchrun`` set up, once; return this process's device.

    Does nothing but choose the device when the process was not started by ``torchrun`` with two
    or more processes, or when the group already exists, so it is safe to call anywhere. A group
    it creates is destroyed at exit (or earlier by :func:`teardown`).

    Args:
        backend: ``"gloo"`` (CPU tensors) or ``"nccl"`` (CUDA tensors); ``None`` picks NCCL when
            this process computes on CUDA, gloo otherwise.
        device: the device wanted, as for :func:`dlcourse.get_device`; ``None`` picks the best.

    Returns:
        The device for this process: ``cuda:<local_rank>`` on a multi-GPU node, else as
        :func:`process_device` says.
    """
    device = process_device(device)
    if launched_by_torchrun() and dist.is_available() and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL and every bare "cuda" tensor use this GPU
        if backend is None:
            backend = "nccl" if device.type == "cuda" else "gloo"
        # The rank, world size and rendezvous address are read from torchrun's variables.
        dist.init_process_group(backend=backend)
        atexit.register(teardown)
    return device


def teardown() -> None:
    """Leave and destroy the process group, if there is one (safe to call twice)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (nothing to wait for outside a process group)."""
    if is_distributed():
        dist.barrier()


def _reduce_device() -> torch.device:
    # NCCL only reduces CUDA tensors; gloo reduces CPU tensors.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(value: Tensor | float) -> Tensor | float:
    """The plain mean of ``value`` over all ranks, the same on every rank.

    ``all_reduce`` adds each rank's tensor element by element and hands every rank the sum;
    dividing by the world size gives the mean. This is what ``DistributedDataParallel`` does
    to the gradients after each backward pass.

    Args:
        value: a tensor (any shape; each rank must pass the same shape) or a Python number.

    Returns:
        A new tensor on ``value``'s device (or a float, for a number); ``value`` itself outside
        a process group.
    """
    if not is_distributed():
        return value
    tensor = value if isinstance(value, Tensor) else torch.tensor(float(value), dtype=torch.float64)
    reduced = tensor.detach().to(_reduce_device(), copy=True)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    reduced = reduced.div_(get_world_size()).to(tensor.device)
    return reduced if isinstance(value, Tensor) else reduced.item()


def all_reduce_weighted_mean(sums: Mapping[str, float], count: int) -> dict[str, float]:
    """Sample-weighted means over all ranks: ``sum over ranks of sums[k]`` / ``sum of count``.

    Each rank passes the totals over the samples it saw (e.g. the batch loss times the batch
    size, added up) and how many samples that was; ranks that saw more samples weigh more, so
    the result is the mean over every sample of every rank, as one process would compute it.
    One ``all_reduce`` carries all the numbers.

    Args:
        sums: per-quantity totals of this rank; every rank passes the same keys in the same order.
        count: the number of samples behind them on this rank (may be 0 on some ranks).

    Returns:
        ``{key: global_total / global_count}``, the same on every rank.

    Raises:
        ValueError: the ranks saw no samples at all.
    """
    keys = list(sums)
    totals = torch.tensor([float(sums[k]) for k in keys] + [float(count)], dtype=torch.float64)  # (K + 1,)
    if is_distributed():
        totals = totals.to(_reduce_device())
        dist.all_reduce(totals, op=dist.ReduceOp.SUM)
        totals = totals.cpu()
    if totals[-1] <= 0:
        raise ValueError("all_reduce_weighted_mean: expected a positive total count, got 0 samples on every rank")
    return {k: float(totals[i] / totals[-1]) for i, k in enumerate(keys)}


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on at least one rank (the same answer on every rank).

    A rank that stops on its own (say, on a NaN loss) leaves the others waiting forever in the
    next collective; deciding together lets all of them stop.
    """
    if not is_distributed():
        return bool(flag)
    votes = torch.tensor([float(bool(flag))], device=_reduce_device())
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return bool(votes.item())


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, rank + 2 * world_size, ...`` of a data set, in order.

    For evaluation: unlike ``DistributedSampler`` it pads nothing, so the shards of all ranks
    together hold every sample exactly once (their sizes may differ by one) and averaged
    metrics equal those of a single process.
    """

    def __init__(self, length: int, rank: int | None = None, world_size: int | None = None):
        self.length = length
        self.rank = get_rank() if rank is None else rank
        self.world_size = get_world_size() if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"ShardSampler: expected 0 <= rank < world_size, got rank {self.rank} of {self.world_size}")

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def shard_loader(loader: Iterable, train: bool = True) -> Iterable:
    """This rank's share of ``loader``: the same batch size, a different subset of the samples.

    A ``DataLoader`` is rebuilt on the same data set with a ``DistributedSampler`` for training
    (shuffled if the original was, with the seed of its generator, padded so every rank gets
    the same number of batches: ``DistributedDataParallel`` needs every rank to take the same
    number of steps) or a :class:`ShardSampler` for evaluation (nothing padded). The batch size
    stays the same, so the *effective* batch of one optimizer step is ``world_size`` times larger.

    Outside a process group, or for a loader that already has a ``DistributedSampler``, the
    loader is returned unchanged. So is anything else that cannot be split this way (not a
    ``DataLoader``, a custom batch sampler, an iterable-style data set), with a warning: every
    rank then sees all of it.

    Args:
        loader: the single-process loader.
        train: shard for training (``DistributedSampler``) or for evaluation (:class:`ShardSampler`).

    Returns:
        A loader over this rank's share. For training, call ``loader.sampler.set_epoch(epoch)``
        before each epoch so the shuffle changes (:func:`dlcourse.train.fit` does).
    """
    if not is_distributed():
        return loader
    if isinstance(loader, DataLoader) and isinstance(loader.sampler, DistributedSampler):
        return loader
    if (not isinstance(loader, DataLoader) or loader.batch_size is None
            or isinstance(loader.dataset, IterableDataset)):
        if is_main_process():
            warnings.warn("shard_loader: not a DataLoader with a batch_size over a map-style data set, "
                          "so every rank sees all of it", stacklevel=2)
        return loader
    if train:
        seed = loader.generator.initial_seed() if loader.generator is not None else 0
        sampler: Sampler = DistributedSampler(loader.dataset, shuffle=isinstance(loader.sampler, RandomSampler),
                                              seed=seed, drop_last=False)
    else:
        sampler = ShardSampler(len(loader.dataset))
    extra = {}
    if loader.num_workers > 0:
        extra = {"prefetch_factor": loader.prefetch_factor, "persistent_workers": loader.persistent_workers}
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                      pin_memory=loader.pin_memory, drop_last=loader.drop_last, timeout=loader.timeout,
                      worker_init_fn=loader.worker_init_fn, **extra)


def wrap_model(model: nn.Module) -> nn.Module:
    """``model`` wrapped in ``DistributedDataParallel`` in a process group, else ``model`` itself.

    The wrapper copies rank 0's parameters and buffers to every rank when it is built, then,
    during every backward pass, all-reduces the gradients (in buckets, overlapping the rest of
    the backward pass) and divides them by the world size. Every rank then takes the same
    optimizer step, so the copies stay identical. ``wrapped.module`` is ``model``.
    """
    if not is_distributed():
        return model
    device = next(iter(model.parameters())).device
    device_ids = [device] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def free_port() -> int:
    """A TCP port on this machine that nobody listens on now (the operating system picks it),
    for the ranks of a job to meet at (``MASTER_PORT``, ``torchrun --master_port``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_on_processes(fn, world_size: int, *args, threads: int = 1) -> list:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` processes, as ``torchrun`` would;
    return what each returned, in rank order.

    Each process is a forked copy of this one, given the environment variables ``torchrun``
    sets (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) and
    ``threads`` CPU threads, so :func:`init` (and :func:`dlcourse.train.fit`) find them and join
    one process group; ``fn`` may also call ``torch.distributed.init_process_group`` itself. The
    group is left when ``fn`` returns. Results travel back through ``torch.save``, so ``fn`` may
    return tensors. Forking exists on Linux and macOS; elsewhere put the function in a script and
    start it with ``torchrun``.

    Args:
        fn: the function every rank runs (a closure or lambda is fine: nothing is pickled).
        world_size: the number of processes (at least 1).
        *args: passed on to ``fn`` after the rank and world size.
        threads: CPU threads per process (``torchrun`` gives 1 when it starts several).

    Raises:
        RuntimeError: forking is not available here; or a rank failed (PyTorch's
            ``ProcessRaisedException`` names the rank and shows its traceback).
    """
    import multiprocessing

    import torch.multiprocessing as mp

    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"run_on_processes: expected an int world_size >= 1, got {world_size!r}")
    if "fork" not in multiprocessing.get_all_start_methods():
        raise RuntimeError("run_on_processes: this system cannot fork processes; put the function in a script "
                           "and start it with torchrun --nproc_per_node=N")
    port = free_port()
    with tempfile.TemporaryDirectory() as results:
        def rank_main(rank: int) -> None:
            os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                              MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            torch.set_num_threads(threads)  # a forked copy must not use the parent's thread pool
            try:
                torch.save(fn(rank, world_size, *args), os.path.join(results, f"{rank}.pt"))
            finally:
                teardown()  # leave the process group, if fn joined one

        mp.start_processes(rank_main, nprocs=world_size, start_method="fork")  # waits for all of them
        return [torch.load(os.path.join(results, f"{rank}.pt"), weights_only=False) for rank in range(world_size)]
