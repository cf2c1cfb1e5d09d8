"""Text corpora for language models: one that is always there, and a classic one to download.

* :func:`load_python_docs` -- offline. The help texts of the Python language reference that
  ship with every CPython installation (the standard library's ``pydoc_data.topics``, the
  text ``help("if")`` prints), about 450,000 characters of English technical prose with code.
  It is read from your own Python at run time; nothing is stored in this package. (Its
  licence is the Python Software Foundation's documentation licence; the exact text differs a
  little between Python versions.)
* :func:`load_tiny_shakespeare` -- Andrej Karpathy's *tiny Shakespeare* (1,115,394 bytes of the
  plays, public-domain text), downloaded once with :func:`download`, checked against its
  SHA-256 digest and cached in :func:`cache_dir`.

:func:`download` is a small, safe downloader: it streams to a temporary file next to the
target, checks the digest, and only then renames the file into place (an atomic step), so an
interrupted or corrupted download never leaves a bad file in the cache.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["TINY_SHAKESPEARE_URL", "TINY_SHAKESPEARE_SHA256", "HashMismatchError", "cache_dir", "download",
           "load_tiny_shakespeare", "load_python_docs", "split_ids"]

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"  # 1,115,394 bytes


class HashMismatchError(ValueError):
    """A downloaded file's SHA-256 digest is not the expected one."""


def cache_dir() -> Path:
    """Where downloads are kept: ``$DLCOURSE_CACHE`` if set, else the user's cache folder.

    The user cache folder is ``%LOCALAPPDATA%\\dlcourse`` on Windows, ``~/Library/Caches/dlcourse``
    on macOS and ``$XDG_CACHE_HOME/dlcourse`` (default ``~/.cache/dlcourse``) elsewhere. The
    folder is not created here.
    """
    if os.environ.get("DLCOURSE_CACHE"):
        return Path(os.environ["DLCOURSE_CACHE"]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "dlcourse"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, sha256: str, filename: str, directory: str | Path | None = None,
             timeout: float = 30.0) -> Path:
    """Download ``url`` to ``directory / filename`` once, checked against its SHA-256 digest.

    A file already there with the right digest is used as is (no network). Otherwise the data
    is streamed to a temporary file in the same folder, its digest checked, and the file
    renamed into place with ``os.replace`` (atomic), so readers never see half a file.

    Args:
        url: where to fetch the file (``http``, ``https`` or ``file``).
        sha256: the expected SHA-256 digest, 64 hexadecimal digits.
        filename: the name of the cached file.
        directory: the cache folder (default :func:`cache_dir`); created if missing.
        timeout: seconds to wait for the server.

    Returns:
        The path of the verified file.

    Raises:
        HashMismatchError: the downloaded data has another digest (nothing is kept).
        OSError: the download failed (``urllib.error.URLError`` is one).
    """
    sha256 = sha256.lower()
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"download: expected a SHA-256 digest of 64 hex digits, got {sha256!r}")
    folder = Path(directory) if directory is not None else cache_dir()
    target = folder / filename
    if target.is_file() and _sha256(target) == sha256:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{filename}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for block in iter(lambda: response.read(1 << 16), b""):
                digest.update(block)
                out.write(block)
        got = digest.hexdigest()
        if got != sha256:
            raise HashMismatchError(
                f"download: {url} has SHA-256 {got}, expected {sha256}; the file was not saved "
                f"(the server may have changed it, or the download was corrupted)")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def load_tiny_shakespeare(directory: str | Path | None = None, url: str = TINY_SHAKESPEARE_URL) -> str:
    """Tiny Shakespeare as one string, downloaded on first use and cached (needs the internet once).

    Args:
        directory: the cache folder (default :func:`cache_dir`).
        url: where to fetch it (a mirror must serve the identical file: the digest is checked).
    """
    path = download(url, TINY_SHAKESPEARE_SHA256, "tinyshakespeare.txt", directory)
    return path.read_text(encoding="utf-8")


def load_python_docs() -> str:
    """The Python language reference's help topics, read from the running Python (offline).

    The topics (``help("assert")``, ``help("for")`` ... about 80 of them) are joined in sorted
    order, separated by blank lines.

    Raises:
        FileNotFoundError: this Python was installed without ``pydoc_data`` (some minimal
            Linux packages); install the full standard library (e.g. ``python3-full``).
    """
    try:
        from pydoc_data.topics import topics
    except ImportError as err:
        raise FileNotFoundError("load_python_docs: this Python has no pydoc_data module (the "
                                "help texts); install the full standard library") from err
    return "\n\n".join(topics[name].strip("\n") for name in sorted(topics))


def split_ids(ids: list[int] | Tensor, val_fraction: float = 0.1) -> tuple[Tensor, Tensor]:
    """Split a token sequence into a training head and a validation tail, as 1-D ``int64`` tensors.

    The validation part is the *last* ``val_fraction`` of the text (not random positions), so
    no validation window overlaps a training window.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"split_ids: expected val_fraction in (0, 1), got {val_fraction}")
    data = torch.as_tensor(ids, dtype=torch.long)
    if data.dim() != 1 or len(data) < 2:
        raise ValueError(f"split_ids: expected a 1-D sequence of at least 2 ids, got shape {tuple(data.shape)}")
    n_train = min(max(1, round(len(data) * (1 - val_fraction))), len(data) - 1)
    return data[:n_train], data[n_train:]
