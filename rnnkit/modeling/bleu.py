"""Corpus BLEU and chrF on sacrebleu, for every app that scores generated text.

References come one per hypothesis (a list of strings) or several per hypothesis (a list
of lists, of any lengths). sacrebleu wants one list per reference *stream*, so a
hypothesis with fewer references than the longest list repeats its first reference in the
missing streams: a repeated reference adds no n-gram the first did not already allow, so
the score is the same as with the shorter list. Scores use sacrebleu's defaults (13a
tokenisation, exponential smoothing, no effective order) and are rounded to 2 decimals,
the precision sacrebleu reports.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["bleu_by_order", "corpus_bleu", "corpus_chrf", "reference_streams",
           "translation_scores"]


def reference_streams(hypotheses: Sequence[str],
                      references: Sequence[str] | Sequence[Sequence[str]]) -> list[list[str]]:
    """sacrebleu's reference streams for ``references`` (see the module docstring).

    Args:
        hypotheses: the generated texts (only their count is used).
        references: one string, or a non-empty list of strings, per hypothesis.

    Raises:
        ValueError: when the counts differ, there is nothing to score, or a hypothesis
            has no reference.
    """
    if not hypotheses:
        raise ValueError("no hypotheses to score")
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    empty = [i for i, r in enumerate(refs) if not r]
    if empty:
        raise ValueError(f"hypothesis {empty[0]} has no reference")
    n_streams = max(len(r) for r in refs)
    return [[r[k] if k < len(r) else r[0] for r in refs] for k in range(n_streams)]


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]],
                max_order: int = 4, lowercase: bool = False) -> float:
    """Corpus BLEU (0-100) of ``hypotheses``, n-grams up to ``max_order``.

    Args:
        hypotheses: generated texts.
        references: one string or a list of strings per hypothesis.
        max_order: the longest n-gram counted (BLEU-1 .. BLEU-4 are 1 .. 4).
        lowercase: compare case-insensitively.
    """
    from sacrebleu.metrics import BLEU

    streams = reference_streams(hypotheses, references)
    bleu = BLEU(max_ngram_order=int(max_order), effective_order=False, lowercase=lowercase)
    return round(float(bleu.corpus_score(list(hypotheses), streams).score), 2)


def corpus_chrf(hypotheses: Sequence[str],
                references: Sequence[str] | Sequence[Sequence[str]]) -> float:
    """Corpus chrF (0-100, sacrebleu's character 6-grams, beta 2) of ``hypotheses``.

    Args:
        hypotheses: generated texts.
        references: one string or a list of strings per hypothesis.
    """
    from sacrebleu.metrics import CHRF

    streams = reference_streams(hypotheses, references)
    return round(float(CHRF().corpus_score(list(hypotheses), streams).score), 2)


def bleu_by_order(hypotheses: Sequence[str],
                  references: Sequence[str] | Sequence[Sequence[str]],
                  orders: Sequence[int] = (1, 2, 3, 4)) -> dict[str, float]:
    """``{"bleu1": .., "bleu4": ..}``: corpus BLEU for each longest n-gram in ``orders``.

    Args:
        hypotheses: generated texts.
        references: one string or a list of strings per hypothesis.
        orders: the ``max_order`` values to report.
    """
    return {f"bleu{n}": corpus_bleu(hypotheses, references, max_order=n) for n in orders}


def translation_scores(hypotheses: Sequence[str],
                       references: Sequence[str] | Sequence[Sequence[str]]) -> dict[str, float]:
    """The usual machine-translation trio: cased BLEU, lowercased BLEU and chrF.

    Args:
        hypotheses: generated texts.
        references: one string or a list of strings per hypothesis.
    """
    return {"bleu_cased": corpus_bleu(hypotheses, references),
            "bleu_lowercased": corpus_bleu(hypotheses, references, lowercase=True),
            "chrf": corpus_chrf(hypotheses, references)}
