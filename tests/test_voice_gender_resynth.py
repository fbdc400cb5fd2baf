"""voice_gender ``--pitch-views``: Praat copies of real clips at another pitch, formants kept,
cached, and only ever on the training side of a run."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from apps.voice_gender import data as vdata
from apps.voice_gender import pipeline, resynth
from apps.voice_gender.features import clip_f0
from rnnkit.errors import DataError


@pytest.fixture(scope="module")
def fillets():
    return vdata.prepare(limit=24)  # 24 real Fillets clips per language (cached)


def _clips(b, split, label):
    return [ex["audio"].astype(np.float32) / 32768.0
            for ex in pipeline.load_examples(b, [split]).as_numpy_iterator()
            if int(ex["label"]) == label]


def _mean_formants(audio):
    import parselmouth

    formant = parselmouth.Sound(audio.astype(np.float64), 16000).to_formant_burg(
        max_number_of_formants=5, maximum_formant=5000)
    pitch = parselmouth.Sound(audio.astype(np.float64), 16000).to_pitch()
    f1, f2 = [], []
    for t in pitch.xs():
        if pitch.get_value_at_time(t) > 0:  # voiced frames only: vowels carry the formants
            f1.append(formant.get_value_at_time(1, t))
            f2.append(formant.get_value_at_time(2, t))
    return np.nanmedian(f1), np.nanmedian(f2)


def test_a_real_man_moved_to_a_womans_pitch_keeps_his_formants(fillets):
    male = vdata.class_names(fillets).index("male")
    clip = max(_clips(fillets, "cs", male), key=len)  # the longest: the most vowels
    before = float(clip_f0(clip))
    assert 70 < before < 170, before
    moved = resynth.change_pitch(clip, 240.0)
    assert moved is not None and moved.shape == clip.shape and moved.dtype == np.float32
    after = float(clip_f0(moved))
    assert abs(after - 240.0) < 0.15 * 240.0, (before, after)
    (f1, f2), (g1, g2) = _mean_formants(clip), _mean_formants(moved)
    assert abs(g1 - f1) < 0.15 * f1 and abs(g2 - f2) < 0.15 * f2, ((f1, f2), (g1, g2))


def test_silence_has_no_copy_and_bad_input_is_refused():
    assert resynth.change_pitch(np.zeros(16000, np.float32), 200.0) is None
    with pytest.raises(DataError, match="non-empty 1-D"):
        resynth.change_pitch(np.zeros(0, np.float32), 200.0)
    with pytest.raises(DataError, match="non-empty 1-D"):
        resynth.change_pitch(np.zeros((2, 100), np.float32), 200.0)


def test_copies_are_cached_and_seeded_per_clip(fillets):
    first = resynth.build_split(fillets, "nl", seed=5)
    stamp = first.stat().st_mtime_ns
    assert resynth.build_split(fillets, "nl", seed=5) == first
    assert first.stat().st_mtime_ns == stamp  # read from the cache, not made again
    assert resynth.cache_folder(fillets.builder_config.name, 6) != first.parent
    stored = [ex["path"].decode() for ex in pipeline.load_examples(fillets, ["nl"]).as_numpy_iterator()]
    with np.load(first) as z:
        assert list(z["path"]) == stored  # one entry per clip, in the stored order
        assert z["audio"].dtype == np.int16 and z["ends"][-1] == len(z["audio"])
        lengths = np.diff(np.concatenate([[0], z["ends"]]))
    assert (lengths > 0).sum() > 20  # nearly every real line has voiced speech to move
    target = resynth._target("some/clip.ogg", seed=5)
    assert resynth.PITCH_RANGE_HZ[0] <= target <= resynth.PITCH_RANGE_HZ[1]
    assert target == resynth._target("some/clip.ogg", seed=5)
    assert target != resynth._target("other/clip.ogg", seed=5)


def test_a_stale_cache_out_of_step_with_its_dataset_fails(fillets, tmp_path, monkeypatch):
    good = resynth.build_split(fillets, "cs", seed=5)
    with np.load(good) as z:
        audio, ends, paths = z["audio"], z["ends"], z["path"]
    stale = tmp_path / "cs.npz"
    np.savez(stale, audio=audio, ends=ends, path=paths[::-1])  # the clips in another order
    monkeypatch.setattr(resynth, "build_split", lambda b, split, seed: stale)
    with pytest.raises(Exception, match="out of step"):
        list(resynth.paired(fillets, ["cs"], seed=5).as_numpy_iterator())


def test_copies_ride_with_the_training_side_only(fillets):
    fold = next(f for f in pipeline.folds_for(fillets) if f["name"] == "cs_to_nl")
    plain_train, plain_val = pipeline.fold_examples(fillets, fold)
    train, val = pipeline.fold_examples(fillets, fold, pitch=True, seed=5)
    train_rows = list(train.as_numpy_iterator())
    assert [ex["path"] for ex in train_rows] == [ex["path"] for ex in plain_train.as_numpy_iterator()]
    val_rows = list(val.as_numpy_iterator())
    assert "pitch_audio" not in val_rows[0]  # early stopping hears real recordings only
    assert [ex["path"] for ex in val_rows] == [ex["path"] for ex in plain_val.as_numpy_iterator()]
    for ex in train_rows:
        copy = ex["pitch_audio"]
        assert len(copy) in (0, len(ex["audio"]))
    moved = [ex for ex in train_rows if len(ex["pitch_audio"])]
    assert len(moved) > 0.8 * len(train_rows)
    # A copy is its own clip moved, not another clip: same length, different samples.
    assert all(not np.array_equal(ex["pitch_audio"], ex["audio"]) for ex in moved)


def test_views_start_from_the_copy_at_the_asked_share(monkeypatch):
    # Each clip is +0.5 and its copy -0.5, and the channel views are switched off, so a
    # view's sign says where it started.
    monkeypatch.setattr(pipeline, "augment", lambda audio, seed, max_len: audio)
    rows = [(np.full(1600, 16384, np.int16), i % 2, f"s{i % 5}", np.full(1600, -16384, np.int16))
            for i in range(64)]
    rows[0] = rows[0][:3] + (np.zeros(0, np.int16),)  # no copy: always heard as itself
    ds = tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=(
        tf.TensorSpec([None], tf.int16), tf.TensorSpec([], tf.int64),
        tf.TensorSpec([], tf.string), tf.TensorSpec([None], tf.int16)))

    def signs(prob):
        out = []
        for _ in range(4):  # four epochs: the choice is drawn again for every view
            for inputs, _, _ in pipeline.train_dataset(ds, 8, seed=3, weights={}, pitch_prob=prob):
                out += list(np.sign(inputs["waveform"].numpy()[:, 0]))
        return np.array(out)

    assert (signs(0.0) > 0).all()
    share = np.mean(signs(0.5) < 0)
    assert 0.38 < share < 0.62, share
    assert np.mean(signs(1.0) < 0) == 63 / 64


@pytest.mark.slow
def test_train_with_pitch_copies_and_a_band_through_the_cli(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "apps.voice_gender", *args], cwd=repo,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                              capture_output=True, text=True, timeout=600, check=False)

    bad = cli("train", "--pitch-prob", "1.5")
    assert bad.returncode == 2 and "--pitch-prob: must be from 0 to 1, got 1.5" in bad.stderr
    bad = cli("train", "--fmax", "20000")  # the other bounded flag shares the parser
    assert bad.returncode == 2 and "--fmax: must be from 1000 to 8000 Hz, got 20000" in bad.stderr
    bad = cli("train", "--fmin", "2000")
    assert bad.returncode == 2 and "--fmin: must be from 0 to 1000 Hz, got 2000" in bad.stderr
    bad = cli("train", "--pitch-prob", "half")
    assert bad.returncode == 2 and "--pitch-prob: not a number: 'half'" in bad.stderr
    r = cli("train", "--data", "fillets", "--limit", "24", "--epochs", "1", "--pitch-prob", "0.5",
            "--fmin", "300", "--fmax", "3400", "--no-extra-voices",
            "--output", str(tmp_path / "run"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "50% of views from pitch copies" in r.stdout
    summary = json.loads((tmp_path / "run" / "run.json").read_text())["train"]
    assert summary["recipe"]["pitch_prob"] == 0.5
    assert summary["recipe"]["fmin"] == 300 and summary["recipe"]["fmax"] == 3400
    assert (tmp_path / "run" / "model.keras").is_file()
    import keras

    import apps.voice_gender.model  # noqa: F401  (registers the layers)
    front = keras.models.load_model(tmp_path / "run" / "model.keras").get_layer("log_mel")
    assert (front.cfg.fmin, front.cfg.fmax) == (300.0, 3400.0)
