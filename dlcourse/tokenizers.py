r"""Tokenizers: text to integer ids and back, by characters or by byte-pair encoding (BPE).

A language model reads integers. A *tokenizer* cuts text into pieces from a fixed vocabulary
and numbers them:

* :class:`CharTokenizer` -- one token per character seen in a training text. A tiny
  vocabulary (about 100 for English), long sequences.
* :class:`BPETokenizer` -- byte-pair encoding as in GPT-2: start from the 256 byte values of
  the UTF-8 encoding, then repeatedly *merge* the most frequent adjacent pair of tokens into
  a new token. Each merge adds one vocabulary entry and shortens the text; any string,
  in any script, can still be encoded, because every byte is in the vocabulary.

The two BPE steps are plain functions, :func:`pair_counts` and :func:`merge`, so they can be
shown and tested on their own.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

__all__ = ["CharTokenizer", "BPETokenizer", "pair_counts", "merge", "SPLIT_PATTERN"]

#: Pre-split text into chunks (a word with its leading space, a run of punctuation, runs of
#: whitespace) so merges never cross a word boundary, as GPT-2 does. The standard library's ``\w``
#: is Unicode-aware, so letters of any script stay together.
SPLIT_PATTERN = r" ?\w+| ?[^\w\s]+|\s+(?!\S)|\s+"


class CharTokenizer:
    """One token per distinct character of a training text, numbered in sorted order.

    Args:
        text: the text whose characters make the vocabulary.

    Example::

        tok = CharTokenizer("hello world")
        tok.encode("hello")        # [3, 2, 4, 4, 5]
        tok.decode(tok.encode("hello")) == "hello"
    """

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer: expected the training text as a str, got {type(text).__name__}")
        if not text:
            raise ValueError("CharTokenizer: expected a non-empty training text, got ''")
        self.chars = sorted(set(text))
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        """Number of distinct tokens (characters)."""
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """The id of each character of ``text``.

        Raises:
            ValueError: a character that was not in the training text.
        """
        try:
            return [self.stoi[c] for c in text]
        except KeyError as err:
            raise ValueError(f"CharTokenizer.encode: the character {err.args[0]!r} is not in the "
                             f"vocabulary of {self.vocab_size} characters") from None

    def decode(self, ids: Iterable[int]) -> str:
        """The text of a sequence of ids (a list, or a 1-D integer tensor)."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"CharTokenizer.decode: expected ids in [0, {self.vocab_size - 1}], got {bad[0]}")
        return "".join(self.chars[i] for i in ids)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def pair_counts(ids: Sequence[int], counts: Counter | None = None, weight: int = 1) -> Counter:
    """How often each adjacent pair ``(ids[i], ids[i + 1])`` occurs.

    Args:
        ids: a token sequence.
        counts: a counter to add to (default: a new one).
        weight: how many times this sequence counts (the frequency of a word).

    Returns:
        A ``Counter`` mapping each pair to its count, e.g. ``[1, 2, 1, 2]`` gives
        ``{(1, 2): 2, (2, 1): 1}``.
    """
    counts = Counter() if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] += weight
    return counts


