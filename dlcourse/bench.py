"""How fast are the from-scratch pieces next to PyTorch's own? ``python -m dlcourse.bench`` (``make bench``).

Every case times one forward *and* backward pass of ours and of PyTorch's twin, on the same
inputs, in one process, on the device present (CUDA, else MPS, else the CPU; ``--device``
overrides). The two are *interleaved*, repeat after repeat, and each repeat's ratio
ours / torch is recorded; the reported ratio is the median of those. On a shared machine the
load changes from second to second, and a pair of back-to-back runs sees nearly the same
load, so the median of paired ratios is far steadier than a ratio of two separate timings.

The results are printed as a table and written to ``_build/bench.json``::

    {"device": "cpu", "date": "2025-01-01T12:00:00+00:00", "torch": "2.13.0", "threads": 2,
     "ratios": {"conv2d_64x1x28x28": 1.1, ...},
     "details": {"conv2d_64x1x28x28": {"shape": ..., "mine_ms": ..., "torch_ms": ...,
                                        "ratio": ..., "target": 1.5, "met": true, ...}, ...}}

New kinds of measurement (``lstm``, ``attention``, ``time_to_accuracy``, ``notebooks``) are new
entries of :data:`CASES` (a key in ``ratios`` and ``details``) or new top-level keys next to
these; the keys above keep their meaning.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as TF

from dlcourse import functional as F
from dlcourse.device import get_device

Step = Callable[[], None]  # one forward + backward pass


@dataclass
class Case:
    """One benchmark: a name, what it runs on, the target ratio, and how to build the two runs."""

    key: str  # the key in ``ratios`` and ``details``
    op: str  # the operation, for the table
    target: float | None  # the ratio ours / torch to stay within (None: no target)
    build: Callable[[torch.device, bool], tuple[str, Step, Step]]  # (device, quick) -> (shape, mine, theirs)


def _fwd_bwd(fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor], upstream: torch.Tensor | None,
             *args) -> Step:
    """A step running ``fn(*inputs, *args)`` and its backward pass; gradients reset each time.

    The upstream gradient gets the output's memory layout, as it would inside a network (where
    it comes from the next layer, which sees this output), so neither side pays for a layout
    change the other does not.
    """
    leaves = [t for t in inputs if t.requires_grad]
    if upstream is not None:
        with torch.no_grad():
            upstream = torch.empty_like(fn(*inputs, *args)).copy_(upstream)

    def step() -> None:
        for t in leaves:
            t.grad = None
        out = fn(*inputs, *args)
        if upstream is None:
            out.backward()
        else:
            out.backward(upstream)

    return step


def _conv_case(N: int, C: int, H: int, C_out: int, padding: int) -> Case:
    def build(device: torch.device, quick: bool) -> tuple[str, Step, Step]:
        n, h = (2, min(H, 8)) if quick else (N, H)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, C, h, h, generator=g).to(device).requires_grad_()
        w = (0.1 * torch.randn(C_out, C, 3, 3, generator=g)).to(device).requires_grad_()
        b = torch.randn(C_out, generator=g).to(device).requires_grad_()
        h_out = F.conv_output_size(h, 3, 1, padding)
        up = torch.randn(n, C_out, h_out, h_out, generator=g).to(device)
        shape = f"({n}, {C}, {h}, {h}) -> {C_out} ch, 3x3, pad {padding}"
        return (shape, _fwd_bwd(F.conv2d, [x, w, b], up, 1, padding),
                _fwd_bwd(TF.conv2d, [x, w, b], up, 1, padding))

    return Case(f"conv2d_{N}x{C}x{H}x{H}", "conv2d", 1.5, build)


def _pool_case(name: str) -> Case:
    mine, theirs = {"max_pool2d": (F.max_pool2d, TF.max_pool2d), "avg_pool2d": (F.avg_pool2d, TF.avg_pool2d)}[name]

    def build(device: torch.device, quick: bool) -> tuple[str, Step, Step]:
        n, c, h = (2, 3, 8) if quick else (64, 32, 28)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, c, h, h, generator=g).to(device).requires_grad_()
        up = torch.randn(n, c, h // 2, h // 2, generator=g).to(device)
        shape = f"({n}, {c}, {h}, {h}), 2x2, stride 2"
        return shape, _fwd_bwd(mine, [x], up, 2, 2), _fwd_bwd(theirs, [x], up, 2, 2)

    return Case(name, name, 2.0, build)


def _cross_entropy_case() -> Case:
    def build(device: torch.device, quick: bool) -> tuple[str, Step, Step]:
        n, c = (16, 10) if quick else (4096, 100)
        g = torch.Generator().manual_seed(0)
        logits = torch.randn(n, c, generator=g).to(device).requires_grad_()
        target = torch.randint(0, c, (n,), generator=g).to(device)
        shape = f"({n}, {c}) logits"
        return shape, _fwd_bwd(F.cross_entropy, [logits, target], None), _fwd_bwd(TF.cross_entropy, [logits, target], None)

    return Case("cross_entropy", "cross_entropy", 1.5, build)


def _module_fwd_bwd(module: torch.nn.Module, x: torch.Tensor, upstream: torch.Tensor) -> Step:
    """A step running ``module(x)`` (its first output, for modules returning a tuple) and its backward pass."""
    leaves = [x, *module.parameters()]

    def step() -> None:
        for t in leaves:
            t.grad = None
        out = module(x)
        out = out[0] if isinstance(out, tuple) else out
        out.backward(upstream)

    return step


def _lstm_case() -> Case:
    def build(device: torch.device, quick: bool) -> tuple[str, Step, Step]:
        from dlcourse.nn import LSTM  # ImportError until dlcourse/rnn.py exists

        T, B, I, H = (5, 2, 32, 128) if quick else (50, 64, 32, 128)
        g = torch.Generator().manual_seed(0)
        theirs = torch.nn.LSTM(I, H).to(device)
        mine = LSTM(I, H).to(device)
        mine.load_state_dict(theirs.state_dict())  # the same weights: the same work on both sides
        x = torch.randn(T, B, I, generator=g).to(device).requires_grad_()
        up = torch.randn(T, B, H, generator=g).to(device)
        shape = f"({T}, {B}, {I}) seq-first -> hidden {H}"
        return shape, _module_fwd_bwd(mine, x, up), _module_fwd_bwd(theirs, x, up)

    return Case("lstm", "LSTM", 2.0, build)


def _attention_case() -> Case:
    def build(device: torch.device, quick: bool) -> tuple[str, Step, Step]:
        mine = F.scaled_dot_product_attention  # AttributeError until dlcourse/attention.py exists

        B, h, T, d = (2, 2, 8, 16) if quick else (32, 4, 128, 64)
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(B, h, T, d, generator=g).to(device).requires_grad_() for _ in range(3))
        up = torch.randn(B, h, T, d, generator=g).to(device)
        shape = f"q, k, v ({B}, {h}, {T}, {d})"
        return (shape, _fwd_bwd(mine, [q, k, v], up),
                _fwd_bwd(TF.scaled_dot_product_attention, [q, k, v], up))

    return Case("attention", "scaled_dot_product_attention", 1.3, build)


CASES: list[Case] = [
    _conv_case(64, 1, 28, 16, padding=1),  # a first layer on MNIST
    _conv_case(64, 16, 14, 32, padding=0),  # a second layer
    _conv_case(32, 64, 16, 64, padding=1),  # a many-channel layer
    _pool_case("max_pool2d"),
    _pool_case("avg_pool2d"),
    _cross_entropy_case(),
    _lstm_case(),
    _attention_case(),
]


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timing covers the computation and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _time(step: Step, device: torch.device) -> float:
    _synchronize(device)
    start = time.perf_counter()
    step()
    _synchronize(device)
    return time.perf_counter() - start


def measure(case: Case, device: torch.device, quick: bool = False, repeats: int = 50,
            budget_s: float = 15.0) -> dict:
    """Time ``case`` on ``device``: interleaved pairs of runs, median of the paired ratios.

    Runs ``repeats`` pairs after two warm-up runs of each side, alternating which side goes
    first; stops early (after at least 3 pairs) once ``budget_s`` seconds have passed.
    """
    try:
        shape, mine, theirs = case.build(device, quick)
    except (ImportError, AttributeError) as error:  # a from-scratch piece that is not written yet
        return _not_measured(case, quick, f"not available yet ({type(error).__name__}: {str(error).split(' (')[0]})")
    for _ in range(2):  # warm-up: allocator, caches, lazy initialisation
        mine()
        theirs()
    mine_s: list[float] = []
    torch_s: list[float] = []
    started = time.perf_counter()
    for r in range(repeats):
        if r % 2 == 0:
            mine_s.append(_time(mine, device))
            torch_s.append(_time(theirs, device))
        else:
            torch_s.append(_time(theirs, device))
            mine_s.append(_time(mine, device))
        if r + 1 >= 3 and time.perf_counter() - started > budget_s:
            break
    ratios = [m / t for m, t in zip(mine_s, torch_s)]
    ratio = statistics.median(ratios)
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratio, ratio, ratio]
    return {
        "op": case.op,
        "shape": shape,
        "mine_ms": 1e3 * statistics.median(mine_s),
        "torch_ms": 1e3 * statistics.median(torch_s),
        "ratio": ratio,
        "ratio_q1": quartiles[0],  # the middle half of the paired ratios lies in [q1, q3]
        "ratio_q3": quartiles[2],
        "repeats": len(ratios),
        "target": case.target,
        "met": None if case.target is None else bool(ratio <= case.target),
        "quick": quick,
        "load_avg": _load_average(),
        "status": "ok",
    }


def _not_measured(case: Case, quick: bool, status: str) -> dict:
    """The details of a case that could not run: the same fields, ``None`` for every number."""
    return {"op": case.op, "shape": None, "mine_ms": None, "torch_ms": None, "ratio": None, "ratio_q1": None,
            "ratio_q3": None, "repeats": 0, "target": case.target, "met": None, "quick": quick,
            "load_avg": _load_average(), "status": status}


def _load_average() -> float | None:
    """The 1-minute load average where the system reports one (how busy the CPUs were)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def run(device: torch.device, quick: bool = False, repeats: int = 50, only: list[str] | None = None,
        budget_s: float = 15.0) -> dict:
    """Measure every case (or those named in ``only``); return the JSON-ready results."""
    cases = [c for c in CASES if only is None or c.key in only or c.op in only]
    if only is not None and not cases:
        raise ValueError(f"bench: no case named {only}; the cases are {[c.key for c in CASES]}")
    details = {c.key: measure(c, device, quick, repeats, budget_s) for c in cases}
    return {
        "device": str(device),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "ratios": {key: d["ratio"] for key, d in details.items()},
        "details": details,
    }


