"""The in-graph log-mel front end matches librosa.

Stated tolerance: the tf.signal features equal
``librosa.power_to_db(librosa.feature.melspectrogram(center=False, ...), top_db=80)`` within
0.01 dB on every frame and band of real speech (measured: ~3e-4 dB, float32 round-off),
and the filter bank equals ``librosa.filters.mel`` within 1e-6.
"""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import tensorflow as tf

from apps.voice_gender import data as vdata
from apps.voice_gender.features import FrontEndConfig, log_mel, mel_filter_bank, num_frames

TOL_DB = 0.01
CFG = FrontEndConfig()


def _librosa_db(y: np.ndarray) -> np.ndarray:
    power = librosa.feature.melspectrogram(
        y=y, sr=CFG.sample_rate, n_fft=CFG.n_fft, hop_length=CFG.hop_length, win_length=CFG.n_fft,
        window="hann", center=False, power=2.0, n_mels=CFG.n_mels, fmin=CFG.fmin, fmax=CFG.fmax)
    return librosa.power_to_db(power, ref=1.0, amin=CFG.amin, top_db=CFG.top_db).T


@pytest.fixture(scope="module")
def real_clips() -> list[np.ndarray]:
    """Three real Fillets clips (one per language/gender mix), decoded by librosa at 16 kHz."""
    clips = vdata.fillets_clips(vdata.fetch_fillets())
    picks = [next(c for c in clips if c.group == g and c.label == lab)
             for g, lab in (("cs", "female"), ("nl", "male"), ("nl", "female"))]
    return [vdata.load_audio(c.path) for c in picks]


def test_mel_bank_matches_librosa():
    ref = librosa.filters.mel(sr=CFG.sample_rate, n_fft=CFG.n_fft, n_mels=CFG.n_mels,
                              fmin=CFG.fmin, fmax=CFG.fmax, htk=False, norm="slaney")
    np.testing.assert_allclose(mel_filter_bank(CFG), ref.T, atol=1e-6)


def test_log_mel_matches_librosa_on_real_speech(real_clips):
    for y in real_clips:
        ref = _librosa_db(y)
        feats, mask = log_mel(tf.constant(y[None]), tf.constant([len(y)]), CFG)
        assert feats.shape[1] == ref.shape[0] == int(num_frames(len(y), CFG))
        assert bool(tf.reduce_all(mask))
        diff = np.abs(feats.numpy()[0] - ref)
        assert diff.max() < TOL_DB, f"max |tf - librosa| = {diff.max():.4f} dB"


def test_padding_does_not_change_valid_frames(real_clips):
    """A clip padded into a batch with a longer one keeps its features on its own frames."""
    a, b = real_clips[0], real_clips[1]
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    batch = np.zeros((2, len(long_)), np.float32)
    batch[0, : len(short)] = short
    batch[1] = long_
    feats, mask = log_mel(tf.constant(batch), tf.constant([len(short), len(long_)]), CFG)
    n = int(num_frames(len(short), CFG))
    assert int(tf.reduce_sum(tf.cast(mask[0], tf.int32))) == n
    np.testing.assert_allclose(feats.numpy()[0, :n], _librosa_db(short), atol=TOL_DB)


def test_too_short_clip_has_no_valid_frame():
    feats, mask = log_mel(tf.zeros([1, 100]), tf.constant([100]), CFG)
    assert feats.shape[1] == 1 and not bool(mask[0, 0])
    assert np.isfinite(feats.numpy()).all()


@pytest.mark.parametrize("f0", [90.0, 130.0, 210.0, 320.0])
def test_pitch_of_harmonic_tone(f0):
    """Autocorrelation pitch finds F0 (not a sub-harmonic) within 3 %, voicing near 1."""
    from apps.voice_gender.features import F0_REF_HZ, pitch_features

    t = np.arange(16000) / 16000
    x = sum(np.sin(2 * np.pi * f0 * k * t + k) / k for k in range(1, 12)).astype(np.float32) * 0.1
    p = pitch_features(x[None], CFG).numpy()[0]
    voicing = p[:, 1]
    est = F0_REF_HZ * 2 ** (p[:, 0] / np.maximum(voicing, 1e-6))
    assert np.median(voicing) > 0.9
    assert abs(np.median(est) / f0 - 1) < 0.03, np.median(est)


def test_noise_and_silence_are_unvoiced():
    from apps.voice_gender.features import pitch_features

    rng = np.random.default_rng(0)
    noise = pitch_features(rng.normal(0, 0.1, (1, 16000)).astype(np.float32), CFG).numpy()[0]
    assert np.median(noise[:, 1]) < 0.3
    silence = pitch_features(np.zeros((1, 16000), np.float32), CFG).numpy()[0]
    assert np.all(silence == 0.0)
