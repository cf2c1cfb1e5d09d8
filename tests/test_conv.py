"""dlcourse.functional.conv2d, corr2d and conv_output_size against PyTorch: output sizes (the
lectures' examples and torch's actual shapes), values and gradients for x, weight and bias on
many random configurations, gradcheck in float64, clear errors, and no call to torch's convolution.
The oracle tests run on both paths of conv2d (the ``path`` fixture): the readable im2col and the
tuned kernels of ``dlcourse._fast.conv`` (including Winograd's)."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as TF

from fast_paths import path  # noqa: F401  (the fixture)

from dlcourse import _fast
from dlcourse import functional as F
from dlcourse._fast import conv as fast_conv
from dlcourse.check import ForbiddenCallError, forbid

TORCH_CONVOLUTIONS = ("torch.nn.functional.conv2d", "torch.conv2d", "torch.convolution",
                      "torch.nn.functional.conv_transpose2d", "torch.nn.functional.unfold",
                      "torch.nn.functional.fold")


def random_config(seed: int) -> dict:
    """A random convolution: shapes, kernel, stride and padding (ints or (h, w) pairs), bias or not."""
    rng = random.Random(seed)
    kH, kW = rng.randint(1, 4), rng.randint(1, 4)
    pair = rng.random() < 0.5  # (h, w) tuples or plain ints
    if pair:
        stride = (rng.randint(1, 3), rng.randint(1, 3))
        padding = (rng.randint(0, 3), rng.randint(0, 3))
    else:
        stride, padding = rng.randint(1, 3), rng.randint(0, 2)
    pp = padding if pair else (padding, padding)
    return {
        "N": rng.randint(1, 3), "C_in": rng.randint(1, 5), "C_out": rng.randint(1, 6),
        "H": rng.randint(max(1, kH - 2 * pp[0]), 10), "W": rng.randint(max(1, kW - 2 * pp[1]), 10),
        "kernel": (kH, kW), "stride": stride, "padding": padding, "bias": rng.random() < 0.75,
        "layout": rng.choice(["contiguous", "channels_last", "strided"]),
    }


def make_inputs(cfg: dict, gen: torch.Generator, dtype: torch.dtype, device) -> tuple:
    """x, weight, bias (or None) drawn on the CPU from ``gen``, then moved, in ``cfg``'s memory layout."""
    x = torch.randn(cfg["N"], cfg["C_in"], cfg["H"], cfg["W"], generator=gen, dtype=torch.float64)
    w = torch.randn(cfg["C_out"], cfg["C_in"], *cfg["kernel"], generator=gen, dtype=torch.float64)
    b = torch.randn(cfg["C_out"], generator=gen, dtype=torch.float64) if cfg["bias"] else None
    x = x.to(device=device, dtype=dtype)
    if cfg["layout"] == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif cfg["layout"] == "strided":  # a non-contiguous view: every other column of a wider tensor
        wide = torch.zeros(*x.shape[:3], 2 * x.shape[3], dtype=dtype, device=device)
        wide[..., ::2] = x
        x = wide[..., ::2]
    w = w.to(device=device, dtype=dtype)
    b = None if b is None else b.to(device=device, dtype=dtype)
    return x, w, b


def forward_backward(fn, x, w, b, upstream, **kwargs):
    """fn's output and the gradients of <fn(...), upstream> for fresh leaf copies of x, w, b."""
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in (x, w, b)]
    y = fn(*leaves, **kwargs)
    y.backward(upstream)
    return y.detach(), [t.grad if t is not None else None for t in leaves]


# ---------------------------------------------------------------------------------------------
# conv_output_size
# ---------------------------------------------------------------------------------------------

# (size, kernel, stride, padding) -> output size: the lectures' worked examples.
LECTURE_SIZES = [
    ((4, 3, 1, 0), 2),  # 4x4 input, 3x3 kernel -> 2x2
    ((5, 3, 1, 1), 5),  # 5x5, padding 1 -> 5x5 ("same")
    ((5, 3, 2, 0), 2),  # 5x5, stride 2 -> 2x2
    ((32, 5, 1, 0), 28),  # 32x32x3 with 5x5x3 filters -> 28x28
    ((32, 5, 1, 2), 32),  # 32, K=5, P=2 -> 32
    ((7, 3, 3, 1), 3),  # 7x7, padding 1, 3x3, stride 3 -> 3x3
]


