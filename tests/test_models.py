"""dlcourse.models: the shared reference models build the shapes their chapters promise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dlcourse.nn as dnn
from dlcourse.models import mnist_cnn


def test_mnist_cnn_gives_ten_logits_and_twins_share_weights() -> None:
    torch.manual_seed(0)
    theirs, mine = mnist_cnn(nn).eval(), mnist_cnn(dnn).eval()
    mine.load_state_dict(theirs.state_dict())  # same names and shapes
    x = torch.randn(3, 1, 28, 28)
    out = theirs(x)
    assert out.shape == (3, 10)
    torch.testing.assert_close(mine(x), out, rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in theirs.parameters()) == 16 * 25 + 16 + 32 * 16 * 25 + 32 + 512 * 128 + 128 + 1290


def test_mnist_cnn_rejects_other_layer_modules() -> None:
    with pytest.raises(ValueError, match="torch.nn or dlcourse.nn"):
        mnist_cnn(torch)
