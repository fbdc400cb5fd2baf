"""Losses and metrics over padded token sequences (padding never counts).

Every function here averages over the real tokens of the whole batch (not per sequence
and not over padding), so a batch of long sentences and one of short sentences weigh each
token the same. The padding id is :data:`rnnkit.modeling.vocabulary.PAD`.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from rnnkit.modeling.vocabulary import PAD

__all__ = ["masked_accuracy", "masked_mean", "masked_sequence_loss"]


def masked_mean(mask, values):
    """Mean of ``values`` over the positions where ``mask`` is set (0 when none is).

    The argument order is a Keras loss's ``(y_true, y_pred)``, so a model that computes
    its own per-token loss (for instance a negative log-likelihood under a copy
    mechanism) can train with ``loss=masked_mean`` and the token mask as its target.

    Args:
        mask: ``(B, T)`` weights, 1 for a real token and 0 for padding (bool or number).
        values: ``(B, T)`` per-token values.
    """
    mask = keras.ops.cast(mask, values.dtype)
    return keras.ops.sum(values * mask) / keras.ops.maximum(keras.ops.sum(mask), 1.0)


def masked_sequence_loss(num_classes: int | None = None, label_smoothing: float = 0.0,
                         from_logits: bool = True) -> Callable:
    """Token cross-entropy averaged over the non-padding targets of a batch.

    Without smoothing this is Keras's own ``SparseCategoricalCrossentropy`` with
    ``ignore_class=PAD``, whose reduction divides by the number of real tokens. Keras's
    sparse loss has no label smoothing, so with smoothing the targets are made one-hot
    (``num_classes`` wide) for ``categorical_crossentropy``, which spreads
    ``label_smoothing`` evenly over all classes, and the result is :func:`masked_mean`.

    Args:
        num_classes: the width of the predictions; needed only with smoothing.
        label_smoothing: probability mass spread evenly over the classes (0: none).
        from_logits: whether predictions are logits (else probabilities).

    Returns:
        A ``loss(y_true, y_pred)`` callable for ``model.compile``; ``y_true`` holds
        ``(B, T)`` token ids and ``y_pred`` ``(B, T, num_classes)`` scores.

    Raises:
        ValueError: for smoothing outside ``[0, 1)`` or smoothing without ``num_classes``.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if label_smoothing == 0.0:
        return keras.losses.SparseCategoricalCrossentropy(
            from_logits=from_logits, ignore_class=PAD, name="masked_sequence_loss")
    if not num_classes or num_classes < 1:
        raise ValueError("label smoothing needs num_classes (the width of the predictions)")

    def masked_smoothed_loss(y_true, y_pred):
        target = keras.ops.one_hot(keras.ops.cast(y_true, "int32"), num_classes)
        per_token = keras.losses.categorical_crossentropy(
            target, y_pred, from_logits=from_logits, label_smoothing=label_smoothing)
        return masked_mean(keras.ops.not_equal(y_true, PAD), per_token)

    return masked_smoothed_loss


def masked_accuracy(y_true, y_pred):
    """Next-token accuracy over the non-padding targets: arg-max of ``y_pred`` vs ``y_true``.

    Args:
        y_true: ``(B, T)`` token ids (``PAD`` is skipped).
        y_pred: ``(B, T, V)`` scores (logits, probabilities or log-probabilities).
    """
    predicted = keras.ops.cast(keras.ops.argmax(y_pred, axis=-1), y_true.dtype)
    hit = keras.ops.cast(keras.ops.equal(predicted, y_true), "float32")
    return masked_mean(keras.ops.not_equal(y_true, PAD), hit)
