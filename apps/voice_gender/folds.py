"""Speaker-disjoint grouped k-fold over the real speakers, balanced by sex and by source.

Every real speaker is in the test side of exactly one fold and in the training side of all
the others. The unit that is assigned is the speaker's ``group`` (speakers who may share a
voice: one game cast without a cast list is one group), so a voice can never be on both sides
of a fold. Groups are placed greedily, the ones holding the scarcer sex first, each into the
fold where it adds least imbalance over the counts of female speakers, male speakers, speakers
of each source, of each (sex, source) pair and speakers in all (sex weighted highest); ties
go to a seeded random fold, so a seed gives the same folds on every machine.

:func:`check_folds` is the guard the evaluation runs before it trains anything: it raises
:class:`FoldLeakError` when a speaker (or a group) is on both sides of a fold, missing from a
fold, or tested in no fold or in more than one.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

SEX_WEIGHT = 4.0  # sex balance matters most: a fold without a female has no balanced accuracy
SOURCE_WEIGHT = 1.0
CELL_WEIGHT = 1.0  # (sex, source) pairs: keeps a source's women and men from bunching up
SIZE_WEIGHT = 0.5


class SpeakerLike(Protocol):
    """What the folds read of a speaker (:class:`apps.voice_gender.speakers.Speaker` fits)."""

    id: str
    sex: str
    source: str
    group: str


class FoldLeakError(ValueError):
    """Folds that are not speaker-disjoint or do not test every speaker exactly once."""


@dataclass(frozen=True)
class Fold:
    """One fold: the speakers held out for testing, and the ones trained on.

    Attributes:
        index: 0-based fold number.
        test: held-out speaker ids, sorted.
        train: training speaker ids, sorted.
    """

    index: int
    test: tuple[str, ...]
    train: tuple[str, ...]


def grouped_folds(speakers: Sequence[SpeakerLike], k: int, seed: int = 1337) -> list[Fold]:
    """Split speakers into ``k`` speaker-disjoint folds balanced by sex and by source.

    Args:
        speakers: the speakers (each with ``id``, ``sex``, ``source``, ``group``).
        k: number of folds, at least 2 and at most the number of groups.
        seed: tie-breaking seed.

    Returns:
        ``k`` folds; fold ``i`` tests its speakers and trains on every other speaker.

    Raises:
        ValueError: duplicate speaker ids, or ``k`` out of range.
    """
    ids = [s.id for s in speakers]
    dup = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dup:
        raise ValueError(f"speaker ids listed more than once: {dup}")
    groups: dict[str, list[SpeakerLike]] = defaultdict(list)
    for s in speakers:
        groups[s.group].append(s)
    if not 2 <= k <= len(groups):
        raise ValueError(f"k={k}: need 2 <= k <= {len(groups)} (the number of speaker groups; "
                         "a group is never split)")

    sex_total = Counter(s.sex for s in speakers)
    source_total = Counter(s.source for s in speakers)
    cell_total = Counter((s.sex, s.source) for s in speakers)
    targets = {**{("sex", x): n / k for x, n in sex_total.items()},
               **{("source", x): n / k for x, n in source_total.items()},
               **{("cell", x): n / k for x, n in cell_total.items()},
               ("size", ""): len(speakers) / k}
    kind_weight = {"sex": SEX_WEIGHT, "source": SOURCE_WEIGHT, "cell": CELL_WEIGHT,
                   "size": SIZE_WEIGHT}
    weights = {key: kind_weight[key[0]] for key in targets}

    def counts(members: Iterable[SpeakerLike]) -> Counter:
        c: Counter = Counter()
        for s in members:
            c["sex", s.sex] += 1
            c["source", s.source] += 1
            c["cell", (s.sex, s.source)] += 1
            c["size", ""] += 1
        return c

    rng = random.Random(seed)
    names = sorted(groups)
    rng.shuffle(names)  # seeded order among otherwise equal groups
    scarce = min(sex_total, key=lambda x: (sex_total[x], x))
    # Scarce-sex groups first (they decide whether every fold can test both sexes), then big
    # groups (hardest to fit), then groups of one composition together (so each (sex, source)
    # cell is dealt round the folds in turn), then the seeded order.
    names.sort(key=lambda g: (-counts(groups[g])["sex", scarce], -len(groups[g]),
                              sorted((s.sex, s.source) for s in groups[g])))

    fold_counts = [Counter() for _ in range(k)]
    members: list[list[str]] = [[] for _ in range(k)]
    for g in names:
        add = counts(groups[g])
        order = list(range(k))
        rng.shuffle(order)
        best = min(order, key=lambda i, add=add: _added_cost(fold_counts[i], add, targets, weights))
        fold_counts[best] += add
        members[best].extend(s.id for s in groups[g])

    all_ids = set(ids)
    folds = [Fold(i, tuple(sorted(m)), tuple(sorted(all_ids - set(m))))
             for i, m in enumerate(members)]
    check_folds(folds, speakers)
    return folds


def _added_cost(current: Counter, add: Counter, targets: dict, weights: dict) -> float:
    # Increase of the weighted squared distance from the per-fold targets if `add` joins.
    total = 0.0
    for key, w in weights.items():
        before = current[key] - targets[key]
        total += w * ((before + add[key]) ** 2 - before ** 2)
    return total


def check_folds(folds: Sequence[Fold], speakers: Sequence[SpeakerLike]) -> None:
    """Raise unless the folds are speaker- and group-disjoint and test every speaker once.

    Args:
        folds: from :func:`grouped_folds` (or anywhere else).
        speakers: the speakers the folds are over.

    Raises:
        FoldLeakError: naming the speaker and fold at fault.
    """
    ids = {s.id for s in speakers}
    group_of = {s.id: s.group for s in speakers}
    tested: Counter = Counter()
    for f in folds:
        test, train = set(f.test), set(f.train)
        both = sorted(test & train)
        if both:
            raise FoldLeakError(f"fold {f.index}: speaker(s) {both} are in both test and train")
        unknown = sorted((test | train) - ids)
        if unknown:
            raise FoldLeakError(f"fold {f.index}: unknown speaker(s) {unknown}")
        missing = sorted(ids - test - train)
        if missing:
            raise FoldLeakError(f"fold {f.index}: speaker(s) {missing} are on neither side")
        shared = sorted({group_of[s] for s in test} & {group_of[s] for s in train})
        if shared:
            raise FoldLeakError(f"fold {f.index}: group(s) {shared} (possibly one voice) are on "
                                "both sides")
        tested.update(test)
    wrong = sorted(s for s in ids if tested[s] != 1)
    if wrong:
        raise FoldLeakError("every speaker must be tested in exactly one fold; "
                            + ", ".join(f"{s}: {tested[s]} folds" for s in wrong))


T = TypeVar("T")


def split_clips(clips: Iterable[T], fold: Fold) -> tuple[list[T], list[T]]:
    """The (train, test) clips of one fold, by each clip's ``speaker`` attribute.

    Args:
        clips: records with a ``speaker`` attribute (e.g. ``sources.Clip``).
        fold: the fold.

    Raises:
        FoldLeakError: a clip's speaker is in neither side of the fold.
    """
    test_ids, train_ids = set(fold.test), set(fold.train)
    train, test = [], []
    for c in clips:
        spk = c.speaker  # type: ignore[attr-defined]
        if spk in test_ids:
            test.append(c)
        elif spk in train_ids:
            train.append(c)
        else:
            raise FoldLeakError(f"fold {fold.index}: clip speaker {spk!r} is in neither side")
    return train, test


def describe(folds: Sequence[Fold], speakers: Sequence[SpeakerLike]) -> str:
    """One line per fold: test speakers by sex and source (for logs and docs).

    Args:
        folds: the folds.
        speakers: the speakers they are over.
    """
    by_id = {s.id: s for s in speakers}
    lines = []
    for f in folds:
        sex = Counter(by_id[s].sex for s in f.test)
        src = Counter(by_id[s].source for s in f.test)
        lines.append(f"fold {f.index}: {len(f.test)} test speakers "
                     f"({sex['female']} female, {sex['male']} male; "
                     + ", ".join(f"{k} {v}" for k, v in sorted(src.items())) + ")")
    return "\n".join(lines)
