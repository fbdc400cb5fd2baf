"""voice_gender training views and clip pitch: the per-clip F0 estimate, the default
channel views (pitch kept within the +-8 % speed change), the telephone channel and the
padded training batches.

No model is trained here: these are the signal-processing pieces, checked on harmonic tones
of known F0 and on real Fillets speech.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from apps.voice_gender import data as vdata
from apps.voice_gender.augment import TELEPHONE_BAND, augment, telephone
from apps.voice_gender.features import clip_f0
from apps.voice_gender.pipeline import loss_weights, train_dataset
from rnnkit.errors import DataError

SR = 16_000


def harmonic_tone(f0: float, seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A voiced-like tone: harmonics of ``f0`` up to 7 kHz, 1/k amplitudes, random phases."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    ks = [k for k in range(1, 60) if k * f0 < 7000]
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in ks)
    return (0.1 * x).astype(np.float32)


@pytest.mark.parametrize("f0", [90.0, 130.0, 210.0, 250.0])
def test_clip_f0_of_harmonic_tones(f0):
    assert float(clip_f0(harmonic_tone(f0))) == pytest.approx(f0, rel=0.03)


def test_clip_f0_is_zero_without_voice():
    noise = np.random.default_rng(1).normal(0, 0.1, SR).astype(np.float32)
    assert float(clip_f0(noise)) == 0.0
    assert float(clip_f0(np.zeros(SR, np.float32))) == 0.0
    assert float(clip_f0(np.zeros(100, np.float32))) == 0.0  # shorter than one frame


def _view_f0s(x: np.ndarray, n: int = 24) -> np.ndarray:
    fn = tf.function(lambda a, s: augment(a, s, 4 * SR))
    return np.array([float(clip_f0(fn(x, tf.constant([3, i], tf.int64)))) for i in range(n)])


def test_augment_keeps_the_pitch_near():
    """The default views change speed and pitch by at most 8 % (noise and band limits of
    some views may hide the pitch: those views measure 0 and are ignored)."""
    x = harmonic_tone(120.0, seconds=3.0)
    f0s = _view_f0s(x)
    voiced = f0s[f0s > 0]
    assert len(voiced) >= 18
    assert np.all(np.abs(voiced / 120.0 - 1) < 0.12), voiced  # only the +-8 % speed change


def test_augment_is_seeded():
    """A view is a function of (clip, seed): the training recipe is reproducible."""
    x = tf.constant(harmonic_tone(150.0, seconds=3.0))
    seed = tf.constant([1337, 5], tf.int64)
    np.testing.assert_array_equal(augment(x, seed, 4 * SR).numpy(), augment(x, seed, 4 * SR).numpy())
    other = augment(x, tf.constant([1337, 6], tf.int64), 4 * SR).numpy()
    first = augment(x, seed, 4 * SR).numpy()
    assert other.shape != first.shape or not np.array_equal(other, first)


def test_telephone_keeps_only_the_band():
    x = harmonic_tone(110.0)
    y = telephone(x).numpy()
    assert y.shape == x.shape
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / SR)
    low, high = TELEPHONE_BAND
    outside = spec[(f < low - 5) | (f > high + 5)].sum() / spec.sum()
    assert outside < 1e-6
    inside = (f >= low) & (f <= high)
    ref = np.abs(np.fft.rfft(x)) ** 2
    np.testing.assert_allclose(spec[inside].sum(), ref[inside].sum(), rtol=1e-3)


def test_train_dataset_yields_padded_batches():
    clips = [harmonic_tone(f, seconds=s, seed=i) for i, (f, s) in
             enumerate([(210, 1.0), (120, 2.5), (230, 5.0), (110, 0.6)])]
    labels = [0, 1, 0, 1]
    speakers = ["a", "b", "c", "b"]
    ds = tf.data.Dataset.from_generator(
        lambda: ((vdata.to_int16(c), y, s) for c, y, s in zip(clips, labels, speakers)),
        output_signature=(tf.TensorSpec([None], tf.int16), tf.TensorSpec([], tf.int64),
                          tf.TensorSpec([], tf.string)))
    # Speaker "c" has no key: it weighs 1.
    batches = list(train_dataset(ds, 2, seed=1, weights={"0\ta": 2.0, "1\tb": 0.5}))
    assert len(batches) == 2
    seen = []
    for inputs, label, weight in batches:
        wave, length = inputs["waveform"].numpy(), inputs["length"].numpy()
        assert wave.shape[0] == 2 and np.all(length <= wave.shape[1])
        assert np.all(length <= 4 * SR) and np.all(np.isfinite(wave))
        assert np.all(np.abs(wave) <= 1.0)
        seen.extend(zip(label.numpy().tolist(), weight.numpy().tolist()))
    assert sorted(seen) == [(0, 1.0), (0, 2.0), (1, 0.5), (1, 0.5)]


def test_loss_weights_balance_classes_and_speakers():
    # Class 0: speaker a 6 clips, b 2 clips; class 1: speaker c 4 clips.
    labels = np.array([0] * 8 + [1] * 4)
    speakers = ["a"] * 6 + ["b"] * 2 + ["c"] * 4
    by_clip = loss_weights(labels, speakers, 2, by_speaker=False)
    assert by_clip == {"0\ta": 0.75, "0\tb": 0.75, "1\tc": 1.5}
    by_speaker = loss_weights(labels, speakers, 2, by_speaker=True)
    assert by_speaker == {"0\ta": 0.5, "0\tb": 1.5, "1\tc": 1.5}
    for weights in (by_clip, by_speaker):
        per_clip = np.array([weights[f"{y}\t{s}"] for y, s in zip(labels, speakers)])
        assert per_clip.mean() == pytest.approx(1.0)
        # Each class carries half of the total weight.
        assert per_clip[labels == 0].sum() == pytest.approx(per_clip[labels == 1].sum())
    with pytest.raises(DataError, match="one speaker per clip"):
        loss_weights(labels, speakers[:-1], 2, by_speaker=True)


def test_clip_f0_on_real_speech():
    """Real Fillets lines of each actor: the clip F0 is an adult speaking pitch."""
    clips = vdata.fillets_clips(vdata.fetch_fillets())
    picks = [next(c for c in clips if c.group == g and c.label == lab)
             for g, lab in (("cs", "female"), ("cs", "male"), ("nl", "female"), ("nl", "male"))]
    for clip in picks:
        f0 = float(clip_f0(vdata.load_audio(clip.path)))
        assert 90 < f0 < 320, (clip.path, f0)
