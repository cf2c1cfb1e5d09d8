"""No library function reseeds the global RNG behind the caller's back: ``lm.train_gpt`` is
reproducible from its own seed and leaves the caller's random stream where it was."""

from __future__ import annotations

import pytest
import torch

from dlcourse.models import lm
from dlcourse.text import split_ids
from dlcourse.tokenizers import CharTokenizer
from dlcourse.transformer import GPTConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = "abcab acbca " * 40


def tiny_run(seed: int = 0):
    tok = CharTokenizer(TEXT)
    train_ids, val_ids = split_ids(tok.encode(TEXT), 0.2)
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.1)
    training = lm.TrainConfig(steps=4, batch_size=4, warmup=1, eval_every=2, eval_tokens=64, seed=seed)
    return lm.train_gpt(cfg, train_ids, val_ids, training, device="cpu")


def test_train_gpt_leaves_the_global_rng_as_it_was():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    expected = torch.rand(5)  # what the caller's stream gives next
    torch.set_rng_state(before)
    tiny_run()
    assert torch.equal(torch.get_rng_state(), before)
    torch.testing.assert_close(torch.rand(5), expected)


def test_train_gpt_is_reproducible_from_its_seed_whatever_the_global_state():
    torch.manual_seed(1)
    model_a, history_a = tiny_run()
    torch.manual_seed(2)  # another global state: the run must not depend on it
    model_b, history_b = tiny_run()
    assert history_a["train_loss"] == history_b["train_loss"] and history_a["val_loss"] == history_b["val_loss"]
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    _, history_c = tiny_run(seed=1)  # and the seed does change it
    assert history_c["train_loss"] != history_a["train_loss"]
