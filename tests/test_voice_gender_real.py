"""``--data real``: every documented real speaker, split into speaker-disjoint fold splits.

Reads the real packages through the readers (cached after the first fetch), and checks
that the builder rows, the training runs and the per-speaker figures keep each speaker in
exactly one test fold.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from apps.voice_gender import data, evaluate, pipeline
from apps.voice_gender.formats import REAL_SPEC, parse_spec


@pytest.fixture(scope="module")
def real_rows():
    return data.real_fold_clips(seed=1337)


def test_real_spec_parses():
    assert parse_spec("real") == (REAL_SPEC, None)


def test_every_speaker_sits_in_exactly_one_fold_split(real_rows):
    splits_of = defaultdict(set)
    for row in real_rows:
        splits_of[row.speaker].add(row.group)
    leaked = {s: g for s, g in splits_of.items() if len(g) != 1}
    assert not leaked, f"speakers in more than one fold split: {leaked}"
    assert {g for gs in splits_of.values() for g in gs} == {
        f"{data.REAL_SPLIT_PREFIX}{i}" for i in range(data.REAL_FOLDS)}


def test_every_fold_split_holds_both_sexes(real_rows):
    labels = defaultdict(set)
    for row in real_rows:
        labels[row.group].add(row.label)
    assert all(v == {"female", "male"} for v in labels.values()), dict(labels)


class _Info:
    def __init__(self, splits):
        self.splits = {s: None for s in splits}


class _Built:
    """The two attributes ``folds_for`` reads of a built dataset."""

    def __init__(self, splits):
        self.info = _Info(splits)


def test_training_runs_never_train_on_their_test_fold():
    splits = [f"{data.REAL_SPLIT_PREFIX}{i}" for i in range(data.REAL_FOLDS)]
    runs = pipeline.folds_for(_Built(splits))
    tested = [r["test"][0] for r in runs if r["test"]]
    assert sorted(tested) == splits  # every fold tested once
    for r in runs:
        assert not set(r["train"]) & set(r["test"])
    final = [r for r in runs if r["name"] == pipeline.FINAL]
    assert len(final) == 1 and final[0]["train"] == splits and not final[0]["test"]


def test_speaker_metrics_score_each_speaker_on_their_own_clips():
    names = ["female", "male"]
    y = np.array([0, 0, 0, 1, 1])
    spk = np.array(["a", "a", "a", "b", "b"], object)
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.1, 0.9], [0.3, 0.7]])
    tel = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.3, 0.7]])
    out = evaluate.speaker_metrics(y, probs, tel, spk, names)
    assert out["a"]["right"] == pytest.approx(2 / 3)
    assert out["a"]["telephone_right"] == 1.0
    assert out["b"]["right"] == 1.0 and out["b"]["telephone_right"] == 0.5
    assert out["a"]["label"] == "female" and out["a"]["clips"] == 3


def test_no_speaker_over_the_cap(real_rows):
    from collections import Counter

    counts = Counter(row.speaker for row in real_rows)
    assert max(counts.values()) <= data.REAL_PER_SPEAKER
    from apps.voice_gender import sources

    # The cap trims clips, never a whole speaker.
    assert set(counts) == {c.speaker for c in sources.real_clips()}
