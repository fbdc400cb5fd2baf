"""``--data real``: every documented real speaker, split into speaker-disjoint fold splits.

Reads the real packages through the readers (cached after the first fetch), and checks
that the builder rows, the training runs and the per-speaker figures keep each speaker in
exactly one test fold.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

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


def test_default_data_is_every_real_speaker():
    """`make voice-gender` (no flags) trains on the real speakers with the Festival voices
    as extra training speakers; Fillets stays one flag away; user data gets no Festival
    voices unless asked."""
    from apps.voice_gender.app import VoiceGenderApp

    app = VoiceGenderApp()
    run = app.parse(["train"])
    assert run.data == REAL_SPEC and run.epochs == 12
    assert pipeline.extra_voices_wanted(run.data, run.get("extra_voices"))
    assert not pipeline.extra_voices_wanted(run.data, False)
    assert not pipeline.extra_voices_wanted(f"folder:{Path(__file__).parent}", None)
    fillets = app.parse(["train", "--data", "fillets"])
    assert parse_spec(fillets.data)[0] == "fillets"
    assert pipeline.extra_voices_wanted(fillets.data, fillets.get("extra_voices"))


def test_shortest_real_clips_are_classified_unless_nothing_is_voiced(real_rows):
    """Letters, syllables and single words last a second or less: the shortest real clips
    get status ``ok``; ``too_short``/``silent`` only for a clip with no voiced frame.

    The status does not depend on the weights, so an untrained model is enough.
    """
    import soundfile as sf
    import tensorflow as tf

    from apps.voice_gender.features import clip_f0
    from apps.voice_gender.model import build_model, classify

    rows = sorted(real_rows, key=lambda r: (sf.info(str(r.path)).duration, str(r.path)))[:24]
    audio = [data.load_audio(r.path) for r in rows]
    wave = np.zeros((len(audio), max(len(a) for a in audio)), np.float32)
    for i, a in enumerate(audio):
        wave[i, : len(a)] = a
    out = classify(build_model(2, seed=0), tf.constant(wave),
                   tf.constant([len(a) for a in audio], tf.int32))
    status = [s.decode() for s in out["status"].numpy()]
    for row, a, s in zip(rows, audio, status):
        if s != "ok":
            assert float(clip_f0(a)) == 0.0, f"{row.path} ({len(a) / 16000:.2f} s) is voiced: {s}"
    ok = [len(a) / 16000 for a, s in zip(audio, status) if s == "ok"]
    assert len(ok) >= 20, list(zip([str(r.path) for r in rows], status))
    assert min(ok) < 1.0  # sub-second real speech is classified, not refused


def test_a_changed_dataset_retrains_instead_of_reusing_finished_folds():
    # `--data real` names the same spec before and after a reader grows; the built config's
    # name is what changes, and a fold finished on the old clips must not be reused.
    from types import SimpleNamespace

    from apps.voice_gender.train import recipe_of

    run = SimpleNamespace(data="real", limit=None, seed=1337, epochs=12, batch_size=32,
                          fmin=0.0, fmax=4000.0, speaker_balance=False, pitch_prob=0.0)
    old = SimpleNamespace(builder_config=SimpleNamespace(name="real_k5_cap200_seed1337_srcaaaa"))
    new = SimpleNamespace(builder_config=SimpleNamespace(name="real_k5_cap200_seed1337_srcbbbb"))
    assert recipe_of(run, None, old) != recipe_of(run, None, new)
    assert recipe_of(run, None, old) == recipe_of(run, None, old)
    assert recipe_of(run, None, data.builder("real"))["dataset"].startswith("real_k5_cap200_seed1337_src")
