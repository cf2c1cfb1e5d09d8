r"""Generative models: autoencoders, a VAE, GAN networks, and their losses written from the formulas.

The generative-models chapter and lab 6 share these definitions. The models are small on
purpose: each trains in seconds on two CPU cores.

* Losses. :func:`discriminator_loss` and :func:`generator_loss` (minimax and non-saturating)
  of a GAN, from the logits of the discriminator; :func:`gaussian_kl`, :func:`reparameterize`
  and :func:`vae_loss` of a variational autoencoder.
* Models. :class:`MLPAutoencoder`, :class:`ConvAutoencoder` and :class:`VAE` for 28x28 digits;
  :func:`mlp_generator` and :func:`mlp_discriminator` for 2-D points, with
  :class:`MinibatchStd` against mode collapse;
  :func:`digit_generator` and :func:`digit_discriminator` for 28x28 digits.
* Data. :func:`ring_of_gaussians`, the classic 2-D test of a GAN, and :func:`ring_coverage`,
  which counts the modes a generator's samples cover.
* Evaluation. :func:`frechet_distance` between two sets of feature vectors, the formula of the
  Fréchet Inception Distance (FID).

The GAN losses work on *logits* :math:`\ell` (before the sigmoid), because
:math:`\log \sigma(\ell) = -\operatorname{softplus}(-\ell)` and
:math:`\log(1 - \sigma(\ell)) = -\operatorname{softplus}(\ell)` stay finite for any logit, while
``log(sigmoid(l))`` becomes ``-inf`` once ``sigmoid(l)`` rounds to 0 or 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "softplus", "discriminator_loss", "generator_loss", "reparameterize", "gaussian_kl", "vae_loss",
    "MLPAutoencoder", "ConvAutoencoder", "VAE", "mlp_generator", "mlp_discriminator",
    "MinibatchStd", "digit_generator", "digit_discriminator", "ring_of_gaussians", "ring_modes", "ring_coverage",
    "frechet_distance",
]

IMAGE_SHAPE = (1, 28, 28)  # the digits of dlcourse.data.load_mnist
PIXELS = 28 * 28


def _require_tensor(x: object, fn: str, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: expected {name} to be a torch.Tensor, got {type(x).__name__}")


def _require_same_shape(a: Tensor, b: Tensor, fn: str, names: tuple[str, str]) -> None:
    _require_tensor(a, fn, names[0])
    _require_tensor(b, fn, names[1])
    if a.shape != b.shape:
        raise ValueError(f"{fn}: {names[0]} and {names[1]} must have the same shape, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------

def softplus(x: Tensor) -> Tensor:
    r"""The softplus, :math:`\log(1 + e^{x})`, computed as :math:`\max(x, 0) + \log(1 + e^{-|x|})`.

    The rewritten form never overflows: :math:`e^{-|x|} \le 1`. Then
    :math:`-\log \sigma(x) = \operatorname{softplus}(-x)` and
    :math:`-\log(1 - \sigma(x)) = \operatorname{softplus}(x)`.

    Shape:
        Input: any shape. Output: the same shape.
    """
    _require_tensor(x, "softplus", "x")
    positive = x >= 0
    neg_abs = torch.where(positive, -x, x)  # -|x|, with a one-sided slope at 0 so the gradient there is 1/2
    return torch.where(positive, x, torch.zeros_like(x)) + torch.log1p(torch.exp(neg_abs))


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    r"""The discriminator's loss, the minimax objective's inner part with its sign flipped.

    The discriminator :math:`D = \sigma(\ell)` maximises
    :math:`\mathbb{E}_x \log D(x) + \mathbb{E}_z \log(1 - D(G(z)))`; we minimise the negative,

    .. math::
        L_D = -\frac{1}{n}\sum_i \log \sigma(\ell^\text{real}_i)
              - \frac{1}{m}\sum_j \log\bigl(1 - \sigma(\ell^\text{fake}_j)\bigr),

    which is the binary cross-entropy with label 1 for real and 0 for fake samples (each part
    averaged over its own batch).

    Args:
        real_logits: the discriminator's logits for real samples.
        fake_logits: its logits for generated samples.

    Shape:
        real_logits: any shape, e.g. ``(n, 1)``. fake_logits: any shape. Output: a scalar.
    """
    _require_tensor(real_logits, "discriminator_loss", "real_logits")
    _require_tensor(fake_logits, "discriminator_loss", "fake_logits")
    return softplus(-real_logits).mean() + softplus(fake_logits).mean()


def generator_loss(fake_logits: Tensor, non_saturating: bool = True) -> Tensor:
    r"""The generator's loss, from the discriminator's logits for generated samples.

    * Minimax (``non_saturating=False``), the lecture's objective as it stands:
      :math:`L_G = \frac{1}{m}\sum_j \log\bigl(1 - \sigma(\ell_j)\bigr)`. Early in training the
      discriminator rejects the fakes (:math:`\sigma(\ell) \approx 0`) and this loss is flat:
      its gradient :math:`-\sigma(\ell)` vanishes.
    * Non-saturating (default, Goodfellow et al. 2014):
      :math:`L_G = -\frac{1}{m}\sum_j \log \sigma(\ell_j)`, the same fixed point, with gradient
      :math:`-(1 - \sigma(\ell))`, which is largest exactly when the fakes are rejected.

    Args:
        fake_logits: the discriminator's logits for generated samples.
        non_saturating: which of the two losses.

    Shape:
        fake_logits: any shape. Output: a scalar.
    """
    _require_tensor(fake_logits, "generator_loss", "fake_logits")
    if non_saturating:
        return softplus(-fake_logits).mean()  # -log sigma(l)
    return -softplus(fake_logits).mean()  # log(1 - sigma(l))


def reparameterize(mu: Tensor, logvar: Tensor, noise: Tensor | None = None) -> Tensor:
    r"""A sample of :math:`\mathcal{N}(\mu, \sigma^2)` that gradients can flow through.

    :math:`z = \mu + \sigma \odot \varepsilon` with :math:`\sigma = e^{\frac{1}{2}\log\sigma^2}`
    and :math:`\varepsilon \sim \mathcal{N}(0, I)`: the randomness sits in
    :math:`\varepsilon`, so :math:`\partial z / \partial \mu = 1` and
    :math:`\partial z / \partial \log\sigma^2 = \frac{1}{2} \sigma \varepsilon`.

    Args:
        mu: the means.
        logvar: the log-variances :math:`\log \sigma^2`, same shape.
        noise: :math:`\varepsilon`; ``None`` draws it with ``torch.randn_like(mu)``.

    Shape:
        mu, logvar, noise: the same shape, e.g. ``(N, latent_dim)``. Output: that shape.
    """
    _require_same_shape(mu, logvar, "reparameterize", ("mu", "logvar"))
    if noise is None:
        noise = torch.randn_like(mu)
    elif noise.shape != mu.shape:
        raise ValueError(f"reparameterize: expected noise of shape {tuple(mu.shape)}, got {tuple(noise.shape)}")
    return mu + torch.exp(0.5 * logvar) * noise


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    r"""KL divergence of :math:`\mathcal{N}(\mu, \operatorname{diag}\sigma^2)` from :math:`\mathcal{N}(0, I)`, per sample.

    In closed form, summed over the latent dimensions :math:`k`:

    .. math::
        \mathrm{KL} = \frac{1}{2} \sum_k \bigl(\mu_k^2 + \sigma_k^2 - 1 - \log \sigma_k^2\bigr).

    Args:
        mu: means, one row per sample.
        logvar: log-variances, same shape.

    Shape:
        mu, logvar: ``(N, latent_dim)``. Output: ``(N,)``.
    """
    _require_same_shape(mu, logvar, "gaussian_kl", ("mu", "logvar"))
    if mu.dim() != 2:
        raise ValueError(f"gaussian_kl: expected mu of shape (N, latent_dim), got {mu.dim()}-D {tuple(mu.shape)}")
    return 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(dim=1)


def vae_loss(recon_logits: Tensor, x: Tensor, mu: Tensor, logvar: Tensor, beta: float = 1.0) -> Tensor:
    r"""The negative evidence lower bound (ELBO) of a VAE with Bernoulli pixels, averaged over the batch.

    .. math::
        L = \frac{1}{N} \sum_n \Bigl[\underbrace{-\sum_p \bigl(x_p \log \hat x_p
            + (1 - x_p) \log(1 - \hat x_p)\bigr)}_{\text{reconstruction}}
            + \beta\, \mathrm{KL}\bigl(q(z \mid x_n) \,\|\, \mathcal{N}(0, I)\bigr)\Bigr],
        \qquad \hat x = \sigma(\text{recon\_logits}),

    the binary cross-entropy *summed* over the pixels :math:`p` of an image (a log-likelihood),
    plus :func:`gaussian_kl`. From logits the cross-entropy is
    :math:`\operatorname{softplus}(\ell) - x \ell`. ``beta=1`` is the ELBO.

    Args:
        recon_logits: the decoder's logits, one per pixel.
        x: the images, values in [0, 1], same shape.
        mu, logvar: the encoder's outputs.
        beta: the weight of the KL term.

    Shape:
        recon_logits, x: ``(N, ...)``. mu, logvar: ``(N, latent_dim)``. Output: a scalar.
    """
    _require_same_shape(recon_logits, x, "vae_loss", ("recon_logits", "x"))
    reconstruction = (softplus(recon_logits) - x * recon_logits).flatten(1).sum(dim=1)  # (N,)
    return (reconstruction + beta * gaussian_kl(mu, logvar)).mean()


# ---------------------------------------------------------------------------------------------
# Autoencoders
# ---------------------------------------------------------------------------------------------

class MLPAutoencoder(nn.Module):
    """A dense autoencoder for 28x28 images: 784 pixels -> ``latent_dim`` numbers -> 784 pixels.

    ``encoder`` ends in a plain linear layer (the code may take any value); ``decoder`` ends in
    a sigmoid, so reconstructions are pixels in (0, 1).

    Shape:
        Input: ``(N, 1, 28, 28)``. ``encode``: ``(N, latent_dim)``. Output: ``(N, 1, 28, 28)``.
    """

    def __init__(self, latent_dim: int = 2, hidden: int = 256):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(PIXELS, hidden), nn.ReLU(),  # (N, 784) -> (N, hidden)
                                     nn.Linear(hidden, latent_dim))                        # (N, latent_dim)
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, PIXELS),
                                     nn.Sigmoid(), nn.Unflatten(1, IMAGE_SHAPE))           # (N, 784) -> (N, 1, 28, 28)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


class ConvAutoencoder(nn.Module):
    """A convolutional autoencoder for 28x28 images: two stride-2 convolutions down, two
    transposed convolutions up, with a dense bottleneck of ``latent_dim`` numbers.

    Shape:
        Input: ``(N, 1, 28, 28)``. ``encode``: ``(N, latent_dim)``. Output: ``(N, 1, 28, 28)``.
    """

    def __init__(self, latent_dim: int = 16, channels: int = 16):
        super().__init__()
        c = channels
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c, 3, stride=2, padding=1), nn.ReLU(),          # (N, c, 14, 14)
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.ReLU(),      # (N, 2c, 7, 7)
            nn.Flatten(), nn.Linear(2 * c * 7 * 7, latent_dim),          # (N, 2c*49) -> (N, latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 2 * c * 7 * 7), nn.ReLU(),
            nn.Unflatten(1, (2 * c, 7, 7)),                              # (N, 2c, 7, 7)
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), nn.ReLU(),  # (N, c, 14, 14)
            nn.ConvTranspose2d(c, 1, 4, stride=2, padding=1), nn.Sigmoid(),   # (N, 1, 28, 28)
        )

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


class VAE(nn.Module):
    r"""A dense variational autoencoder for 28x28 images with a Gaussian encoder and Bernoulli decoder.

    The encoder gives :math:`\mu(x)` and :math:`\log\sigma^2(x)` of
    :math:`q(z \mid x) = \mathcal{N}(\mu, \operatorname{diag}\sigma^2)`; a sample
    :math:`z` (:func:`reparameterize`) goes through the decoder, whose outputs are the logits
    of the pixels. Train with :func:`vae_loss`. In eval mode ``forward`` decodes
    :math:`z = \mu` (no noise).

    Shape:
        Input: ``(N, 1, 28, 28)``. Output: ``(logits, mu, logvar)`` of shapes
        ``(N, 1, 28, 28)``, ``(N, latent_dim)``, ``(N, latent_dim)``.
    """

    def __init__(self, latent_dim: int = 2, hidden: int = 256):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(PIXELS, hidden), nn.ReLU(),
                                     nn.Linear(hidden, 2 * latent_dim))  # (N, 2 * latent_dim): mu, logvar
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, PIXELS),
                                     nn.Unflatten(1, IMAGE_SHAPE))       # (N, 1, 28, 28) logits

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)``, each ``(N, latent_dim)``."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)  # (N, 2L) -> two (N, L)
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        """Pixel probabilities in (0, 1) for codes ``z`` ``(N, latent_dim)``: ``(N, 1, 28, 28)``."""
        return torch.sigmoid(self.decoder(z))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar) if self.training else mu
        return self.decoder(z), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        r"""``n`` new images: codes from the prior :math:`\mathcal{N}(0, I)`, decoded. ``(n, 1, 28, 28)``."""
        p = next(self.parameters())
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=p.dtype).to(p.device)
        return self.decode(z)


# ---------------------------------------------------------------------------------------------
# GAN networks
# ---------------------------------------------------------------------------------------------

def mlp_generator(latent_dim: int = 2, hidden: int = 128, out_dim: int = 2) -> nn.Sequential:
    """A GAN generator for points in the plane: noise ``(N, latent_dim)`` -> points ``(N, out_dim)``.

    Two hidden layers of ``hidden`` ReLU units and a linear output (points may lie anywhere).
    """
    return nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out_dim))


def mlp_discriminator(in_dim: int = 2, hidden: int = 128) -> nn.Sequential:
    """A GAN discriminator for points: ``(N, in_dim)`` -> one logit per point ``(N, 1)``.

    LeakyReLU (slope 0.2), as usual in discriminators, so fakes far from the data still get a
    gradient; no sigmoid at the end: the losses take logits.
    """
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                         nn.LeakyReLU(0.2), nn.Linear(hidden, 1))


class MinibatchStd(nn.Module):
    r"""A discriminator that also sees how spread out its whole batch is: a remedy for mode collapse.

    Each sample gets one extra feature, the standard deviation over the batch averaged over
    the features, :math:`s = \frac{1}{d}\sum_k \operatorname{std}_n(x_{n,k})`, before
    ``discriminator`` scores it (the "minibatch standard deviation" of Karras et al. 2018, a
    simple form of the minibatch discrimination of Salimans et al. 2016). A collapsed generator
    produces batches with a much smaller spread than real ones, which the discriminator can
    now see and punish.

    Args:
        discriminator: a network taking ``in_dim + 1`` features, e.g. ``mlp_discriminator(3)``
            for points in the plane.

    Shape:
        Input: ``(N, in_dim)`` with ``N >= 2``. Output: what ``discriminator`` returns, e.g. ``(N, 1)``.
    """

    def __init__(self, discriminator: nn.Module):
        super().__init__()
        self.discriminator = discriminator

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or len(x) < 2:
            raise ValueError(f"MinibatchStd: expected a batch (N, in_dim) with N >= 2, got {tuple(x.shape)}")
        spread = x.std(dim=0).mean().expand(len(x), 1)  # (N, 1): the same number for every sample
        return self.discriminator(torch.cat([x, spread], dim=1))  # (N, in_dim + 1)


def digit_generator(latent_dim: int = 32, hidden: int = 256) -> nn.Sequential:
    """A small GAN generator for 28x28 digits: noise ``(N, latent_dim)`` -> images ``(N, 1, 28, 28)``.

    One hidden layer of ``hidden`` ReLU units, then 784 sigmoid pixels in (0, 1) like the data's.
    The output biases start at -4 (pixels near 0.02): most of a digit image is black background,
    so the generator starts from a dark image instead of grey noise, which saves many steps on
    a CPU budget. (Dense layers are used rather than transposed convolutions because on a CPU
    they are several times cheaper per step.)
    """
    out = nn.Linear(hidden, PIXELS)
    with torch.no_grad():
        out.bias.fill_(-4.0)
    return nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), out, nn.Sigmoid(),
                         nn.Unflatten(1, IMAGE_SHAPE))  # (N, 784) -> (N, 1, 28, 28)


def digit_discriminator(hidden: int = 256) -> nn.Sequential:
    """A small GAN discriminator for 28x28 digits: images ``(N, 1, 28, 28)`` -> logits ``(N, 1)``.

    One hidden layer of ``hidden`` LeakyReLU units (slope 0.2); no sigmoid: the losses take logits.
    """
    return nn.Sequential(nn.Flatten(), nn.Linear(PIXELS, hidden), nn.LeakyReLU(0.2),  # (N, 784) -> (N, hidden)
                         nn.Linear(hidden, 1))


# ---------------------------------------------------------------------------------------------
# The ring of Gaussians
# ---------------------------------------------------------------------------------------------

def ring_modes(modes: int = 8, radius: float = 2.0, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> Tensor:
    """The centres of the ring's Gaussians, ``(modes, 2)``: ``modes`` points evenly spaced on a circle."""
    angles = torch.arange(modes, dtype=torch.float64) * (2 * math.pi / modes)
    centres = radius * torch.stack([angles.cos(), angles.sin()], dim=1)  # (modes, 2)
    return centres.to(device=device, dtype=dtype)