def table(results: dict) -> str:
    """The results as a plain-text table: op, shape, ours, torch's, ratio, target, met?"""
    header = ("op", "shape", "mine ms", "torch ms", "ratio", "target", "met?")
    rows = []
    for key, d in results["details"].items():
        target = "-" if d["target"] is None else f"<= {d['target']:g}x"
        if d["ratio"] is None:  # not measured: say why in place of the numbers
            rows.append((key, d["status"], "-", "-", "-", target, "-"))
            continue
        met = "-" if d["met"] is None else ("yes" if d["met"] else "NO")
        rows.append((key, d["shape"], f"{d['mine_ms']:.2f}", f"{d['torch_ms']:.2f}", f"{d['ratio']:.2f}x",
                     target, met))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlcourse.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 repeats: checks that it runs")
    parser.add_argument("--output", type=Path, default=Path("_build") / "bench.json",
                        help="where to write the JSON results (default: _build/bench.json)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    parser.add_argument("--repeats", type=int, default=None, help="pairs of runs per case (default 50; 2 with --quick)")
    parser.add_argument("--only", nargs="+", default=None, metavar="CASE", help="run only these cases (keys or ops)")
    args = parser.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 50)
    if repeats < 1:
        parser.error(f"--repeats must be at least 1, got {repeats}")
    device = get_device(args.device)
    results = run(device, quick=args.quick, repeats=repeats, only=args.only)
    load = _load_average()
    print(f"dlcourse.bench on {results['device']} with {results['threads']} threads "
          f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}), torch {results['torch']}, "
          f"load average {'?' if load is None else f'{load:.2f}'}"
          f"{'; quick: tiny sizes, not a measurement' if args.quick else ''}")
    print("forward + backward; ratio = median over repeats of (mine / torch) for back-to-back pairs")
    print(table(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
