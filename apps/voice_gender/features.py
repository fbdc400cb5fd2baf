"""Log-mel features computed inside the TensorFlow graph.

The front end is ``tf.signal``: frame the (zero-padded) waveform, Hann window, real FFT,
power spectrum, multiply by a Slaney mel filter bank, convert to decibels. The filter bank
is built here in NumPy with the same formulas as ``librosa.filters.mel`` (Slaney mel scale,
Slaney area normalisation), so the graph output matches
``librosa.power_to_db(librosa.feature.melspectrogram(..., center=False))`` closely (see
tests/test_voice_gender_features.py for the tolerance). librosa is only the reference: the
SavedModel carries the filter bank as a constant and needs nothing but core TF ops.

Framing is ``center=False`` (frames start at sample 0, no reflection padding) because a
batch of zero-padded clips has a different true end per row; reflection at the true end
cannot be expressed cheaply per row, and frames that would cross the end are masked anyway.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import tensorflow as tf

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class FrontEndConfig:
    """Front-end settings (all in samples at ``sample_rate``).

    Args:
        sample_rate: waveform rate the graph expects (16 kHz).
        n_fft: FFT size and window length (512 = 32 ms).
        hop_length: hop between frames (320 = 20 ms, 50 frames per second).
        n_mels: number of mel bands (80: ~37 Hz apart below 1 kHz, enough to resolve the
            harmonics that carry the pitch of a voice).
        fmin: lowest filter edge in Hz.
        fmax: highest filter edge in Hz (Nyquist).
        amin: power floor before the logarithm (as librosa.power_to_db).
        top_db: dynamic range kept below each clip's loudest frame (as librosa.power_to_db).
    """

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 512
    hop_length: int = 320
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    amin: float = 1e-10
    top_db: float = 80.0

    def __post_init__(self):
        nyquist = self.sample_rate / 2
        if not 0 <= self.fmin < self.fmax <= nyquist:
            raise ValueError(f"the mel filter bank needs 0 <= fmin < fmax <= {nyquist:g} Hz "
                             f"(got fmin {self.fmin:g}, fmax {self.fmax:g})")

    def to_dict(self) -> dict:
        """Plain dict (for Keras layer configs and metrics files)."""
        return asdict(self)


def _hz_to_mel_slaney(freqs: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above."""
    freqs = np.asarray(freqs, dtype=np.float64)
    f_sp = 200.0 / 3.0
    mels = freqs / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    above = freqs >= min_log_hz
    mels = np.where(above, min_log_mel + np.log(np.maximum(freqs, 1e-12) / min_log_hz) / logstep, mels)
    return mels