def ring_of_gaussians(n: int, modes: int = 8, radius: float = 2.0, std: float = 0.05,
                      generator: torch.Generator | None = None, device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32) -> Tensor:
    """``n`` points from a mixture of ``modes`` equally likely Gaussians on a circle.

    Each point picks a centre of :func:`ring_modes` at random and adds isotropic noise of
    standard deviation ``std``. Drawn on the CPU (with ``generator`` if given, so a seed gives
    the same points on every machine), then moved to ``device``.

    Shape:
        Output: ``(n, 2)``.
    """
    if n < 1 or modes < 1:
        raise ValueError(f"ring_of_gaussians: expected n >= 1 and modes >= 1, got n={n}, modes={modes}")
    which = torch.randint(modes, (n,), generator=generator)
    noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    points = ring_modes(modes, radius, dtype=torch.float64)[which] + std * noise  # (n, 2)
    return points.to(device=device, dtype=dtype)


@torch.no_grad()
def ring_coverage(samples: Tensor, modes: int = 8, radius: float = 2.0, std: float = 0.05,
                  min_share: float = 0.02) -> tuple[int, float]:
    """How well 2-D samples cover the ring: ``(modes covered, fraction of good samples)``.

    A sample is *good* when it lies within ``3 * std`` of its nearest centre; a mode is
    *covered* when at least ``min_share`` of all samples are good samples of that mode (a
    perfect generator puts 1/``modes`` of them on each). Mode collapse shows as few modes
    covered with many good samples.

    Shape:
        samples: ``(n, 2)``.
    """
    if samples.dim() != 2 or samples.shape[1] != 2:
        raise ValueError(f"ring_coverage: expected samples of shape (n, 2), got {tuple(samples.shape)}")
    centres = ring_modes(modes, radius, device=samples.device, dtype=samples.dtype)
    dist = torch.cdist(samples, centres)  # (n, modes)
    nearest, which = dist.min(dim=1)      # (n,), (n,)
    good = nearest < 3 * std
    per_mode = torch.bincount(which[good], minlength=modes)  # (modes,)
    covered = int((per_mode >= min_share * len(samples)).sum())
    return covered, float(good.float().mean())


