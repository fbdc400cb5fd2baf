"""The voice classifier: raw 16 kHz audio in, class probabilities out.

KerasHub-style split:

* preprocessor  :class:`LogMelFrontEnd` (waveform, length) -> (log-mel + pitch frames,
  frame mask), all ``tf.signal`` (see ``features.py``), with a per-clip scalar
  standardisation of the log-mel values over the valid frames so that loudness does not
  matter;
* backbone      per-frame ``Dense`` projection -> :class:`rnnkit.SimpleRecurrentLayer` over
  time (the mask makes it skip the zero padding of shorter clips) ->
  :class:`rnnkit.modeling.pooling.MaskedPooling` (mean then max over the valid frames only);
* task head     dropout -> ``Dense`` -> softmax over the classes.

The network is trained on crops of at most :data:`WINDOW_SECONDS`; :func:`classify`
(shared by ``evaluate``, ``predict`` and the export) classifies clips of any length by
cutting them into overlapping windows of that size, running them as one batch and averaging
the window probabilities weighted by how much of each window is real audio. It also flags
clips that are silent or shorter than :data:`MIN_SECONDS` (uniform probabilities, empty
label, status ``silent`` / ``too_short``) and rejects NaN/Inf samples with an
``InvalidArgumentError``.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from rnnkit import SimpleRecurrentLayer
from rnnkit.modeling.pooling import MaskedPooling

from .features import FrontEndConfig, log_mel, mel_filter_bank, pitch_features

WINDOW_SECONDS = 4.0  # training crop and inference window
HOP_SECONDS = 2.0  # inference window hop (50% overlap)
MIN_SECONDS = 0.1  # shorter clips are reported as "too_short"
SILENCE_RMS = 1e-4  # -80 dBFS: quieter clips are reported as "silent"


@keras.saving.register_keras_serializable(package="voice_gender")
class LogMelFrontEnd(keras.layers.Layer):
    """(waveform (B, S) float32 at 16 kHz, length (B,) int) -> (features (B, T, M + 2), mask (B, T)).

    Features are log-mel dB values standardised per clip (one mean and one standard
    deviation over all valid frames and bands), so a gain change leaves them unchanged
    while the spectral shape (formants, harmonics spacing) is kept, plus two per-frame
    pitch cues (voicing-weighted log F0, voicing strength; see ``features.pitch_features``).
    """

    def __init__(self, frontend: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.cfg = FrontEndConfig(**(frontend or {}))
        # A constant in the graph: the SavedModel needs no librosa and no table files.
        self._bank = mel_filter_bank(self.cfg)

    def call(self, waveform, length):
        feats, mask = log_mel(waveform, length, self.cfg, tf.constant(self._bank))
        weight = tf.cast(mask, feats.dtype)[:, :, None]
        # Number of valid (frame, band) values per clip.
        count = tf.maximum(tf.reduce_sum(weight, axis=[1, 2], keepdims=True) * self.cfg.n_mels, 1.0)
        mean = tf.reduce_sum(feats * weight, axis=[1, 2], keepdims=True) / count
        var = tf.reduce_sum(tf.square(feats - mean) * weight, axis=[1, 2], keepdims=True) / count
        feats = (feats - mean) / tf.sqrt(var + 1.0)  # +1 dB^2: silence maps to ~0, not noise/0
        feats = tf.concat([feats, pitch_features(waveform, self.cfg)], axis=-1)
        return feats * weight, mask

    def compute_output_shape(self, waveform_shape, length_shape=None):
        return (waveform_shape[0], None, self.cfg.n_mels + 2), (waveform_shape[0], None)

    def get_config(self):
        return {**super().get_config(), "frontend": self.cfg.to_dict()}


def build_model(
    num_classes: int,
    *,
    units: int = 96,
    proj: int = 96,
    dropout: float = 0.3,
    frontend: dict | None = None,
    seed: int = 1337,
) -> keras.Model:
    """The trainable model: inputs ``waveform`` (B, S) float32 and ``length`` (B,) int32.

    Args:
        num_classes: number of output classes.
        units: recurrent state size.
        proj: per-frame projection size fed to the recurrent layer.
        dropout: dropout before the classifier.
        frontend: ``FrontEndConfig`` overrides.
        seed: initialiser/dropout seed.

    Returns:
        A Keras model returning softmax probabilities (B, num_classes).
    """
    waveform = keras.Input(shape=(None,), dtype="float32", name="waveform")
    length = keras.Input(shape=(), dtype="int32", name="length")
    feats, mask = LogMelFrontEnd(frontend, name="log_mel")(waveform, length)
    x = keras.layers.Dense(proj, activation="relu", name="frame_proj")(feats)
    x = SimpleRecurrentLayer(units, return_sequences=True, seed=seed, name="rnn")(x, mask=mask)
    x = MaskedPooling(("mean", "max"), name="pool")(x, mask=mask)
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
    x = keras.layers.Dense(64, activation="relu", name="hidden")(x)
    probs = keras.layers.Dense(num_classes, activation="softmax", name="classes")(x)
    return keras.Model({"waveform": waveform, "length": length}, probs, name="voice_classifier")


def window_samples(sample_rate: int = 16_000) -> tuple[int, int]:
    """(window, hop) in samples for :func:`classify`."""
    return int(WINDOW_SECONDS * sample_rate), int(HOP_SECONDS * sample_rate)


def check_inputs(waveform: tf.Tensor, length: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Validate a serving batch; raise ``InvalidArgumentError`` with a clear message.

    Args:
        waveform: (B, S) float32.
        length: (B,) integer valid samples per row.

    Returns:
        (waveform, length as int32 clipped to [0, S]) with the checks as control deps.
    """
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    length = tf.cast(length, tf.int64)
    width = tf.cast(tf.shape(waveform)[1], tf.int64)
    checks = [
        tf.debugging.assert_equal(
            tf.shape(waveform)[0], tf.shape(length)[0],
            message="waveform and length must have the same batch size"),
        tf.debugging.assert_non_negative(length, message="length must be >= 0"),
        tf.debugging.assert_less_equal(
            length, width, message="length must not exceed the waveform's padded width"),
        tf.debugging.assert_equal(
            tf.reduce_all(tf.math.is_finite(waveform)), True,
            message="waveform contains NaN or Inf samples"),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(waveform), tf.cast(length, tf.int32)


def classify(
    model: keras.Model, waveform: tf.Tensor, length: tf.Tensor, sample_rate: int = 16_000
) -> dict[str, tf.Tensor]:
    """Classify whole clips of any length with window averaging (graph-friendly).

    Args:
        model: the trained model from :func:`build_model`.
        waveform: (B, S) float32 at 16 kHz, zero-padded.
        length: (B,) int valid samples.
        sample_rate: the rate the model was trained at.

    Returns:
        ``probabilities`` (B, K) float32 (uniform for flagged clips), ``status`` (B,) string
        ``ok`` / ``silent`` / ``too_short``, and ``valid`` (B,) bool.
    """
    waveform, length = check_inputs(waveform, length)
    win, hop = window_samples(sample_rate)
    batch = tf.shape(waveform)[0]
    width = tf.shape(waveform)[1]
    # Number of windows needed for the longest clip (at least one).
    longest = tf.reduce_max(tf.concat([length, [0]], axis=0))
    n_win = 1 + tf.maximum(0, (longest - win + hop - 1) // hop)
    padded_width = (n_win - 1) * hop + win
    padded = tf.pad(waveform[:, : tf.minimum(width, padded_width)],
                    [[0, 0], [0, tf.maximum(0, padded_width - width)]])
    frames = tf.signal.frame(padded, win, hop, pad_end=False)[:, :n_win]  # (B, W, win)
    starts = tf.range(n_win) * hop
    win_len = tf.clip_by_value(length[:, None] - starts[None, :], 0, win)  # (B, W)
    # A window that only holds the tail of the previous one adds nothing: keep the first
    # window always, later ones only when they hold at least one hop of new audio.
    keep = tf.logical_or(starts[None, :] == 0, win_len > (win - hop))
    weight = tf.where(keep, tf.cast(win_len, tf.float32), 0.0)
    flat = tf.reshape(frames, [-1, win])
    flat_len = tf.reshape(win_len, [-1])
    probs = model({"waveform": flat, "length": flat_len}, training=False)
    num_classes = tf.shape(probs)[-1]
    probs = tf.reshape(probs, [batch, n_win, num_classes])
    total = tf.reduce_sum(weight, axis=1, keepdims=True)
    avg = tf.reduce_sum(probs * weight[:, :, None], axis=1) / tf.maximum(total, 1.0)

    mask = tf.sequence_mask(length, maxlen=width)
    energy = tf.reduce_sum(tf.square(waveform) * tf.cast(mask, tf.float32), axis=1)
    rms = tf.sqrt(energy / tf.maximum(tf.cast(length, tf.float32), 1.0))
    too_short = length < math.ceil(MIN_SECONDS * sample_rate)
    silent = tf.logical_and(tf.logical_not(too_short), rms < SILENCE_RMS)
    valid = tf.logical_not(tf.logical_or(too_short, silent))
    uniform = tf.fill(tf.shape(avg), 1.0 / tf.cast(num_classes, tf.float32))
    status = tf.where(too_short, "too_short", tf.where(silent, "silent", "ok"))
    return {
        "probabilities": tf.where(valid[:, None], avg, uniform),
        "status": status,
        "valid": valid,
    }