def _mel_to_hz_slaney(mels: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_hz_to_mel_slaney`."""
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3.0
    freqs = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    above = mels >= min_log_mel
    return np.where(above, min_log_hz * np.exp(logstep * (mels - min_log_mel)), freqs)


def mel_filter_bank(cfg: FrontEndConfig) -> np.ndarray:
    """Slaney-normalised triangular mel filters, shape (n_fft // 2 + 1, n_mels), float32.

    Same construction as ``librosa.filters.mel(htk=False, norm="slaney")``, transposed so
    that ``power @ bank`` maps a spectrum row to mel bands.

    Args:
        cfg: the front-end settings.
    """
    n_bins = cfg.n_fft // 2 + 1
    fft_freqs = np.linspace(0.0, cfg.sample_rate / 2.0, n_bins)
    mel_points = np.linspace(_hz_to_mel_slaney(cfg.fmin), _hz_to_mel_slaney(cfg.fmax), cfg.n_mels + 2)
    hz_points = _mel_to_hz_slaney(mel_points)
    widths = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    weights = np.zeros((cfg.n_mels, n_bins))
    for i in range(cfg.n_mels):
        lower = -ramps[i] / widths[i]
        upper = ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(lower, upper))
    # Slaney normalisation: each filter has (approximately) constant energy per band.
    weights *= (2.0 / (hz_points[2 : cfg.n_mels + 2] - hz_points[: cfg.n_mels]))[:, None]
    return weights.T.astype(np.float32)


def num_frames(length: tf.Tensor, cfg: FrontEndConfig) -> tf.Tensor:
    """Number of whole frames inside the first ``length`` samples (0 when shorter than n_fft).

    Args:
        length: int tensor of valid sample counts, any shape.
        cfg: the front-end settings.
    """
    length = tf.cast(length, tf.int32)
    return tf.maximum(0, (length - cfg.n_fft) // cfg.hop_length + 1)


def power_mel(waveform: tf.Tensor, cfg: FrontEndConfig, bank: tf.Tensor | None = None) -> tf.Tensor:
    """Mel power spectrogram, (batch, frames, n_mels), of float32 waveforms (batch, samples).

    Frames past the end of the padded batch are not produced; frames that overlap a row's
    padding are produced and must be masked by the caller (see :func:`num_frames`).

    Args:
        waveform: (batch, samples) float32, zero-padded.
        cfg: the front-end settings.
        bank: optional precomputed ``mel_filter_bank(cfg)`` tensor.
    """
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    # Pad to at least one frame so a batch of very short clips still has a frame axis.
    short = tf.maximum(0, cfg.n_fft - tf.shape(waveform)[1])
    waveform = tf.pad(waveform, [[0, 0], [0, short]])
    stft = tf.signal.stft(
        waveform,
        frame_length=cfg.n_fft,
        frame_step=cfg.hop_length,
        fft_length=cfg.n_fft,
        window_fn=tf.signal.hann_window,  # periodic Hann, as librosa/scipy "hann"
        pad_end=False,
    )
    power = tf.math.square(tf.math.real(stft)) + tf.math.square(tf.math.imag(stft))
    if bank is None:
        bank = tf.constant(mel_filter_bank(cfg))
    return tf.linalg.matmul(power, bank)


def power_to_db(power: tf.Tensor, cfg: FrontEndConfig, mask: tf.Tensor | None = None) -> tf.Tensor:
    """10*log10(max(power, amin)), floored ``top_db`` below each row's loudest valid value.

    Matches ``librosa.power_to_db(S, ref=1.0, amin, top_db)`` per clip.

    Args:
        power: (batch, frames, n_mels) mel power.
        cfg: the front-end settings.
        mask: optional (batch, frames) bool; the per-clip maximum is taken over valid frames.
    """
    db = 10.0 * tf.math.log(tf.maximum(power, cfg.amin)) / tf.math.log(10.0)
    if cfg.top_db is None:
        return db
    lowest = tf.fill(tf.shape(db), tf.constant(-1e4, db.dtype))
    considered = db if mask is None else tf.where(mask[:, :, None], db, lowest)
    peak = tf.reduce_max(considered, axis=[1, 2], keepdims=True)
    return tf.maximum(db, peak - cfg.top_db)


def log_mel(
    waveform: tf.Tensor, length: tf.Tensor, cfg: FrontEndConfig, bank: tf.Tensor | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Log-mel (dB) features and their frame mask for a zero-padded batch.

    Args:
        waveform: (batch, samples) float32 at ``cfg.sample_rate``.
        length: (batch,) int valid samples per row.
        cfg: the front-end settings.
        bank: optional precomputed filter bank tensor.

    Returns:
        (features (batch, frames, n_mels) float32 in dB, mask (batch, frames) bool).
    """
    power = power_mel(waveform, cfg, bank)
    frames = num_frames(length, cfg)
    mask = tf.sequence_mask(frames, maxlen=tf.shape(power)[1])
    return power_to_db(power, cfg, mask), mask


# Pitch search range: below every adult voice's F0 to above every adult voice's F0.
F0_MIN_HZ = 70.0
F0_MAX_HZ = 400.0
F0_REF_HZ = 160.0
OCTAVE_COST = 0.1  # between typical male (~120 Hz) and female (~210 Hz) medians


def _window_autocorr(n: int, fft_len: int) -> np.ndarray:
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    spec = np.fft.rfft(w, fft_len)
    ac = np.fft.irfft(np.abs(spec) ** 2, fft_len)[:n]
    return (ac / ac[0]).astype(np.float32)


def pitch_features(waveform: tf.Tensor, cfg: FrontEndConfig) -> tf.Tensor:
    """Per-frame pitch cues (batch, frames, 2): voicing-weighted log2(F0 / 160 Hz), voicing.

    Autocorrelation pitch (Boersma 1993): each Hann-windowed frame's autocorrelation, from
    the power spectrum (FFT of twice the frame length, so no circular wrap), is normalised
    by its lag-0 value and by the window's own autocorrelation; the highest peak between the
    lags of 400 Hz and 70 Hz gives F0 and its height the voicing strength (about 1 for a
    clean periodic frame, near 0 for noise and silence). Pitch is the speaker cue that a
    recording chain does not change, unlike the spectral envelope, so it helps the model
    generalise to voices and microphones it has not heard.

    Args:
        waveform: (batch, samples) float32, zero-padded (frames aligned with ``power_mel``).
        cfg: the front-end settings.
    """
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    short = tf.maximum(0, cfg.n_fft - tf.shape(waveform)[1])
    waveform = tf.pad(waveform, [[0, 0], [0, short]])
    frames = tf.signal.frame(waveform, cfg.n_fft, cfg.hop_length, pad_end=False)
    frames = frames - tf.reduce_mean(frames, axis=-1, keepdims=True)
    frames = frames * tf.signal.hann_window(cfg.n_fft)
    spec = tf.signal.rfft(frames, fft_length=[2 * cfg.n_fft])
    power = tf.square(tf.math.real(spec)) + tf.square(tf.math.imag(spec))
    ac = tf.signal.irfft(tf.complex(power, tf.zeros_like(power)), fft_length=[2 * cfg.n_fft])
    lo = int(np.ceil(cfg.sample_rate / F0_MAX_HZ))
    hi = int(np.floor(cfg.sample_rate / F0_MIN_HZ))
    win_ac = tf.constant(_window_autocorr(cfg.n_fft, 2 * cfg.n_fft)[lo : hi + 1])
    energy = ac[..., :1]
    r = ac[..., lo : hi + 1] / tf.maximum(energy, 1e-9) / win_ac
    # Multiples of the period correlate as well as the period itself (sub-harmonics): an
    # "octave cost" per octave of lag makes the shortest good period win (Boersma's rule).
    lags = tf.range(lo, hi + 1, dtype=tf.float32)
    score = r - OCTAVE_COST * tf.math.log(lags / lo) / tf.math.log(2.0)
    best = tf.argmax(score, axis=-1, output_type=tf.int32)
    voicing = tf.clip_by_value(tf.gather(r, best, batch_dims=2), 0.0, 1.0)
    # A frame with (almost) no energy has no pitch at all.
    voicing = tf.where(energy[..., 0] > 1e-7, voicing, 0.0)
    lag = tf.cast(best + lo, tf.float32)
    log_f0 = tf.math.log(cfg.sample_rate / lag / F0_REF_HZ) / tf.math.log(2.0)
    return tf.stack([log_f0 * voicing, voicing], axis=-1)


VOICED = 0.5  # voicing strength above which a frame's pitch counts (see clip_f0)
MIN_VOICED_FRAMES = 10  # 0.2 s of voiced frames: fewer and the clip's F0 is "unknown"


def clip_f0(audio: tf.Tensor, cfg: FrontEndConfig | None = None) -> tf.Tensor:
    """Median F0 in Hz of a clip's voiced frames (0 when it has too few of them).

    The same autocorrelation estimator as the model's pitch features
    (:func:`pitch_features`): a frame counts as voiced when its voicing strength is at
    least :data:`VOICED` (Boersma's default voicing threshold is 0.45), and the clip needs
    :data:`MIN_VOICED_FRAMES` of them. The median ignores the odd octave error. Used to
    measure voices (the Festival extra voices' pitch targets), not by the model.

    Args:
        audio: float32 1-D waveform at 16 kHz.
        cfg: front-end settings (default ``FrontEndConfig()``).
    """
    cfg = cfg or FrontEndConfig()
    feats = pitch_features(tf.convert_to_tensor(audio, tf.float32)[None], cfg)[0]
    voicing = feats[:, 1]
    voiced = voicing >= VOICED
    log_f0 = tf.sort(tf.boolean_mask(feats[:, 0] / tf.maximum(voicing, 1e-6), voiced))
    n = tf.size(log_f0)
    median = tf.cond(n > 0, lambda: log_f0[n // 2], lambda: tf.constant(0.0))
    return tf.where(n >= MIN_VOICED_FRAMES, F0_REF_HZ * tf.pow(2.0, median), 0.0)