def _sqrt_psd(m: Tensor) -> Tensor:
    # The square root of a symmetric positive semi-definite matrix: V diag(sqrt(lambda)) V^T.
    eigenvalues, vectors = torch.linalg.eigh(m)
    return vectors @ torch.diag(eigenvalues.clamp_min(0).sqrt()) @ vectors.T


@torch.no_grad()
def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    r"""The (squared) Fréchet distance between two sets of feature vectors, as in the FID.

    Each set is summarised by the mean :math:`\mu` and covariance :math:`\Sigma` of its rows,
    and the two Gaussians with those statistics are compared:

    .. math::
        d^2 = \lVert \mu_a - \mu_b \rVert^2
              + \operatorname{Tr}\bigl(\Sigma_a + \Sigma_b - 2 (\Sigma_a \Sigma_b)^{1/2}\bigr).

    It is 0 for two sets with the same statistics and grows when the means move apart or the
    spreads differ (too little variety counts, unlike a score of each sample alone). The trace
    of :math:`(\Sigma_a \Sigma_b)^{1/2}` is computed as that of the symmetric
    :math:`(\Sigma_a^{1/2} \Sigma_b \Sigma_a^{1/2})^{1/2}`, which has the same eigenvalues.
    On the features of an Inception network this is the FID (Heusel et al., 2017); the
    generative-models chapter uses the features of a small digit classifier. Computed in float64.

    Args:
        features_a, features_b: ``(n_a, d)`` and ``(n_b, d)``, at least 2 rows each.

    Returns:
        :math:`d^2` as a float.
    """
    for name, f in (("features_a", features_a), ("features_b", features_b)):
        if not isinstance(f, Tensor) or f.dim() != 2 or f.shape[0] < 2:
            shape = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
            raise ValueError(f"frechet_distance: expected {name} of shape (n, d) with n >= 2, got {shape}")
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"frechet_distance: expected features of the same width, got {features_a.shape[1]} "
                         f"and {features_b.shape[1]}")
    a, b = features_a.double().cpu(), features_b.double().cpu()
    mu_a, mu_b = a.mean(dim=0), b.mean(dim=0)        # (d,)
    cov_a, cov_b = torch.atleast_2d(torch.cov(a.T)), torch.atleast_2d(torch.cov(b.T))  # (d, d) each
    root_a = _sqrt_psd(cov_a)
    cross = _sqrt_psd(root_a @ cov_b @ root_a)       # (d, d): same trace as (cov_a cov_b)^(1/2)
    d2 = (mu_a - mu_b).square().sum() + torch.trace(cov_a + cov_b - 2 * cross)
    return float(d2.clamp_min(0))
