"""dlcourse.models.generative and dlcourse.models.gan: the GAN and VAE losses against hand computations and
torch, the reparameterization trick's values, gradients and statistics, the models' shapes,
the ring of Gaussians, and a GAN step and loop that do what Goodfellow et al.'s algorithm says."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from dlcourse.models.gan import gan_step, train_gan
from dlcourse.models.generative import (
    VAE, ConvAutoencoder, MinibatchStd, MLPAutoencoder, digit_discriminator, digit_generator, discriminator_loss, gaussian_kl,
    generator_loss, mlp_discriminator, mlp_generator, reparameterize, ring_coverage, ring_modes, ring_of_gaussians,
    softplus, vae_loss,
)

# Tiny tensors: one torch thread (the shared fixture in conftest.py) is faster and steadier.
pytestmark = pytest.mark.usefixtures("one_thread")
DTYPES = [torch.float32, torch.float64]


def randn(*shape, gen, device, dtype=torch.float32, scale=1.0):
    """Normal numbers drawn on the CPU from ``gen`` (the same on every machine), then moved."""
    return (scale * torch.randn(*shape, generator=gen, dtype=torch.float64)).to(device, dtype)


# --------------------------------------------------------------------------------------------
# GAN losses
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_softplus_matches_torch_and_never_overflows(device, dtype, gen, supported):
    supported(device, dtype)
    x = torch.cat([randn(50, gen=gen, device=device, dtype=dtype, scale=5.0),
                   torch.tensor([-1000.0, -80.0, 0.0, 80.0, 1000.0], device=device, dtype=dtype)])
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours, theirs = softplus(a), F.softplus(b)
    torch.testing.assert_close(ours, theirs)
    ours.sum().backward()
    theirs.sum().backward()
    torch.testing.assert_close(a.grad, b.grad)
    assert torch.isfinite(ours).all()


def test_gan_losses_by_hand():
    # Logit 0 means D = 1/2 for everything: L_D = 2 log 2, and the generator's losses are +-log 2.
    zero = torch.zeros(4, 1, dtype=torch.float64)
    torch.testing.assert_close(discriminator_loss(zero, zero), torch.tensor(2 * math.log(2), dtype=torch.float64))
    torch.testing.assert_close(generator_loss(zero), torch.tensor(math.log(2), dtype=torch.float64))
    torch.testing.assert_close(generator_loss(zero, non_saturating=False), torch.tensor(-math.log(2), dtype=torch.float64))
    # D(real) = 3/4 (logit ln 3) and D(fake) = 1/4 (logit -ln 3): L_D = -log(3/4) - log(1 - 1/4).
    real = torch.full((3,), math.log(3), dtype=torch.float64)
    fake = torch.full((5,), -math.log(3), dtype=torch.float64)
    torch.testing.assert_close(discriminator_loss(real, fake), torch.tensor(-2 * math.log(0.75), dtype=torch.float64))
    torch.testing.assert_close(generator_loss(fake), torch.tensor(-math.log(0.25), dtype=torch.float64))
    torch.testing.assert_close(generator_loss(fake, non_saturating=False), torch.tensor(math.log(0.75), dtype=torch.float64))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gan_losses_match_binary_cross_entropy(device, dtype, gen, supported):
    supported(device, dtype)
    real = randn(7, 1, gen=gen, device=device, dtype=dtype, scale=3.0)
    fake = randn(5, 1, gen=gen, device=device, dtype=dtype, scale=3.0)
    bce = F.binary_cross_entropy_with_logits
    expected_d = bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))
    torch.testing.assert_close(discriminator_loss(real, fake), expected_d)
    torch.testing.assert_close(generator_loss(fake), bce(fake, torch.ones_like(fake)))
    torch.testing.assert_close(generator_loss(fake, non_saturating=False), -bce(fake, torch.zeros_like(fake)))
    out = discriminator_loss(real, fake)
    assert out.shape == () and out.dtype == dtype and out.device.type == torch.device(device).type


@pytest.mark.parametrize("non_saturating", [True, False])
def test_generator_loss_gradients_saturate_as_the_chapter_says(non_saturating):
    # d/dl of log(1 - sigma(l)) is -sigma(l); of -log sigma(l) it is -(1 - sigma(l)). Per logit, / m.
    logits = torch.tensor([-8.0, -2.0, 0.0, 2.0], dtype=torch.float64, requires_grad=True)
    generator_loss(logits, non_saturating).backward()
    s = torch.sigmoid(logits.detach())
    expected = -(1 - s) / 4 if non_saturating else -s / 4
    torch.testing.assert_close(logits.grad, expected)
    if not non_saturating:  # a rejected fake (logit -8) gets almost no gradient: the loss saturates
        assert abs(logits.grad[0]) < 1e-4


def test_gan_losses_gradcheck_and_extreme_logits(gen):
    real = torch.randn(6, 1, generator=gen, dtype=torch.float64, requires_grad=True)
    fake = torch.randn(4, 1, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(discriminator_loss, (real, fake))
    assert torch.autograd.gradcheck(lambda f: generator_loss(f, False), (fake,))
    assert torch.autograd.gradcheck(generator_loss, (fake,))
    big = torch.tensor([-100.0, 100.0])  # log(sigmoid(-100)) is -inf in float32; the losses stay finite
    for value in (discriminator_loss(big, big), generator_loss(big), generator_loss(big, False)):
        assert torch.isfinite(value)
    torch.testing.assert_close(generator_loss(torch.tensor([-100.0])), torch.tensor(100.0))


def test_loss_errors_are_clear():
    with pytest.raises(TypeError, match="discriminator_loss: expected real_logits to be a torch.Tensor"):
        discriminator_loss([0.0], torch.zeros(1))
    with pytest.raises(ValueError, match=r"gaussian_kl: mu and logvar must have the same shape, got \(2, 3\) and \(2, 4\)"):
        gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="expected mu of shape"):
        gaussian_kl(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="expected noise of shape"):
        reparameterize(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, 2))


# --------------------------------------------------------------------------------------------
# VAE pieces
# --------------------------------------------------------------------------------------------

def test_gaussian_kl_by_hand():
    # KL(N(mu, s^2) || N(0, 1)) = (mu^2 + s^2 - 1 - log s^2) / 2 per dimension.
    mu = torch.tensor([[0.0, 0.0], [1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    logvar = torch.tensor([[0.0, 0.0], [0.0, 0.0], [math.log(4), 0.0]], dtype=torch.float64)
    expected = torch.tensor([0.0, 2.5, (4 - 1 - math.log(4)) / 2], dtype=torch.float64)
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_kl_matches_torch_distributions(device, dtype, gen, supported):
    supported(device, dtype)
    mu = randn(9, 4, gen=gen, device=device, dtype=dtype)
    logvar = randn(9, 4, gen=gen, device=device, dtype=dtype)
    q, p = Normal(mu, torch.exp(0.5 * logvar)), Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(gaussian_kl(mu, logvar), kl_divergence(q, p).sum(dim=1))
    a, b = (t.detach().to("cpu", torch.float64).requires_grad_(True) for t in (mu, logvar))
    assert torch.autograd.gradcheck(gaussian_kl, (a, b))


@pytest.mark.parametrize("dtype", DTYPES)
def test_reparameterize_values_and_gradients(device, dtype, gen, supported):
    supported(device, dtype)
    mu = randn(5, 3, gen=gen, device=device, dtype=dtype).requires_grad_(True)
    logvar = randn(5, 3, gen=gen, device=device, dtype=dtype).requires_grad_(True)
    eps = randn(5, 3, gen=gen, device=device, dtype=dtype)
    z = reparameterize(mu, logvar, eps)
    sigma = torch.exp(0.5 * logvar.detach())
    torch.testing.assert_close(z, mu.detach() + sigma * eps)
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones_like(mu))           # dz/dmu = 1
    torch.testing.assert_close(logvar.grad, 0.5 * sigma * eps)         # dz/dlogvar = sigma * eps / 2


def test_reparameterize_sample_statistics(device):
    torch.manual_seed(0)
    mu = torch.tensor([-1.0, 0.0, 3.0], device=device)
    logvar = torch.tensor([0.0, math.log(0.25), math.log(9.0)], device=device)
    z = reparameterize(mu.expand(200_000, 3), logvar.expand(200_000, 3))  # (200000, 3)
    # The standard error of the mean is sigma / sqrt(n) <= 3 / 447: 0.05 is more than 7 of them.
    torch.testing.assert_close(z.mean(0), mu, atol=0.05, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([1.0, 0.5, 3.0], device=device), atol=0, rtol=0.02)
    assert z.device == mu.device


@pytest.mark.parametrize("dtype", DTYPES)
def test_vae_loss_matches_torch(device, dtype, gen, supported):
    supported(device, dtype)
    logits = randn(4, 1, 28, 28, gen=gen, device=device, dtype=dtype, scale=2.0)
    x = torch.rand(4, 1, 28, 28, generator=gen, dtype=torch.float64).to(device, dtype)
    mu, logvar = randn(4, 2, gen=gen, device=device, dtype=dtype), randn(4, 2, gen=gen, device=device, dtype=dtype)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / 4
    kl = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum() / 4
    torch.testing.assert_close(vae_loss(logits, x, mu, logvar), recon + kl)
    torch.testing.assert_close(vae_loss(logits, x, mu, logvar, beta=0.0), recon)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

def test_autoencoder_and_vae_shapes(device):
    torch.manual_seed(0)
    x = torch.rand(5, 1, 28, 28, device=device)
    for model, latent in ((MLPAutoencoder(2), 2), (MLPAutoencoder(16, hidden=64), 16), (ConvAutoencoder(8), 8)):
        model.to(device)
        assert model.encode(x).shape == (5, latent)
        out = model(x)
        assert out.shape == x.shape and out.device == x.device
        assert ((out > 0) & (out < 1)).all()
        torch.testing.assert_close(model.decode(model.encode(x)), out)
    vae = VAE(3).to(device)
    logits, mu, logvar = vae(x)
    assert logits.shape == x.shape and mu.shape == logvar.shape == (5, 3)
    vae.eval()  # no noise: the same output twice, decoded from mu
    first, second = vae(x)[0], vae(x)[0]
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(torch.sigmoid(first), vae.decode(vae.encode(x)[0]))
    samples = vae.sample(6, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (6, 1, 28, 28) and samples.device == x.device


def test_gan_network_shapes(device):
    torch.manual_seed(0)
    g, d = mlp_generator(4).to(device), mlp_discriminator().to(device)
    assert d(g(torch.randn(7, 4, device=device))).shape == (7, 1)
    g, d = digit_generator(16).to(device), digit_discriminator().to(device)
    images = g(torch.randn(7, 16, device=device))
    assert images.shape == (7, 1, 28, 28) and ((images > 0) & (images < 1)).all()
    assert d(images).shape == (7, 1)


def test_minibatch_std_adds_the_batch_spread(device):
    torch.manual_seed(0)
    inner = mlp_discriminator(3, hidden=8).to(device)
    d = MinibatchStd(inner)
    x = torch.randn(6, 2, device=device)
    expected = inner(torch.cat([x, x.std(0).mean().expand(6, 1)], dim=1))
    torch.testing.assert_close(d(x), expected)
    assert d(x.repeat(3, 1)[:6]).shape == (6, 1)
    collapsed = torch.ones(6, 2, device=device)  # no spread at all: the extra feature is 0
    torch.testing.assert_close(d(collapsed), inner(torch.cat([collapsed, torch.zeros(6, 1, device=device)], 1)))
    with pytest.raises(ValueError, match=r"MinibatchStd: expected a batch \(N, in_dim\) with N >= 2, got \(1, 2\)"):
        d(x[:1])


def test_ring_of_gaussians_and_coverage(device):
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    points = ring_of_gaussians(4000, generator=g1, device=device)
    torch.testing.assert_close(points, ring_of_gaussians(4000, generator=g2, device=device))  # seeded
    assert points.shape == (4000, 2) and points.device.type == torch.device(device).type
    torch.testing.assert_close(points.norm(dim=1).mean(), torch.tensor(2.0, device=device), atol=0.01, rtol=0)
    torch.testing.assert_close(ring_modes(4, radius=1.0),
                               torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]), atol=1e-6, rtol=0)
    covered, good = ring_coverage(points)
    assert covered == 8 and abs(good - (1 - math.exp(-4.5))) < 0.01  # P(r < 3 sigma) in 2-D: 98.9%
    one_mode = ring_modes(device=device)[2] + 0.05 * torch.randn(1000, 2, generator=g1).to(device)
    assert ring_coverage(one_mode) == (1, pytest.approx(1.0, abs=0.02))
    assert ring_coverage(torch.zeros(10, 2, device=device)) == (0, 0.0)


# --------------------------------------------------------------------------------------------
# The GAN step and loop
# --------------------------------------------------------------------------------------------

def reference_step(G, D, opt_g, opt_d, real, z):
    """Algorithm 1 of Goodfellow et al., written with torch's own BCE: D first, then G through the new D."""
    bce = F.binary_cross_entropy_with_logits
    real_logits, fake_logits = D(real), D(G(z).detach())
    d_loss = bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    fake_logits = D(G(z))
    g_loss = bce(fake_logits, torch.ones_like(fake_logits))
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    return d_loss.item(), g_loss.item()


