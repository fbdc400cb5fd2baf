"""voice_gender training views: the per-clip F0, the phase-vocoder pitch shift, the class F0
ranges and the speaker-population augmentation (each clip moved into its class's range).

No model is trained here: these are the signal-processing pieces, checked on harmonic tones
of known F0 and on real Fillets speech.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from apps.voice_gender import data as vdata
from apps.voice_gender.train import (
    SPEAKING_F0_HZ,
    augment,
    augment_population,
    clip_f0,
    f0_ranges_for,
    pitch_shift,
    train_dataset,
)

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


def test_pitch_shift_factor_one_gives_the_signal_back():
    x = harmonic_tone(130.0)
    y = pitch_shift(x, 1.0).numpy()
    assert y.shape == x.shape
    assert np.max(np.abs(y - x)) < 0.05 * np.max(np.abs(x))


@pytest.mark.parametrize("f0,factor", [(130.0, 1.5), (120.0, 0.7), (220.0, 0.75), (100.0, 1.9)])
def test_pitch_shift_moves_f0_and_keeps_duration(f0, factor):
    x = harmonic_tone(f0)
    y = pitch_shift(x, factor).numpy()
    assert y.shape == x.shape  # tempo kept: same number of samples
    assert float(clip_f0(y)) == pytest.approx(f0 * factor, rel=0.03)
    # The level stays about the same (no blow-up or silence from the phase integration).
    ratio = np.sqrt(np.mean(y**2) / np.mean(x**2))
    assert 0.5 < ratio < 2.0


def _envelope_centroid(y: np.ndarray) -> float:
    """Power-weighted mean frequency below 4 kHz: moves with the formants."""
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / SR)
    m = f < 4000
    return float((f[m] * spec[m]).sum() / spec[m].sum())


def test_formant_scale_is_independent_of_pitch():
    """A tone with one resonance (a 'formant' at 1 kHz): ``formant`` moves the resonance and
    leaves F0; ``factor`` moves F0 and, with ``formant=1``, leaves the resonance."""
    rng = np.random.default_rng(2)
    t = np.arange(2 * SR) / SR
    f0 = 120.0
    x = sum(np.exp(-(((k * f0) - 1000.0) / 300.0) ** 2) * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6))
            for k in range(1, 60) if k * f0 < 7000).astype(np.float32)
    base = _envelope_centroid(x)
    up = pitch_shift(x, 1.0, formant=1.2).numpy()
    assert float(clip_f0(up)) == pytest.approx(f0, rel=0.05)
    assert _envelope_centroid(up) / base == pytest.approx(1.2, rel=0.06)
    higher = pitch_shift(x, 1.5, formant=1.0).numpy()
    assert float(clip_f0(higher)) == pytest.approx(1.5 * f0, rel=0.05)
    # 10 %: the resonance is sampled by harmonics 180 Hz apart instead of 120 Hz.
    assert _envelope_centroid(higher) / base == pytest.approx(1.0, rel=0.1)
    both = pitch_shift(x, 1.5).numpy()  # no formant argument: everything moves
    assert _envelope_centroid(both) / base == pytest.approx(1.5, rel=0.06)


def test_pitch_shift_bin_gain_filters_the_band():
    x = harmonic_tone(130.0)
    freqs = np.linspace(0, SR / 2, 257)
    band = ((freqs >= 300) & (freqs <= 3400)).astype(np.float32)
    y = pitch_shift(x, 1.0, tf.constant(band)).numpy()
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / SR)
    outside = spec[(f < 220) | (f > 3600)].sum() / spec.sum()
    assert 10 * np.log10(outside) < -25


def test_f0_ranges_only_for_sexes():
    np.testing.assert_array_equal(f0_ranges_for(["female", "male"]),
                                  [SPEAKING_F0_HZ["female"], SPEAKING_F0_HZ["male"]])
    np.testing.assert_array_equal(f0_ranges_for(["M", "F"]),
                                  [SPEAKING_F0_HZ["male"], SPEAKING_F0_HZ["female"]])
    assert f0_ranges_for(["blackbird", "robin"]) is None
    assert f0_ranges_for(["female", "male", "child"]) is None
    assert f0_ranges_for(["male", "man"]) is None  # two classes of one sex: no ranges
    # The published ranges overlap a little and are ordered (women above men).
    (f_lo, f_hi), (m_lo, m_hi) = SPEAKING_F0_HZ["female"], SPEAKING_F0_HZ["male"]
    assert m_lo < f_lo < m_hi < f_hi


def _view_f0s(x: np.ndarray, f0: float, f0_range, n: int = 24) -> np.ndarray:
    if f0_range is None:  # the default channel views
        fn = tf.function(lambda a, s: augment(a, s, 4 * SR))
    else:
        fn = tf.function(lambda a, s: augment_population(a, s, 4 * SR, f0, f0_range))
    return np.array([float(clip_f0(fn(x, tf.constant([3, i], tf.int64)))) for i in range(n)])


def test_augment_moves_a_low_voice_into_the_female_range():
    """A 120 Hz 'voice' labelled female is heard at female pitches (noise and band limits
    of some views may hide the pitch: those views measure 0 and are ignored)."""
    x = harmonic_tone(120.0, seconds=3.0)
    lo, hi = SPEAKING_F0_HZ["female"]
    f0s = _view_f0s(x, float(clip_f0(x)), tf.constant([lo, hi]))
    voiced = f0s[f0s > 0]
    assert len(voiced) >= 18
    inside = np.mean((voiced > 0.95 * lo) & (voiced < 1.05 * hi))
    assert inside >= 0.85, voiced
    assert np.ptp(np.log(voiced)) > 0.25  # spread over the range, not one pitch


def test_augment_without_range_keeps_the_pitch_near():
    x = harmonic_tone(120.0, seconds=3.0)
    f0s = _view_f0s(x, 120.0, None)
    voiced = f0s[f0s > 0]
    assert len(voiced) >= 18
    assert np.all(np.abs(voiced / 120.0 - 1) < 0.12), voiced  # only the +-8 % speed change


def test_train_dataset_with_ranges_yields_padded_batches():
    clips = [harmonic_tone(f, seconds=s, seed=i) for i, (f, s) in
             enumerate([(210, 1.0), (120, 2.5), (230, 5.0), (110, 0.6)])]
    labels = [0, 1, 0, 1]
    ds = tf.data.Dataset.from_generator(
        lambda: ((vdata.to_int16(c), y) for c, y in zip(clips, labels)),
        output_signature=(tf.TensorSpec([None], tf.int16), tf.TensorSpec([], tf.int64)))
    batches = list(train_dataset(ds, 2, seed=1, num_classes=2, class_weight=np.ones(2),
                                 f0_ranges=f0_ranges_for(["female", "male"])))
    assert len(batches) == 2
    for inputs, label, weight in batches:
        wave, length = inputs["waveform"].numpy(), inputs["length"].numpy()
        assert wave.shape[0] == 2 and np.all(length <= wave.shape[1])
        assert np.all(length <= 4 * SR) and np.all(np.isfinite(wave))
        assert np.all(np.abs(wave) <= 1.0)


def test_pitch_shift_on_real_speech():
    """Real Fillets lines: the measured F0 of the shifted clip follows the factor."""
    clips = vdata.fillets_clips(vdata.fetch_fillets())
    picks = [next(c for c in clips if c.group == g and c.label == lab)
             for g, lab in (("cs", "female"), ("cs", "male"), ("nl", "female"), ("nl", "male"))]
    for clip, factor in zip(picks, (0.7, 1.35, 0.85, 1.2)):
        x = vdata.load_audio(clip.path)
        f0 = float(clip_f0(x))
        assert 90 < f0 < 320, (clip.path, f0)
        shifted = float(clip_f0(pitch_shift(x, factor)))
        assert shifted == pytest.approx(f0 * factor, rel=0.08), (clip.path, f0, shifted)
