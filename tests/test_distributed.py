"""dlcourse.distributed and data-parallel fit: two processes started by torchrun (gloo, CPU) end
with identical parameters that equal one process trained on the same global batches; the
helpers answer as a single process would outside a process group."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as TF
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

import ddp_worker as worker
from dlcourse import distributed as dd
from dlcourse.train import evaluate

WORLD = 2
HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Run tests/ddp_worker.py on 2 processes with torchrun once; each rank's results and stderr."""
    out = tmp_path_factory.mktemp("ddp")
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "DLCOURSE_DEVICE")}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD}", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={dd.free_port()}", "--monitor-interval=0.1",
           f"--log-dir={out / 'logs'}", "--redirects=3",  # each rank's stdout and stderr to its own file
           str(HERE / "ddp_worker.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    logs = {int(p.parent.name): p.read_text() for p in (out / "logs").rglob("stderr.log")}
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stderr[-3000:]}\n{logs}"
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    return ranks, logs


@pytest.fixture(scope="module")
def twin():
    """The worker's training in one process, written out: each step takes the union of the
    ranks' batches (DistributedSampler gives rank r the positions r, r + 2, ... of one shuffled
    order, so batch t of the 2 ranks together is positions 16t..16t+15 of that order)."""
    train, val = worker.toy_data(worker.N_TRAIN, 0), worker.toy_data(worker.N_VAL, 1)
    model = worker.mlp(seed=1)  # rank 0's weights: DDP copies them to every rank
    optimizer = torch.optim.SGD(model.parameters(), lr=worker.LR, momentum=worker.MOMENTUM)
    history = {"train_loss": [], "train_accuracy": [], "val_loss": [], "val_accuracy": []}
    for epoch in range(worker.EPOCHS):
        order = DistributedSampler(train, num_replicas=1, rank=0, shuffle=True, seed=worker.LOADER_SEED)
        order.set_epoch(epoch)
        total = correct = 0.0
        for x, y in DataLoader(train, batch_size=worker.BATCH * WORLD, sampler=order):
            out = model(x)
            loss = TF.cross_entropy(out, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
        history["train_loss"].append(total / len(train))
        history["train_accuracy"].append(correct / len(train))
        val = evaluate(model, DataLoader(worker.toy_data(worker.N_VAL, 1), batch_size=worker.BATCH),
                       TF.cross_entropy, {"accuracy": lambda o, t: (o.argmax(1) == t).float().mean()})
        history["val_loss"].append(val["loss"])
        history["val_accuracy"].append(val["accuracy"])
    return model, history


# --------------------------------------------------------------------------------------------
# Two processes under torchrun
# --------------------------------------------------------------------------------------------

def test_fit_found_torchrun_by_itself(ddp_run):
    ranks, _ = ddp_run
    for r, result in enumerate(ranks):
        assert result["env_before"] == {"launched_by_torchrun": True, "initialised": False}, r
        assert result["helpers"]["distributed"] is True


def test_parameters_are_identical_on_both_ranks(ddp_run):
    (rank0, rank1), _ = ddp_run
    assert rank0["state"].keys() == rank1["state"].keys()
    for name in rank0["state"]:
        # The ranks started from different weights (seed 1 and 2): DDP copied rank 0's, and the
        # averaged gradients kept the copies bit-for-bit equal.
        assert torch.equal(rank0["state"][name], rank1["state"][name]), name


def test_two_processes_equal_one_process_over_the_global_batch(ddp_run, twin):
    (rank0, _), _ = ddp_run
    model, _ = twin
    untrained = worker.mlp(seed=1).state_dict()
    for name, expected in model.state_dict().items():
        assert not torch.allclose(expected, untrained[name]), f"{name} did not train"
        # Float32 sums in a different order (two means of 8, averaged, vs one mean of 16).
        torch.testing.assert_close(rank0["state"][name], expected, rtol=1e-5, atol=1e-6)


def test_history_is_averaged_over_all_samples_of_all_ranks(ddp_run, twin):
    ranks, _ = ddp_run
    _, expected = twin
    for result in ranks:
        assert result["history"].keys() == expected.keys()
        for key, values in expected.items():
            assert result["history"][key] == pytest.approx(values, rel=1e-5, abs=1e-6), key


def test_a_non_finite_loss_on_one_rank_stops_both(ddp_run):
    (rank0, rank1), _ = ddp_run
    assert rank1["stopped"] is not None and "the loss became inf at epoch 2" in rank1["stopped"]
    assert rank0["stopped"] is not None and "NaN or infinite on another rank at epoch 2" in rank0["stopped"]


def test_progress_bar_on_rank_0_only(ddp_run):
    _, logs = ddp_run
    assert "epochs" in logs[0]
    assert "epochs" not in logs[1]


def test_helpers_inside_the_process_group(ddp_run):
    ranks, _ = ddp_run
    for r, result in enumerate(ranks):
        h = result["helpers"]
        assert (h["rank"], h["world_size"], h["local_rank"], h["main"]) == (r, WORLD, r, r == 0)
        torch.testing.assert_close(h["mean_tensor"], torch.full((2, 3), 1.5))
        assert h["mean_number"] == pytest.approx(1.5)
        assert h["weighted"] == pytest.approx({"x": 4.0})
        assert h["any_rank_1"] is True and h["any_none"] is False
        assert h["shard"] == list(range(r, worker.N_VAL, WORLD))


# --------------------------------------------------------------------------------------------
# One process: every helper answers as rank 0 of 1, nothing is wrapped or split
# --------------------------------------------------------------------------------------------

@pytest.fixture
def no_torchrun_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("env", "expected"), [
    ({}, False),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}, False),  # no port: not torchrun
    ({"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1234"}, False),  # 1 process
    ({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1234"}, True),
])
def test_launched_by_torchrun_reads_the_environment(no_torchrun_env, monkeypatch, env, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert dd.launched_by_torchrun() is expected


def test_single_process_answers(no_torchrun_env):
    assert not dd.is_distributed()
    assert (dd.get_rank(), dd.get_world_size(), dd.get_local_rank(), dd.is_main_process()) == (0, 1, 0, True)
    dd.barrier()  # returns at once
    dd.teardown()  # nothing to tear down


def test_init_outside_torchrun_only_picks_the_device(no_torchrun_env):
    assert dd.init(device="cpu") == torch.device("cpu")
    assert not torch.distributed.is_initialized()


def test_all_reduce_mean_is_the_identity_in_one_process():
    t = torch.randn(3, 2)
    assert dd.all_reduce_mean(t) is t
    assert dd.all_reduce_mean(2.5) == 2.5


def test_all_reduce_weighted_mean_in_one_process():
    assert dd.all_reduce_weighted_mean({"loss": 6.0, "acc": 3.0}, 4) == {"loss": 1.5, "acc": 0.75}
    with pytest.raises(ValueError, match="0 samples"):
        dd.all_reduce_weighted_mean({"loss": 0.0}, 0)


def test_any_rank_in_one_process():
    assert dd.any_rank(True) is True and dd.any_rank(False) is False


def test_shard_loader_and_wrap_model_change_nothing_in_one_process():
    loader = DataLoader(worker.toy_data(8, 0), batch_size=4, shuffle=True)
    model = worker.mlp(seed=0)
    assert dd.shard_loader(loader) is loader
    assert dd.wrap_model(model) is model


@pytest.mark.parametrize(("length", "world"), [(31, 2), (30, 2), (10, 3), (2, 4)])
def test_shard_sampler_covers_every_sample_once(length, world):
    shards = [list(dd.ShardSampler(length, rank=r, world_size=world)) for r in range(world)]
    assert sorted(i for shard in shards for i in shard) == list(range(length))
    assert [len(dd.ShardSampler(length, rank=r, world_size=world)) for r in range(world)] == [len(s) for s in shards]


def test_shard_sampler_bad_rank():
    with pytest.raises(ValueError, match="rank 2 of 2"):
        dd.ShardSampler(10, rank=2, world_size=2)


def test_process_device_outside_torchrun(no_torchrun_env):
    assert dd.process_device("cpu") == torch.device("cpu")


def test_the_twin_uses_the_samplers_the_worker_gets():
    # The single-process twin relies on fit rebuilding the worker's loaders like this.
    train_loader, _ = worker.make_dataloaders(worker.toy_data(8, 0), batch_size=4, device="cpu",
                                              seed=worker.LOADER_SEED)
    assert isinstance(train_loader.sampler, RandomSampler)
    assert train_loader.generator.initial_seed() == worker.LOADER_SEED
    assert isinstance(DataLoader(worker.toy_data(8, 0)).sampler, SequentialSampler)


# dd.run_on_processes: torchrun's convention from inside one Python process (chapter 12 uses it).

def _sum_of_ranks(rank, world_size, base):
    import torch.distributed as dist

    dd.init(device="cpu")  # joins the group from the variables run_on_processes set
    t = torch.tensor([float(rank + base)])
    dist.all_reduce(t)
    return {"rank": dd.get_rank(), "world": dd.get_world_size(), "sum": t.item(),
            "threads": torch.get_num_threads(), "env_rank": os.environ["RANK"]}


def test_run_on_processes_gives_each_rank_torchruns_environment_and_one_group():
    results = dd.run_on_processes(_sum_of_ranks, 2, 10)
    assert [r["rank"] for r in results] == [0, 1] and [r["env_rank"] for r in results] == ["0", "1"]
    assert all(r["world"] == 2 and r["sum"] == 10 + 11 and r["threads"] == 1 for r in results)
    assert not dd.is_distributed(), "the parent process never joins the group"


def _fail_on_rank_1(rank, world_size):
    if rank == 1:
        raise ValueError("rank 1 fails on purpose")
    return rank


def test_run_on_processes_reports_a_failing_rank():
    with pytest.raises(Exception, match="rank 1 fails on purpose"):
        dd.run_on_processes(_fail_on_rank_1, 2)


@pytest.mark.parametrize("bad", [0, 1.5, True])
def test_run_on_processes_rejects_a_bad_world_size(bad):
    with pytest.raises(ValueError, match="expected an int world_size >= 1"):
        dd.run_on_processes(_fail_on_rank_1, bad)


def test_free_port_can_be_bound():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", dd.free_port()))
