"""What crosses between the judge and the student's process, and how.

The two directions are not alike:

- **judge -> student** (requests): pickled with ``cloudpickle``. The student's process is
  untrusted anyway, so what it unpickles can only hurt itself; this lets the judge pass its own
  inputs (tensors, ``nn.Module`` copies, optimizers, small test functions) to the student's code.
- **student -> judge** (replies): JSON only, decoded by :func:`decode`, which accepts plain data
  and nothing else: ``None``, booleans, numbers, strings, lists, tuples, dictionaries, tensors
  (dtype, shape and raw bytes, checked against each other), dtypes, devices, and *handles*
  (numbers that stand for objects left in the student's process). Nothing the student's process
  sends can run code in the judge, and no value can "lie about itself" to a comparison: a tensor
  arrives as a fresh ``torch.Tensor`` built by the judge from bytes.

Frames are a 4-byte big-endian length followed by the payload.
"""

from __future__ import annotations

import base64
import json
import math
import os
import struct
from typing import Any

import torch

MAX_FRAME = 512 * 2**20  # bytes: a reply larger than this is refused (the judge's memory is not the student's)
MAX_DEPTH = 32
DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128,
    torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)}
DEVICE_TYPES = ("cpu", "cuda", "mps")


class WireError(Exception):
    """A frame or a value that breaks the protocol (the student's process sent something else)."""


# ---------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------