def test_gan_step_matches_the_algorithm_and_lowers_the_discriminator_loss(device):
    torch.manual_seed(0)
    G, D = mlp_generator(2, hidden=16).to(device), mlp_discriminator(hidden=16).to(device)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    real = ring_of_gaussians(32, generator=torch.Generator().manual_seed(0), device=device)
    z = torch.randn(32, 2, device=device)
    with torch.no_grad():
        before = discriminator_loss(D(real), D(G(z))).item()
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.5) for m in (G, D, G2, D2)]
    stats = gan_step(G, D, opts[0], opts[1], real, z)
    d_loss, g_loss = reference_step(G2, D2, opts[2], opts[3], real, z)
    assert stats["d_loss"] == pytest.approx(d_loss, rel=1e-5) and stats["g_loss"] == pytest.approx(g_loss, rel=1e-5)
    for mine, ref in ((G, G2), (D, D2)):
        for p, q in zip(mine.parameters(), ref.parameters()):
            torch.testing.assert_close(p, q)
    assert stats["d_loss"] == pytest.approx(before, rel=1e-5)  # the loss before the update is reported
    assert 0 < stats["d_fake"] < 1 and 0 < stats["d_real"] < 1
    # With the generator frozen (lr 0), one discriminator update on the batch lowers its loss.
    G3, D3 = mlp_generator(2, hidden=16).to(device), mlp_discriminator(hidden=16).to(device)
    with torch.no_grad():
        before = discriminator_loss(D3(real), D3(G3(z))).item()
    gan_step(G3, D3, torch.optim.SGD(G3.parameters(), lr=0.0), torch.optim.SGD(D3.parameters(), lr=0.05), real, z)
    with torch.no_grad():
        assert discriminator_loss(D3(real), D3(G3(z))).item() < before


