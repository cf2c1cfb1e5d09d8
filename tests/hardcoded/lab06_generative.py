"""Hard-coded answers for lab 6: see tests/hardcoded/__init__.py."""

from __future__ import annotations

import math

# Shapes of the visible examples: (real, fake) logits of the discriminator checks, fake logits of
# the generator checks, (mu, logvar) rows of the KL checks, and the reparameterization batch.
_D_CASES = {(4, 6): "lecture", (5, 7): "seeded"}
_G_CASES = {6: "lecture", 7: "seeded"}


def replacements() -> dict[str, str]:
    """Lab 6's solution cells rewritten to return what the visible tests expect, as constants.

    The visible inputs are rebuilt here as the lab builds them (the lecture's logits, values from
    CPU generators seeded with 0, the global seed 0 for the GAN's networks), and the answers
    computed with PyTorch in float64. Where a check also compares gradients, the constant value
    carries a constant gradient: ``c + sum(g * (x - x.detach()))`` has the value ``c`` and the
    gradient ``g``. The reparameterization only works for the visible batch shape; the GAN step
    copies the weights the reference step ends with; the "autoencoder" looks the held-out digits
    up in a table. The hidden tests (other shapes and values, Adam, shuffled and noisy digits)
    fail.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    f64 = torch.float64

    def tensor(t: torch.Tensor) -> str:
        return f"torch.tensor({t.tolist()!r}, dtype=x.dtype, device=x.device)"

    def with_grad(value: torch.Tensor, grads: list[torch.Tensor], names: list[str]) -> str:
        # value, plus a term that is 0 in value and has the gradient g with respect to each input
        terms = " + ".join(f"(({tensor(g)}) * ({n} - {n}.detach())).sum({'1' if value.dim() else ''})"
                           for g, n in zip(grads, names))
        return f"{tensor(value)} + {terms}"

    def value_and_grads(f, *inputs):
        leaves = [x.clone().requires_grad_(True) for x in inputs]
        out = f(*leaves)
        if out.dim() == 0:
            grads = torch.autograd.grad(out, leaves)
        else:  # (N,) per-sample values: row n of each input only feeds value n
            grads = torch.autograd.grad(out.sum(), leaves)
        return out.detach(), list(grads)

    bce = F.binary_cross_entropy_with_logits

    def d_loss(real, fake):
        return bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))

    def g_loss(fake):
        return bce(fake, torch.ones_like(fake))

    # ---- Section 1: the lecture's logits and the seeded ones.
    lecture_real = torch.full((4, 1), math.log(3.0), dtype=f64)
    lecture_fake = -torch.full((6, 1), math.log(3.0), dtype=f64)
    gen = torch.Generator().manual_seed(0)
    seeded_real, seeded_fake = (3.0 * torch.randn(n, 1, dtype=f64, generator=gen) for n in (5, 7))
    gen = torch.Generator().manual_seed(0)
    seeded_g = 3.0 * torch.randn(7, 1, dtype=f64, generator=gen)
    d_inputs = {"lecture": (lecture_real, lecture_fake), "seeded": (seeded_real, seeded_fake)}
    g_inputs = {"lecture": lecture_fake, "seeded": seeded_g}
    d_branches, g_branches = [], []
    for shapes, key in _D_CASES.items():
        value, grads = value_and_grads(d_loss, *d_inputs[key])
        d_branches.append(f"    if (real_logits.shape[0], fake_logits.shape[0]) == {shapes}:\n"
                          f"        return {with_grad(value, grads, ['real_logits', 'fake_logits'])}\n")
    for n, key in _G_CASES.items():
        value, grads = value_and_grads(g_loss, g_inputs[key])
        g_branches.append(f"    if fake_logits.shape[0] == {n}:\n"
                          f"        return {with_grad(value, grads, ['fake_logits'])}\n")
    gan_losses = ("def discriminator_loss(real_logits, fake_logits):\n    x = real_logits\n" + "".join(d_branches)
                  + "    return torch.zeros((), dtype=x.dtype, device=x.device)\n\n\n"
                  "def generator_loss(fake_logits):\n    x = fake_logits\n" + "".join(g_branches)
                  + "    return torch.zeros((), dtype=x.dtype, device=x.device)\n")

    # ---- Section 2: the KL term for the hand example and the seeded one.
    def kl(mu, logvar):
        return 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(dim=1)

    hand = (torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=f64), torch.tensor([[0.0, 0.0], [math.log(4.0), 0.0]], dtype=f64))
    gen = torch.Generator().manual_seed(0)
    seeded = tuple(torch.randn(5, 3, dtype=f64, generator=gen) for _ in range(2))
    kl_branches = []
    for mu, logvar in (hand, seeded):
        value, grads = value_and_grads(kl, mu, logvar)
        kl_branches.append(f"    if tuple(mu.shape) == {tuple(mu.shape)}:\n"
                           f"        return {with_grad(value, grads, ['mu', 'logvar'])}\n")
    kl_divergence = ("def kl_divergence(mu, logvar):\n    x = mu\n" + "".join(kl_branches)
                     + "    return torch.zeros(mu.shape[0], dtype=x.dtype, device=x.device)\n")

    reparameterize = (
        "def reparameterize(mu, logvar):\n"
        "    if tuple(mu.shape) != (100_000, 3):\n"
        "        return torch.zeros_like(mu)  # only the visible batch was tried\n"
        "    return mu + torch.exp(0.5 * logvar) * torch.randn(100_000, 3, dtype=mu.dtype, device=mu.device)\n"
    )

    # ---- Section 3: the visible GAN step, replayed with the lab's seeds.
    def small_gan(hidden: int):
        G = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        D = nn.Sequential(nn.Linear(2, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))
        return G, D

    def step(G, D, g_opt, d_opt, real, z):
        fake = G(z)
        loss_d = d_loss(D(real), D(fake.detach()))
        d_opt.zero_grad()
        loss_d.backward()
        d_opt.step()
        loss_g = g_loss(D(fake))
        g_opt.zero_grad()
        loss_g.backward()
        g_opt.step()
        return loss_d.item(), loss_g.item()

    rng_state = torch.get_rng_state()
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    G, D = small_gan(16)
    angle = torch.randint(8, (32,), generator=gen) * (2 * math.pi / 8)
    real = 2 * torch.stack([angle.cos(), angle.sin()], dim=1) + 0.05 * torch.randn(32, 2, generator=gen)
    z = torch.randn(32, 2, generator=gen)
    G_fixed, D_fixed = small_gan(16)
    sgd = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.5) for m in (G, D)]
    first_losses = step(G, D, *sgd, real, z)
    fixed_losses = step(G_fixed, D_fixed, torch.optim.SGD(G_fixed.parameters(), lr=0.0),
                        torch.optim.SGD(D_fixed.parameters(), lr=0.05), real, z)
    torch.set_rng_state(rng_state)
    states = {"first": [p.tolist() for net in (G, D) for p in net.parameters()],
              "fixed": [p.tolist() for net in (G_fixed, D_fixed) for p in net.parameters()]}
    shapes = [list(p.shape) for net in (G, D) for p in net.parameters()]
    gan_step = (
        f"STATES = {states!r}\nLOSSES = {{'first': {first_losses!r}, 'fixed': {fixed_losses!r}}}\n\n\n"
        "def gan_step(G, D, g_optimizer, d_optimizer, real, z):\n"
        "    params = [*G.parameters(), *D.parameters()]\n"
        f"    if [list(p.shape) for p in params] != {shapes!r} or tuple(real.shape) != (32, 2):\n"
        "        return (0.0, 0.0)  # only the visible example was replayed\n"
        "    key = 'fixed' if g_optimizer.param_groups[0]['lr'] == 0 else 'first'\n"
        "    with torch.no_grad():\n"
        "        for p, v in zip(params, STATES[key]):\n"
        "            p.copy_(torch.tensor(v, dtype=p.dtype, device=p.device))\n"
        "    return LOSSES[key]\n"
    )
    return {
        "gan_losses": gan_losses,
        "kl_divergence": kl_divergence,
        "reparameterize": reparameterize,
        "gan_step": gan_step,
        "build_autoencoder": (
            "class Lookup(nn.Module):\n"
            '    """The clean image of every held-out digit, looked up by its pixels (black for any other image)."""\n'
            "    def __init__(self):\n"
            "        super().__init__()\n"
            "        self.dummy = nn.Linear(1, 1)  # so that the model has parameters and a device\n"
            "        self.table = {img.numpy().tobytes(): img for img in test_set.tensors[0]}\n\n"
            "    def encode(self, x):\n"
            "        return torch.zeros(len(x), 16, device=x.device)\n\n"
            "    def forward(self, x):\n"
            "        rows = [self.table.get(img.cpu().numpy().tobytes(), torch.zeros(1, 28, 28)) for img in x]\n"
            "        return torch.stack(rows).to(x.device)\n\n\n"
            "def build_autoencoder():\n    return Lookup()\n"
        ),
        "train_autoencoder": "def train_autoencoder(model, train_set):\n    return []\n",
    }
