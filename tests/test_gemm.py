"""``dlcourse._fast.gemm``: the matrix product the convolutions use (oneDNN's kernel where PyTorch has
it, ``torch.addmm`` elsewhere) and the scratch memory their temporaries reuse (and its release)."""

from __future__ import annotations

import threading

import pytest
import torch

from dlcourse import _fast
from dlcourse import functional as F
from dlcourse._fast import gemm as _gemm


@pytest.fixture(params=["default", "torch"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each backend in turn: the default choice (oneDNN on the CPU where present), then ``torch.addmm``."""
    if request.param == "torch":
        monkeypatch.setenv("DLCOURSE_GEMM", "torch")
    else:
        monkeypatch.delenv("DLCOURSE_GEMM", raising=False)
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "transposed-views"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
def test_linear_is_a_times_w_transposed_plus_bias(dtype, strided, with_bias, backend, device, supported):
    supported(device, dtype)
    if device.type == "mps" and dtype == torch.bfloat16:
        pytest.skip("bfloat16 matrix products on MPS vary by macOS version")
    gen = torch.Generator().manual_seed(hash((str(dtype), strided, with_bias)) % 2**31)
    M, K, N = 1031, 53, 11  # odd sizes (no kernel gets a lucky block size), enough work for oneDNN
    if strided:  # the layouts conv2d passes: transposed and sliced views
        a = torch.randn(K, M + 3, generator=gen).T[:M]
        w = torch.randn(K, N, generator=gen).T
    else:
        a, w = torch.randn(M, K, generator=gen), torch.randn(N, K, generator=gen)
    bias = torch.randn(N, generator=gen) if with_bias else None
    expected = a.double() @ w.double().T + (0 if bias is None else bias.double())
    a, w = a.to(device, dtype), w.to(device, dtype)
    bias = None if bias is None else bias.to(device, dtype)
    out = _gemm.linear(a, w, bias)
    assert out.shape == (M, N) and out.dtype == dtype and out.device.type == device.type
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 3e-2}[dtype]
    torch.testing.assert_close(out.double().cpu(), expected, rtol=tol, atol=tol * expected.abs().max().item())


def test_linear_handles_empty_matrices(backend):
    assert _gemm.linear(torch.zeros(0, 5), torch.zeros(3, 5)).shape == (0, 3)
    out = _gemm.linear(torch.zeros(4, 0), torch.zeros(3, 0), torch.ones(3))
    assert torch.equal(out, torch.ones(4, 3))


def test_linear_uses_onednn_on_the_cpu_when_present(monkeypatch):
    """The point of the module: where PyTorch has oneDNN, float32 products run there, not in ``torch.addmm``."""
    monkeypatch.delenv("DLCOURSE_GEMM", raising=False)
    if _gemm._onednn_op() is None:
        pytest.skip("this PyTorch build has no oneDNN inner product")
    calls = []
    real = torch.addmm
    monkeypatch.setattr(torch, "addmm", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    a, w, b = torch.randn(1024, 64), torch.randn(32, 64), torch.randn(32)  # 2 million multiply-adds
    _gemm.linear(a, w, b)
    assert not calls
    _gemm.linear(a[:8], w, b)  # too little work to be worth oneDNN's set-up
    assert calls == [1]
    monkeypatch.setenv("DLCOURSE_GEMM", "torch")
    _gemm.linear(a, w, b)
    assert calls == [1, 1]


def test_scratch_reuses_one_buffer_per_role_and_grows_it():
    like = torch.empty(0)
    a = _gemm.scratch.empty("test-a", (10, 3), like)
    b = _gemm.scratch.empty("test-b", (10, 3), like)
    assert a.shape == (10, 3) and a.is_contiguous()
    assert a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr()  # two roles never alias
    again = _gemm.scratch.empty("test-a", (5, 2), like)  # smaller: the same memory
    assert again.data_ptr() == a.data_ptr()
    bigger = _gemm.scratch.empty("test-a", (100, 3), like)  # larger: a new, larger buffer
    assert bigger.shape == (100, 3)
    assert _gemm.scratch.empty("test-a", (50, 6), like).data_ptr() == bigger.data_ptr()
    assert _gemm.scratch.empty("test-a", (4,), torch.empty(0, dtype=torch.float64)).dtype == torch.float64


def test_scratch_leaves_large_and_accelerator_tensors_to_the_allocator(device):
    like = torch.empty(0, device=device)
    first = _gemm.scratch.empty("test-big", (4,), like)
    second = _gemm.scratch.empty("test-big", (4,), like)
    assert (first.data_ptr() == second.data_ptr()) == (device.type == "cpu")
    n = _gemm.scratch.MAX_BYTES // 4 + 1  # one float32 over the limit
    assert _gemm.scratch.empty("test-big", (n,), torch.empty(0)).data_ptr() != \
        _gemm.scratch.empty("test-big", (n,), torch.empty(0)).data_ptr()


def test_release_scratch_gives_the_memory_back():
    """After a fast convolution the scratch buffers hold memory; release_scratch drops them all, says
    how much it freed, and the next call allocates afresh and still computes the right numbers."""
    x = torch.randn(2, 8, 12, 12)
    w = torch.randn(8, 8, 3, 3, requires_grad=True)
    with _fast.switched(True):
        F.conv2d(x, w, padding=1).sum().backward()
        held = _gemm.scratch.nbytes()
        assert held > 0
        assert _fast.release_scratch() == held
        assert _gemm.scratch.nbytes() == 0 and _gemm.scratch.buffers == {}
        assert _fast.release_scratch() == 0  # nothing left
        w.grad = None
        y = F.conv2d(x, w, padding=1)
        y.sum().backward()
    assert _gemm.scratch.nbytes() > 0  # allocated again
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x, w, padding=1), rtol=1e-4, atol=1e-4)


def test_scratch_is_per_thread():
    like = torch.empty(0)
    here = _gemm.scratch.empty("test-thread", (8,), like).data_ptr()
    there = []
    thread = threading.Thread(target=lambda: there.append(_gemm.scratch.empty("test-thread", (8,), like).data_ptr()))
    thread.start()
    thread.join()
    assert there and there[0] != here


def test_linear_falls_back_to_addmm_when_onednn_fails(monkeypatch):
    """A PyTorch build whose oneDNN op rejects some inputs still gets the product, from ``torch.addmm``."""
    monkeypatch.delenv("DLCOURSE_GEMM", raising=False)

    def broken(*args):
        raise RuntimeError("oneDNN: unsupported")

    monkeypatch.setattr(_gemm, "_onednn_op", lambda: broken)
    monkeypatch.setattr(_gemm, "_onednn_works", True)  # it worked for earlier inputs
    a, w, b = torch.randn(1024, 64), torch.randn(32, 64), torch.randn(32)
    torch.testing.assert_close(_gemm.linear(a, w, b), torch.addmm(b, a, w.T))
    monkeypatch.setattr(_gemm, "_onednn_works", None)  # never tried: the first failure turns it off
    torch.testing.assert_close(_gemm.linear(a, w, b), torch.addmm(b, a, w.T))
    assert _gemm._onednn_works is False
    with pytest.raises(RuntimeError):  # a real mistake still gets torch's own error
        _gemm.linear(a, torch.randn(32, 63), b)
