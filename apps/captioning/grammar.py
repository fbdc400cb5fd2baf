"""Captions a person would write: articles and nouns, fixed inside the decoding graph.

Two faults of the decoder are removed by construction rather than by training:

* **a / an.** The ImageNet word prior puts a noun after whatever article the generator
  chose ("a apple"). :func:`fix_articles` re-chooses every "a"/"an" from the next word's
  spelling with core ``tf.strings`` ops only, so it runs in the exported graph (TF
  Serving) exactly as in ``evaluate``. The rule: "an" before a vowel letter, "a" before
  anything else, with a short list of exceptions (:data:`A_BEFORE`, :data:`AN_BEFORE`):
  vowel letters that sound like a consonant ("a unicorn", "a euro", "a one-way sign") and
  a silent h ("an hour"), and a letter read by its name before a hyphen ("an f-22",
  "a u-turn"). The list is kept small on purpose: it covers the words the
  training captions and the ImageNet class names use (a test checks every vocabulary
  word against :func:`apps.captioning.caption_faults.needs_an`); a rarer word outside it
  gets the spelling rule.
* **a noun named twice** ("a dog next to a dog" for one dog). :func:`noun_word_ids` lists
  the words that name objects (the head nouns of the training captions and the ImageNet
  prior's words) and that no training caption says twice; decoding then never emits one
  of them a second time in a caption (:func:`apps.captioning.model.decode`, using the
  translation app's state-carrying step wrapper
  :func:`rnnkit.samplers.penalise_repeats` with an infinite penalty). Training
  scenes never hold two things with the same head noun, so no reference breaks the rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from rnnkit.modeling.vocabulary import Vocabulary

from . import data

__all__ = ["AN_BEFORE", "A_BEFORE", "fix_articles", "noun_word_ids"]

#: Word beginnings spelt with a vowel that take "a" (a consonant sound: "a unicorn").
A_BEFORE = ("uni", "use", "usu", "uti", "uro", "ure", "ura", "eu", "ewe", "one", "once",
            "ufo", "uk")
#: Word beginnings spelt with a consonant that take "an" (a silent h: "an hour").
AN_BEFORE = ("hour", "honest", "honor", "honour", "heir")


def _alternation(prefixes: Sequence[str]) -> str:
    return "|".join(sorted(prefixes, key=len, reverse=True))


def fix_articles(captions):
    """Every "a"/"an" of each caption chosen from the next word's first letters.

    Core TensorFlow string ops only (``tf.strings.regex_replace``, RE2), so it runs inside
    the SavedModel. Captions are lower-case words separated by single spaces, as the
    decoder writes them; other text passes through unchanged.

    Args:
        captions: string tensor of any shape.

    Returns:
        A string tensor of the same shape.
    """
    import tensorflow as tf

    # Pad with spaces so an article at either end is matched by the same pattern; RE2 has
    # no look-ahead, so each rule consumes its article and the space after it only.
    x = tf.strings.join([" ", captions, " "])
    x = tf.strings.regex_replace(x, r" an? ([aeiou])", r" an \1")
    x = tf.strings.regex_replace(x, r" an? ([b-df-hj-np-tv-z0-9])", r" a \1")
    x = tf.strings.regex_replace(x, rf" an? ({_alternation(A_BEFORE)})", r" a \1")
    x = tf.strings.regex_replace(x, rf" an? ({_alternation(AN_BEFORE)})", r" an \1")
    # A letter read by its name before a hyphen: "an f-22", "an m-3", "a u-turn".
    x = tf.strings.regex_replace(x, r" an? ([aefhilmnorsx])-", r" an \1-")
    x = tf.strings.regex_replace(x, r" an? ([bcdgjkpqtuvwyz])-", r" a \1-")
    return tf.strings.regex_replace(x, r"^ | $", "")


def noun_word_ids(vocab: Vocabulary, references: Iterable[str],
                  extra_nouns: Iterable[str] = ()) -> list[int]:
    """Ids of the words a caption may name only once.

    The head noun of every training caption (each phrase of a scene caption) and
    ``extra_nouns`` (the ImageNet prior's head words), minus any word that one phrase of a
    training caption says twice ("a christmas pudding is eaten on christmas day": then the
    rule would forbid a human description of one thing). A word said once in each of two
    phrases of a scene ("a sheep next to a baby sheep a lamb") stays restricted: two
    mentions of one head noun are what the rule is there to stop ("a sheep , a sheep and
    a butterfly" from a decoder).

    Args:
        vocab: the decoder's vocabulary.
        references: the training captions.
        extra_nouns: more object words (the class head words of the prior).

    Returns:
        Sorted vocabulary ids.
    """
    nouns = set(extra_nouns)
    repeated: set[str] = set()
    for ref in references:
        for part in data.scene_parts(ref):
            words = part.split()
            repeated |= {w for w in set(words) if words.count(w) > 1}
            head = data.head_noun(part)
            if head:
                nouns.add(head)
    return sorted(vocab.stoi[w] for w in nouns - repeated if w in vocab.stoi)


def noun_mask(noun_ids: Sequence[int], vocab_size: int) -> np.ndarray:
    """``[vocab_size]`` float32, 1 at ``noun_ids`` (the mask the decoding rule takes)."""
    mask = np.zeros(vocab_size, np.float32)
    mask[np.asarray(list(noun_ids), dtype=np.int64)] = 1.0
    return mask
