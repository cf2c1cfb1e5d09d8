"""``dlcourse.doctor()``: the preflight report a student runs first when something is wrong."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import time

PACKAGES = ("torch", "numpy", "matplotlib", "scikit-learn", "mlxtend", "pandas", "tqdm", "ipywidgets",
            "jupyterlab", "nbgrader", "jupyter-book")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def doctor(file=None) -> dict[str, object]:
    """Print what this machine offers the course and return it as a dict.

    Reports Python and the operating system, torch and the device :func:`~dlcourse.get_device` picks
    (GPU name and memory when there is one), the versions of the key packages, and whether
    the bundled data sets load. Nothing here raises: problems are printed as ``FAIL`` lines.
    """
    import torch

    from dlcourse.device import ENV_VAR, get_device

    out = file or sys.stdout
    report: dict[str, object] = {}

    def line(key: str, value: object, ok: bool = True) -> None:
        report[key] = value
        print(f"{'  ' if ok else 'FAIL'} {key:<22} {value}", file=out)

    print("dlcourse doctor", file=out)
    line("python", f"{platform.python_version()} ({sys.executable})")
    line("platform", f"{platform.system()} {platform.release()} {platform.machine()}")
    line("cpu cores", os.cpu_count())
    line("torch threads", torch.get_num_threads())
    try:
        device = get_device()
        line("device", f"{device}" + (f" (from {ENV_VAR})" if os.environ.get(ENV_VAR) else ""))
    except Exception as err:  # report, never crash
        line("device", f"{type(err).__name__}: {err}", ok=False)
        device = torch.device("cpu")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        line("gpu", f"{props.name}, {props.total_memory / 2**30:.1f} GiB, CUDA {torch.version.cuda}")
    else:
        mps = getattr(torch.backends, "mps", None)
        line("gpu", "Apple MPS" if mps is not None and mps.is_available() else "none (CPU only is fine for this course)")
    for dist in PACKAGES:
        line(dist, _version(dist), ok=_version(dist) != "not installed" or dist in ("nbgrader", "jupyterlab", "jupyter-book"))
    from dlcourse import data

    for name, loader in (("data: MNIST 5k", data.load_mnist), ("data: digits 8x8", data.load_digits)):
        start = time.perf_counter()
        try:
            train, test = loader()
            line(name, f"ok: {len(train)} train + {len(test)} test ({time.perf_counter() - start:.2f} s)")
        except Exception as err:
            line(name, f"{type(err).__name__}: {err}", ok=False)
    try:
        x = torch.ones(2, 2, device=device)
        line("compute check", f"ok on {device}: {float((x @ x).sum())} == 8.0")
    except Exception as err:
        line("compute check", f"{type(err).__name__}: {err}", ok=False)
    return report
