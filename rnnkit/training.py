"""Shared training mechanics: seeding, tf.distribute strategies and a standard ``fit``.

Every app trains through :func:`fit` so all of them get the same behaviour:

* Keras progress bars;
* ``EarlyStopping(restore_best_weights=True)`` on a validation metric;
* ``BackupAndRestore(<output>/backup)``: an interrupted ``train`` resumes at the last
  finished epoch when run again with the same ``--output``;
* ``TensorBoard(<output>/tensorboard)``;
* ``<output>/history.json`` written atomically after every epoch, complete across resumes;
* the best weights kept in ``<output>/best.weights.h5`` so "best" survives a resume too.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from rnnkit.atomic import atomic_path, atomic_write_json

__all__ = ["fit", "get_strategy", "resolve_mode", "save_model", "seed_everything"]


def seed_everything(seed: int, deterministic_ops: bool = False) -> None:
    """Seed Python, NumPy, TensorFlow and Keras so a run is repeatable.

    Args:
        seed: the seed (the CLI default is 1337).
        deterministic_ops: also force deterministic TF kernels (slower; off by default).
    """
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()


def get_strategy(name: str = "default") -> tf.distribute.Strategy:
    """Return a ``tf.distribute`` strategy by name.

    Args:
        name: ``"default"`` (one device, the usual no-op strategy) or ``"mirrored"``
            (``MirroredStrategy`` over every visible GPU, or the CPU when there is none).

    Raises:
        ValueError: for any other name.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}: expected 'default' or 'mirrored'")


def resolve_mode(monitor: str, mode: str = "auto") -> str:
    """Return ``"min"`` or ``"max"`` for a monitored metric (``auto``: max for accuracy-like).

    Args:
        monitor: a metric name such as ``"val_loss"`` or ``"val_accuracy"``.
        mode: ``"min"``, ``"max"`` or ``"auto"``.
    """
    if mode in ("min", "max"):
        return mode
    if mode != "auto":
        raise ValueError(f"mode must be 'min', 'max' or 'auto', not {mode!r}")
    maximise = ("acc", "auc", "precision", "recall", "f1", "bleu", "map")
    return "max" if any(key in monitor.lower() for key in maximise) else "min"


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


class _HistoryAndBest(keras.callbacks.Callback):
    """Write history.json each epoch and keep the best weights, both across resumes.

    Keras' own History and EarlyStopping only see the epochs of the current process; after
    BackupAndRestore resumes they would forget the earlier ones, so this callback keeps
    the full record on disk and the best weights in a file.
    """

    def __init__(self, output_dir: Path, monitor: str, mode: str) -> None:
        super().__init__()
        self.history_path = output_dir / "history.json"
        self.log_path = output_dir / "backup" / "history.partial.json"
        self.best_path = output_dir / "best.weights.h5"
        self.monitor = monitor
        self.better = (lambda a, b: a < b) if mode == "min" else (lambda a, b: a > b)
        self.epochs: list[dict[str, float]] = []
        self.best: float | None = None

    def _improves(self, value: float | None) -> bool:
        if value is None or math.isnan(value):
            return False
        return self.best is None or self.better(value, self.best)

    def on_train_begin(self, logs: dict | None = None) -> None:
        # BackupAndRestore (listed first) has already set the epoch to resume from.
        start = int(getattr(self.model, "_initial_epoch", None) or 0)
        previous: list[dict[str, float]] = []
        if start and self.log_path.exists():
            previous = json.loads(self.log_path.read_text())
        self.epochs = previous[:start]
        if not start and self.best_path.exists():
            self.best_path.unlink()  # a fresh run: stale best weights must not be reused
        for row in self.epochs:
            value = row.get(self.monitor)
            if self._improves(value):
                self.best = value

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        row = {key: _to_float(val) for key, val in (logs or {}).items()}
        row["epoch"] = epoch
        self.epochs.append(row)
        value = row.get(self.monitor)
        if self._improves(value):
            self.best = value
            with atomic_path(self.best_path, suffix=".weights.h5") as tmp:
                self.model.save_weights(tmp)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.log_path, self.epochs)

    def history(self) -> dict[str, list[float]]:
        keys = sorted({key for row in self.epochs for key in row if key != "epoch"})
        return {key: [row.get(key, float("nan")) for row in self.epochs] for key in keys}


def fit(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    *,
    output_dir: str | os.PathLike[str],
    epochs: int,
    monitor: str = "val_loss",
    mode: str = "auto",
    patience: int = 3,
    extra_callbacks: Iterable[keras.callbacks.Callback] = (),
    verbose: int | str = "auto",
) -> dict[str, Any]:
    """Train a compiled model with the standard rnnkit callbacks and return its history.

    Running it again with the same ``output_dir`` after an interruption resumes from the
    last completed epoch (``<output>/backup``); a run that completed leaves no backup, so
    the next call trains from scratch.

    Args:
        model: a compiled Keras model (build and compile it under ``strategy.scope()``).
        train_ds: the training ``tf.data.Dataset`` of ``(inputs, targets)`` batches.
        val_ds: the validation dataset, same structure.
        output_dir: the run folder (``--output``).
        epochs: the maximum number of epochs.
        monitor: the metric early stopping and "best weights" watch.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (see :func:`resolve_mode`).
        patience: epochs without improvement before stopping.
        extra_callbacks: app callbacks appended after the standard ones.
        verbose: passed to ``model.fit`` ("auto" shows a progress bar).

    Returns:
        ``{"history": {metric: [per epoch]}, "best_epoch": int, "best": float,
        "monitor": str, "epochs_run": int}``; the same object is in ``history.json``.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    mode = resolve_mode(monitor, mode)
    recorder = _HistoryAndBest(out, monitor, mode)
    callbacks: list[keras.callbacks.Callback] = [
        # Must come first: it sets the epoch to resume from before the others start.
        keras.callbacks.BackupAndRestore(str(out / "backup")),
        recorder,
        keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=patience, restore_best_weights=True
        ),
        keras.callbacks.TensorBoard(str(out / "tensorboard"), write_graph=False,
                                    profile_batch=0),
        keras.callbacks.TerminateOnNaN(),
        *extra_callbacks,
    ]
    # shuffle=False: datasets shuffle themselves (Keras would only warn it ignores it).
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks,
              verbose=verbose, shuffle=False)
    if recorder.best_path.exists():
        # Equivalent to EarlyStopping's restore, and also right after a resume.
        model.load_weights(recorder.best_path)
    history = recorder.history()
    values = history.get(monitor, [])
    finite = [(i, v) for i, v in enumerate(values) if not math.isnan(v)]
    best_epoch, best = (
        (min if mode == "min" else max)(finite, key=lambda item: item[1]) if finite else (-1, None)
    )
    result = {
        "history": history,
        "monitor": monitor,
        "mode": mode,
        "best_epoch": best_epoch,
        "best": best,
        "epochs_run": len(values),
    }
    atomic_write_json(out / "history.json", result)
    return result


def save_model(model: keras.Model, path: str | os.PathLike[str]) -> Path:
    """Save a Keras model to a ``.keras`` file atomically (temp file, then rename).

    Args:
        model: the model to save.
        path: the destination, ending in ``.keras``.
    """
    final = Path(path)
    if final.suffix != ".keras":
        raise ValueError(f"a Keras model file must end in .keras: {final}")
    with atomic_path(final, suffix=".keras") as tmp:
        model.save(tmp)
    return final
