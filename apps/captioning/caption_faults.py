"""Faults a person would not make in a caption, counted over a set of captions.

Three kinds, each counted once per occurrence:

* **article**: "a" before a vowel sound or "an" before a consonant sound ("a apple",
  "an dog"). The sound is read from the spelling with the usual exceptions ("a unicorn",
  "a one-way sign", "an hour", "an x-ray"); words that take either ("herb", "historic")
  and numbers are never counted.
* **doubled_noun**: the same word twice in a row ("a wheel wheel"), the same noun phrase
  twice ("a dog next to a dog"), and, when the number of objects in the picture is known,
  a head noun named in two object mentions ("a red apple and a green apple", "a dog with
  a dog"; mentions split at "next to", ",", "and" and prepositions). The app's test
  pictures never hold two things with the same head noun (a single is one stamp; a scene's
  stamps have distinct head nouns), so with ``n_objects`` given, any head noun named twice
  is a fault.
* **trailing**: words after the end of the phrase: anything after an end token
  (``<end>``, ``</s>``, ...), or a caption ending in a connector or function word ("a dog
  next to", "a cat and", "a bunch of", "a pig ,").

With ``n_objects`` known, **extra_object** also counts phrases beyond the number of objects
("a dog next to a cat" for a single stamp): not a grammar fault and not in the total, and
only a rough signal (a human caption such as "a red and white flower" splits at "and"
too), but a caption naming something that is not there usually shows up in it.

The phrase structure is the app's own: a scene caption joins single-stamp phrases with
"next to", "," and "and" (see :func:`apps.captioning.data.compose_scene_caption`).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from .data import ING_NOUNS

__all__ = [
    "END_TOKENS",
    "FAULT_KINDS",
    "count_caption_faults",
    "fix_article",
    "needs_an",
    "phrases",
    "tidy_caption",
]

FAULT_KINDS = ("article", "doubled_noun", "trailing", "extra_object")
END_TOKENS = frozenset({"<end>", "<eos>", "</s>", "[end]", "endseq", "<pad>"})

# Vowel letters that sound like a consonant ("a unicorn", "a euro", "a one-way street").
_CONSONANT_SOUND_PREFIXES = (
    "uni", "use", "usa", "usb", "usu", "uti", "uto", "ura", "ure", "uri", "uro", "uku",
    "ufo", "eu", "ewe", "one", "once", "ouija",
)
# Consonant letters that sound like a vowel (silent h).
_VOWEL_SOUND_PREFIXES = ("hour", "honest", "honor", "honour", "heir")
# Initialisms read letter by letter.
_CONSONANT_SOUND_WORDS = frozenset({"uk", "un", "us"})
_VOWEL_SOUND_WORDS = frozenset({"suv", "fbi", "mri", "nfl", "rsvp", "sos", "mp3", "lcd", "led",
                                "hb", "html", "xl", "mp"})
# Letters whose names start with a vowel sound: "an f-22", "an x-ray", "an m-3".
_VOWEL_LETTERS = frozenset("aefhilmnorsx")
# Words that take either article in careful English.
_EITHER = frozenset({"herb", "herbs", "historic", "historical", "hotel", "homage"})

# A caption cannot end with these: the phrase was cut off after them. Prepositions that
# also end phrasal verbs ("put in", "switched on") are left out.
_DANGLING = frozenset({
    "a", "an", "the", "and", "or", "next", "to", "of", "with", "from", "some", "its", "his",
    "her", "their", "your", "my", "our", ",",
})
# Where a caption's object mentions split: the scene connectors and prepositions
# ("a bunch of grapes" mentions a bunch and grapes; "a dog with a dog" a dog twice).
_MENTION_SPLIT = frozenset({
    ",", "and", "or", "with", "of", "in", "on", "at", "by", "from", "for", "to", "under",
    "over", "behind", "near", "beside", "like", "called", "into", "onto", "between",
})
# Words that end a mention's head noun ("a spider dancing" -> spider).
_HEAD_STOP = frozenset({
    "is", "are", "was", "were", "that", "who", "which", "has", "have", "made", "used",
    "lets", "gets", "can", "will", "means", "stands",
})
_DETERMINERS = frozenset({"a", "an", "the", "some", "its", "his", "her", "their", "your",
                          "my", "our", "this", "that", "these", "those", "two", "three"})
_WORD = re.compile(r"<[a-z/]+>|\[[a-z]+\]|[a-z0-9]+(?:['\-][a-z0-9]+)*|,")


def _tokens(caption: str) -> list[str]:
    return _WORD.findall(caption.lower())


def needs_an(word: str) -> bool | None:
    """Whether ``word`` takes "an" (True), "a" (False), or either (None).

    Args:
        word: the word after the article, in any case.
    """
    w = word.lower()
    if len(w) < 2 or w in _EITHER or w[0].isdigit():
        # "an 8-ball" but "a 2-euro coin": numbers depend on how they are read, and a lone
        # letter is as often a broken word as a letter's name.
        return None
    if w in _CONSONANT_SOUND_WORDS:
        return False
    if w in _VOWEL_SOUND_WORDS or w.startswith(_VOWEL_SOUND_PREFIXES):
        return True
    if w[1] == "-" or w[1].isdigit():
        # A letter read by its name: "an x-ray", "a u-boat", "an f-22".
        return w[0] in _VOWEL_LETTERS
    if w[0] in "aeiou":
        return not w.startswith(_CONSONANT_SOUND_PREFIXES)
    return False


def fix_article(caption: str) -> str:
    """``caption`` with every "a"/"an" agreeing with the word after it.

    Args:
        caption: a caption (tokens separated by single spaces, as the decoder writes them).

    Returns:
        The caption with the articles fixed; everything else unchanged.
    """
    words = caption.split(" ")
    for i in range(len(words) - 1):
        low = words[i].lower()
        if low not in ("a", "an"):
            continue
        an = needs_an(words[i + 1])
        if an is None or (low == "an") == an:
            continue
        right = "an" if an else "a"
        words[i] = right.capitalize() if words[i][0].isupper() else right
    return " ".join(words)


def phrases(caption: str) -> list[list[str]]:
    """The noun phrases of a caption, split at the scene connectors "next to", "," and "and".

    Args:
        caption: a caption.

    Returns:
        The phrases as token lists (empty phrases dropped).
    """
    out: list[list[str]] = [[]]
    toks = _tokens(caption)
    i = 0
    while i < len(toks):
        t = toks[i]
        if t in END_TOKENS:
            break
        if t == "next" and i + 1 < len(toks) and toks[i + 1] == "to":
            out.append([])
            i += 2
            continue
        if t in (",", "and"):
            out.append([])
        else:
            out[-1].append(t)
        i += 1
    return [p for p in out if p]


def _mention_heads(toks: Sequence[str]) -> list[str]:
    """The head noun of each object mention: the last content word of each chunk between
    connectors and prepositions, cut at the first verb-like word."""
    heads: list[str] = []
    chunk: list[str] = []
    i = 0

    def close() -> None:
        words: list[str] = []
        for j, w in enumerate(chunk):
            # The app's head-noun rule for "-ing" words ("a sleeping cat" names a cat).
            if j > 0 and (w in _HEAD_STOP or (
                    w.endswith("ing") and len(w) > 5 and w not in ING_NOUNS
                    and words and words[-1] not in _DETERMINERS)):
                break
            words.append(w)
        content = [w for w in words if w not in _DETERMINERS]
        if content:
            heads.append(content[-1])
        chunk.clear()

    while i < len(toks):
        t = toks[i]
        if t == "next" and i + 1 < len(toks) and toks[i + 1] == "to":
            close()
            i += 2
            continue
        if t in _MENTION_SPLIT:
            close()
        else:
            chunk.append(t)
        i += 1
    close()
    return heads


def _faults_of(caption: str, n_objects: int | None) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {k: [] for k in FAULT_KINDS}
    toks = _tokens(caption)
    # Words after an end token, then judge only the words before it.
    for i, t in enumerate(toks):
        if t in END_TOKENS:
            if any(x not in END_TOKENS for x in toks[i + 1:]):
                found["trailing"].append(" ".join(toks[i:]))
            toks = toks[:i]
            break
    for a, b in itertools.pairwise(toks):
        if a in ("a", "an"):
            an = needs_an(b)
            if an is not None and (a == "an") != an:
                found["article"].append(f"{a} {b}")
        if a == b and a != ",":
            found["doubled_noun"].append(f"{a} {b}")
    if toks and toks[-1] in _DANGLING:
        cut = 2 if toks[-1] == "to" and len(toks) > 1 and toks[-2] == "next" else 1
        found["trailing"].append(" ".join(toks[-cut:]))
    parts = phrases(" ".join(toks))
    if n_objects is None:
        # Nothing known about the picture: only a whole phrase said twice is surely wrong.
        seen = Counter(" ".join(p) for p in parts)
        found["doubled_noun"] += [p for p, c in seen.items() for _ in range(c - 1)]
    else:
        # The same head noun in two mentions ("a dog next to a dog", "a dog with a dog");
        # a word doubled in a row was counted above and is one mention here.
        heads = Counter(_mention_heads(toks))
        found["doubled_noun"] += [h for h, c in heads.items() for _ in range(c - 1)]
        if len(parts) > n_objects:
            found["extra_object"] += [" ".join(p) for p in parts[n_objects:]]
    return found


def count_caption_faults(captions: Iterable[str],
                         n_objects: int | Sequence[int | None] | None = None,
                         max_examples: int = 5) -> dict:
    """Counts article, doubled-noun and trailing-word faults over captions.

    Args:
        captions: the captions (as the decoder wrote them, or references).
        n_objects: how many objects each picture holds: one int for all, one per caption
            (None where unknown), or None when unknown for all. With it, a head noun named
            in two phrases and phrases beyond the object count are faults too (see the
            module docstring).
        max_examples: how many example fragments to keep per kind.

    Returns:
        ``{"captions": n, "with_fault": n, "article": n, "doubled_noun": n, "trailing": n,
        "extra_object": n, "faults": article + doubled_noun + trailing,
        "examples": {kind: [(caption, fragment), ...]}}``.

    Raises:
        ValueError: if ``n_objects`` is a sequence of another length than ``captions``, or
            holds a count below 1.
    """
    caps = list(captions)
    if n_objects is None or isinstance(n_objects, int):
        counts: list[int | None] = [n_objects] * len(caps)
    else:
        counts = list(n_objects)
        if len(counts) != len(caps):
            raise ValueError(f"n_objects has {len(counts)} entries for {len(caps)} captions")
    if any(c is not None and c < 1 for c in counts):
        low = min(c for c in counts if c is not None)
        raise ValueError(f"n_objects must be >= 1 where known, got {low}")
    result: dict = {k: 0 for k in FAULT_KINDS}
    examples: dict[str, list[tuple[str, str]]] = {k: [] for k in FAULT_KINDS}
    with_fault = 0
    for cap, n in zip(caps, counts):
        found = _faults_of(cap, n)
        if any(found[k] for k in ("article", "doubled_noun", "trailing")):
            with_fault += 1
        for k, frags in found.items():
            result[k] += len(frags)
            examples[k] += [(cap, f) for f in frags][: max_examples - len(examples[k])]
    result.update(captions=len(caps), with_fault=with_fault,
                  faults=result["article"] + result["doubled_noun"] + result["trailing"],
                  examples=examples)
    return result


def tidy_caption(caption: str) -> str:
    """A decoded caption made presentable: cut at an end token, repeated words and dangling
    connectors removed, articles fixed.

    Meant for the last step of decoding; :func:`count_caption_faults` should be run on the
    raw output too, so that the model's own faults stay visible.

    Args:
        caption: a decoded caption.
    """
    toks = _tokens(caption)
    for i, t in enumerate(toks):
        if t in END_TOKENS:
            toks = toks[:i]
            break
    out: list[str] = []
    for t in toks:
        if out and t == out[-1]:
            continue
        out.append(t)
    while out and out[-1] in _DANGLING:
        out.pop()
        if out and out[-1] == "next":
            out.pop()
    return fix_article(" ".join(out))
