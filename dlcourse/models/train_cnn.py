"""Train the pooling chapter's CNN on MNIST, in one process or data-parallel in several.

One process (all the cores of the machine, or its one GPU)::

    python -m dlcourse.models.train_cnn --epochs 5

Data-parallel, one process per CPU core or per GPU: every process trains a copy of the model on
its own share of each batch, and the gradients are averaged after every backward pass. Each
process takes ``--batch-size`` images per step, so one optimizer step sees ``N * batch-size``::

    torchrun --nproc_per_node=2 -m dlcourse.models.train_cnn --epochs 5 --batch-size 32
    torchrun --nproc_per_node=gpu -m dlcourse.models.train_cnn --epochs 5 --scale-lr linear

(``--nproc_per_node=gpu`` starts one process per GPU of the node.) Rank 0 prints the set-up and
a closing line with the test accuracy and the training time; ``--json`` also writes them to a
file. The data are the 5,000 MNIST digits of :func:`dlcourse.data.load_mnist` (4,000 train,
1,000 test) and the model is :func:`dlcourse.models.mnist_cnn`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from dlcourse import distributed as dd
from dlcourse.data import load_mnist, make_dataloaders
from dlcourse.device import seed_everything
from dlcourse.models import mnist_cnn
from dlcourse.train import accuracy, fit

# How the learning rate grows with the number of processes N (the effective batch is N times larger).
LR_SCALING = {"none": lambda n: 1.0, "linear": lambda n: float(n), "sqrt": lambda n: math.sqrt(n)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dlcourse.models.train_cnn",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="passes over the training digits (default 5)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step in EACH process (default 64)")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate for one process (default 2e-3)")
    parser.add_argument("--scale-lr", choices=sorted(LR_SCALING), default="none",
                        help="multiply --lr by N (linear), sqrt(N) or nothing for N processes (default none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the shuffle (default 0)")
    parser.add_argument("--train-size", type=int, default=None, help="use only this many training digits")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads per process (default: torch's choice; torchrun sets 1)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="train this many times from the same start and report the median time (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file (rank 0)")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "repeats", "train_size", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    return args


def train_once(args: argparse.Namespace, train_set: TensorDataset, test_set: TensorDataset,
               device: torch.device, lr: float) -> tuple[float, dict[str, list[float]]]:
    """One training run from the seeded start: (seconds, history). Every rank starts the clock together."""
    seed_everything(args.seed)
    model = mnist_cnn().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    train_loader, test_loader = make_dataloaders(train_set, test_set, batch_size=args.batch_size,
                                                 device=device, seed=args.seed)
    dd.barrier()
    start = time.perf_counter()
    history = fit(model, train_loader, F.cross_entropy, optimizer, args.epochs, val_loader=test_loader,
                  metrics={"accuracy": accuracy}, progress=not args.no_progress)
    return time.perf_counter() - start, history


def main(argv: list[str] | None = None) -> dict:
    """Run the script with these command-line arguments; return the results (on every rank)."""
    args = parse_args(argv)
    device = dd.init(device=args.device)  # joins torchrun's process group, if there is one
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    world = dd.get_world_size()
    lr = args.lr * LR_SCALING[args.scale_lr](world)
    train_set, test_set = load_mnist()
    if args.train_size is not None:
        train_set = TensorDataset(*(t[: args.train_size] for t in train_set.tensors))
    if dd.is_main_process():
        print(f"{world} process(es) on {device.type}, {torch.get_num_threads()} thread(s) each; "
              f"batch {args.batch_size} per process = {args.batch_size * world} per step; lr {lr:.3g}; "
              f"{len(train_set)} training digits, {args.epochs} epoch(s)", flush=True)
    seconds, history = [], {}
    for _ in range(args.repeats):
        elapsed, history = train_once(args, train_set, test_set, device, lr)
        seconds.append(elapsed)
    result = {
        "world_size": world, "device": device.type, "threads": torch.get_num_threads(),
        "batch_per_process": args.batch_size, "effective_batch": args.batch_size * world, "lr": lr,
        "epochs": args.epochs, "train_images": len(train_set), "seconds": statistics.median(seconds),
        "all_seconds": seconds, "test_accuracy": history["val_accuracy"][-1],
        "train_loss": history["train_loss"][-1],
    }
    if dd.is_main_process():
        spread = f" (median of {len(seconds)}: {min(seconds):.1f}-{max(seconds):.1f} s)" if len(seconds) > 1 else ""
        print(f"test accuracy {result['test_accuracy']:.2%}, training {result['seconds']:.1f} s{spread} = "
              f"{result['seconds'] / args.epochs:.2f} s per epoch on {world} process(es)", flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