def write_frame(fd: int, payload: bytes) -> None:
    data = struct.pack(">I", len(payload)) + payload
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def read_exact(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> bytes:
    (size,) = struct.unpack(">I", read_exact(fd, 4))
    if size > MAX_FRAME:
        raise WireError(f"a frame of {size} bytes (at most {MAX_FRAME})")
    return read_exact(fd, size)


# ---------------------------------------------------------------------------------------------
# Plain data (student -> judge)
# ---------------------------------------------------------------------------------------------

def encode(value: Any, handle_of: Any, depth: int = 0) -> Any:
    """``value`` as JSON-ready plain data; anything else becomes a handle (``handle_of(obj)``)."""
    if depth > MAX_DEPTH:
        return {"__t": "handle", **handle_of(value)}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else {"__t": "bigint", "v": str(value)}
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__t": "float", "v": repr(value)}
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if t.layout != torch.strided or str(t.dtype).removeprefix("torch.") not in DTYPES or t.is_meta:
            return {"__t": "handle", **handle_of(value)}
        device = t.device.type
        t = t.to("cpu").contiguous()
        flat = t.reshape(-1)
        raw = flat.to(torch.uint8).numpy().tobytes() if t.dtype == torch.bool else \
            flat.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return {"__t": "tensor", "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                "device": device, "grad": bool(value.requires_grad), "b64": base64.b64encode(raw).decode()}
    if isinstance(value, torch.dtype):
        return {"__t": "dtype", "v": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"__t": "device", "v": str(value)}
    if isinstance(value, torch.Size):
        return {"__t": "tuple", "v": [int(v) for v in value]}
    try:
        import numpy as np

        if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
            return encode(torch.from_numpy(np.ascontiguousarray(value)), handle_of, depth)
        if isinstance(value, np.generic) and value.dtype.kind in "biufc":
            return encode(value.item(), handle_of, depth)
    except ImportError:  # pragma: no cover
        pass
    if type(value) in (list, tuple):
        return {"__t": "list" if type(value) is list else "tuple",
                "v": [encode(v, handle_of, depth + 1) for v in value]}
    if type(value) is dict and all(type(k) in (str, int) for k in value):
        return {"__t": "dict", "k": list(value), "v": [encode(v, handle_of, depth + 1) for v in value.values()]}
    return {"__t": "handle", **handle_of(value)}


def _tensor(obj: dict[str, Any]) -> torch.Tensor:
    dtype = DTYPES.get(obj.get("dtype"))
    shape = obj.get("shape")
    if dtype is None:
        raise WireError(f"a tensor of unknown dtype {obj.get('dtype')!r}")
    if not isinstance(shape, list) or len(shape) > 16 or not all(type(s) is int and 0 <= s < 2**40 for s in shape):
        raise WireError(f"a tensor with a bad shape {shape!r}")
    raw = base64.b64decode(obj.get("b64", ""), validate=True)
    numel = math.prod(shape)
    itemsize = 1 if dtype == torch.bool else torch.empty((), dtype=dtype).element_size()
    if len(raw) != numel * itemsize:
        raise WireError(f"a tensor of shape {shape} and dtype {obj['dtype']} with {len(raw)} bytes")
    if dtype == torch.bool:
        t = torch.frombuffer(bytearray(raw), dtype=torch.uint8).to(torch.bool) if numel else torch.empty(0, dtype=torch.bool)
    else:
        t = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype) if numel else torch.empty(0, dtype=dtype)
    t = t.reshape(shape)
    device = obj.get("device", "cpu")
    if device not in DEVICE_TYPES:
        raise WireError(f"a tensor on an unknown device {device!r}")
    if device != "cpu":
        t = t.to(device)
    if obj.get("grad") is True and (t.is_floating_point() or t.is_complex()):
        t.requires_grad_(True)  # a fresh leaf: says only that the student's tensor required a gradient
    return t


def decode(obj: Any, make_handle: Any, depth: int = 0) -> Any:
    """The plain value ``obj`` stands for, built by the judge; anything unexpected is a :class:`WireError`."""
    if depth > MAX_DEPTH + 1:
        raise WireError("a value nested too deeply")
    if obj is None or type(obj) in (bool, str):
        return obj
    if type(obj) is int:
        return obj
    if type(obj) is float:
        return obj
    if type(obj) is not dict:
        raise WireError(f"an unexpected {type(obj).__name__} in a reply")
    kind = obj.get("__t")
    if kind == "tensor":
        return _tensor(obj)
    if kind in ("list", "tuple"):
        items = obj.get("v")
        if type(items) is not list:
            raise WireError("a sequence without items")
        values = [decode(v, make_handle, depth + 1) for v in items]
        return values if kind == "list" else tuple(values)
    if kind == "dict":
        keys, items = obj.get("k"), obj.get("v")
        if type(keys) is not list or type(items) is not list or len(keys) != len(items) \
                or not all(type(k) in (str, int) for k in keys):
            raise WireError("a malformed dictionary")
        return {k: decode(v, make_handle, depth + 1) for k, v in zip(keys, items)}
    if kind == "float":
        text = obj.get("v")
        if text not in ("nan", "inf", "-inf"):
            raise WireError(f"a bad float {text!r}")
        return float(text)
    if kind == "bigint":
        text = obj.get("v")
        if type(text) is not str or len(text) > 4300 or not text.lstrip("-").isdigit():
            raise WireError("a bad integer")
        return int(text)
    if kind == "dtype":
        dtype = DTYPES.get(obj.get("v"))
        if dtype is None:
            raise WireError(f"an unknown dtype {obj.get('v')!r}")
        return dtype
    if kind == "device":
        text = obj.get("v")
        if type(text) is not str or text.split(":")[0] not in DEVICE_TYPES or len(text) > 16:
            raise WireError(f"an unknown device {text!r}")
        return torch.device(text)
    if kind == "handle":
        hid, types, name = obj.get("id"), obj.get("types"), obj.get("name")
        if type(hid) is not int or type(types) is not list or not all(type(t) is str for t in types) \
                or (name is not None and type(name) is not str):
            raise WireError("a malformed handle")
        return make_handle(hid, [t[:200] for t in types[:64]], (name or "")[:200], bool(obj.get("callable")))
    raise WireError(f"an unknown kind of value {kind!r}")


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()


def loads(payload: bytes) -> Any:
    def constant(name: str) -> Any:
        raise WireError(f"a bare {name} in a reply")
    try:
        return json.loads(payload.decode("utf-8"), parse_constant=constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise WireError(f"a reply that is not JSON ({err})") from None
