"""dlcourse.text: the downloader against a local HTTP server on 127.0.0.1 (hash check, cache,
atomic write, clear error on a wrong digest), the offline corpus, and the train/validation split.
Nothing here touches the internet."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from dlcourse import text

PAYLOAD = ("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 500).encode("utf-8")
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server():
    """A local HTTP server serving ``PAYLOAD`` at /corpus.txt (404 elsewhere); yields (base URL, hit log)."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server API)
            hits.append(self.path)
            if self.path != "/corpus.txt":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)

        def log_message(self, *args):  # keep the test output quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_checks_caches_and_reuses(server, tmp_path):
    base, hits = server
    path = text.download(f"{base}/corpus.txt", PAYLOAD_SHA256, "corpus.txt", tmp_path)
    assert path == tmp_path / "corpus.txt" and path.read_bytes() == PAYLOAD
    assert hits == ["/corpus.txt"]
    again = text.download(f"{base}/corpus.txt", PAYLOAD_SHA256.upper(), "corpus.txt", tmp_path)
    assert again == path and hits == ["/corpus.txt"]  # served from the cache: no second request
    assert [p.name for p in tmp_path.iterdir()] == ["corpus.txt"]  # no temporary file left


def test_wrong_digest_is_a_clear_error_and_keeps_nothing(server, tmp_path):
    base, _ = server
    wrong = "0" * 64
    with pytest.raises(text.HashMismatchError, match=f"has SHA-256 {PAYLOAD_SHA256}, expected {wrong}"):
        text.download(f"{base}/corpus.txt", wrong, "corpus.txt", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_corrupted_cache_is_downloaded_again(server, tmp_path):
    base, hits = server
    (tmp_path / "corpus.txt").write_bytes(PAYLOAD[:100])  # an interrupted copy from elsewhere
    path = text.download(f"{base}/corpus.txt", PAYLOAD_SHA256, "corpus.txt", tmp_path)
    assert path.read_bytes() == PAYLOAD and hits == ["/corpus.txt"]


def test_http_errors_propagate_and_keep_nothing(server, tmp_path):
    base, _ = server
    with pytest.raises(OSError, match="404"):
        text.download(f"{base}/missing.txt", PAYLOAD_SHA256, "corpus.txt", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_bad_digest_argument(tmp_path):
    with pytest.raises(ValueError, match="64 hex digits"):
        text.download("http://127.0.0.1:9/x", "abc", "x", tmp_path)


def test_load_tiny_shakespeare_uses_the_given_mirror(server, tmp_path, monkeypatch):
    base, _ = server
    monkeypatch.setattr(text, "TINY_SHAKESPEARE_SHA256", PAYLOAD_SHA256)
    corpus = text.load_tiny_shakespeare(tmp_path, url=f"{base}/corpus.txt")
    assert corpus == PAYLOAD.decode("utf-8")
    assert (tmp_path / "tinyshakespeare.txt").is_file()


def test_the_real_digest_is_pinned():
    assert text.TINY_SHAKESPEARE_SHA256 == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    assert text.TINY_SHAKESPEARE_URL.startswith("https://")


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DLCOURSE_CACHE", str(tmp_path / "c"))
    assert text.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("DLCOURSE_CACHE")
    assert text.cache_dir().name == "dlcourse"


def test_offline_corpus():
    corpus = text.load_python_docs()
    assert isinstance(corpus, str) and len(corpus) > 100_000
    assert "assert" in corpus and "for" in corpus
    assert corpus == text.load_python_docs()  # the same text every time


def test_split_ids():
    train, val = text.split_ids(list(range(100)), 0.1)
    assert train.dtype == torch.long and train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))
    train, val = text.split_ids(torch.arange(3), 0.01)
    assert len(train) == 2 and len(val) == 1
    with pytest.raises(ValueError, match="val_fraction"):
        text.split_ids([1, 2, 3], 1.5)
    with pytest.raises(ValueError, match="at least 2 ids"):
        text.split_ids([1], 0.5)

