"""Training views of a clip: the deployment conditions the few training voices do not cover.

All stateless TensorFlow ops seeded per view, so a training run draws the same views every
time. :func:`augment` is the training recipe; :func:`band_limit` is also the telephone
channel that ``evaluate`` scores the held-out clips through.
"""

from __future__ import annotations

import tensorflow as tf

from .features import SAMPLE_RATE

TELEPHONE_BAND = (300.0, 3400.0)
# Name of the training views, recorded in each run's recipe so that `train` retrains a run
# made with other views instead of reusing it.
AUGMENT_VERSION = "channel-v1"


def _bin_freqs(n: tf.Tensor, sample_rate: int) -> tf.Tensor:
    """The frequency in Hz of each bin of an ``n``-point real FFT."""
    return tf.cast(tf.range(n // 2 + 1), tf.float32) * (
        sample_rate / tf.cast(tf.maximum(n, 1), tf.float32))


def band_limit(x: tf.Tensor, low: tf.Tensor, high: tf.Tensor,
               sample_rate: int = SAMPLE_RATE) -> tf.Tensor:
    """Zero every frequency outside [low, high] Hz of a 1-D signal (FFT brick-wall filter).

    Args:
        x: float32 1-D waveform.
        low: the lowest frequency kept, Hz.
        high: the highest frequency kept, Hz.
        sample_rate: the rate of ``x``.
    """
    n = tf.shape(x)[0]
    spec = tf.signal.rfft(x, fft_length=[n])
    freqs = _bin_freqs(n, sample_rate)
    keep = tf.logical_and(freqs >= low, freqs <= high)
    return tf.signal.irfft(spec * tf.cast(keep, spec.dtype), fft_length=[n])


def eq_gain_db(freqs: tf.Tensor, seed: tf.Tensor, max_db: float = 12.0) -> tf.Tensor:
    """The gain curve (dB) of a random smooth equaliser at ``freqs`` Hz: gains of
    +-``max_db`` at 8 log-spaced frequencies (50 Hz..8 kHz), interpolated on a log-frequency
    axis (flat beyond the end knots).

    Args:
        freqs: frequencies in Hz, any shape.
        seed: a (2,) int seed.
        max_db: the largest boost or cut.
    """
    knots_db = tf.random.stateless_uniform([8], seed, -max_db, max_db)
    knots_log = tf.linspace(tf.math.log(50.0), tf.math.log(8000.0), 8)
    logf = tf.math.log(tf.clip_by_value(freqs, 50.0, 8000.0))
    pos = (logf - knots_log[0]) / (knots_log[1] - knots_log[0])
    i0 = tf.clip_by_value(tf.cast(tf.floor(pos), tf.int32), 0, 6)
    frac = tf.clip_by_value(pos - tf.cast(i0, tf.float32), 0.0, 1.0)
    return tf.gather(knots_db, i0) * (1.0 - frac) + tf.gather(knots_db, i0 + 1) * frac


def random_eq(x: tf.Tensor, seed: tf.Tensor, max_db: float = 12.0,
              sample_rate: int = SAMPLE_RATE) -> tf.Tensor:
    """A random smooth equaliser (:func:`eq_gain_db`) applied in the FFT domain.

    Microphones, rooms and codecs colour the spectrum; with only a few training voices,
    each recorded with one chain, the model would otherwise learn the chain as the class.

    Args:
        x: float32 1-D waveform.
        seed: a (2,) int seed.
        max_db: the largest boost or cut.
        sample_rate: the rate of ``x``.
    """
    n = tf.shape(x)[0]
    gain_db = eq_gain_db(_bin_freqs(n, sample_rate), seed, max_db)
    spec = tf.signal.rfft(x, fft_length=[n])
    gain = tf.pow(10.0, gain_db / 20.0)
    return tf.signal.irfft(spec * tf.complex(gain, tf.zeros_like(gain)), fft_length=[n])


def _random_crop_resampled(audio: tf.Tensor, u, max_len: int) -> tf.Tensor:
    """A random crop of ``audio`` (0.5 s up to ``max_len``) resampled by a random rate.

    ``u(i, lo, hi)`` draws the i-th seeded uniform (indices 0-3 are used). The rate is
    source samples read per output sample: speed and pitch x rate, +-8 %.
    """
    length = tf.shape(audio)[0]
    rate = u(0, 0.92, 1.08)
    out_len = tf.cast(max_len, tf.float32)
    short = u(1, 0.0, 1.0) < 0.25
    out_len = tf.where(short, u(2, 0.5 * SAMPLE_RATE, float(max_len)), out_len)
    src_len = tf.minimum(length, tf.cast(tf.math.ceil(out_len * rate), tf.int32) + 1)
    start = tf.cast(u(3, 0.0, 1.0) * tf.cast(length - src_len + 1, tf.float32), tf.int32)
    start = tf.clip_by_value(start, 0, tf.maximum(length - src_len, 0))
    seg = audio[start : start + src_len]
    n_out = tf.maximum(1, tf.minimum(tf.cast(out_len, tf.int32),
                                     tf.cast(tf.cast(src_len - 1, tf.float32) / rate, tf.int32) + 1))
    pos = tf.cast(tf.range(n_out), tf.float32) * rate
    i0 = tf.minimum(tf.cast(tf.floor(pos), tf.int32), src_len - 1)
    i1 = tf.minimum(i0 + 1, src_len - 1)
    frac = pos - tf.cast(i0, tf.float32)
    return tf.gather(seg, i0) * (1.0 - frac) + tf.gather(seg, i1) * frac


def _noisy_gained(x: tf.Tensor, u, noise_seed: tf.Tensor) -> tf.Tensor:
    """White noise at 5-40 dB SNR of the clip's own level (50 %), then a gain of -30..+6 dB
    with clipping; ``u(i, lo, hi)`` draws the i-th seeded uniform (indices 6, 8, 9)."""
    rms = tf.sqrt(tf.reduce_mean(tf.square(x)) + 1e-12)
    snr_db = u(6, 5.0, 40.0)
    noise = tf.random.stateless_normal(tf.shape(x), noise_seed) * rms * tf.pow(10.0, -snr_db / 20.0)
    x = tf.where(u(8, 0.0, 1.0) < 0.5, x + noise, x)
    gain = tf.pow(10.0, u(9, -30.0, 6.0) / 20.0)
    return tf.clip_by_value(x * gain, -1.0, 1.0)


def augment(audio: tf.Tensor, seed: tf.Tensor, max_len: int) -> tf.Tensor:
    """One random training view of a clip (float32 1-D), at most ``max_len`` samples.

    Deployment conditions the four Fillets voices do not cover: speed/pitch +-8 %
    (resampling), random crop length (0.5 s up to the window), telephone band 300-3400 Hz
    or a random low-pass, a random smooth EQ of +-12 dB (recording chain), white noise at
    5-40 dB SNR, gain -30..+6 dB with clipping.

    Args:
        audio: the whole clip, float32 in [-1, 1].
        seed: a (2,) int seed for the stateless random ops.
        max_len: the training window in samples.
    """
    # 12 streams, of which indices 0-11 are read below: changing the count changes every
    # view (stateless_split derives each stream from the count), i.e. the training recipe.
    seeds = tf.random.experimental.stateless_split(seed, 12)
    u = lambda i, lo, hi: tf.random.stateless_uniform([], seeds[i], lo, hi)
    x = _random_crop_resampled(audio, u, max_len)
    # Channel: telephone band (25 %), random low-pass (15 %), untouched otherwise.
    pick = u(4, 0.0, 1.0)
    x = tf.cond(pick < 0.25, lambda: band_limit(x, *TELEPHONE_BAND),
                lambda: tf.cond(pick < 0.40, lambda: band_limit(x, 0.0, u(5, 2500.0, 7000.0)),
                                lambda: x))
    # Recording chain: a random smooth EQ (80 %).
    x = tf.cond(u(10, 0.0, 1.0) < 0.8, lambda: random_eq(x, seeds[11]), lambda: x)
    return _noisy_gained(x, u, seeds[7])


def telephone(clip) -> tf.Tensor:
    """A clip as a telephone line passes it: the 300-3400 Hz band (deterministic).

    Args:
        clip: float32 1-D waveform at 16 kHz (array or tensor).
    """
    return band_limit(tf.constant(clip), *TELEPHONE_BAND)
