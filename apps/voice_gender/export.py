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

``predict`` decodes each file with librosa (any format it reads) and runs
``serving_default`` on it; a file that cannot be decoded, or whose samples are not all
finite, is refused with one ``error:`` line before the graph runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from rnnkit.app import LoadedExport, Run, Servable
from rnnkit.export import ServingModule

from . import data
from .features import SAMPLE_RATE
from .model import classify

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


class VoiceServing(ServingModule):
    """The exported module: a trained Keras model plus the class names, two signatures.

    Args:
        model: the trained classifier (``model.build_model``).
        class_names: the class names in label order.
    """

    def __init__(self, model, class_names: list[str]):
        super().__init__({"model": model}, name="voice_gender")
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


def servable(run: Run) -> Servable:
    """The ``export`` verb's module: the final model and the class names it was trained on."""
    model = run.load_model()
    module = VoiceServing(model, run.run_config()["train"]["class_names"])
    return Servable(module, {"serving_default": module.serve_waveform,
                             "serving_wav": module.serve_wav},
                    warmup=warmup_requests())


def predict(run: Run, export: LoadedExport, files: list[str]) -> Iterator[str]:
    """One line per file: ``path, label, probability, status, per-class probabilities``
    (tab-separated).

    Args:
        export: the loaded export.
        files: audio files (any format librosa reads).
    """
    fn = export.signature("serving_default")
    for path in files:  # one file per call: very different lengths waste no padding
        clip = data.load_audio(path)  # DataError names a bad file (NaN samples too)
        wave = np.zeros((1, max(1, len(clip))), np.float32)  # a header-only file: 0 samples
        wave[0, : len(clip)] = clip
        out = fn(waveform=tf.constant(wave), length=tf.constant([len(clip)], tf.int64))
        names = [n.decode() for n in out["class_names"].numpy()[0]]
        probs = out["probabilities"].numpy()[0]
        label = out["label"].numpy()[0].decode() or "-"
        status = out["status"].numpy()[0].decode()
        detail = " ".join(f"{n}={p:.3f}" for n, p in zip(names, probs))
        yield f"{path}\t{label}\t{probs.max():.3f}\t{status}\t{detail}"