@pytest.mark.parametrize("args, expected", LECTURE_SIZES, ids=[str(a) for a, _ in LECTURE_SIZES])
def test_conv_output_size_reproduces_the_lecture_examples(args, expected):
    size, k, s, p = args
    assert F.conv_output_size(size, k, s, p) == expected
    # and conv2d really produces that shape (a square image, three channels, four filters)
    y = F.conv2d(torch.randn(1, 3, size, size), torch.randn(4, 3, k, k), stride=s, padding=p)
    assert y.shape == (1, 4, expected, expected)


def test_conv_output_size_matches_the_shapes_torch_produces():
    x = torch.zeros(1, 1, 13, 1)
    checked = 0
    for size in range(1, 14):
        for k in range(1, 6):
            for s in range(1, 4):
                for p in range(0, 3):
                    for d in (1, 2):
                        if d * (k - 1) + 1 > size + 2 * p:
                            continue
                        w = torch.zeros(1, 1, k, 1)
                        y = TF.conv2d(x[:, :, :size], w, stride=(s, 1), padding=(p, 0), dilation=(d, 1))
                        assert F.conv_output_size(size, k, s, p, d) == y.shape[2], (size, k, s, p, d)
                        checked += 1
    assert checked > 500


@pytest.mark.parametrize("args", [(2, 3, 1, 0), (1, 2), (4, 3, 1, 0, 2), (3, 8, 1, 2)], ids=str)
def test_conv_output_size_rejects_a_kernel_that_does_not_fit(args):
    with pytest.raises(ValueError, match="does not fit"):
        F.conv_output_size(*args)


@pytest.mark.parametrize("kwargs, error", [
    ({"size": 0, "kernel_size": 1}, ValueError),
    ({"size": 5, "kernel_size": 0}, ValueError),
    ({"size": 5, "kernel_size": 3, "stride": 0}, ValueError),
    ({"size": 5, "kernel_size": 3, "stride": -1}, ValueError),
    ({"size": 5, "kernel_size": 3, "padding": -1}, ValueError),
    ({"size": 5, "kernel_size": 3, "dilation": 0}, ValueError),
    ({"size": 5.0, "kernel_size": 3}, TypeError),
    ({"size": 5, "kernel_size": True}, TypeError),
], ids=lambda v: str(v) if isinstance(v, dict) else v.__name__)
def test_conv_output_size_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error, match="conv_output_size"):
        F.conv_output_size(**kwargs)


# ---------------------------------------------------------------------------------------------
# corr2d, the loop version
# ---------------------------------------------------------------------------------------------

def test_corr2d_on_the_lecture_002_example():
    """The 5x5 binary image and the 'X' kernel of lecture 002: the first feature-map entry is 4."""
    image = torch.tensor([[1, 1, 1, 0, 0],
                          [0, 1, 1, 1, 0],
                          [0, 0, 1, 1, 1],
                          [0, 0, 1, 1, 0],
                          [0, 1, 1, 0, 0]], dtype=torch.float32)
    kernel = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=torch.float32)
    y = F.corr2d(image, kernel)
    assert y.shape == (3, 3)
    assert y[0, 0].item() == 4
    torch.testing.assert_close(y, TF.conv2d(image[None, None], kernel[None, None])[0, 0])


@pytest.mark.parametrize("seed", range(6))
def test_corr2d_agrees_with_conv2d_and_torch(seed, device):
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    H, W = rng.randint(1, 8), rng.randint(1, 8)
    kH, kW = rng.randint(1, H), rng.randint(1, W)
    x = torch.randn(H, W, generator=gen, dtype=torch.float64).to(device)
    k = torch.randn(kH, kW, generator=gen, dtype=torch.float64).to(device)
    y = F.corr2d(x, k)
    assert y.shape == (H - kH + 1, W - kW + 1) and y.device == x.device
    torch.testing.assert_close(y, F.conv2d(x[None, None], k[None, None])[0, 0])
    torch.testing.assert_close(y, TF.conv2d(x[None, None], k[None, None])[0, 0])


def test_corr2d_is_differentiable():
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(F.corr2d, (x, k))


