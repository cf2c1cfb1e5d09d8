r"""The training loop of a GAN: two networks, two optimizers, one :func:`gan_step` after another.

:func:`dlcourse.train.fit` trains one model on one loss. A GAN has two models with opposite
goals, so each step has two halves (Goodfellow et al., 2014, Algorithm 1):

1. **Discriminator**: on a batch of real samples and a batch of fakes :math:`G(z)`, lower
   :func:`~dlcourse.models.generative.discriminator_loss`. The fakes are detached: this half must
   not change the generator.
2. **Generator**: on the fakes, lower :func:`~dlcourse.models.generative.generator_loss`, seen
   through the discriminator just updated. Its gradient flows through :math:`D` into :math:`G`,
   but only the generator's optimizer steps.

:func:`train_gan` repeats this for a number of steps, with a ``tqdm`` progress bar and a
:class:`dlcourse.train.History` like ``fit`` (one entry per ``log_every`` steps instead of
per epoch), and calls back every ``log_every`` steps so a chapter can take snapshots.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from dlcourse.models.generative import discriminator_loss, generator_loss
from dlcourse.train import History

__all__ = ["gan_step", "train_gan"]


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def gan_step(generator: nn.Module, discriminator: nn.Module, g_optimizer: torch.optim.Optimizer,
             d_optimizer: torch.optim.Optimizer, real: Tensor, z: Tensor,
             non_saturating: bool = True) -> dict[str, float]:
    r"""One training step of a GAN: a discriminator update, then a generator update.

    Args:
        generator: maps noise ``z`` to samples shaped like ``real``.
        discriminator: maps samples to one logit each.
        g_optimizer: built on ``generator.parameters()``.
        d_optimizer: built on ``discriminator.parameters()``.
        real: a batch of real samples.
        z: a batch of noise for the fakes (the same ``z`` serves both halves).
        non_saturating: the generator's loss (see :func:`dlcourse.models.generative.generator_loss`).

    Shape:
        real: ``(n, ...)``. z: ``(m, latent_dim)``.

    Returns:
        ``{"d_loss", "g_loss", "d_real", "d_fake"}``: the two losses, and the mean probability
        :math:`D(x)` that the discriminator gave real and fake samples in its half of the step.
    """
    # 1. The discriminator: real -> 1, fake -> 0. detach(): no gradient into the generator.
    fake = generator(z)
    real_logits, fake_logits = discriminator(real), discriminator(fake.detach())
    d_loss = discriminator_loss(real_logits, fake_logits)
    d_optimizer.zero_grad(set_to_none=True)
    d_loss.backward()
    d_optimizer.step()
    # 2. The generator: make the updated discriminator call the fakes real.
    g_loss = generator_loss(discriminator(fake), non_saturating)
    g_optimizer.zero_grad(set_to_none=True)
    g_loss.backward()  # also fills the discriminator's .grad; its next zero_grad clears them
    g_optimizer.step()
    with torch.no_grad():
        d_real, d_fake = torch.sigmoid(real_logits).mean(), torch.sigmoid(fake_logits).mean()
    return {"d_loss": d_loss.item(), "g_loss": g_loss.item(), "d_real": d_real.item(), "d_fake": d_fake.item()}


def train_gan(generator: nn.Module, discriminator: nn.Module, real: Tensor | Callable[[int], Tensor],
              g_optimizer: torch.optim.Optimizer, d_optimizer: torch.optim.Optimizer, steps: int,
              latent_dim: int, batch_size: int = 64, non_saturating: bool = True, log_every: int = 100,
              callback: Callable[[int, nn.Module, nn.Module], None] | None = None,
              generator_seed: int | None = 0, progress: bool = True) -> History:
    """Train a GAN for ``steps`` steps of :func:`gan_step` and return its :class:`~dlcourse.train.History`.

    Both networks must already be on the same device; real batches and noise are moved there.

    Args:
        generator, discriminator: the two networks.
        real: the training samples as one tensor ``(N, ...)`` (each step draws a random batch
            from it), or a function ``real(batch_size)`` returning a fresh batch.
        g_optimizer, d_optimizer: the optimizers of the two networks.
        steps: the number of steps (each one discriminator and one generator update).
        latent_dim: the size of the generator's noise vector.
        batch_size: real samples and fakes per step.
        non_saturating: the generator's loss.
        log_every: steps per entry of the history and between calls of ``callback``.
        callback: ``callback(step, generator, discriminator)``, called after every
            ``log_every`` steps (and after the last), e.g. to keep snapshots of samples.
        generator_seed: seed of a private CPU generator for the batches and the noise, so a run
            does not depend on (nor change) the global random state; ``None`` uses the global one.
        progress: show a progress bar over the steps with the latest numbers.

    Returns:
        A :class:`~dlcourse.train.History` with ``d_loss``, ``g_loss``, ``d_real`` and
        ``d_fake``, each averaged over ``log_every`` steps (the last entry over what remains).

    Raises:
        ValueError: ``steps``, ``log_every`` or ``batch_size`` not positive, or a tensor ``real``
            with fewer than ``batch_size`` samples.
        FloatingPointError: a loss became NaN or infinite.
    """
    for name, value in (("steps", steps), ("log_every", log_every), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"train_gan: expected a positive int {name}, got {value!r}")
    if isinstance(real, Tensor) and len(real) < batch_size:
        raise ValueError(f"train_gan: expected at least batch_size={batch_size} real samples, got {len(real)}")
    device = _model_device(generator)
    rng = torch.Generator().manual_seed(generator_seed) if generator_seed is not None else None

    def real_batch() -> Tensor:
        if isinstance(real, Tensor):
            return real[torch.randint(len(real), (batch_size,), generator=rng)].to(device)
        return real(batch_size).to(device)

    history = History()
    sums: dict[str, float] = {}
    count = 0
    generator.train()
    discriminator.train()
    bar = tqdm(range(1, steps + 1), desc="GAN steps", unit="step", disable=not progress)
    for step in bar:
        z = torch.randn(batch_size, latent_dim, generator=rng).to(device)
        stats = gan_step(generator, discriminator, g_optimizer, d_optimizer, real_batch(), z, non_saturating)
        if not all(math.isfinite(v) for v in stats.values()):
            raise FloatingPointError(f"train_gan: a loss became non-finite at step {step}: {stats}; "
                                     "try a smaller learning rate")
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        if step % log_every == 0 or step == steps:
            for k, v in sums.items():
                history.setdefault(k, []).append(v / count)
            sums, count = {}, 0
            bar.set_postfix({k: f"{v[-1]:.3g}" for k, v in history.items()})
            if callback is not None:
                callback(step, generator, discriminator)
                generator.train()
                discriminator.train()
    return history
