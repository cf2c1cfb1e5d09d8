r"""Language modelling: next-token prediction, its baseline, and the chapter's tiny GPT run.

A language model assigns a probability to the next token given the ones before. Its quality
is the average *cross-entropy* (negative log-likelihood, in nats per token) of held-out
text; :math:`e^{\text{loss}}` is the *perplexity*, the number of equally likely choices the
model is as unsure as.

* :func:`bigram_counts` / :func:`bigram_loss` -- the counting model
  :math:`p(b \mid a) = (n_{ab} + \alpha) / (n_a + \alpha V)`, which looks at one previous
  token only. Its validation loss is the baseline every later model must beat.
* :func:`get_batch` and :func:`evaluate_lm` -- random training windows and a deterministic
  validation loss over the whole held-out text.
* :func:`train_gpt` -- AdamW with warm-up and cosine decay, evaluating every few steps, with
  an optional stop at a target validation loss.
* :data:`CHAPTER_CONFIG`, :data:`CHAPTER_TRAINING`, :data:`CHAPTER_TARGET_LOSS` and
  :func:`chapter_data` -- exactly the tiny GPT that chapter 11 trains on 2 CPU cores, so the
  benchmarks can time "tiny GPT to its stated validation loss"::

      from dlcourse.models import lm
      tok, train_ids, val_ids = lm.chapter_data()
      config = lm.chapter_config(tok.vocab_size)
      model, history = lm.train_gpt(config, train_ids, val_ids, target_loss=lm.CHAPTER_TARGET_LOSS)
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from dlcourse.text import load_python_docs, split_ids
from dlcourse.tokenizers import CharTokenizer
from dlcourse.transformer import GPT, GPTConfig

__all__ = ["bigram_counts", "bigram_loss", "get_batch", "evaluate_lm", "TrainConfig", "train_gpt",
           "CHAPTER_CONFIG", "CHAPTER_TRAINING", "CHAPTER_TARGET_LOSS", "chapter_config", "chapter_data"]


def bigram_counts(ids: Tensor, vocab_size: int) -> Tensor:
    """``counts[a, b]``: how often token ``b`` follows token ``a`` in ``ids``.

    Shape:
        ids: ``(N,)`` integer tokens. Output: ``(vocab_size, vocab_size)`` ``int64`` counts.
    """
    ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.dim() != 1:
        raise ValueError(f"bigram_counts: expected a 1-D sequence of ids, got shape {tuple(ids.shape)}")
    pair = ids[:-1] * vocab_size + ids[1:]  # (N-1,) one number per (a, b)
    return torch.bincount(pair, minlength=vocab_size * vocab_size).reshape(vocab_size, vocab_size)  # (V, V)


def bigram_loss(train_ids: Tensor, val_ids: Tensor, vocab_size: int, alpha: float = 1.0) -> float:
    r"""Validation cross-entropy (nats/token) of the counting bigram model fitted on ``train_ids``.

    .. math::

        p(b \mid a) = \frac{n_{ab} + \alpha}{\sum_{b'} n_{ab'} + \alpha V}, \qquad
        L = -\frac{1}{N-1} \sum_t \log p(x_{t+1} \mid x_t)

    ``alpha`` (add-one smoothing by default) gives pairs never seen in training a small
    probability instead of 0, which would make the loss infinite.
    """
    counts = bigram_counts(train_ids, vocab_size).double() + alpha  # (V, V)
    log_p = counts.log() - counts.sum(dim=1, keepdim=True).log()  # (V, V) log p(b | a)
    val = torch.as_tensor(val_ids, dtype=torch.long)
    return float(-log_p[val[:-1], val[1:]].mean())


def get_batch(data: Tensor, batch_size: int, block_size: int, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """``batch_size`` random windows of ``block_size`` tokens and their next tokens.

    Returns:
        ``(x, y)``, each ``(batch_size, block_size)``, with ``y[:, t] = x[:, t + 1]`` continued by
        one more token: at every position the target is the token that comes next.
    """
    if len(data) <= block_size:
        raise ValueError(f"get_batch: the data ({len(data)} tokens) must be longer than block_size={block_size}")
    start = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,)
    offsets = torch.arange(block_size)  # (T,)
    x = data[start[:, None] + offsets]  # (B, T)
    y = data[start[:, None] + offsets + 1]  # (B, T), shifted by one
    return x.to(device), y.to(device)


@torch.no_grad()
def evaluate_lm(model: GPT, data: Tensor, block_size: int | None = None, batch_size: int = 64,
                max_tokens: int | None = None) -> float:
    """Mean cross-entropy (nats/token) of ``model`` over ``data`` cut into consecutive windows.

    Deterministic: the same windows every time (no sampling), covering the first
    ``max_tokens`` tokens (default: all of them, up to whole windows).
    """
    block_size = model.config.block_size if block_size is None else block_size
    device = next(model.parameters()).device
    n = (len(data) - 1) // block_size if max_tokens is None else min((len(data) - 1), max_tokens) // block_size
    if n < 1:
        raise ValueError(f"evaluate_lm: need more than block_size={block_size} tokens, got {len(data)}")
    x = data[: n * block_size].view(n, block_size)  # (n, T)
    y = data[1: n * block_size + 1].view(n, block_size)  # (n, T)
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, n, batch_size):
        _, loss = model(x[i:i + batch_size].to(device), y[i:i + batch_size].to(device))
        total += loss.item() * len(x[i:i + batch_size])
    model.train(was_training)
    return total / n


@dataclass
class TrainConfig:
    """How :func:`train_gpt` trains. The defaults are the chapter's run."""

    steps: int = 400  # optimizer steps (each on batch_size random windows)
    batch_size: int = 32  # windows per step
    lr: float = 6e-3  # peak learning rate of AdamW (tiny models tolerate a large one)
    warmup: int = 20  # steps of linear warm-up from 0 to lr
    min_lr_ratio: float = 0.1  # the cosine decay ends at min_lr_ratio * lr
    weight_decay: float = 0.01  # AdamW's decoupled weight decay
    grad_clip: float = 1.0  # clip the gradient norm to this (0: no clipping)
    eval_every: int = 50  # evaluate the validation loss every eval_every steps (and at the end)
    eval_tokens: int = 16_384  # validation tokens per evaluation (the first ones, always the same)
    seed: int = 0  # seed of the weights and of the batches