def test_corr2d_errors():
    with pytest.raises(ValueError, match="2-D x"):
        F.corr2d(torch.zeros(1, 4, 4), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="does not fit"):
        F.corr2d(torch.zeros(2, 4), torch.zeros(3, 3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        F.corr2d([[1.0]], torch.zeros(1, 1))


# ---------------------------------------------------------------------------------------------
# conv2d against torch
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_conv2d_values_and_gradients_match_torch(seed, dtype, device, supported, path):
    supported(device, dtype)
    cfg = random_config(seed)
    gen = torch.Generator().manual_seed(1000 + seed)
    x, w, b = make_inputs(cfg, gen, dtype, device)
    kwargs = {"stride": cfg["stride"], "padding": cfg["padding"]}
    with torch.no_grad():
        y_ref = TF.conv2d(x, w, b, **kwargs)
    upstream = torch.randn(y_ref.shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    y, grads = forward_backward(F.conv2d, x, w, b, upstream, **kwargs)
    y_ref, grads_ref = forward_backward(TF.conv2d, x, w, b, upstream, **kwargs)
    assert y.shape == y_ref.shape and y.dtype == dtype and y.device == y_ref.device
    tol = {} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}  # float32 sums in another order
    torch.testing.assert_close(y, y_ref, **tol)
    for name, g, g_ref in zip(("x", "weight", "bias"), grads, grads_ref):
        if g_ref is None:
            assert g is None
            continue
        assert g.shape == g_ref.shape, name
        torch.testing.assert_close(g, g_ref, **tol, msg=lambda m: f"grad of {name} in {cfg}: {m}")


TYPICAL_LAYERS = [  # (input shape, C_out, kernel, stride, padding)
    ((4, 1, 28, 28), 6, 5, 1, 2),  # LeNet's first layer
    ((2, 3, 32, 32), 8, 7, 2, 3),  # a ResNet stem
    ((3, 16, 15, 13), 16, 3, 1, 1),  # a "same" 3x3 layer on an odd-sized map
    ((2, 8, 16, 16), 24, 1, 1, 0),  # a 1x1 channel mixer
    ((2, 8, 17, 17), 8, 3, 2, 1),  # a strided down-sampling layer
    ((2, 16, 9, 11), 40, 3, 1, 1),  # a widening stride-1 layer (C_in >= 16, C_out > 1.5 C_in)
]


@pytest.mark.parametrize("shape, C_out, k, s, p", TYPICAL_LAYERS, ids=["lenet", "resnet-stem", "same3x3", "1x1", "down", "widen"])
def test_conv2d_matches_torch_on_typical_layers(shape, C_out, k, s, p, device, path):
    gen = torch.Generator().manual_seed(sum(shape) + C_out)
    x = torch.randn(shape, generator=gen).to(device)
    w = (torch.randn(C_out, shape[1], k, k, generator=gen) / (shape[1] * k * k) ** 0.5).to(device)
    b = torch.randn(C_out, generator=gen).to(device)
    upstream = torch.randn(TF.conv2d(x, w, b, s, p).shape, generator=gen).to(device)
    y, grads = forward_backward(F.conv2d, x, w, b, upstream, stride=s, padding=p)
    y_ref, grads_ref = forward_backward(TF.conv2d, x, w, b, upstream, stride=s, padding=p)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    for name, g, g_ref in zip(("x", "weight", "bias"), grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-3, msg=lambda m: f"grad of {name}: {m}")


# Configurations that take each path of the backward pass: grad_input as a correlation with the
# flipped kernel (stride 1, C_out not much larger than C_in) or by col2im (the others).
GRADCHECK_CONFIGS = [
    dict(N=2, C_in=3, C_out=2, H=5, W=6, kernel=(3, 3), stride=1, padding=1),  # correlation path
    dict(N=1, C_in=4, C_out=4, H=4, W=5, kernel=(2, 3), stride=(1, 1), padding=(1, 0)),  # correlation path
    dict(N=2, C_in=1, C_out=4, H=5, W=5, kernel=(3, 3), stride=1, padding=1),  # col2im, stride 1
    dict(N=2, C_in=2, C_out=3, H=7, W=6, kernel=(3, 2), stride=(2, 3), padding=(1, 2)),  # col2im, strided
    dict(N=1, C_in=2, C_out=2, H=3, W=3, kernel=(2, 2), stride=1, padding=2),  # padding >= kernel
    dict(N=1, C_in=2, C_out=2, H=6, W=6, kernel=(1, 1), stride=2, padding=0),  # 1x1 kernel
    dict(N=1, C_in=16, C_out=32, H=4, W=5, kernel=(2, 3), stride=1, padding=(1, 0)),  # stride-1 GEMM path
]


@pytest.mark.parametrize("cfg", GRADCHECK_CONFIGS, ids=lambda c: f"{c['C_in']}to{c['C_out']}k{c['kernel']}s{c['stride']}p{c['padding']}")
def test_conv2d_passes_gradcheck_in_float64(cfg, device, supported, path):
    supported(device, torch.float64)
    gen = torch.Generator().manual_seed(7)
    leaf = lambda *shape: torch.randn(shape, generator=gen, dtype=torch.float64).to(device).requires_grad_()  # noqa: E731
    x = leaf(cfg["N"], cfg["C_in"], cfg["H"], cfg["W"])
    w = leaf(cfg["C_out"], cfg["C_in"], *cfg["kernel"])
    b = leaf(cfg["C_out"])
    fn = lambda x, w, b: F.conv2d(x, w, b, stride=cfg["stride"], padding=cfg["padding"])  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))


