"""Luong ("general") attention of decoder states over a sequence of keys."""

from __future__ import annotations

import keras
import numpy as np

__all__ = ["LuongAttention"]


@keras.saving.register_keras_serializable(package="rnnkit")
class LuongAttention(keras.layers.Layer):
    """Multiplicative attention: ``softmax((W q) . k / sqrt(d))`` over the keys.

    The "general" score of Luong et al. (2015), ``q^T W k``, computed as a projection of
    the query to the keys' width ``d`` followed by a dot product. The scores are divided
    by ``sqrt(d)`` as in dot-product attention: unscaled scores over a few hundred
    dimensions start so large that the softmax is saturated (near one-hot) and learns
    slowly. The attention reads only the query, never its own output, so a teacher-forced
    decoder can attend for every step at once (``query`` of shape ``(B, T, H)``) and get
    the same numbers as stepping (``query`` of shape ``(B, H)``).

    Args:
        key_dim: ``d``, the width of the keys (the query is projected to it).
        **kwargs: base layer arguments (``name``, ``dtype``...).

    Call arguments:
        query: ``(B, T, H)`` decoder states, or ``(B, H)`` for one decoding step.
        keys: ``(B, S, d)``: what is attended over (encoder states, image grid cells);
            they are also the values that the context vector averages.
        keys_mask: optional boolean ``(B, S)``; ``False`` keys get no weight. A row with
            no valid key spreads its weight evenly (it never produces NaN).

    Returns:
        ``(context, weights)``: ``(B, T, d)`` and ``(B, T, S)``, or ``(B, d)`` and
        ``(B, S)`` for a 2-D query.

    Example:

    ```python
    attention = LuongAttention(64)
    context, weights = attention(decoder_states, encoder_states, keys_mask=source_mask)
    ```
    """

    def __init__(self, key_dim: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if int(key_dim) < 1:
            raise ValueError(f"key_dim must be >= 1, got {key_dim}")
        self.key_dim = int(key_dim)
        self.query_projection = keras.layers.Dense(self.key_dim, use_bias=False, name="query")

    def build(self, query_shape, keys_shape=None) -> None:
        self.query_projection.build(tuple(query_shape))
        self.built = True

    def call(self, query, keys, keys_mask=None):
        single = len(query.shape) == 2
        q = self.query_projection(query[:, None, :] if single else query)
        scores = keras.ops.matmul(q, keras.ops.transpose(keys, (0, 2, 1)))
        scores = scores / float(np.sqrt(self.key_dim))
        if keys_mask is not None:
            # A finite floor: -inf would give NaN on a row with no valid key.
            wide = keras.backend.standardize_dtype(scores.dtype) in ("float32", "float64")
            floor = keras.ops.cast(-1e9 if wide else -3e4, scores.dtype)
            scores = keras.ops.where(keras.ops.expand_dims(keys_mask, 1), scores, floor)
        weights = keras.ops.softmax(scores, axis=-1)
        context = keras.ops.matmul(weights, keys)
        if single:
            return context[:, 0], weights[:, 0]
        return context, weights

    def compute_output_shape(self, query_shape, keys_shape=None):
        if len(query_shape) == 2:
            return (query_shape[0], self.key_dim), (query_shape[0], keys_shape[1])
        return ((query_shape[0], query_shape[1], self.key_dim),
                (query_shape[0], query_shape[1], keys_shape[1]))

    def get_config(self) -> dict:
        return {**super().get_config(), "key_dim": self.key_dim}
