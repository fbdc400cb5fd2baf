"""Export the trained voice classifier as a TF Serving SavedModel, raw audio in.

Signatures (core TF ops only, checked by ``rnnkit.servable.check_servable``):

* ``serving_default``: ``waveform`` float32 (B, S) mono 16 kHz, zero-padded, and ``length``
  int64 (B,) valid samples -> ``label`` string (B,), ``probabilities`` float32 (B, K),
  ``class_names`` string (B, K) (repeated per row so TF Serving's row format works),
  ``status`` string (B,): ``ok``, ``silent`` (RMS below -80 dBFS) or ``too_short``
  (< 0.1 s); flagged rows get an empty label and uniform probabilities.
* ``serving_wav``: ``wav_bytes`` string (B,), whole ``.wav`` files (16-bit PCM, any channel
  count: averaged to mono). Rates other than 16 kHz between 8 kHz and 192 kHz are
  resampled in the graph (FFT resampling); other rates fail with an InvalidArgument error
  naming the rate. Same outputs.

Clips of any length are classified whole: 4 s windows every 2 s, probabilities averaged
(see ``model.classify``). NaN/Inf samples fail with ``InvalidArgumentError: waveform
contains NaN or Inf samples``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

from apps.voice_gender.features import SAMPLE_RATE
from apps.voice_gender.model import classify

log = logging.getLogger(__name__)

MIN_WAV_RATE = 8_000
MAX_WAV_RATE = 192_000


def _resampled_length(n: tf.Tensor, rate: tf.Tensor) -> tf.Tensor:
    ratio = tf.cast(SAMPLE_RATE, tf.float64) / tf.cast(rate, tf.float64)
    return tf.cast(tf.round(tf.cast(n, tf.float64) * ratio), tf.int32)


def resample_to_16k(x: tf.Tensor, rate: tf.Tensor) -> tf.Tensor:
    """Band-limited (FFT) resampling of a 1-D float32 signal from ``rate`` to 16 kHz.

    Keeps the spectrum below both Nyquist rates and rescales so amplitudes are preserved.

    Args:
        x: (n,) float32.
        rate: scalar int32 sample rate of ``x``.
    """
    n = tf.shape(x)[0]
    m = _resampled_length(n, rate)

    def fft_resample():
        spec = tf.signal.rfft(x, fft_length=[n])
        keep = m // 2 + 1
        spec = spec[:keep]
        spec = tf.pad(spec, [[0, keep - tf.shape(spec)[0]]])
        y = tf.signal.irfft(spec, fft_length=[m])
        return y * (tf.cast(m, tf.float32) / tf.cast(n, tf.float32))

    same = tf.equal(rate, SAMPLE_RATE)
    empty = tf.logical_or(tf.equal(n, 0), tf.equal(m, 0))
    return tf.cond(same, lambda: x,
                   lambda: tf.cond(empty, lambda: tf.zeros([m], tf.float32), fft_resample))


def _decode(wav: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    audio, rate = tf.audio.decode_wav(wav)
    check = tf.debugging.Assert(
        tf.logical_and(rate >= MIN_WAV_RATE, rate <= MAX_WAV_RATE),
        ["unsupported WAV sample rate (Hz):", rate,
         f"expected {MIN_WAV_RATE}..{MAX_WAV_RATE} Hz (resampled to {SAMPLE_RATE})"])
    with tf.control_dependencies([check]):
        mono = tf.reduce_mean(audio, axis=1)
    return mono, rate


class VoiceServing(tf.Module):
    """The exported module: a trained Keras model plus the class names, two signatures."""

    def __init__(self, model, class_names: list[str]):
        super().__init__()
        self.model = model
        # Keras 3 weights wrap tf.Variables that a tf.Module does not track by itself; TF
        # Serving's loader only restores tracked ones (keras-team/keras#20095).
        self.model_variables = [w.value for w in model.weights]
        self.class_names = tf.constant(class_names, tf.string)

    def _outputs(self, waveform: tf.Tensor, length: tf.Tensor) -> dict[str, tf.Tensor]:
        out = classify(self.model, waveform, length)
        probs = out["probabilities"]
        best = tf.gather(self.class_names, tf.argmax(probs, axis=1, output_type=tf.int32))
        label = tf.where(out["valid"], best, tf.fill(tf.shape(best), ""))
        batch = tf.shape(probs)[0]
        names = tf.tile(self.class_names[None, :], [batch, 1])
        return {"label": label, "probabilities": probs, "class_names": names,
                "status": out["status"]}

    @tf.function(input_signature=[
        tf.TensorSpec([None, None], tf.float32, name="waveform"),
        tf.TensorSpec([None], tf.int64, name="length"),
    ])
    def serve_waveform(self, waveform, length):
        return self._outputs(waveform, length)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="wav_bytes")])
    def serve_wav(self, wav_bytes):
        # Two passes (lengths, then padded audio) keep everything dense: no ragged/variant ops.
        def length_of(wav):
            mono, rate = _decode(wav)
            return _resampled_length(tf.shape(mono)[0], rate)

        lengths = tf.map_fn(length_of, wav_bytes, fn_output_signature=tf.int32)
        width = tf.reduce_max(tf.concat([lengths, [1]], axis=0))

        def padded(wav):
            mono, rate = _decode(wav)
            y = resample_to_16k(mono, rate)
            return tf.pad(y, [[0, width - tf.shape(y)[0]]])

        waves = tf.map_fn(padded, wav_bytes, fn_output_signature=tf.float32)
        waves = tf.reshape(waves, [tf.shape(wav_bytes)[0], width])
        return self._outputs(waves, tf.cast(lengths, tf.int64))


def warmup_requests() -> list[dict[str, np.ndarray]]:
    """Two warmup requests for ``serving_default``: a 1 s vowel-like tone and a 5 s one."""
    out = []
    for seconds in (1.0, 5.0):
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        wave = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8)) * 0.1
        out.append({"waveform": wave[None].astype(np.float32),
                    "length": np.array([wave.size], np.int64)})
    return out


def export(args: argparse.Namespace) -> int:
    """``export`` verb: ``<output>/model.keras`` -> ``<export-dir>/<version>``."""
    from apps.voice_gender.train import load_model
    from rnnkit.export import export_saved_model

    output = Path(args.output)
    model = load_model(output / "model.keras")
    done = output / "train_done.json"
    if not done.exists():
        raise FileNotFoundError(f"{done} not found: run `rnnkit voice_gender train` first")
    names = json.loads(done.read_text())["class_names"]
    metrics_path = output / "reports" / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else None
    if metrics is None:
        log.warning("no %s: exporting without evaluation metrics", metrics_path)
    module = VoiceServing(model, names)
    path = export_saved_model(
        module, args.export_dir,
        {"serving_default": module.serve_waveform, "serving_wav": module.serve_wav},
        version=args.version, metrics=metrics, warmup_requests=warmup_requests())
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    print(f"exported {path} ({size / 1e6:.2f} MB, classes {names})")
    return 0


def load_audio_batch(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Decode files with librosa to 16 kHz mono and zero-pad them into one batch."""
    from apps.voice_gender.data import load_audio

    clips = [load_audio(f) for f in files]
    width = max(1, max(len(c) for c in clips))
    wave = np.zeros((len(clips), width), np.float32)
    for i, c in enumerate(clips):
        wave[i, : len(c)] = c
    return wave, np.array([len(c) for c in clips], np.int64)


def predict(args: argparse.Namespace) -> int:
    """``predict`` verb: classify audio files (any format librosa reads) with an export."""
    from rnnkit.app_cli import AppError
    from rnnkit.export import latest_export

    if not args.inputs:
        raise AppError("give one or more audio files: rnnkit voice_gender predict FILE...")
    missing = [f for f in args.inputs if not Path(f).is_file()]
    if missing:
        raise AppError(f"no such audio file: {missing[0]}")
    model_dir = Path(args.model) if args.model else latest_export(args.export_dir)
    fn = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    for f in args.inputs:  # one file per call: very different lengths waste no padding
        wave, length = load_audio_batch([f])
        out = fn(waveform=tf.constant(wave), length=tf.constant(length))
        names = [n.decode() for n in out["class_names"].numpy()[0]]
        probs = out["probabilities"].numpy()[0]
        label = out["label"].numpy()[0].decode() or "-"
        status = out["status"].numpy()[0].decode()
        detail = " ".join(f"{n}={p:.3f}" for n, p in zip(names, probs))
        print(f"{f}\t{label}\t{probs.max():.3f}\t{status}\t{detail}")
    return 0