def merge(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_id``, left to right, without overlaps.

    Example: ``merge([5, 5, 5, 1], (5, 5), 9)`` gives ``[9, 5, 1]``.
    """
    out = []
    i = 0
    n = len(ids)
    while i < n:
        if i + 1 < n and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class BPETokenizer:
    """A byte-level byte-pair-encoding tokenizer (GPT-2's scheme, trained from scratch).

    Token ids 0-255 are the bytes of the UTF-8 encoding; id ``256 + m`` is the ``m``-th merge,
    the concatenation of the two tokens it joins. Encoding splits the text into chunks with
    ``pattern``, turns each chunk into bytes and applies the merges in the order they were
    learned. Decoding concatenates the bytes of the tokens and decodes them as UTF-8, so
    ``decode(encode(s)) == s`` for every string ``s``.

    Args:
        merges: the learned merges, in order; ``merges[m] = (a, b)`` made token ``256 + m``.
        pattern: the regular expression that pre-splits text (default :data:`SPLIT_PATTERN`).

    Use :meth:`train` to learn the merges from a text.
    """

    def __init__(self, merges: Sequence[tuple[int, int]] = (), pattern: str = SPLIT_PATTERN) -> None:
        self.merges = [tuple(p) for p in merges]
        self.pattern = pattern
        self._split = re.compile(pattern)
        self.ranks = {pair: 256 + m for m, pair in enumerate(self.merges)}  # pair -> its new id
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}
        for pair, new_id in self.ranks.items():
            a, b = pair
            if not (a < new_id and b < new_id):
                raise ValueError(f"BPETokenizer: merge {pair} makes token {new_id} from a later token")
            self.vocab[new_id] = self.vocab[a] + self.vocab[b]
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def train(cls, text: str, vocab_size: int, pattern: str = SPLIT_PATTERN) -> BPETokenizer:
        """Learn ``vocab_size - 256`` merges from ``text``.

        Each step counts the adjacent pairs over all chunks (a distinct chunk counted once,
        weighted by how often it occurs), merges the most frequent pair everywhere, and
        records it. Ties go to the smallest pair, so training is deterministic. Training
        stops early when no pair occurs twice. (The counts are updated only for the chunks a
        merge changes, so a few hundred thousand characters take seconds, not minutes.)

        Args:
            text: the training text.
            vocab_size: the final vocabulary size, at least 256 (the bytes).
        """
        if not isinstance(text, str):
            raise TypeError(f"BPETokenizer.train: expected a str, got {type(text).__name__}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(f"BPETokenizer.train: expected an int vocab_size >= 256 (the bytes), got {vocab_size!r}")
        chunks = Counter(re.findall(pattern, text))  # distinct chunk -> frequency
        words = [list(chunk.encode("utf-8")) for chunk in chunks]
        freqs = list(chunks.values())
        counts: Counter = Counter()  # pair -> weighted count over all chunks
        where: dict[tuple[int, int], set[int]] = {}  # pair -> the chunks it may occur in
        for w, (ids, f) in enumerate(zip(words, freqs)):
            pair_counts(ids, counts, f)
            for pair in zip(ids, ids[1:]):
                where.setdefault(pair, set()).add(w)
        merges = []
        for new_id in range(256, vocab_size):
            counts = +counts  # drop pairs whose count fell to 0
            if not counts:
                break
            # the most frequent pair; on a tie, the smallest
            pair, n = max(counts.items(), key=lambda kv: (kv[1], (-kv[0][0], -kv[0][1])))
            if n < 2:
                break
            # Only the chunks that hold the pair change: take their old pairs out, the new ones in.
            for w in where.pop(pair):
                old = words[w]
                new = merge(old, pair, new_id)
                if len(new) == len(old):
                    continue  # a stale entry: the pair no longer occurs in this chunk
                counts.subtract(pair_counts(old, weight=freqs[w]))
                pair_counts(new, counts, freqs[w])
                for p in zip(new, new[1:]):
                    where.setdefault(p, set()).add(w)
                words[w] = new
            merges.append(pair)
        return cls(merges, pattern)

    @property
    def vocab_size(self) -> int:
        """256 bytes plus one token per merge."""
        return 256 + len(self.merges)

    def _encode_chunk(self, chunk: str) -> list[int]:
        ids = list(chunk.encode("utf-8"))
        while len(ids) > 1:
            # the pair that was merged first during training (lowest new id) goes first
            pair = min(zip(ids, ids[1:]), key=lambda p: self.ranks.get(p, float("inf")))
            if pair not in self.ranks:
                break
            ids = merge(ids, pair, self.ranks[pair])
        return ids

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text`` (any Unicode string)."""
        if not isinstance(text, str):
            raise TypeError(f"BPETokenizer.encode: expected a str, got {type(text).__name__}")
        out: list[int] = []
        for chunk in self._split.findall(text):
            ids = self._cache.get(chunk)
            if ids is None:
                ids = self._encode_chunk(chunk)
                if len(self._cache) < 100_000:
                    self._cache[chunk] = ids
            out.extend(ids)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """The text of a sequence of ids; bytes that are not valid UTF-8 become U+FFFD."""
        try:
            data = b"".join(self.vocab[int(i)] for i in ids)
        except KeyError as err:
            raise ValueError(f"BPETokenizer.decode: expected ids in [0, {self.vocab_size - 1}], "
                             f"got {err.args[0]}") from None
        return data.decode("utf-8", errors="replace")

    def token_text(self, token: int) -> str:
        """A readable form of one token (its bytes decoded, invalid UTF-8 shown as U+FFFD)."""
        return self.vocab[token].decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"