def _lr(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def train_gpt(config: GPTConfig | GPT, train_ids: Tensor, val_ids: Tensor, training: TrainConfig | None = None,
              target_loss: float | None = None, device: torch.device | str | None = None,
              progress: bool = False) -> tuple[GPT, dict[str, list[float]]]:
    """Train a GPT on next-token prediction; return it and its history.

    The run is reproducible from ``training.seed`` alone: the new model's weights, the batches
    and any dropout draw from random number generators seeded with it, and the caller's global
    RNG state is the same afterwards as before (the run works on a fork of it,
    ``torch.random.fork_rng``).

    Args:
        config: a :class:`~dlcourse.transformer.GPTConfig` (a new model is built with ``training.seed``) or a model.
        train_ids, val_ids: 1-D token tensors.
        training: the optimisation settings (default :data:`CHAPTER_TRAINING`).
        target_loss: stop at the first evaluation whose validation loss is at or below it.
        device: where to train (default: the model's device, or :func:`dlcourse.get_device`).
        progress: show a ``tqdm`` progress bar.

    Returns:
        ``(model, history)``; ``history`` has lists ``step``, ``train_loss`` (mean over the steps
        since the last evaluation), ``val_loss`` and ``seconds`` (training time so far), one entry
        per evaluation, and ``reached`` (the step the target was met, or ``None``) under the key
        ``"reached"``.
    """
    from dlcourse.device import get_device

    cfg = CHAPTER_TRAINING if training is None else training
    if device is None:
        device = next(config.parameters()).device if isinstance(config, GPT) else get_device()
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # the caller's global RNG state is restored on the way out
        torch.manual_seed(cfg.seed)  # seeds the fork only
        return _train_gpt(config, train_ids, val_ids, cfg, target_loss, device, progress)


def _train_gpt(config: GPTConfig | GPT, train_ids: Tensor, val_ids: Tensor, cfg: TrainConfig,
               target_loss: float | None, device: torch.device, progress: bool) -> tuple[GPT, dict[str, list[float]]]:
    """:func:`train_gpt`'s run, on a seeded fork of the global RNG."""
    from tqdm.auto import tqdm

    model = config if isinstance(config, GPT) else GPT(config)
    model.to(device).train()
    block = model.config.block_size
    decay = [p for p in model.parameters() if p.dim() >= 2]  # matrices decay; biases and norms do not
    other = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": other, "weight_decay": 0.0}], lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    history: dict = {"step": [], "train_loss": [], "val_loss": [], "seconds": [], "reached": None}
    running, count, elapsed = 0.0, 0, 0.0
    bar = tqdm(range(cfg.steps), disable=not progress, desc="train GPT")
    for step in bar:
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, cfg)
        x, y = get_batch(train_ids, cfg.batch_size, block, generator, device)
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        running += loss.item()
        count += 1
        elapsed += time.perf_counter() - started
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            started = time.perf_counter()
            val = evaluate_lm(model, val_ids, max_tokens=cfg.eval_tokens)
            elapsed += time.perf_counter() - started
            history["step"].append(step + 1)
            history["train_loss"].append(running / count)
            history["val_loss"].append(val)
            history["seconds"].append(elapsed)
            running, count = 0.0, 0
            bar.set_postfix(val_loss=f"{val:.3f}")
            if target_loss is not None and val <= target_loss:
                history["reached"] = step + 1
                break
    bar.close()
    model.eval()
    return model, history


#: The chapter's tiny GPT on characters of the Python help texts, 2 blocks of width 64 (117k parameters).
CHAPTER_CONFIG = GPTConfig(
    vocab_size=128,  # replaced by the tokenizer's size (about 100 characters): see chapter_config
    block_size=64,  # 64 characters of context
    n_layer=2,  # two transformer blocks
    n_head=4,  # four heads of width 16
    n_embd=64,  # 64-dimensional token vectors
    tie_weights=False,  # a separate output head: on characters it learned faster here (400 steps: 1.94 vs 2.1)
)
#: The chapter's training run.
CHAPTER_TRAINING = TrainConfig()  # 400 steps of 32 windows of 64 characters, AdamW 6e-3 with cosine decay
#: The validation loss (nats/char, on the first ``eval_tokens`` validation characters) the chapter's
#: GPT must reach; the bigram baseline scores 2.47 there, the chapter's run 1.94 after 400 steps.
CHAPTER_TARGET_LOSS = 2.0


def chapter_config(vocab_size: int) -> GPTConfig:
    """:data:`CHAPTER_CONFIG` with the tokenizer's vocabulary size."""
    return dataclasses.replace(CHAPTER_CONFIG, vocab_size=vocab_size)


def chapter_data(val_fraction: float = 0.1) -> tuple[CharTokenizer, Tensor, Tensor]:
    """The chapter's data: the offline corpus (:func:`dlcourse.text.load_python_docs`), a
    character tokenizer over all of it, and its ids split into the first 90% for training and
    the last 10% for validation."""
    corpus = load_python_docs()
    tokenizer = CharTokenizer(corpus)
    train_ids, val_ids = split_ids(tokenizer.encode(corpus), val_fraction)
    return tokenizer, train_ids, val_ids
