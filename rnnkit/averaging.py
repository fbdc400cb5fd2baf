"""Checkpoint averaging: the mean of the best epoch's weights and the epochs before it.

Averaging the weights of the last few epochs of one run (as in Vaswani et al. 2017 and in
stochastic weight averaging) smooths out where the last steps happened to leave the
model, which matters most where the validation signal that picked the best epoch is
noisy. The average is kept only when it scores at least as well as the best epoch on the
app's own validation measure, so it can never make the kept model worse on that measure.

:class:`RecentWeights` holds the weights of the last epochs during ``fit``;
:func:`average_checkpoints` tries the average afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

__all__ = ["RecentWeights", "average_checkpoints"]


class RecentWeights(keras.callbacks.Callback):
    """Keeps the weights of the last ``keep`` epochs in memory.

    After an interrupted run resumes, only the epochs trained since then are held.

    Args:
        keep: how many epochs to hold (the averaging count plus the early-stopping
            patience: the best epoch can lie that far before the last).
    """

    def __init__(self, keep: int) -> None:
        super().__init__()
        if keep < 1:
            raise ValueError(f"RecentWeights needs keep >= 1, got {keep}")
        self.keep = keep
        self.epochs: dict[int, list[np.ndarray]] = {}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epochs[epoch] = self.model.get_weights()  # already copies
        for old in sorted(self.epochs)[:-self.keep]:
            del self.epochs[old]


def average_checkpoints(model: keras.Model, recent: RecentWeights, best_epoch: int,
                        count: int, score: Callable[[keras.Model], float], *,
                        name: str = "val_loss", mode: str = "min") -> dict[str, Any]:
    """Average the weights of ``best_epoch`` and the epochs before it that ``recent`` holds
    (``count`` epochs at most), and keep the average only if ``score`` says it is better.

    Args:
        model: the trained model, holding the best epoch's weights (as
            :func:`rnnkit.training.fit` restores them).
        recent: the callback that watched the training.
        best_epoch: the 0-based best epoch.
        count: most epochs averaged (1: nothing is done).
        score: the validation measure of a model's current weights.
        name: the measure's name, for the returned keys.
        mode: ``"min"`` (lower is better, a loss) or ``"max"`` (an accuracy, a recall).

    Returns:
        What was done, for ``run.json``: ``epochs`` averaged (1-based), ``<name>_best_epoch``
        and ``<name>_average`` (when an average was tried) and ``adopted``.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    epochs = [e for e in sorted(recent.epochs) if e <= best_epoch][-count:]
    if len(epochs) < 2 or best_epoch not in recent.epochs:
        return {"epochs": [best_epoch + 1], "adopted": False}
    best = model.get_weights()
    best_score = float(score(model))
    model.set_weights([np.mean([recent.epochs[e][i] for e in epochs], axis=0)
                       for i in range(len(best))])
    mean_score = float(score(model))
    adopted = mean_score <= best_score if mode == "min" else mean_score >= best_score
    if not adopted:
        model.set_weights(best)
    print(f"checkpoint average of epochs {[e + 1 for e in epochs]}: {name} {mean_score:.4f} "
          f"vs best epoch {best_score:.4f} -> {'kept' if adopted else 'not kept'}", flush=True)
    return {"epochs": [e + 1 for e in epochs], f"{name}_best_epoch": round(best_score, 4),
            f"{name}_average": round(mean_score, 4), "adopted": bool(adopted)}
