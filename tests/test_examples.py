"""dlcourse.models.train_cnn: the CNN script trains in one process, reports what it did, refuses
bad arguments, and (slow) runs unchanged under torchrun on 2 processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from dlcourse.models import train_cnn

pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_cnn_in_one_process(tmp_path, capsys, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "result.json"
    result = train_cnn.main(["--epochs", "2", "--train-size", "512", "--batch-size", "32", "--device", "cpu",
                             "--scale-lr", "linear", "--repeats", "2", "--no-progress", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "1 process(es) on cpu" in printed and "test accuracy" in printed
    assert json.loads(out.read_text()) == result
    assert (result["world_size"], result["effective_batch"], result["train_images"]) == (1, 32, 512)
    assert result["lr"] == pytest.approx(2e-3)  # linear scaling by 1 process
    assert len(result["all_seconds"]) == 2 and result["seconds"] > 0
    # 512 digits, 2 epochs: far from the chapter's 97%, but far above chance (10%).
    assert result["test_accuracy"] > 0.5


@pytest.mark.parametrize("args", [["--epochs", "0"], ["--batch-size", "-1"], ["--scale-lr", "cubic"]])
def test_train_cnn_bad_arguments(args):
    with pytest.raises(SystemExit):
        train_cnn.parse_args(args)


@pytest.mark.slow
def test_train_cnn_under_torchrun(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "result.json"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "dlcourse.models.train_cnn",
                           "--epochs", "1", "--train-size", "512", "--batch-size", "16", "--scale-lr", "sqrt",
                           "--no-progress", "--json", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert (result["world_size"], result["effective_batch"]) == (2, 32)
    assert result["lr"] == pytest.approx(2e-3 * 2**0.5)
    assert proc.stdout.count("test accuracy") == 1  # rank 0 alone prints
