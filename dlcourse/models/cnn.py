"""Small reference models that chapters, benchmarks and example scripts share.

Each is the model a chapter builds and explains; it lives here so the benchmark
(``python -m dlcourse_tools.bench``) and the example scripts train exactly the model the chapter
trained, not a copy that drifts.
"""

from __future__ import annotations

from types import ModuleType

from torch import nn

import dlcourse.nn as dnn


def mnist_cnn(layers: ModuleType = nn) -> nn.Sequential:
    """The CNN of the pooling chapter for 28x28 grey digits: conv-ReLU-pool twice, then dense.

    Args:
        layers: ``torch.nn`` (default) or ``dlcourse.nn``; both give the same parameter names
            and shapes, so ``mnist_cnn(dlcourse.nn).load_state_dict(mnist_cnn().state_dict())``
            works.

    Shape:
        Input: ``(N, 1, 28, 28)``. Output: ``(N, 10)`` logits.
    """
    if layers not in (nn, dnn):
        raise ValueError(f"mnist_cnn: layers must be torch.nn or dlcourse.nn, got {layers!r}")
    return nn.Sequential(
        layers.Conv2d(1, 16, kernel_size=5), nn.ReLU(), layers.MaxPool2d(2),   # (N, 16, 24, 24) -> (N, 16, 12, 12)
        layers.Conv2d(16, 32, kernel_size=5), nn.ReLU(), layers.MaxPool2d(2),  # (N, 32, 8, 8) -> (N, 32, 4, 4)
        layers.Flatten(), layers.Linear(32 * 4 * 4, 128), nn.ReLU(),           # (N, 512) -> (N, 128)
        layers.Dropout(0.25), layers.Linear(128, 10),                          # (N, 10) logits
    )
