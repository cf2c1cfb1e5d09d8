"""One rank of the data-parallel test, started by ``torchrun`` from ``tests/test_distributed.py``.

Usage: ``torchrun --nproc_per_node=2 tests/ddp_worker.py OUT_DIR``. Each rank trains with an
unchanged call of :func:`dlcourse.train.fit` (which must find torchrun's environment itself),
then exercises the helpers of :mod:`dlcourse.distributed` inside the process group, and saves
everything to ``OUT_DIR/rank<r>.pt`` for the test to compare.
"""

from __future__ import annotations

import math
import os
import sys

import torch
import torch.nn.functional as TF
from torch import nn
from torch.utils.data import TensorDataset

from dlcourse import distributed as dd
from dlcourse.data import make_dataloaders
from dlcourse.train import accuracy, fit

# The set-up the test repeats in a single process (kept in one place: imported by the test).
N_TRAIN, N_VAL = 64, 31   # 31 validation samples: shards of 16 and 15, nothing padded
BATCH = 8                 # per process; the single-process twin uses BATCH * world_size
EPOCHS = 3
LOADER_SEED = 5           # seed of the shuffle (DistributedSampler takes it from the loader)
LR, MOMENTUM = 0.1, 0.9


def toy_data(n: int, seed: int) -> TensorDataset:
    """A learnable 3-class problem in 4-D: the class is the arg-max of a fixed linear map."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x @ torch.randn(4, 3, generator=g)).argmax(1)
    return TensorDataset(x, y)


def mlp(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))


def main(out_dir: str) -> None:
    env_before = {"launched_by_torchrun": dd.launched_by_torchrun(), "initialised": dd.is_distributed()}
    train_loader, val_loader = make_dataloaders(toy_data(N_TRAIN, 0), toy_data(N_VAL, 1), batch_size=BATCH,
                                                device="cpu", seed=LOADER_SEED)
    val_loader = torch.utils.data.DataLoader(val_loader.dataset, batch_size=BATCH)
    rank = int(os.environ["RANK"])
    # Different initial weights on each rank: DistributedDataParallel must copy rank 0's.
    model = mlp(seed=1 + rank)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    history = fit(model, train_loader, TF.cross_entropy, optimizer, EPOCHS, val_loader=val_loader,
                  metrics={"accuracy": accuracy}, progress=True)

    # A loss that turns infinite on rank 1 alone, from its first batch of epoch 2 (4 batches of 8
    # per rank and epoch): both ranks must stop there, rank 0 included, instead of waiting forever.
    calls = []

    def loss_on_fire(out, y):
        calls.append(1)
        return TF.cross_entropy(out, y) * (math.inf if rank == 1 and len(calls) > 4 else 1.0)

    model_nan = mlp(seed=1)
    try:
        fit(model_nan, train_loader, loss_on_fire, torch.optim.SGD(model_nan.parameters(), lr=LR), EPOCHS,
            progress=False)
        stopped = None
    except FloatingPointError as err:
        stopped = str(err)

    helpers = {
        "rank": dd.get_rank(), "world_size": dd.get_world_size(), "local_rank": dd.get_local_rank(),
        "main": dd.is_main_process(), "distributed": dd.is_distributed(),
        # ranks hold 1 and 2: mean 1.5, on every rank, same shape and device as the input
        "mean_tensor": dd.all_reduce_mean(torch.full((2, 3), float(rank + 1))),
        "mean_number": dd.all_reduce_mean(float(rank + 1)),
        # rank 0: 1 sample of value 10; rank 1: 3 samples of mean 2 -> (10 + 6) / 4 = 4
        "weighted": dd.all_reduce_weighted_mean({"x": 10.0 if rank == 0 else 6.0}, 1 if rank == 0 else 3),
        "any_rank_1": dd.any_rank(rank == 1),
        "any_none": dd.any_rank(False),
        "shard": list(dd.ShardSampler(N_VAL)),
    }
    torch.save({"env_before": env_before, "state": model.state_dict(), "history": dict(history),
                "stopped": stopped,
                "helpers": helpers}, os.path.join(out_dir, f"rank{rank}.pt"))
    dd.teardown()


if __name__ == "__main__":
    main(sys.argv[1])
