"""dlcourse.transformer and dlcourse.models.lm: multi-head attention against torch.nn.MultiheadAttention
(same state dict), the pre-norm block, the GPT (shapes, causality, tied weights, parameter
counts of GPT-2 configurations, generate), sinusoidal encodings, the bigram baseline, batches,
and a short training run that must beat the bigram baseline."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dlcourse.models import lm
from dlcourse import nn as dnn
from dlcourse.transformer import GPT, GPTConfig, MultiHeadAttention, TransformerBlock, sinusoidal_encoding

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("bias", [True, False])
def test_mha_matches_torch_multihead_attention(device, supported, gen, bias):
    supported(device, torch.float64)
    ours = MultiHeadAttention(12, 3, bias=bias).to(device, torch.float64)
    theirs = nn.MultiheadAttention(12, 3, bias=bias, batch_first=True).to(device, torch.float64)
    theirs.load_state_dict(ours.state_dict())  # same names and shapes
    x = torch.randn(2, 7, 12, generator=gen, dtype=torch.float64).to(device)
    torch.testing.assert_close(ours(x), theirs(x, x, x, need_weights=False)[0])
    future = torch.ones(7, 7, dtype=torch.bool, device=device).triu(1)  # torch's mask: True = blocked
    torch.testing.assert_close(ours(x, is_causal=True), theirs(x, x, x, attn_mask=future, need_weights=False)[0])
    torch.testing.assert_close(ours(x, attn_mask=~future), ours(x, is_causal=True))


def test_mha_gradients_match_torch(gen):
    ours = MultiHeadAttention(8, 2).double()
    theirs = nn.MultiheadAttention(8, 2, batch_first=True).double()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 5, 8, generator=gen, dtype=torch.float64)
    ours(x, is_causal=True).square().sum().backward()
    mask = torch.ones(5, 5, dtype=torch.bool).triu(1)
    theirs(x, x, x, attn_mask=mask, need_weights=False)[0].square().sum().backward()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=lambda m, n=name: f"{n}: {m}")


def test_mha_errors():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match=r"expected input \(B, T, 8\)"):
        MultiHeadAttention(8, 2)(torch.randn(2, 5, 6))


def test_block_is_pre_norm_residual_and_causal(gen):
    torch.manual_seed(0)
    cfg = GPTConfig(n_embd=16, n_head=4)
    block = TransformerBlock(cfg).double()
    x = torch.randn(2, 6, 16, generator=gen, dtype=torch.float64)
    by_hand = x + block.attn(block.ln_1(x), is_causal=True)
    by_hand = by_hand + block.mlp(block.ln_2(by_hand))
    torch.testing.assert_close(block(x), by_hand)
    y = x.clone()
    y[:, 4:] = torch.randn(2, 2, 16, generator=gen, dtype=torch.float64)  # change the future
    torch.testing.assert_close(block(y)[:, :4], block(x)[:, :4])  # the past does not see it
    encoder = TransformerBlock(cfg, causal=False).double()
    assert not torch.allclose(encoder(y)[:, :4], encoder(x)[:, :4])


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
@pytest.mark.parametrize("tie", [True, False])
def test_gpt_shapes_loss_and_causality(device, positional, tie):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, tie_weights=tie,
                    positional=positional)
    model = GPT(cfg).to(device)
    idx = torch.randint(0, 11, (3, 8), device=device)
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 8, 11) and loss.shape == ()
    assert abs(loss.item() - math.log(11)) < 0.3  # near-uniform at initialisation
    assert (model.lm_head.weight is model.wte.weight) == tie
    changed = idx.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 11
    torch.testing.assert_close(model(changed)[0][:, :5], logits[:, :5])
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="longer than block_size=8"):
        model(torch.zeros(1, 9, dtype=torch.long, device=device))


def test_parameter_counts_of_gpt2_sizes():
    # GPT-2 small (124M) and medium (350M), built on the meta device: no memory, exact counts.
    with torch.device("meta"):
        small = GPT(GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768))
        medium = GPT(GPTConfig(vocab_size=50257, block_size=1024, n_layer=24, n_head=16, n_embd=1024))
    assert small.num_params() == 124_439_808  # the published 124M
    assert medium.num_params() == 354_823_168
    C, L = 768, 12
    assert small.num_params(non_embedding=True) == L * (12 * C * C + 13 * C) + 2 * C


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of n_head"):
        GPTConfig(n_embd=10, n_head=4)
    with pytest.raises(ValueError, match="positive int vocab_size"):
        GPTConfig(vocab_size=0)
    with pytest.raises(ValueError, match="positional"):
        GPTConfig(positional="rotary")


def test_generate_shapes_greedy_top_k_and_mode():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=7, block_size=4, n_layer=1, n_head=1, n_embd=8)).train()
    start = torch.zeros(2, 1, dtype=torch.long)
    out = model.generate(start, 10, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 11) and torch.equal(out[:, :1], start) and model.training
    greedy = model.generate(start, 6, temperature=0)
    assert torch.equal(greedy, model.generate(start, 6, temperature=0))
    top1 = model.generate(start, 6, top_k=1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(top1, greedy)  # top-1 sampling is greedy decoding
    with pytest.raises(ValueError, match="temperature"):
        model.generate(start, 1, temperature=-1)


def test_sinusoidal_encoding_formula():
    pe = sinusoidal_encoding(10, 6, dtype=torch.float64)
    p, i = 7, 1
    assert pe.shape == (10, 6)
    assert pe[p, 2 * i].item() == pytest.approx(math.sin(p / 10000 ** (2 * i / 6)))
    assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(p / 10000 ** (2 * i / 6)))
    torch.testing.assert_close(pe[0], torch.tensor([0.0, 1, 0, 1, 0, 1], dtype=torch.float64))
    assert sinusoidal_encoding(5, 7).shape == (5, 7)


def test_bigram_counts_and_loss_by_hand():
    ids = torch.tensor([0, 1, 0, 1, 1])
    assert lm.bigram_counts(ids, 2).tolist() == [[0, 2], [1, 1]]
    # smoothing 1: p(1|0) = 3/4, p(0|1) = 2/4, p(1|1) = 2/4
    val = torch.tensor([0, 1, 0])
    expected = -(math.log(3 / 4) + math.log(2 / 4)) / 2
    assert lm.bigram_loss(ids, val, 2) == pytest.approx(expected)


def test_get_batch_targets_are_shifted_inputs():
    data = torch.arange(100)
    x, y = lm.get_batch(data, 4, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8)
    assert torch.equal(y, x + 1)
    with pytest.raises(ValueError, match="longer than block_size"):
        lm.get_batch(torch.arange(5), 2, 8)


def test_short_training_beats_the_bigram_baseline():
    # A text whose next character depends on two before: a bigram model cannot learn it, a GPT can.
    text = "abcab acbca " * 400
    from dlcourse.tokenizers import CharTokenizer
    from dlcourse.text import split_ids

    tok = CharTokenizer(text)
    train_ids, val_ids = split_ids(tok.encode(text), 0.2)
    baseline = lm.bigram_loss(train_ids, val_ids, tok.vocab_size)
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32)
    training = lm.TrainConfig(steps=150, batch_size=16, lr=1e-2, warmup=10, eval_every=50, eval_tokens=1024)
    model, history = lm.train_gpt(cfg, train_ids, val_ids, training, device="cpu")
    assert history["val_loss"][-1] < baseline - 0.3, (history["val_loss"], baseline)
    assert lm.evaluate_lm(model, val_ids) < baseline - 0.3
    _, stopped = lm.train_gpt(cfg, train_ids, val_ids, training, target_loss=10.0, device="cpu")
    assert stopped["reached"] == 50 and len(stopped["val_loss"]) == 1


def test_chapter_run_is_importable():
    tok, train_ids, val_ids = lm.chapter_data()
    cfg = lm.chapter_config(tok.vocab_size)
    assert cfg.vocab_size == tok.vocab_size and cfg.block_size == lm.CHAPTER_CONFIG.block_size
    assert lm.CHAPTER_TARGET_LOSS < lm.bigram_loss(train_ids, val_ids, tok.vocab_size)
    assert len(val_ids) > lm.CHAPTER_TRAINING.eval_tokens


def test_reexported_from_dlcourse_nn():
    assert dnn.GPT is GPT and dnn.MultiHeadAttention is MultiHeadAttention
    assert dnn.TransformerBlock is TransformerBlock and dnn.GPTConfig is GPTConfig