def test_conv2d_on_an_unbatched_image_and_an_empty_batch(device, path):
    w = torch.randn(4, 3, 3, 3, device=device)
    x = torch.randn(3, 8, 7, device=device)
    torch.testing.assert_close(F.conv2d(x, w, padding=1), TF.conv2d(x, w, padding=1), rtol=1e-4, atol=1e-4)
    empty = torch.randn(0, 3, 8, 7, device=device, requires_grad=True)
    y = F.conv2d(empty, w, stride=2)
    assert y.shape == TF.conv2d(empty, w, stride=2).shape == (0, 4, 3, 3)
    y.sum().backward()
    assert empty.grad.shape == empty.shape


def test_conv2d_only_computes_the_gradients_asked_for(path):
    x = torch.randn(2, 3, 6, 6)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    y = F.conv2d(x, w, padding=1)  # x needs no gradient: a first layer
    y.sum().backward()
    assert x.grad is None and w.grad is not None
    torch.testing.assert_close(w.grad, torch.autograd.grad(TF.conv2d(x, w, padding=1).sum(), w)[0],
                               rtol=1e-4, atol=1e-4)


def test_conv2d_second_derivatives_readable_match_torch_and_fast_raise(path):
    """The readable path is autograd all the way: gradients of gradients work. The fast path's
    backward is written out: a second derivative raises instead of being silently wrong."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 5, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(F.conv2d(x, w, padding=1).square().sum(), w, create_graph=True)
    if path == "fast":
        with pytest.raises(RuntimeError):
            g.sum().backward()
        return
    (g_ref,) = torch.autograd.grad(TF.conv2d(x, w, padding=1).square().sum(), w, create_graph=True)
    torch.testing.assert_close(torch.autograd.grad(g.sum(), x)[0], torch.autograd.grad(g_ref.sum(), x)[0])


def test_conv2d_calls_no_torch_convolution(path):
    x = torch.randn(2, 3, 9, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    with forbid(*TORCH_CONVOLUTIONS):
        for stride, padding in [(1, 1), (2, 0), ((1, 2), (2, 1)), (1, 0)]:
            F.conv2d(x, w, b, stride=stride, padding=padding).square().sum().backward()
    assert x.grad is not None and w.grad is not None and b.grad is not None


def test_the_forbid_check_would_catch_torch_conv2d():
    """The test above can fail: a conv2d that used torch's is caught."""
    with pytest.raises(ForbiddenCallError, match="conv2d"):
        with forbid(*TORCH_CONVOLUTIONS):
            TF.conv2d(torch.randn(1, 1, 4, 4), torch.randn(1, 1, 3, 3))


