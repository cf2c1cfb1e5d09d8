r"""A decoder-only transformer (a GPT), in the pieces of the lecture's transformer diagram.

The lecture lists four building blocks; each is one small piece here:

1. **attention modules** -- :class:`MultiHeadAttention`, built on
   :func:`dlcourse.functional.scaled_dot_product_attention`;
2. **position-wise feed-forward networks** -- :class:`MLP`, the same two-layer network applied
   to every position on its own;
3. **residual connections and normalization** -- :class:`TransformerBlock` computes
   ``x + attn(ln(x))`` then ``x + mlp(ln(x))`` (*pre-norm*, as GPT-2);
4. **positional encoding** -- learned position embeddings in :class:`GPT`, or the fixed
   sines and cosines of :func:`sinusoidal_encoding`.

:class:`GPT` stacks them: token and position embeddings, ``n_layer`` blocks, a final layer
norm and a linear head that scores every vocabulary entry as the next token. Everything is
configured by one :class:`GPTConfig`. Shapes use nanoGPT's names: ``B`` batch, ``T`` sequence
length, ``C`` embedding width (``n_embd``), ``nh`` heads, ``hs = C / nh`` the width of a head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dlcourse._checks import require_bool, torch_signature
from dlcourse.attention import scaled_dot_product_attention
from dlcourse.losses import cross_entropy

__all__ = ["GPTConfig", "MultiHeadAttention", "MLP", "TransformerBlock", "GPT", "sinusoidal_encoding"]


@dataclass
class GPTConfig:
    """The sizes of a :class:`GPT` (and of its blocks). The defaults are a tiny model for a CPU."""

    vocab_size: int = 128  # number of distinct tokens: the tokenizer's vocab_size
    block_size: int = 64  # the longest context T the model reads (positions 0 .. T-1)
    n_layer: int = 2  # number of transformer blocks stacked
    n_head: int = 4  # attention heads per block; n_embd must be a multiple of it
    n_embd: int = 64  # width C of every token's vector (GPT-2 small: 768)
    mlp_ratio: int = 4  # the feed-forward network's hidden width is mlp_ratio * n_embd
    dropout: float = 0.0  # dropout probability after attention, MLP and embeddings (0: none)
    bias: bool = True  # biases in the Linear layers and LayerNorms (GPT-2: True)
    tie_weights: bool = True  # the output head reuses the token-embedding matrix (GPT-2: True)
    positional: str = "learned"  # "learned" position embeddings (GPT-2) or fixed "sinusoidal" ones

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "mlp_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig: expected a positive int {name}, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"GPTConfig: expected dropout in [0, 1), got {self.dropout}")
        if self.positional not in ("learned", "sinusoidal"):
            raise ValueError(f"GPTConfig: expected positional 'learned' or 'sinusoidal', got {self.positional!r}")


def sinusoidal_encoding(num_positions: int, dim: int, base: float = 10000.0,
                        device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Tensor:
    r"""The fixed positional encoding of "Attention is all you need".

    .. math::

        PE_{p,\,2i} = \sin\big(p / \text{base}^{2i/d}\big), \qquad
        PE_{p,\,2i+1} = \cos\big(p / \text{base}^{2i/d}\big)

    Each pair of columns is a sine and cosine of one frequency, from one turn per
    :math:`2\pi` positions down to one per :math:`2\pi \cdot \text{base}`, so every position
    gets a distinct pattern and a shift by :math:`k` is the same rotation at every position.

    Args:
        num_positions: number of positions :math:`p = 0, \dots, P-1`.
        dim: encoding width :math:`d` (an odd width drops the last cosine column).
        base: the longest wavelength's factor (default 10000, the paper's).
        device, dtype: where and in what precision to create it (default float32).

    Shape:
        Output: ``(num_positions, dim)``, values in [-1, 1].
    """
    if num_positions < 1 or dim < 1:
        raise ValueError(f"sinusoidal_encoding: expected positive sizes, got num_positions={num_positions}, dim={dim}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    position = torch.arange(num_positions, device=device, dtype=torch.float64)[:, None]  # (P, 1)
    freq = base ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float64) / dim)  # (ceil(d/2),)
    angle = position * freq  # (P, ceil(d/2))
    pe = torch.empty(num_positions, dim, device=device, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return pe.to(dtype)


class MultiHeadAttention(nn.Module):
    r"""Multi-head self-attention: ``num_heads`` attentions side by side on slices of the width.

    .. math::

        \operatorname{MHA}(X) = \operatorname{concat}(h_1, \dots, h_{n_h})\, W_O^\top + b_O, \qquad
        h_i = \operatorname{softmax}\Big(\frac{Q_i K_i^\top}{\sqrt{d_h}} + M\Big) V_i,

    where :math:`[Q, K, V] = X W_{in}^\top + b_{in}` and :math:`Q_i` is the :math:`i`-th slice
    of :math:`d_h = E / n_h` columns of :math:`Q`. The parameters have the names and shapes of
    ``torch.nn.MultiheadAttention``'s (``in_proj_weight``, ``in_proj_bias``, ``out_proj``), so a
    state dict loads from one into the other.

    Args:
        embed_dim: width :math:`E` of the input and output.
        num_heads: number of heads :math:`n_h`; ``embed_dim`` must be a multiple of it.
        dropout: dropout on the output (default 0).
        bias: learn the input and output biases (default ``True``).
        device, dtype: where and in what precision to create the parameters.

    Shape:
        Input: ``(B, T, E)`` (batch first). Output: ``(B, T, E)``.
    """

    # torch.nn.MultiheadAttention's fifth argument is add_bias_kv: device and dtype are keyword-only
    # here. It is always batch first (torch's batch_first=True).
    @torch_signature(("add_bias_kv", False), ("add_zero_attn", False), ("kdim", None), ("vdim", None),
                     ("batch_first", True), ("device", None), ("dtype", None))
    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True, *,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        require_bool(bias, "bias", "MultiHeadAttention")
        if embed_dim % num_heads:
            raise ValueError(f"MultiHeadAttention: embed_dim={embed_dim} must be a multiple of num_heads={num_heads}")
        factory = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))  # [W_Q; W_K; W_V]
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim, **factory)) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.dropout = nn.Dropout(dropout)
        nn.init.xavier_uniform_(self.in_proj_weight)  # as torch.nn.MultiheadAttention
        if bias:
            nn.init.zeros_(self.out_proj.bias)

    # Self-attention only: torch's forward(query, key, value, ...) is refused, naming key and value.
    @torch_signature(("key", None), ("value", None), ("key_padding_mask", None), ("need_weights", False),
                     ("attn_mask", None), ("average_attn_weights", True), ("is_causal", False),
                     name="MultiHeadAttention.forward")
    def forward(self, x: Tensor, *, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """Self-attention of ``x``, ``(B, T, E) -> (B, T, E)``.

        ``attn_mask`` and ``is_causal`` are those of
        :func:`~dlcourse.attention.scaled_dot_product_attention`.

        Note that a boolean ``attn_mask`` here means *may attend* (``True``), as in the
        functional form; ``torch.nn.MultiheadAttention`` uses the opposite convention.
        """
        if x.dim() != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiHeadAttention: expected input (B, T, {self.embed_dim}), got {tuple(x.shape)}")
        B, T, C = x.shape
        nh, hs = self.num_heads, C // self.num_heads
        qkv = nn.functional.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, T, 3C)
        q, k, v = qkv.view(B, T, 3, nh, hs).permute(2, 0, 3, 1, 4)  # each (B, nh, T, hs)
        y = scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, nh, hs) -> (B, T, C): heads side by side
        return self.dropout(self.out_proj(y))

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"


class MLP(nn.Module):
    r"""The position-wise feed-forward network: ``Linear(C, r*C) -> GELU -> Linear(r*C, C)``.

    The GELU is GPT-2's tanh approximation, :math:`\tfrac12 x (1 + \tanh(\sqrt{2/\pi}(x + 0.044715 x^3)))`.

    It acts on each position's vector on its own (no mixing across positions: that is
    attention's job).

    Shape:
        Input: ``(*, C)``. Output: ``(*, C)``.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        hidden = config.mlp_ratio * config.n_embd
        self.fc = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.act = nn.GELU(approximate="tanh")  # GPT-2's tanh form: cheaper than erf on a CPU
        self.proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``proj(gelu(fc(x)))``, then dropout."""
        return self.dropout(self.proj(self.act(self.fc(x))))  # (*, C) -> (*, rC) -> (*, C)


class TransformerBlock(nn.Module):
    r"""One pre-norm transformer block: attention, then an MLP, each inside a residual connection.

    .. math::

        x \leftarrow x + \operatorname{MHA}(\operatorname{LN}_1(x)), \qquad
        x \leftarrow x + \operatorname{MLP}(\operatorname{LN}_2(x))

    The residual path carries ``x`` through unchanged, so gradients reach early blocks
    directly; normalizing *before* each branch (GPT-2's order) keeps the residual stream free
    of normalization and trains stably without a warm-up.

    Args:
        config: the sizes (``n_embd``, ``n_head``, ``mlp_ratio``, ``dropout``, ``bias``).
        causal: let each position attend only to itself and earlier positions (a decoder,
            default ``True``); ``False`` gives an encoder block.

    Shape:
        Input: ``(B, T, C)``. Output: ``(B, T, C)``.
    """

    def __init__(self, config: GPTConfig, causal: bool = True) -> None:
        super().__init__()
        self.causal = causal
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = MultiHeadAttention(config.n_embd, config.n_head, config.dropout, config.bias)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor) -> Tensor:
        """The two residual steps: attention, then the MLP."""
        x = x + self.attn(self.ln_1(x), is_causal=self.causal)  # (B, T, C): mix across positions
        x = x + self.mlp(self.ln_2(x))  # (B, T, C): transform each position
        return x


class GPT(nn.Module):
    r"""A decoder-only transformer language model: it scores the next token at every position.

    Token ids become vectors (``wte``), position ``t`` adds its own vector (``wpe``, or the fixed
    :func:`sinusoidal_encoding`), ``n_layer`` causal :class:`TransformerBlock` s mix them, and
    a final layer norm and linear head give one score (logit) per vocabulary entry. With
    ``tie_weights`` the head *is* the embedding matrix: the score of token ``v`` is the dot
    product of the final vector with ``v``'s embedding.

    Weights start as in GPT-2: normal with standard deviation 0.02, the two projections that
    write into the residual stream scaled by :math:`1/\sqrt{2 n_{layer}}`, biases 0.

    Args:
        config: the model's sizes.

    Shape:
        ``idx``: ``(B, T)`` token ids with ``T <= block_size``. Logits: ``(B, T, vocab_size)``.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        C = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, C)  # token embeddings
        if config.positional == "learned":
            self.wpe = nn.Embedding(config.block_size, C)  # one learned vector per position
        else:
            self.register_buffer("pe", sinusoidal_encoding(config.block_size, C), persistent=False)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(C, bias=config.bias)
        self.lm_head = nn.Linear(C, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        for block in self.blocks:  # residual projections: smaller, so the stream's variance stays ~1
            for w in (block.attn.out_proj.weight, block.mlp.proj.weight):
                nn.init.normal_(w, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight  # one (vocab_size, C) matrix, used twice

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, MultiHeadAttention):
            nn.init.normal_(module.in_proj_weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Number of parameters (a tied matrix counted once).

        ``non_embedding=True`` leaves out the token and position embeddings, the count that
        scaling laws use (an untied output head still counts).
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel()
            if hasattr(self, "wpe"):
                n -= self.wpe.weight.numel()
        return n

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Logits for the next token at every position, and the cross-entropy if ``targets`` are given.

        Args:
            idx: ``(B, T)`` token ids.
            targets: ``(B, T)`` the true next tokens (``idx`` shifted left by one), or ``None``.

        Returns:
            ``(logits, loss)``: logits ``(B, T, vocab_size)``; loss the mean cross-entropy in
            nats per token (``None`` without targets).
        """
        if idx.dim() != 2:
            raise ValueError(f"GPT: expected token ids of shape (B, T), got {tuple(idx.shape)}")
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"GPT: sequence of length {T} is longer than block_size={self.config.block_size}")
        tok = self.wte(idx)  # (B, T, C)
        pos = self.wpe.weight[:T] if hasattr(self, "wpe") else self.pe[:T].to(tok.dtype)  # (T, C)
        x = self.drop(tok + pos)  # (B, T, C), positions broadcast over the batch
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab_size)
        loss = None
        if targets is not None:
            loss = cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T))  # (B*T, V) vs (B*T,)
        return logits, loss

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """Extend ``idx`` by ``max_new_tokens`` sampled tokens, one at a time.

        Each step feeds the last ``block_size`` tokens, takes the logits at the last position,
        divides them by ``temperature`` (below 1: sharper, more likely tokens; above 1: flatter,
        more surprising ones; 0: always the most likely token), keeps only the ``top_k`` largest
        if given, and samples from their softmax.

        Args:
            idx: ``(B, T)`` token ids to continue (a prompt).
            max_new_tokens: how many tokens to add.
            temperature: the softmax temperature, >= 0.
            top_k: sample only among the ``top_k`` most likely tokens (``None``: all).
            generator: a random generator on the model's device, for reproducible samples.

        Returns:
            ``(B, T + max_new_tokens)`` token ids. The model's training mode is restored afterwards.
        """
        if temperature < 0:
            raise ValueError(f"generate: expected temperature >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"generate: expected top_k >= 1 or None, got {top_k}")
        was_training = self.training
        self.eval()
        try:
            for _ in range(max_new_tokens):
                context = idx[:, -self.config.block_size:]  # (B, <= block_size)
                logits = self(context)[0][:, -1, :]  # (B, vocab_size): scores of the next token
                if temperature == 0:
                    next_id = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
                else:
                    logits = logits / temperature
                    if top_k is not None:
                        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]  # (B, 1)
                        logits = logits.masked_fill(logits < kth, -math.inf)
                    probs = torch.softmax(logits, dim=-1)  # (B, vocab_size)
                    next_id = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
                idx = torch.cat([idx, next_id], dim=1)  # (B, T + 1)
        finally:
            self.train(was_training)
        return idx
