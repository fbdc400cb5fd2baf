"""Captioning data: the Tux Paint stamps, their captions and the stamp-disjoint split.

Debian's ``tuxpaint-stamps-default`` ships clip-art and photo cut-outs (RGBA PNG) next to a
``NAME.txt`` whose first line is a human-written English caption. This module reads them
(:func:`list_stamps`), turns a caption into the phrase the captioner learns ("A brown hen."
-> "a brown hen") and its head noun, and splits the stamps (:func:`split_stamps`). The
pictures built from them are :mod:`.tuxpaint`'s (composited by :mod:`.compositing`); the
user formats (Flickr8k, COCO) and the ``--data`` dispatch are :mod:`.formats`'.

Letters, coins and signs are dropped (``symbols/alphabets``: letters and American Sign
Language hand signs; ``symbols/money``: coins and currency signs; ``symbols/math``: digits
and operators). Their captions name *which glyph or denomination* it is ("The letter p.",
"A European coin of 50 cents") -- a reading task that ImageNet features do not encode --
they come in near-identical variants (filled/outlined, upper/lower case, the same coin in
three currencies) that would leak across any split, and at about 210 of 785 images their
templated captions would dominate both training and BLEU.

Split: stamps with identical captions form one group (the white and black chess rook).
Test and validation stamps are drawn only from *head nouns* that at least two groups share
(a new picture of a known thing: "a red apple" in test, "a green apple" in training), so
the head-noun accuracy measures recognition, not guessing a word never seen. No test
stamp appears in any training picture, single or scene; test scenes are built only from
test stamps.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from rnnkit.errors import DataError

# The picture size and the compositor are read from here by the emoji and SVG stamp
# sources, which build Stamp records of their own.
from .compositing import IMAGE_SIZE, compose

__all__ = [
    "EXCLUDED_PREFIXES", "IMAGE_SIZE", "ING_NOUNS", "MAX_CAPTION_WORDS", "SCENE_MAX_WORDS", "Stamp",
    "caption_phrase", "compose", "compose_scene_caption", "head_noun", "list_stamps",
    "noun_matches", "scene_parts", "split_head", "split_stamps", "stamps_root", "tokenize",
]

STAMPS_PACKAGE = "tuxpaint-stamps-default"
STAMPS_SUBDIR = "usr/share/tuxpaint/stamps"
# Stamp folders whose pictures are glyphs to read rather than things to name (see module doc).
EXCLUDED_PREFIXES = ("symbols/alphabets/", "symbols/money/", "symbols/math/")
# Scenes use stamps whose caption is a short noun phrase, so composed captions stay readable.
SCENE_MAX_WORDS = 5
MAX_CAPTION_WORDS = 20

# Words that end the head noun phrase of a caption ("a spider dancing with a fly" -> spider;
# the prepositions of place come from the emoji captions: "the sun behind a cloud").
_HEAD_STOP = frozenset({
    "with", "of", "in", "on", "from", "like", "is", "are", "called", "that", "and", "for",
    "at", "to", "who", "which", "by", "or", "has", "have", "carry", "carries", "gets", "can",
    "was", "were", "made", "next", "also", "used", "means", "stands", "over", "under",
    "behind", "near", "beside", "into",
})
# Nouns ending in -ing, which the head-noun rule must not take for a participle
# ("a christmas pudding", "a railroad crossing", "a hot spring").
ING_NOUNS = frozenset({
    "spring", "string", "ring", "king", "wing", "swing", "building", "ceiling", "painting",
    "pudding", "wedding", "dumpling", "earring", "sling", "icing", "stuffing", "seedling",
    "duckling", "sapling", "lightning", "clothing", "filling", "ping", "awning", "bowling",
    "sewing", "shopping", "clearing", "crossing", "railing", "stocking", "darling",
})
# "-ing" words that name a kind of thing when a noun follows ("a sailing ship", "a racing
# car"); after a noun they would otherwise read as a clause ("an old chinese sailing ship").
ING_MODIFIERS = frozenset({
    "sailing", "racing", "fishing", "fighting", "frying", "rolling", "washing", "swimming",
    "sleeping", "walking", "diving", "dining", "baking", "watering", "measuring", "wishing",
})
_DETERMINERS = frozenset({"a", "an", "the", "some", "two", "three"})
# The rule the held-out split was drawn with (before the "-ing" fix): kept only as the
# split's grouping key, so the split and every figure measured on it stay comparable.
_SPLIT_HEAD_STOP = frozenset(_HEAD_STOP - {"over", "under", "behind", "near", "beside", "into"})


# ---------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------

def caption_phrase(text: str) -> str:
    """The first sentence of a Tux Paint caption, lower-cased, without final punctuation.

    Args:
        text: the first line of a stamp's ``NAME.txt``.
    """
    t = (text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", "")
         .replace("\u201d", "").replace('"', ""))
    first = re.split(r"(?<=[.!?])\s+|\s*\u2014\s*|\s*:\s+|;\s*", t.strip())[0]
    first = first.strip().rstrip(".!?,").strip().lower()
    return " ".join(tokenize(first))


def tokenize(text: str) -> list[str]:
    """Word tokens of a caption: lower-case words, numbers and commas (kept as a token)."""
    return re.findall(r"[a-z0-9]+(?:['\-][a-z0-9]+)*|,", text.lower())


def starts_with_determiner(caption: str) -> bool:
    """Whether a caption opens with a determiner ("a dog", "the treble clef", "two
    apples"), as a noun phrase a person would write does; "truck" does not."""
    words = tokenize(caption)
    return bool(words) and words[0] in _DETERMINERS


def head_noun(caption: str) -> str | None:
    """A simple head-noun heuristic: the last content word before the first modifier or
    clause.

    "a spider dancing with a fly" -> "spider"; "a bunch of grapes" -> "bunch";
    "the treble clef" -> "clef". An "-ing" word starts a clause only after a content word
    and when it is not a noun of its own (:data:`ING_NOUNS`): "a sleeping capybara" ->
    "capybara", "a christmas pudding is eaten ..." -> "pudding", "a railroad crossing" ->
    "crossing"; a few "-ing" words are kinds of things before a noun
    (:data:`ING_MODIFIERS`: "an old chinese sailing ship" -> "ship"). Used for the head-noun accuracy and the fault counter.

    Args:
        caption: a (single-object) caption.
    """
    words = tokenize(caption)
    kept: list[str] = []
    for i, w in enumerate(words):
        if w == "," or (i > 0 and w in _HEAD_STOP):
            break
        modifier = (w in ING_MODIFIERS and i + 1 < len(words)
                    and words[i + 1] not in _HEAD_STOP and words[i + 1] != ",")
        if (i > 0 and w.endswith("ing") and len(w) > 5 and w not in ING_NOUNS
                and not modifier and kept and kept[-1] not in _DETERMINERS):
            break
        kept.append(w)
    content = [w for w in kept if w not in _DETERMINERS]
    return content[-1] if content else None


def split_head(caption: str) -> str | None:
    """The grouping key of :func:`split_stamps`: the head-noun rule the held-out split was
    drawn with, which took every "-ing" word after the first for a clause ("a sleeping
    capybara" -> "a"). Frozen so that the split, and every figure measured on it, stays
    the same; use :func:`head_noun` for anything else.

    Args:
        caption: a stamp's caption.
    """
    words = tokenize(caption)
    kept: list[str] = []
    for i, w in enumerate(words):
        if w == "," or (i > 0 and (w in _SPLIT_HEAD_STOP or (w.endswith("ing") and len(w) > 5))):
            break
        kept.append(w)
    return kept[-1] if kept else None


def noun_matches(head: str, caption: str) -> bool:
    """True when ``head`` (or its singular/plural) is a word of ``caption``."""
    words = set(tokenize(caption))
    variants = {head, head + "s", head + "es", head.removesuffix("s")}
    return bool(words & variants)


def compose_scene_caption(phrases: Sequence[str]) -> str:
    """A scene's caption from its stamps' phrases, in left-to-right order.

    Two stamps: "A next to B"; three: "A , B and C" (the comma is a token of its own).

    Args:
        phrases: two or three single-stamp phrases, left to right.
    """
    if len(phrases) == 2:
        return f"{phrases[0]} next to {phrases[1]}"
    if len(phrases) == 3:
        return f"{phrases[0]} , {phrases[1]} and {phrases[2]}"
    raise ValueError(f"scenes have 2 or 3 stamps, got {len(phrases)}")


def scene_parts(caption: str) -> list[str]:
    """Split a composed scene caption back into its stamp phrases (left to right).

    The inverse of :func:`compose_scene_caption`.

    Args:
        caption: a scene caption ("a pig , a tent and a red apple").
    """
    if " next to " in caption:
        return caption.split(" next to ", 1)
    first, _, rest = caption.partition(" , ")
    second, _, third = rest.rpartition(" and ")
    return [first, second, third] if second else [first, rest]


# ---------------------------------------------------------------------------------------
# Stamps
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Stamp:
    """One captioned Tux Paint stamp.

    Attributes:
        id: path relative to the stamps folder, without extension ("animals/birds/toucan").
        png: absolute path of the RGBA picture.
        caption: the phrase (first sentence, lower-case).
        head: its head noun.
    """

    id: str
    png: str
    caption: str
    head: str


def stamps_root() -> Path:
    """Fetches (once, cached) and returns the folder holding the Tux Paint stamps."""
    from rnnkit import fetch

    root = fetch.apt_package(STAMPS_PACKAGE) / STAMPS_SUBDIR
    if not root.is_dir():
        raise DataError(f"{STAMPS_PACKAGE} has no {STAMPS_SUBDIR} folder at {root}")
    return root


def list_stamps(root: str | os.PathLike[str]) -> tuple[list[Stamp], dict[str, int]]:
    """Every usable captioned PNG stamp under ``root``, and counts of what was dropped.

    Args:
        root: the ``usr/share/tuxpaint/stamps`` folder.

    Returns:
        (stamps sorted by id, {"svg_only": n, "letters_coins_signs": n, "long_caption": n}).
    """
    root = Path(root)
    stamps, dropped = [], {"svg_only": 0, "letters_coins_signs": 0, "long_caption": 0,
                           "no_caption": 0}
    for txt in sorted(glob.glob(str(root / "**" / "*.txt"), recursive=True)):
        rel = os.path.relpath(txt, root)[:-4].replace(os.sep, "/")
        png = txt[:-4] + ".png"
        if not os.path.exists(png):
            dropped["svg_only"] += 1
            continue
        if rel.startswith(EXCLUDED_PREFIXES):
            dropped["letters_coins_signs"] += 1
            continue
        with open(txt, encoding="utf-8", errors="replace") as f:
            first = f.readline().strip()
        phrase = caption_phrase(first)
        head = head_noun(phrase)
        if not phrase or head is None:
            dropped["no_caption"] += 1
            continue
        if len(phrase.split()) > MAX_CAPTION_WORDS:
            dropped["long_caption"] += 1
            continue
        stamps.append(Stamp(rel, png, phrase, head))
    return stamps, dropped


def split_stamps(stamps: Sequence[Stamp], seed: int, test_fraction: float = 0.6,
                 val_fraction: float = 0.25) -> dict[str, list[Stamp]]:
    """Stamp-disjoint train/validation/test split (see the module docstring).

    Groups are keyed by :func:`split_head` (the rule the split was first drawn with), not
    by ``Stamp.head``. For each head noun shared by at least two caption groups, one group (two when it has
    four or more) goes to test with probability ``test_fraction``, else to validation with
    probability ``val_fraction``; at least two groups of the noun always stay in training
    when it has four, one when it has two or three. Everything else is training.

    Args:
        stamps: the stamps.
        seed: the random seed.
        test_fraction: share of shared head nouns that give one group to test.
        val_fraction: share of shared head nouns that give one group to validation.
    """
    rng = random.Random(seed)
    groups: dict[str, list[Stamp]] = defaultdict(list)
    for s in stamps:
        groups[s.caption].append(s)
    by_head: dict[str, list[str]] = defaultdict(list)
    for cap, members in sorted(groups.items()):
        by_head[split_head(cap) or ""].append(cap)
    where = {cap: "train" for cap in groups}
    for head in sorted(by_head):
        caps = by_head[head]
        if len(caps) < 2:
            continue
        r = rng.random()
        # Nouns with many groups (flower, truck, apple) can spare two for held-out use.
        picks = rng.sample(caps, 2 if len(caps) >= 4 else 1)
        for pick in picks:
            if r < test_fraction:
                where[pick] = "test"
            elif r < test_fraction + val_fraction:
                where[pick] = "validation"
    out: dict[str, list[Stamp]] = {"train": [], "validation": [], "test": []}
    for cap, members in groups.items():
        out[where[cap]].extend(members)
    for k in out:
        out[k].sort(key=lambda s: s.id)
    return out