@pytest.mark.parametrize("call, error, match", [
    (lambda: F.conv2d(torch.randn(2, 3, 5), torch.randn(4, 3, 3, 3)), ValueError, "3 input channels"),
    (lambda: F.conv2d(torch.randn(5, 5), torch.randn(4, 3, 3, 3)), ValueError, "4-D input"),
    (lambda: F.conv2d(torch.randn(1, 3, 5, 5), torch.randn(4, 3, 3)), ValueError, "4-D weight"),
    (lambda: F.conv2d(torch.randn(1, 2, 5, 5), torch.randn(4, 3, 3, 3)), ValueError, "3 input channels"),
    (lambda: F.conv2d(torch.randn(1, 3, 5, 5), torch.randn(4, 3, 3, 3), torch.randn(3)), ValueError, "bias of shape"),
    (lambda: F.conv2d(torch.randn(1, 3, 2, 5), torch.randn(4, 3, 3, 3)), ValueError, "does not fit"),
    (lambda: F.conv2d(torch.randn(1, 3, 5, 5), torch.randn(4, 3, 3, 3), stride=0), ValueError, "stride"),
    (lambda: F.conv2d(torch.randn(1, 3, 5, 5), torch.randn(4, 3, 3, 3), padding=-1), ValueError, "padding"),
    (lambda: F.conv2d(torch.randn(1, 3, 5, 5), torch.randn(4, 3, 3, 3), stride=(1, 2, 3)), ValueError, "pair"),
    (lambda: F.conv2d(torch.randn(1, 3, 5, 5), torch.randn(4, 3, 3, 3), stride=1.5), TypeError, "stride"),
    (lambda: F.conv2d(torch.randn(1, 3, 5, 5), torch.randn(4, 3, 3, 3, dtype=torch.float64)), TypeError, "dtype"),
    (lambda: F.conv2d(torch.ones(1, 3, 5, 5, dtype=torch.long), torch.ones(4, 3, 3, 3, dtype=torch.long)),
     TypeError, "floating-point"),
    (lambda: F.conv2d([[1.0]], torch.randn(4, 3, 3, 3)), TypeError, "torch.Tensor"),
], ids=["3-D but wrong channels", "2-D input", "3-D weight", "channel mismatch", "bias shape", "kernel too large",
        "stride 0", "negative padding", "stride triple", "float stride", "dtype mismatch", "integer input", "list input"])
