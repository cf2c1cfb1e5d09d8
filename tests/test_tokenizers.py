"""Character and byte-pair-encoding tokenizers: encode/decode round trips on random Unicode text
(every plane, combining marks, emoji, whitespace runs), BPE training by hand on small texts,
against a slow reference trainer, and clear errors."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from dlcourse.tokenizers import SPLIT_PATTERN, BPETokenizer, CharTokenizer, merge, pair_counts

ALPHABETS = [
    (0x20, 0x7E),  # printable ASCII
    (0x00, 0x1F),  # control characters, tabs and newlines
    (0xA0, 0x24F),  # Latin-1 and Latin Extended (accents)
    (0x300, 0x36F),  # combining marks
    (0x391, 0x3C9),  # Greek
    (0x400, 0x4FF),  # Cyrillic
    (0x4E00, 0x4FFF),  # CJK ideographs
    (0x1F600, 0x1F64F),  # emoji (4 UTF-8 bytes)
    (0xE000, 0xF8FF),  # private use area
    (0x10000, 0x10FFFF),  # anything beyond the basic plane
]


def random_text(rng: random.Random, max_len: int = 40) -> str:
    """A random string over mixed scripts (no lone surrogates: they are not text)."""
    chars = []
    for _ in range(rng.randint(0, max_len)):
        if rng.random() < 0.25:
            chars.append(rng.choice(" \n\t  "))
        else:
            lo, hi = rng.choice(ALPHABETS)
            chars.append(chr(rng.randint(lo, hi)))
    return "".join(chars)


SAMPLE = ("The quick brown fox jumps over the lazy dog. Le cœur a ses raisons — 心が躍る 🙂🙂 "
          "the the the   indented\n\tcode = x + y\nÅngström naïve café ") * 20


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(SAMPLE, 400)


def test_split_pattern_keeps_every_character():
    rng = random.Random(0)
    for _ in range(500):
        text = random_text(rng)
        assert "".join(re.findall(SPLIT_PATTERN, text)) == text


@pytest.mark.parametrize("seed", range(5))
def test_bpe_round_trips_random_unicode(bpe, seed):
    rng = random.Random(seed)
    for _ in range(200):
        text = random_text(rng)
        ids = bpe.encode(text)
        assert all(0 <= i < bpe.vocab_size for i in ids)
        assert bpe.decode(ids) == text


@pytest.mark.parametrize("seed", range(5))
def test_char_round_trips_random_unicode(seed):
    rng = random.Random(seed)
    for _ in range(100):
        text = random_text(rng) or "x"
        tok = CharTokenizer(text + "abc")
        assert tok.decode(tok.encode(text)) == text
        assert tok.vocab_size == len(set(text + "abc"))


def test_char_tokenizer_by_hand():
    tok = CharTokenizer("hello world")
    assert tok.chars == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert tok.encode("hello") == [3, 2, 4, 4, 5]
    assert tok.decode([7, 5, 6, 4, 1]) == "world"
    with pytest.raises(ValueError, match="'z' is not in the vocabulary"):
        tok.encode("zoo")
    with pytest.raises(ValueError, match=r"expected ids in \[0, 7\], got 8"):
        tok.decode([8])


def test_pair_counts_and_merge_by_hand():
    assert pair_counts([1, 2, 1, 2]) == Counter({(1, 2): 2, (2, 1): 1})
    assert pair_counts([5]) == Counter()
    assert merge([5, 5, 5, 1], (5, 5), 9) == [9, 5, 1]
    assert merge([1, 2, 3, 1, 2], (1, 2), 7) == [7, 3, 7]
    assert merge([], (1, 2), 7) == []


def test_bpe_first_merges_by_hand():
    # "aaabdaaabac": the pair (a, a) occurs 4 times, more than any other pair
    tok = BPETokenizer.train("aaabdaaabac", 259, pattern=r".+")
    a, b = ord("a"), ord("b")
    assert tok.merges[0] == (a, a)
    assert tok.vocab[256] == b"aa"
    assert tok.encode("aaabdaaabac") == tok.encode("aaabdaaabac")  # deterministic
    assert tok.decode(tok.encode("aaabdaaabac")) == "aaabdaaabac"
    assert len(tok.encode("aaabdaaabac")) < 11
    assert (256, a) in tok.merges or (256, b) in tok.merges or (a, b) in tok.merges


def naive_train(text: str, vocab_size: int) -> list[tuple[int, int]]:
    """The textbook trainer: recount every pair after every merge."""
    chunks = Counter(re.findall(SPLIT_PATTERN, text))
    words, freqs = [list(c.encode()) for c in chunks], list(chunks.values())
    merges = []
    for new_id in range(256, vocab_size):
        counts = Counter()
        for ids, f in zip(words, freqs):
            pair_counts(ids, counts, f)
        if not counts:
            break
        pair, n = max(counts.items(), key=lambda kv: (kv[1], (-kv[0][0], -kv[0][1])))
        if n < 2:
            break
        words = [merge(ids, pair, new_id) for ids in words]
        merges.append(pair)
    return merges


@pytest.mark.parametrize("seed", range(3))
def test_bpe_training_matches_the_slow_reference(seed):
    rng = random.Random(seed)
    words = [random_text(rng, 6) for _ in range(30)]
    text = " ".join(rng.choice(words) for _ in range(400))
    assert BPETokenizer.train(text, 350).merges == naive_train(text, 350)


def test_bpe_compresses_and_stops_when_nothing_repeats(bpe):
    assert len(bpe.encode(SAMPLE)) < 0.5 * len(SAMPLE.encode("utf-8"))
    tiny = BPETokenizer.train("abcdef", 1000)
    assert tiny.vocab_size == 256  # no pair occurs twice: no merge
    assert BPETokenizer(bpe.merges).encode(SAMPLE) == bpe.encode(SAMPLE)  # rebuilt from its merges


def test_bpe_errors(bpe):
    with pytest.raises(ValueError, match="vocab_size >= 256"):
        BPETokenizer.train("abc", 100)
    with pytest.raises(ValueError, match="expected ids in"):
        bpe.decode([bpe.vocab_size])
    with pytest.raises(TypeError, match="expected a str"):
        bpe.encode(b"bytes")
    assert bpe.decode([0xE2]) == "\ufffd"  # half a character shows as the replacement mark
