"""One token vocabulary with its special tokens, for every model that reads or writes ids.

The four special ids are the same in every vocabulary of the project, so a decoder, its
sampler and its loss never disagree about which id pads a batch or ends a sequence:

======  ==========  ===============================================================
id      token       role
======  ==========  ===============================================================
0       ``<pad>``   fills batches; ignored by the losses and metrics
1       ``<start>`` the first input of a decoder
2       ``<end>``   finishes a sequence (the samplers stop on it)
3       ``<unk>``   any token outside the vocabulary
======  ==========  ===============================================================

A vocabulary that never needs one of them (an encoder's source side has no use for
``<start>``) keeps the id reserved anyway: one unused embedding row is cheaper than a
second id layout. None of the four spellings can come out of the apps' tokenisers (they
split ``<`` and ``>`` off as punctuation), so a special never collides with a real word.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["END", "PAD", "SPECIALS", "START", "UNK", "Vocabulary"]

PAD, START, END, UNK = 0, 1, 2, 3
#: Spellings of the special tokens, in id order.
SPECIALS: tuple[str, ...] = ("<pad>", "<start>", "<end>", "<unk>")


class Vocabulary:
    """Tokens and their ids: :data:`SPECIALS` first (ids 0-3), then the words.

    Args:
        words: the non-special tokens in id order (their ids start at 4). A special
            spelling among them is skipped rather than given a second id.

    Attributes:
        itos: every token, by id.
        stoi: token -> id.

    Example:

    ```python
    vocab = Vocabulary.build([["a", "cat"], ["a", "dog"]])
    vocab.itos[4:]               # ['a', 'cat', 'dog']
    vocab.ids(["a", "cow"])      # [4, 3]  (UNK for an unseen word)
    ```
    """

    def __init__(self, words: Iterable[str]) -> None:
        self.itos: list[str] = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            seen: Counter[str] = Counter(self.itos)
            twice = sorted(w for w, n in seen.items() if n > 1)[:5]
            raise ValueError(f"vocabulary words must be unique; repeated: {twice}")

    @classmethod
    def build(cls, token_lists: Iterable[Iterable[str]], min_count: int = 1,
              max_size: int | None = None) -> Vocabulary:
        """The most frequent tokens of a corpus, most frequent first.

        Ties are broken alphabetically, so the same corpus always gives the same ids.

        Args:
            token_lists: the corpus, one sequence of tokens per text.
            min_count: tokens seen fewer times are left out (they become ``<unk>``).
            max_size: the most ids, specials included (``None``: no cap).

        Raises:
            ValueError: when ``min_count < 1`` or ``max_size`` leaves no room for a word.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if max_size is not None and max_size <= len(SPECIALS):
            raise ValueError(f"max_size must exceed the {len(SPECIALS)} special tokens, "
                             f"got {max_size}")
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        ranked = sorted((w for w, n in counts.items() if n >= min_count and w not in SPECIALS),
                        key=lambda w: (-counts[w], w))
        if max_size is not None:
            ranked = ranked[: max_size - len(SPECIALS)]
        return cls(ranked)

    @classmethod
    def from_tokens(cls, tokens: Sequence[str]) -> Vocabulary:
        """The vocabulary whose :attr:`itos` is ``tokens`` (specials first, as saved).

        Raises:
            ValueError: when ``tokens`` does not start with :data:`SPECIALS`.
        """
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a saved vocabulary must start with {list(SPECIALS)}, "
                             f"got {list(tokens[: len(SPECIALS)])}")
        return cls(tokens[len(SPECIALS):])

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    @property
    def words(self) -> list[str]:
        """The non-special tokens, in id order."""
        return self.itos[len(SPECIALS):]

    def ids(self, tokens: Iterable[str]) -> list[int]:
        """Ids of ``tokens``, ``UNK`` for a token outside the vocabulary."""
        return [self.stoi.get(t, UNK) for t in tokens]

    def encode(self, text: str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Teacher-forcing pair for a whitespace-tokenised text, int32, pad-filled.

        The decoder input is ``<start> w1 .. wn`` and the target ``w1 .. wn <end>``;
        texts longer than ``max_len - 1`` words are cut.

        Args:
            text: tokens separated by whitespace.
            max_len: length of both arrays.
        """
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        ids = self.ids(text.split())[: max_len - 1]
        inputs = np.zeros(max_len, np.int32)
        targets = np.zeros(max_len, np.int32)
        inputs[: len(ids) + 1] = [START] + ids
        targets[: len(ids) + 1] = ids + [END]
        return inputs, targets

    def decode(self, ids: Iterable[int]) -> str:
        """The tokens of ``ids`` up to the first ``<end>`` or ``<pad>``, space-joined."""
        out = []
        for i in ids:
            if i in (PAD, END):
                break
            out.append(self.itos[int(i)])
        return " ".join(out)

    def lookup_table(self, default: int = UNK):
        """An in-graph token -> id table (``tf.lookup.StaticHashTable``, int32 ids).

        Args:
            default: the id of a token outside the vocabulary (``UNK``, or e.g. ``-1`` to
                tell out-of-vocabulary tokens apart).
        """
        import tensorflow as tf

        return tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(self.itos), tf.range(len(self.itos), dtype=tf.int32)),
            default_value=default)

    def to_json(self) -> str:
        """The non-special tokens as a JSON list (what :meth:`from_json` reads)."""
        return json.dumps(self.words)

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        """The vocabulary :meth:`to_json` wrote."""
        return cls(json.loads(text))