def test_conv2d_errors_say_what_was_expected(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# Winograd F(2x2, 3x3) and F(4x4, 3x3): the path of 3x3 stride-1 layers with many channels
# ---------------------------------------------------------------------------------------------

WINOGRAD_CASES = [  # (N, C_in, H, W, C_out, padding): whole tiles, tiles sticking out, wide padding
    (2, 3, 6, 6, 2, (1, 1)),
    (1, 2, 7, 5, 3, (0, 2)),
    (2, 2, 3, 3, 2, (2, 0)),
    (1, 2, 9, 4, 2, (1, 0)),
    (1, 1, 3, 3, 1, (0, 0)),  # a single output pixel
]


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=str)
def test_winograd_passes_gradcheck_in_float64(case, m):
    N, C_in, H, W, C_out, padding = case
    tile = {2: fast_conv._F2, 4: fast_conv._F4}[m]
    gen = torch.Generator().manual_seed(sum(case[:5]))
    x = torch.randn(N, C_in, H, W, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(C_out, C_in, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(C_out, generator=gen, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, b: fast_conv._Winograd3x3Function.apply(x, w, b, padding, tile)  # noqa: E731
    torch.testing.assert_close(fn(x, w, b), TF.conv2d(x, w, b, padding=padding))
    assert torch.autograd.gradcheck(fn, (x, w, b))


def test_conv2d_chooses_winograd_only_where_it_pays():
    w = lambda c_in, c_out, k=3: torch.zeros(c_out, c_in, k, k)  # noqa: E731
    assert fast_conv._winograd_tile(w(64, 64), (1, 1), (16, 16)) is fast_conv._F4
    assert fast_conv._winograd_tile(w(64, 64), (1, 1), (14, 14)) is fast_conv._F2  # 4x4 tiles would cover 16x16
    assert fast_conv._winograd_tile(w(16, 32), (1, 1), (16, 16)) is None  # too few channels
    assert fast_conv._winograd_tile(w(64, 64), (2, 2), (8, 8)) is None  # strided
    assert fast_conv._winograd_tile(w(64, 64, 5), (1, 1), (12, 12)) is None  # 5x5
    assert fast_conv._winograd_tile(w(64, 64).half(), (1, 1), (16, 16)) is None  # too coarse in half precision


WINOGRAD_LAYERS = [  # (input shape, C_out, padding): layers conv2d computes with Winograd
    ((2, 64, 16, 16), 64, 1),  # 4x4 tiles
    ((2, 48, 14, 13), 56, 0),  # 2x2 tiles, the last column of tiles sticking out
    ((1, 64, 7, 9), 48, 2),  # wide padding, 2x2 tiles
]


@pytest.mark.parametrize("shape, C_out, p", WINOGRAD_LAYERS, ids=["F4", "F2-odd", "F2-pad2"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_conv2d_winograd_layers_match_torch_in_float32(shape, C_out, p, layout, device, monkeypatch):
    """Winograd rounds differently from a direct sum: in float32 the 4x4 tiles' error reaches
    ~1e-5 of the largest output (measured 3e-6 to 6e-6, torch's own 2e-7), so values are
    compared to within 5e-5 of the largest magnitude of each result."""
    monkeypatch.setenv(_fast.ENV, "1")  # Winograd is a fast kernel
    gen = torch.Generator().manual_seed(sum(shape) + C_out)
    x = torch.randn(shape, generator=gen).to(device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w = (torch.randn(C_out, shape[1], 3, 3, generator=gen) / (9 * shape[1]) ** 0.5).to(device)
    b = torch.randn(C_out, generator=gen).to(device)
    assert fast_conv._winograd_tile(w, (1, 1), TF.conv2d(x, w, padding=p).shape[2:]) is not None
    upstream = torch.randn(TF.conv2d(x, w, b, padding=p).shape, generator=gen).to(device)
    y, grads = forward_backward(F.conv2d, x, w, b, upstream, padding=p)
    y_ref, grads_ref = forward_backward(TF.conv2d, x, w, b, upstream, padding=p)
    for name, got, ref in zip(("y", "x", "weight", "bias"), [y, *grads], [y_ref, *grads_ref]):
        assert got.shape == ref.shape, name
        torch.testing.assert_close(got, ref, rtol=0, atol=5e-5 * ref.abs().max().item(), msg=lambda m: f"{name}: {m}")


def test_conv2d_winograd_calls_no_torch_convolution(monkeypatch):
    monkeypatch.setenv(_fast.ENV, "1")  # Winograd is a fast kernel
    x = torch.randn(1, 48, 8, 8, requires_grad=True)
    w = torch.randn(48, 48, 3, 3, requires_grad=True)
    with forbid(*TORCH_CONVOLUTIONS):
        F.conv2d(x, w, padding=1).square().sum().backward()
    assert x.grad is not None and w.grad is not None


@pytest.mark.parametrize("channels, size, N", [((8, 8, 16, 8), 10, 3), ((48, 48, 48, 48), 8, 2),
                                                ((16, 16, 16, 16), 16, 40)],
                         ids=["im2col", "winograd", "im2col-chunked"])
def test_conv2d_layers_of_one_shape_in_a_row_match_torch(channels, size, N, path):
    """Temporaries of every call live in shared scratch memory (``dlcourse._gemm.scratch``): layers of
    the same shape, run one after the other before one backward pass (a plain CNN's repeated
    blocks), must not see each other's data. The widening layer (8 -> 16) takes the other
    input-gradient path; the chunked case's patch matrix exceeds one chunk."""
    gen = torch.Generator().manual_seed(sum(channels) + size + N)
    x = torch.randn(N, channels[0], size, size, generator=gen, dtype=torch.float64)
    ws = [torch.randn(c_out, c_in, 3, 3, generator=gen, dtype=torch.float64) / (3 * c_in ** 0.5)
          for c_in, c_out in zip(channels, channels[1:])]
    bs = [torch.randn(w.shape[0], generator=gen, dtype=torch.float64) for w in ws]
    if channels[0] == 16:
        assert len(fast_conv._image_chunks(N, size * size * 9 * 16 * 8)) > 1

    def net(conv2d, x, *params):
        for w, b in zip(params[:len(ws)], params[len(ws):]):
            x = torch.tanh(conv2d(x, w, b, padding=1))
        return x

    leaves = lambda: [t.clone().requires_grad_() for t in (x, *ws, *bs)]  # noqa: E731
    mine, ref = leaves(), leaves()
    y, y_ref = net(F.conv2d, *mine), net(TF.conv2d, *ref)
    upstream = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    y.backward(upstream)
    y_ref.backward(upstream)
    torch.testing.assert_close(y, y_ref)
    for got, expected in zip(mine, ref):
        torch.testing.assert_close(got.grad, expected.grad)
