"""Repeated words: the check ``evaluate`` prints and the penalty beam search can apply.

A decoder that loses track of where it is in the source says a word again ("move to
move the current position" for "desplazar a la última posición"). Both languages repeat
function words legitimately ("the value of the cell"), so only *content words* count:
lower-cased runs of letters that are not in the small function-word lists below.

The check (:func:`repeated_words`): an output repeats a word the source does not repeat
when some content word occurs ``k >= 2`` times in the output while no content word of the
source occurs ``k`` times. The languages differ, so the source side is compared by counts,
not by word; the same check run on the human references shows its false-alarm level.

The penalty (:func:`penalised_step`): during decoding every hypothesis carries how often
it has emitted each word (case-insensitively); the log-probability of a content word it
has already emitted is lowered by ``penalty`` per earlier emission. Copy ids (``V + j``, a
source word outside the vocabulary) count as content words, one per source position.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from rnnkit import samplers
from rnnkit.modeling.vocabulary import SPECIALS, UNK

__all__ = ["FUNCTION_WORDS", "case_groups", "content_counts", "content_mask", "penalised_step",
           "repeated_words", "repetition_report"]

#: Function words of the two languages (lower case): repeating them is no fault.
FUNCTION_WORDS = frozenset("""
a an the of to in on at by for from with without into onto as and or nor but if then than
that this these those there here it its is are was were be been being has have had do does
did not no can could will would shall should may might must you your yours we our us they
their them he his she her i me my which who whom whose what when where how all any each
both either neither some such only also so very too just more most less least other own
same up down out off over under again further once per via e.g i.e etc
el la los las lo un una unos unas de del al a ante bajo con contra desde en entre hacia
hasta para por según sin sobre tras y e o u ni que se su sus es son está están ser estar
ha han hay como más menos muy ya no sí si este esta estos estas ese esa esos esas aquel
le les me te nos os mi tu cual cuales cuando donde porque pero también cada todo toda
todos todas otro otra otros otras mismo misma
""".split())

_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")


def content_counts(text: str) -> Counter:
    """How often each content word (lower case) occurs in ``text``."""
    words = (w.lower() for w in _WORD.findall(text))
    return Counter(w for w in words if w not in FUNCTION_WORDS and len(w) > 1)


def repeated_words(output: str, source: str) -> list[str]:
    """The content words ``output`` repeats more often than the source repeats any word.

    Returns:
        Sorted words (empty when the output is fine).
    """
    out = content_counts(output)
    most_in_source = max(content_counts(source).values(), default=1)
    return sorted(w for w, k in out.items() if k >= 2 and k > most_in_source)


def repetition_report(outputs: Sequence[str], sources: Sequence[str],
                      examples: int = 5) -> dict:
    """How many outputs repeat a word their source does not repeat, with a few examples.

    Raises:
        ValueError: the lists differ in length.
    """
    if len(outputs) != len(sources):
        raise ValueError(f"{len(outputs)} outputs but {len(sources)} sources")
    faults = [(s, o, repeated_words(o, s)) for o, s in zip(outputs, sources)]
    faults = [f for f in faults if f[2]]
    return {"outputs": len(outputs), "with_repeats": len(faults),
            "examples": [{"source": s, "output": o, "repeated": w}
                         for s, o, w in faults[:examples]]}


def content_mask(target_tokens: Sequence[str]) -> np.ndarray:
    """``[V]`` float32: 1 for the vocabulary entries the penalty applies to (words with a
    letter that are not function words, and ``<unk>``, which is written out as the most
    attended source word), 0 for the other specials, punctuation, numbers and function
    words."""
    mask = np.zeros(len(target_tokens), np.float32)
    for i, token in enumerate(target_tokens):
        low = token.lower()
        if token == SPECIALS[UNK]:
            mask[i] = 1.0
            continue
        if (token.startswith("<") and token.endswith(">")) or low in FUNCTION_WORDS:
            continue
        if _WORD.fullmatch(token) and len(token) > 1:
            mask[i] = 1.0
    return mask


def case_groups(target_tokens: Sequence[str]) -> tuple[np.ndarray, int]:
    """``([V] int32, G)``: the id of each entry's lower-cased form among ``G`` groups, so
    "Default" after "default" counts as a repeat."""
    index: dict[str, int] = {}
    groups = np.array([index.setdefault(t.lower(), len(index)) for t in target_tokens],
                      np.int32)
    return groups, len(index)


def penalised_step(step: Callable, target_tokens: Sequence[str], penalty: float,
                   start_token: int) -> Callable:
    """The translator's step with :func:`rnnkit.samplers.penalise_repeats` on content words,
    counted case-insensitively (:func:`case_groups`).

    Args:
        step: ``(tokens, h, context) -> (log_probs [N, V + S], h, attention [N, S])``.
        target_tokens: the target vocabulary (``V`` entries).
        penalty: log-probability subtracted per earlier emission (``inf``: never repeat).
        start_token: the id fed on the first step (never counted).

    Returns:
        The wrapped step; ``wrapped.initial_state(h0, source_length)`` builds its first
        state (copy ids ``V + j`` count per source position).
    """
    groups, _ = case_groups(target_tokens)
    return samplers.penalise_repeats(step, content_mask(target_tokens), penalty,
                                     start_token, groups=groups)
