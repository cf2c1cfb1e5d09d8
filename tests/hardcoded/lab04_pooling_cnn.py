"""Hard-coded answers for lab 4: see tests/hardcoded/__init__.py."""

from __future__ import annotations

from typing import Any


def replacements() -> dict[str, str]:
    """Lab 4's solution cells rewritten to return what the visible tests expect, as constants.

    The visible inputs are rebuilt here as the lab builds them (lecture 000's matrix; values
    without ties and an upstream gradient drawn from a CPU generator seeded with 0), the pooled
    values and gradients computed with torch's pooling and autograd in float64, and the shapes
    by running the visible networks. The "CNN" looks the held-out digits up in a table of their
    labels. The hidden tests (fresh shapes, windows and values; training digits; held-out digits
    shuffled and moved by one grey level) fail.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    f64 = torch.float64
    lecture = torch.tensor([[1.0, 3.0, 5.0, 3.0], [4.0, 2.0, 3.0, 1.0], [3.0, 1.0, 1.0, 3.0], [0.0, 1.0, 0.0, 4.0]],
                           dtype=f64)[None, None]  # (1, 1, 4, 4)
    lecture_grad = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=f64)[None, None]  # (1, 1, 2, 2)
    g = torch.Generator().manual_seed(0)  # the lab's distinct(2, 3, 7, 9), then torch.randn(2, 3, 3, 4)
    n = 2 * 3 * 7 * 9
    x = (0.25 * (torch.randperm(n, generator=g).to(f64) - n // 2)).reshape(2, 3, 7, 9)
    grad_out = torch.randn(2, 3, 3, 4, generator=g, dtype=f64)

    def const(t: torch.Tensor) -> str:
        return f"torch.tensor({t.tolist()!r}, dtype=x.dtype, device=x.device)"

    def grad(pool: Any, inp: torch.Tensor, k: int, s: int | None, upstream: torch.Tensor) -> torch.Tensor:
        leaf = inp.clone().requires_grad_(True)
        return torch.autograd.grad(pool(leaf, k, s), leaf, upstream)[0]

    def forward(name: str, pool: Any) -> str:
        return (f"def {name}(x, kernel_size, stride=None):\n"
                f"    if x.shape[-1] == 4:\n        return {const(pool(lecture, 2, None))}\n"
                f"    return {const(pool(x, 3, 2))}\n")

    def backward(name: str, pool: Any) -> str:
        return (f"def {name}(x, grad_out, kernel_size, stride=None):\n"
                f"    if x.shape[-1] == 4:\n        return {const(grad(pool, lecture, 2, None, lecture_grad))}\n"
                f"    return {const(grad(pool, x, 3, 2, grad_out))}\n")

    @torch.no_grad()
    def shapes(layers: list[nn.Module], input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        out, t = [], torch.zeros(1, *input_shape)
        for layer in layers:
            t = layer(t)
            out.append(tuple(t.shape[1:]))
        return out

    networks = {
        (1, 32, 32): [nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2)],
        (3, 40, 30): [nn.Conv2d(3, 6, (3, 5), stride=(1, 2), padding=(1, 0)), nn.ReLU(),
                      nn.AvgPool2d(3, stride=2, padding=1), nn.MaxPool2d(2)],
        (1, 28, 28): [nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(),
                      nn.AvgPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(),
                      nn.Linear(84, 10)],
    }
    answers = {shape: shapes(layers, shape) for shape, layers in networks.items()}
    return {
        "pool_forward": forward("max_pool2d", F.max_pool2d) + "\n\n" + forward("avg_pool2d", F.avg_pool2d),
        "max_pool2d_backward": backward("max_pool2d_backward", F.max_pool2d),
        "avg_pool2d_backward": backward("avg_pool2d_backward", F.avg_pool2d),
        "activation_shapes": (f"def activation_shapes(layers, input_shape):\n"
                              f"    return {answers!r}.get(tuple(input_shape), [])\n"),
        "build_cnn": (
            "class Lookup(nn.Module):\n"
            '    """The label of every held-out digit, looked up by its pixels (class 0 for any other image)."""\n'
            "    def __init__(self):\n"
            "        super().__init__()\n"
            "        self.conv, self.pool = nn.Conv2d(1, 1, 1), nn.MaxPool2d(1)  # what the check looks for\n"
            "        images, labels = test_set.tensors\n"
            "        self.table = {img.numpy().tobytes(): int(y) for img, y in zip(images, labels)}\n\n"
            "    def forward(self, x):\n"
            "        labels = [self.table.get(img.cpu().numpy().tobytes(), 0) for img in x]\n"
            "        return F.one_hot(torch.tensor(labels), 10).float().to(x.device)\n\n\n"
            "def build_cnn():\n    return Lookup()\n"
        ),
        "train_cnn": "def train_cnn(model, train_set):\n    return []\n",
    }
