"""voice_gender grouped folds: speaker-disjoint, every speaker tested once, balanced."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import pytest

from apps.voice_gender import folds as vfolds
from apps.voice_gender.speakers import SPEAKERS


@dataclass(frozen=True)
class Spk:
    id: str
    sex: str
    source: str
    group: str


def _synthetic(n_per_source: int = 6) -> list[Spk]:
    out = []
    for source in ("a", "b", "c"):
        for i in range(n_per_source):
            sex = "female" if i % 2 else "male"
            out.append(Spk(f"{source}{i}", sex, source, f"{source}{i}"))
    return out


@pytest.mark.parametrize("k", [2, 3, 4, 5])
@pytest.mark.parametrize("seed", [0, 1337])
def test_real_speakers_every_one_tested_once_and_groups_kept(k, seed):
    folds = vfolds.grouped_folds(SPEAKERS, k, seed)
    assert len(folds) == k
    tested = Counter(s for f in folds for s in f.test)
    assert set(tested) == {s.id for s in SPEAKERS}
    assert set(tested.values()) == {1}
    group_of = {s.id: s.group for s in SPEAKERS}
    for f in folds:
        assert not set(f.test) & set(f.train)
        assert set(f.test) | set(f.train) == {s.id for s in SPEAKERS}
        # A group (e.g. a whole game cast, one voice possibly behind several characters)
        # never straddles test and train.
        assert not {group_of[s] for s in f.test} & {group_of[s] for s in f.train}


def test_real_speakers_every_fold_tests_both_sexes():
    # Six groups hold a female speaker, so up to six folds can each test both sexes.
    for k in (2, 3, 4, 5, 6):
        by_id = {s.id: s for s in SPEAKERS}
        for f in vfolds.grouped_folds(SPEAKERS, k, 1337):
            assert {by_id[s].sex for s in f.test} == {"female", "male"}, (k, f)


def test_balanced_by_sex_and_source_on_single_speaker_groups():
    speakers = _synthetic(6)  # 18 speakers, 3 sources, 9 female / 9 male
    by_id = {s.id: s for s in speakers}
    for seed in range(5):
        folds = vfolds.grouped_folds(speakers, 3, seed)
        for f in folds:
            sex = Counter(by_id[s].sex for s in f.test)
            src = Counter(by_id[s].source for s in f.test)
            assert sex == {"female": 3, "male": 3}, (seed, f)
            assert src == {"a": 2, "b": 2, "c": 2}, (seed, f)


def test_same_seed_same_folds_other_seed_may_differ():
    speakers = _synthetic(6)
    assert vfolds.grouped_folds(speakers, 3, 7) == vfolds.grouped_folds(speakers, 3, 7)
    assert any(vfolds.grouped_folds(speakers, 3, s) != vfolds.grouped_folds(speakers, 3, 7)
               for s in range(8))


def test_a_leaked_speaker_fails_the_check():
    folds = vfolds.grouped_folds(SPEAKERS, 4, 1337)
    victim = "klettres-en"  # a group of its own: only the speaker-level checks can fire
    home = next(i for i, f in enumerate(folds) if victim in f.test)
    other = (home + 1) % len(folds)

    def with_fold(i, fold):
        return [fold if j == i else f for j, f in enumerate(folds)]

    # The speaker also appears on the training side of its own test fold.
    f = folds[home]
    with pytest.raises(vfolds.FoldLeakError, match=f"{victim}.*both test and train"):
        vfolds.check_folds(with_fold(home, replace(f, train=tuple(sorted(f.train + (victim,))))),
                           SPEAKERS)
    # The speaker is tested in a second fold too.
    f = folds[other]
    twice = replace(f, test=tuple(sorted(f.test + (victim,))),
                    train=tuple(s for s in f.train if s != victim))
    with pytest.raises(vfolds.FoldLeakError, match=f"exactly one fold; {victim}: 2 folds"):
        vfolds.check_folds(with_fold(other, twice), SPEAKERS)
    # The speaker is dropped from a fold altogether.
    dropped = replace(f, train=tuple(s for s in f.train if s != victim))
    with pytest.raises(vfolds.FoldLeakError, match="neither side"):
        vfolds.check_folds(with_fold(other, dropped), SPEAKERS)
    vfolds.check_folds(folds, SPEAKERS)  # the untouched folds pass


def test_a_split_group_fails_the_check():
    # drascula-en-bj and drascula-en-hacker share a group (one cast): moving one of them to
    # another fold's test side leaks the cast's voices even though no speaker id repeats.
    folds = vfolds.grouped_folds(SPEAKERS, 4, 1337)
    home = next(f for f in folds if "drascula-en-bj" in f.test)
    other = next(f for f in folds if "drascula-en-bj" not in f.test)
    moved = []
    for f in folds:
        if f is home:
            f = replace(f, test=tuple(s for s in f.test if s != "drascula-en-bj"),
                        train=tuple(sorted(f.train + ("drascula-en-bj",))))
        elif f is other:
            f = replace(f, test=tuple(sorted(f.test + ("drascula-en-bj",))),
                        train=tuple(s for s in f.train if s != "drascula-en-bj"))
        moved.append(f)
    with pytest.raises(vfolds.FoldLeakError, match="drascula-en.*both sides"):
        vfolds.check_folds(moved, SPEAKERS)


def test_split_clips_follows_the_fold():
    @dataclass(frozen=True)
    class C:
        speaker: str
        n: int

    speakers = _synthetic(4)
    folds = vfolds.grouped_folds(speakers, 2, 0)
    clips = [C(s.id, n) for s in speakers for n in range(3)]
    train, test = vfolds.split_clips(clips, folds[0])
    assert {c.speaker for c in test} == set(folds[0].test)
    assert {c.speaker for c in train} == set(folds[0].train)
    assert len(train) + len(test) == len(clips)
    with pytest.raises(vfolds.FoldLeakError, match="nobody"):
        vfolds.split_clips([C("nobody", 0)], folds[0])


def test_bad_arguments_name_the_problem():
    speakers = _synthetic(2)
    with pytest.raises(ValueError, match="2 <= k <= 6"):
        vfolds.grouped_folds(speakers, 7)
    with pytest.raises(ValueError, match="2 <= k"):
        vfolds.grouped_folds(speakers, 1)
    with pytest.raises(ValueError, match="more than once.*a0"):
        vfolds.grouped_folds(speakers + [speakers[0]], 2)
