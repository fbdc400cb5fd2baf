"""Pooling a sequence of hidden states over time, padding masked out."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

__all__ = ["MaskedPooling"]

_MODES = ("max", "mean")


@keras.saving.register_keras_serializable(package="rnnkit")
class MaskedPooling(keras.layers.Layer):
    """Pool ``(B, T, D)`` sequences over time using only the valid (unmasked) steps.

    Each mode gives ``(B, D)``; they are concatenated in the order given. Pooling every
    step's state lets the gradient reach each position directly instead of only through
    the recurrence, which is what a plain Elman network struggles with over long inputs.
    A row with no valid step (an empty input) pools to zeros instead of -inf or NaN.

    Args:
        modes: which poolings to concatenate, in order: ``"max"`` and/or ``"mean"``.
        **kwargs: base layer arguments (``name``, ``dtype``...).

    Call arguments:
        inputs: ``(B, T, D)`` float tensor.
        mask: optional ``(B, T)`` boolean mask (Keras passes the upstream mask); without
            one every step is valid.

    Example:

    ```python
    x = keras.layers.Embedding(1000, 16, mask_zero=True)(ids)
    x = rnnkit.SimpleRecurrentLayer(32, return_sequences=True)(x)
    pooled = MaskedPooling(("max", "mean"))(x)      # (B, 64)
    ```
    """

    def __init__(self, modes: Sequence[str] = _MODES, **kwargs) -> None:
        super().__init__(**kwargs)
        modes = tuple(modes)
        unknown = [m for m in modes if m not in _MODES]
        if not modes or unknown:
            raise ValueError(f"modes must be a non-empty sequence of {_MODES}, got {modes}")
        self.modes = modes
        self.supports_masking = True

    def call(self, inputs: tf.Tensor, mask: tf.Tensor | None = None) -> tf.Tensor:
        if mask is None:
            mask = tf.ones(tf.shape(inputs)[:2], dtype=tf.bool)
        weight = tf.cast(mask, inputs.dtype)[:, :, None]
        count = tf.reduce_sum(weight, axis=1)
        pooled = []
        for mode in self.modes:
            if mode == "mean":
                pooled.append(tf.reduce_sum(inputs * weight, axis=1) / tf.maximum(count, 1.0))
            else:
                lowest = tf.cast(inputs.dtype.min, inputs.dtype)
                peak = tf.reduce_max(tf.where(weight > 0, inputs, lowest), axis=1)
                pooled.append(tf.where(count > 0, peak, tf.zeros_like(peak)))
        return tf.concat(pooled, axis=-1) if len(pooled) > 1 else pooled[0]

    def compute_mask(self, inputs, mask=None):
        return None  # time is pooled away

    def compute_output_shape(self, inputs_shape):
        width = inputs_shape[-1]
        return (inputs_shape[0], None if width is None else width * len(self.modes))

    def get_config(self) -> dict:
        return {**super().get_config(), "modes": list(self.modes)}
