"""dlcourse.nn.layer_table: the per-layer table of chapters 7 and 8 (shapes from forward hooks,
parameters, multiply-adds), checked against the output-size formula, the parameter formula and
PyTorch's own FLOP counter."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dlcourse import functional as DF
from dlcourse import nn as dnn
from dlcourse.nn import layer_table


def small_cnn(L):
    return nn.Sequential(L.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), L.MaxPool2d(2),
                         L.Conv2d(8, 16, 5), nn.ReLU(), L.Flatten(), L.Linear(16 * 3 * 3, 10))


@pytest.mark.parametrize("L", [nn, dnn], ids=["torch.nn", "dlcourse.nn"])
def test_shapes_follow_the_output_size_formula_and_parameters_their_formula(L):
    rows = layer_table(small_cnn(L), torch.randn(4, 3, 28, 28))
    assert [r["layer"] for r in rows] == [str(i) for i in range(7)]
    assert [r["type"] for r in rows] == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "Flatten", "Linear"]
    side = DF.conv_output_size(28, 3, 2, 1)  # 14
    assert rows[0]["input shape"] == (3, 28, 28) and rows[0]["output shape"] == (8, side, side)
    assert rows[2]["output shape"] == (8, side // 2, side // 2)
    assert rows[3]["output shape"] == (16, side // 2 - 4, side // 2 - 4)
    assert rows[5]["output shape"] == (144,) and rows[6]["output shape"] == (10,)
    assert [r["parameters"] for r in rows] == [3 * 3 * 3 * 8 + 8, 0, 0, 5 * 5 * 8 * 16 + 16, 0, 0, 144 * 10 + 10]
    assert isinstance(rows[3]["module"], L.Conv2d)


def test_multiply_adds_match_torch_flop_counter():
    # PyTorch counts 2 FLOPs (a multiply and an add) per multiply-add of every convolution and product.
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.ReLU(),
                          nn.Conv2d(6, 8, 3, stride=2, groups=2, bias=False),
                          nn.ConvTranspose2d(8, 4, 2, stride=2, bias=False), nn.Flatten(),
                          nn.Linear(4 * 14 * 14, 7, bias=False))
    x = torch.randn(3, 3, 16, 16)
    rows = layer_table(model, x)
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert sum(r["multiply-adds"] for r in rows) * len(x) * 2 == counter.get_total_flops()
    assert rows[0]["multiply-adds"] == 6 * 16 * 16 * 3 * 9  # outputs x (C_in k k)


def test_meta_device_and_skip():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(1000, 2000), nn.ReLU(), nn.Dropout(0.5), nn.Linear(2000, 3))
        rows = layer_table(model, torch.empty(2, 1000), skip=(nn.ReLU, nn.Dropout))
    assert [r["layer"] for r in rows] == ["0", "3"]
    assert [r["multiply-adds"] for r in rows] == [1000 * 2000, 2000 * 3]
    assert rows[0]["parameters"] == 1000 * 2000 + 2000


def test_hooks_are_removed_even_when_the_model_fails():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(5, 2))  # the second layer gets the wrong width
    with pytest.raises(RuntimeError):
        layer_table(model, torch.randn(2, 4))
    assert all(not m._forward_hooks for m in model.modules())
    assert len(layer_table(nn.Sequential(nn.Linear(4, 3)), torch.randn(2, 4))) == 1


@pytest.mark.parametrize("model, x, match", [("not a model", torch.randn(2, 3), "expected an nn.Module"),
                                             (nn.Linear(3, 2), [1.0, 2.0, 3.0], "expected a batch tensor")])
def test_bad_arguments_are_clear_errors(model, x, match):
    with pytest.raises(TypeError, match=f"layer_table: {match}"):
        layer_table(model, x)


def test_count_parameters_counts_every_parameter_once_and_on_meta():
    from dlcourse.nn import count_parameters

    small = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    assert count_parameters(small) == 4 * 4 + 4 + 4 * 1 + 1
    small[0].weight.requires_grad_(False)
    assert count_parameters(small, trainable_only=True) == 4 + 4 * 1 + 1
    shared = torch.nn.Linear(3, 3)
    assert count_parameters(torch.nn.Sequential(shared, shared)) == 12  # a shared layer once
    assert count_parameters(torch.nn.Linear(480_000, 480_000, device="meta")) == 480_000 * 480_001
    with pytest.raises(TypeError, match="expected an nn.Module"):
        count_parameters(torch.zeros(3))
