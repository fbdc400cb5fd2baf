"""Contrastive probe report: hand-written sentence pairs that differ in polarity.

``probes.tsv`` (next to this file) holds pairs written for this project; the two sentences
of a pair differ in polarity through negation ("not bad"), contrast ("but", "despite",
"although") or an intensified opposite ("highly recommended" / "highly overrated"). The
set is a test-time report printed by ``evaluate``: it is never used to train, tune or
select a model.

Scores: item accuracy (each sentence alone), pair accuracy (both sentences of a pair
right, the strict figure: a model that calls everything negative scores 0 here), and the
same per kind; plus the largest confidence given to any probe sentence (they are all
under 20 words) and how many of the sentences of under ten words get a confidence above
0.99 (the issue's over-confidence check).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnkit.errors import DataError

PROBES_PATH = Path(__file__).with_name("probes.tsv")
KINDS = ("negation", "contrast", "intensifier")
SHORT_WORDS = 10  # "a text of under ten words" (issue 14's over-confidence check)


@dataclass(frozen=True)
class Probe:
    """One probe sentence."""

    pair: int
    kind: str
    label: int
    text: str


def load_probes(path: str | Path = PROBES_PATH) -> list[Probe]:
    """Read and check the probe file: every pair has one negative and one positive sentence.

    Args:
        path: a TSV of ``pair, kind, label, text`` rows; ``#`` lines are comments.

    Raises:
        DataError: naming the line or pair that is malformed.
    """
    path = Path(path)
    probes: list[Probe] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            raise DataError(f"{path.name}:{number}: expected 4 tab-separated fields, "
                            f"got {len(fields)}")
        pair, kind, label, text = fields
        if kind not in KINDS or label not in ("0", "1") or not pair.isdigit() or not text:
            raise DataError(f"{path.name}:{number}: bad row {line!r} (pair id, kind in "
                            f"{KINDS}, label 0/1, text)")
        probes.append(Probe(int(pair), kind, int(label), text.strip()))
    by_pair: dict[int, list[Probe]] = {}
    for probe in probes:
        by_pair.setdefault(probe.pair, []).append(probe)
    for pair, members in by_pair.items():
        if sorted(p.label for p in members) != [0, 1] or len({p.kind for p in members}) != 1:
            raise DataError(f"{path.name}: pair {pair} must be one negative and one positive "
                            "sentence of the same kind")
    return probes


def score_probes(
    probabilities: Sequence[float] | np.ndarray, probes: Sequence[Probe]
) -> dict[str, object]:
    """Score positive-class probabilities given in the order of ``probes``.

    Args:
        probabilities: P(positive) for each probe sentence.
        probes: the probes from :func:`load_probes`.

    Returns:
        ``{"pairs", "item_accuracy", "pair_accuracy", "max_confidence", "short_items",
        "short_over_0_99", "by_kind": {...}, "pairs_wrong": [ids]}``.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.shape != (len(probes),):
        raise ValueError(f"{probs.shape[0] if probs.ndim else 0} probabilities for "
                         f"{len(probes)} probes")
    labels = np.asarray([p.label for p in probes])
    right = (probs >= 0.5).astype(np.int64) == labels
    pair_ids = np.asarray([p.pair for p in probes])
    kinds = np.asarray([p.kind for p in probes])

    def summary(mask: np.ndarray) -> dict[str, float | int]:
        pairs = np.unique(pair_ids[mask])
        pair_right = [bool(right[pair_ids == pid].all()) for pid in pairs]
        return {"pairs": len(pairs), "item_accuracy": float(right[mask].mean()),
                "pair_accuracy": float(np.mean(pair_right))}

    everything = np.ones(len(probes), dtype=bool)
    out: dict[str, object] = dict(summary(everything))
    confidence = np.maximum(probs, 1.0 - probs)
    out["max_confidence"] = float(np.max(confidence))
    short = np.asarray([len(p.text.split()) < SHORT_WORDS for p in probes])
    out["short_items"] = int(short.sum())
    out["short_over_0_99"] = int((confidence[short] > 0.99).sum())
    out["by_kind"] = {kind: summary(kinds == kind) for kind in KINDS if (kinds == kind).any()}
    out["pairs_wrong"] = sorted(int(pid) for pid in np.unique(pair_ids)
                                if not right[pair_ids == pid].all())
    return out


def probe_report(
    predict: Callable[[list[str]], np.ndarray], path: str | Path = PROBES_PATH
) -> dict[str, object]:
    """Load the probes, score them with ``predict`` (texts -> P(positive)) and return the
    report of :func:`score_probes`."""
    probes = load_probes(path)
    return score_probes(predict([p.text for p in probes]), probes)
