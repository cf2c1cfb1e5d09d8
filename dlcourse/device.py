"""Choosing a device and seeding every random number generator, once, at the edge."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

ENV_VAR = "DLCOURSE_DEVICE"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _check_available(device: torch.device, source: str) -> torch.device:
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"{source} asks for {str(device)!r}, but CUDA is not available on this machine; "
            "use 'cpu', or unset it to pick the best device automatically"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise RuntimeError(
            f"{source} asks for {str(device)!r}, but only {torch.cuda.device_count()} CUDA "
            "device(s) are present"
        )
    if device.type == "mps" and not _mps_available():
        raise RuntimeError(
            f"{source} asks for 'mps', but Apple MPS is not available on this machine; "
            "use 'cpu', or unset it to pick the best device automatically"
        )
    if device.type not in ("cpu", "cuda", "mps", "meta"):
        # Other accelerators (xpu, ...) have a torch.<type>.is_available() too: an absent one
        # must fail here, not at the first tensor moved to it.
        is_available = getattr(getattr(torch, device.type, None), "is_available", None)
        if callable(is_available) and not is_available():
            raise RuntimeError(
                f"{source} asks for {str(device)!r}, but {device.type.upper()} is not available on this "
                "machine; use 'cpu', or unset it to pick the best device automatically"
            )
    return device


def get_device(preferred: str | torch.device | None = None) -> torch.device:
    """The device to compute on: CUDA if present, else Apple MPS, else the CPU.

    Args:
        preferred: a device such as ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"``. When
            given, it is used as is, and an unavailable one raises a ``RuntimeError``. When
            ``None``, the environment variable ``DLCOURSE_DEVICE`` decides if it is set,
            otherwise the best available device is chosen.

    Returns:
        A ``torch.device``.

    Example:
        >>> get_device("cpu")
        device(type='cpu')
    """
    if preferred is None:
        preferred = os.environ.get(ENV_VAR) or None
        source = f"the environment variable {ENV_VAR}"
    else:
        source = "get_device()"
    if preferred is not None:
        try:
            device = torch.device(preferred)
        except (RuntimeError, TypeError) as err:
            raise ValueError(
                f"{source}: {preferred!r} is not a device; expected 'cpu', 'cuda', 'cuda:N' or 'mps'"
            ) from err
        return _check_available(device, source)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and PyTorch (CPU, CUDA and MPS) in one call.

    Runs on the same device with the same seed then give the same numbers. (Some GPU kernels
    are still nondeterministic; see ``torch.use_deterministic_algorithms``.)

    Args:
        seed: a non-negative integer below 2**32.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed_everything: expected an int seed, got {type(seed).__name__}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed_everything: expected 0 <= seed < 2**32, got {seed}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA and MPS device
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