def test_train_gan_history_callback_and_errors():
    torch.manual_seed(0)
    G, D = mlp_generator(2, hidden=8), mlp_discriminator(hidden=8)
    calls = []
    history = train_gan(G, D, ring_of_gaussians(100), torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters()),
                        steps=25, latent_dim=2, batch_size=16, log_every=10, progress=False,
                        callback=lambda step, g, d: calls.append((step, g.training)))
    assert set(history) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(len(v) == 3 for v in history.values())
    assert calls == [(10, True), (20, True), (25, True)]
    opt = torch.optim.Adam(G.parameters())
    with pytest.raises(ValueError, match="expected a positive int steps, got 0"):
        train_gan(G, D, ring_of_gaussians(100), opt, opt, steps=0, latent_dim=2)
    with pytest.raises(ValueError, match="at least batch_size=64 real samples, got 10"):
        train_gan(G, D, ring_of_gaussians(10), opt, opt, steps=1, latent_dim=2)


def test_train_gan_is_reproducible_and_learns_where_the_data_are():
    # One Gaussian at (2, 2): the generator's samples start near the origin and must move there.
    def run(steps):
        torch.manual_seed(0)
        G, D = mlp_generator(2, hidden=16), mlp_discriminator(hidden=16)
        data = lambda n: torch.tensor([2.0, 2.0]) + 0.1 * torch.randn(n, 2)  # noqa: E731
        adam = lambda m: torch.optim.Adam(m.parameters(), lr=5e-3, betas=(0.5, 0.999))  # noqa: E731
        history = train_gan(G, D, data, adam(G), adam(D), steps=steps, latent_dim=2, batch_size=32,
                            log_every=50, progress=False)
        with torch.no_grad():
            return G(torch.randn(500, 2, generator=torch.Generator().manual_seed(1))), history

    torch.testing.assert_close(run(5)[0], run(5)[0])  # the same seed, the same run
    samples, history = run(200)
    assert (samples.mean(0) - torch.tensor([2.0, 2.0])).norm() < 0.5, samples.mean(0)
    assert history["d_real"][-1] < 0.9  # the discriminator no longer separates the two easily
