"""Checkpoint averaging (rnnkit.averaging) on a small model with a score to maximise."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from rnnkit.averaging import RecentWeights, average_checkpoints


def _model() -> keras.Model:
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    model.set_weights([np.ones((1, 1), np.float32)])
    return model


def _watched(model: keras.Model, kernels: list[float], keep: int = 3) -> RecentWeights:
    recent = RecentWeights(keep)
    recent.set_model(model)
    for epoch, k in enumerate(kernels):
        model.set_weights([np.full((1, 1), k, np.float32)])
        recent.on_epoch_end(epoch)
    return recent


def _kernel(model: keras.Model) -> float:
    return float(model.get_weights()[0][0, 0])


def test_the_average_is_kept_when_the_score_to_maximise_does_not_drop():
    model = _model()
    score = lambda m: -abs(_kernel(m) - 2.0)  # noqa: E731  best at kernel 2
    recent = _watched(model, [1.0, 3.0, 2.5])  # the model now holds epoch 3 (2.5)
    result = average_checkpoints(model, recent, 2, 3, score, name="recall", mode="max")
    assert result["adopted"] and result["epochs"] == [1, 2, 3]
    assert _kernel(model) == pytest.approx((1.0 + 3.0 + 2.5) / 3)
    assert result["recall_average"] > result["recall_best_epoch"]


def test_a_worse_average_is_dropped_and_the_best_epoch_kept():
    model = _model()
    score = lambda m: -abs(_kernel(m) - 3.0)  # noqa: E731
    recent = _watched(model, [0.0, 3.0])
    result = average_checkpoints(model, recent, 1, 3, score, name="recall", mode="max")
    assert not result["adopted"] and _kernel(model) == 3.0


def test_only_epochs_up_to_the_best_and_at_most_count_are_averaged():
    model = _model()
    recent = _watched(model, [1.0, 2.0, 3.0, 4.0], keep=4)
    model.set_weights([np.full((1, 1), 3.0, np.float32)])  # fit restored epoch 3
    result = average_checkpoints(model, recent, 2, 2, lambda m: 0.0, mode="max")
    assert result["epochs"] == [2, 3] and _kernel(model) == pytest.approx(2.5)
    assert average_checkpoints(model, recent, 2, 1, lambda m: 0.0)["epochs"] == [3]
    assert len(_watched(model, [1.0, 2.0, 3.0, 4.0], keep=2).epochs) == 2
    with pytest.raises(ValueError, match="mode"):
        average_checkpoints(model, recent, 2, 2, lambda m: 0.0, mode="best")
    with pytest.raises(ValueError, match="keep >= 1"):
        RecentWeights(0)
