"""Shared training mechanics: seeding, strategies and one training loop for every app.

Every app trains through :func:`fit`, a loop on ``strategy.run`` that behaves the same
under the ``default``, ``mirrored`` and ``multi_worker`` strategies (see
:mod:`rnnkit.distributed`). Keras' own ``Model.fit`` is not used: under
``MultiWorkerMirroredStrategy`` it fails before its first step (keras-team/keras#20585,
its symbolic build receives per-replica values). The loop builds the model from the
dataset's element spec instead, then runs the model's own ``train_step``/``test_step``
(loss scaling, gradient all-reduce and metrics stay Keras') on distributed batches. It
gives every app:

* Keras progress bars (``keras.utils.Progbar``) and TensorBoard logs
  (``<output>/tensorboard/{train,validation}``, Keras' ``epoch_*`` names);
* early stopping on a validation metric, with the best weights restored at the end;
* app callbacks (``extra_callbacks``, e.g. ``ReduceLROnPlateau``) called at the usual
  points, their counters checkpointed;
* crash safety: a checkpoint after every epoch in ``<output>/checkpoints/epoch-NNNN``
  (weights, optimizer state with its learning rate and step, best weights, history,
  early-stopping and callback counters), written to a temporary folder and renamed into
  place, the last two kept. A killed ``train`` run again with the same ``--output``
  resumes after the last finished epoch; an unreadable checkpoint (a disk that lost the
  end of a file) is reported and the previous one used. The checkpoints of a finished
  run are removed only by :func:`save_model`, so a kill between the end of training and
  the saved model loses nothing: the next run restores the result without training;
* ``<output>/history.json`` after every epoch, complete across resumes, and
  ``<output>/best.weights.h5``;
* only the chief writes (``rnnkit.distributed.is_chief``): other workers of a
  ``multi_worker`` job write nothing.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from rnnkit.atomic import atomic_directory, atomic_path, atomic_write_json
from rnnkit.distributed import (
    WorkerLostError,
    add_training_arguments,
    distribute_dataset,
    get_strategy,
    is_chief,
    launch_local_workers,
    per_replica_batch_size,
    set_mixed_precision,
    strategy_from_args,
)
from rnnkit.layers._compat import symbolic_build

__all__ = [
    "CHECKPOINTS",
    "WorkerLostError",
    "add_training_arguments",
    "distribute_dataset",
    "fit",
    "get_strategy",
    "is_chief",
    "launch_local_workers",
    "per_replica_batch_size",
    "resolve_mode",
    "save_model",
    "seed_everything",
    "set_mixed_precision",
    "strategy_from_args",
]

#: The checkpoint folder inside a run folder.
CHECKPOINTS = "checkpoints"
_STATE = "state.json"
_ARRAYS = "variables.npz"
_STATE_VERSION = 1
# Attributes of Keras callbacks that carry their progress between epochs
# (ReduceLROnPlateau, EarlyStopping, ...); restored on resume.
_CALLBACK_STATE = ("wait", "best", "cooldown_counter", "best_epoch", "stopped_epoch")
# Errors a collective op raises when a peer process is gone.
_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                tf.errors.CancelledError, tf.errors.AbortedError)


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


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- checkpoints


class _Checkpoints:
    """Per-epoch checkpoint folders ``epoch-NNNN`` (state.json + variables.npz), newest last.

    Each is written into a hidden temporary folder and renamed into place, so a folder that
    has its final name is complete; a kill during a save leaves only the temporary folder,
    removed by the next run.
    """

    def __init__(self, folder: Path, writable: bool, keep: int = 2) -> None:
        self.folder = folder
        self.writable = writable
        self.keep = max(1, keep)

    def existing(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob("epoch-*") if p.is_dir())

    def clean_partial(self) -> None:
        """Remove what killed saves left behind (chief only)."""
        if not self.writable or not self.folder.is_dir():
            return
        for leftover in [*self.folder.glob(".tmp-*"), *self.folder.glob(".old-*")]:
            _say(f"removing {leftover}: a checkpoint save that was interrupted")
            shutil.rmtree(leftover, ignore_errors=True)

    def remove_all(self) -> None:
        if self.writable:
            shutil.rmtree(self.folder, ignore_errors=True)

    def save(self, epoch: int, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if not self.writable:
            return
        with atomic_directory(self.folder / f"epoch-{epoch + 1:04d}", overwrite=True) as tmp:
            with open(tmp / _ARRAYS, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            with open(tmp / _STATE, "w") as f:
                f.write(json.dumps(state, indent=1))
                f.flush()
                os.fsync(f.fileno())
        for old in self.existing()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def load(self) -> tuple[Path, dict[str, Any], dict[str, np.ndarray]] | None:
        """The newest readable checkpoint; unreadable ones are reported and skipped."""
        candidates = self.existing()[::-1]
        for i, path in enumerate(candidates):
            try:
                state = json.loads((path / _STATE).read_text())
                if state.get("version") != _STATE_VERSION:
                    raise ValueError(f"unknown checkpoint version {state.get('version')!r}")
                with np.load(path / _ARRAYS) as npz:
                    arrays = {key: npz[key] for key in npz.files}  # reads (CRC-checks) all
                return path, state, arrays
            except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is skipped
                following = ("falling back to the previous one" if i + 1 < len(candidates)
                             else "no earlier checkpoint: training starts from scratch")
                _say(f"warning: checkpoint {path} is unreadable "
                     f"({type(err).__name__}: {err}); {following}")
        return None

    def latest_finished(self) -> bool:
        found = self.existing()
        if not found:
            return False
        try:
            return bool(json.loads((found[-1] / _STATE).read_text()).get("finished"))
        except (OSError, ValueError):
            return False


def _weights(model: keras.Model) -> list:
    return list(model.weights)


def _optimizer_variables(model: keras.Model) -> list:
    return list(model.optimizer.variables) if model.optimizer is not None else []


def _values(variables: list) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v.value)) for v in variables]


def _pack(prefix: str, values: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{prefix}/{i:05d}": v for i, v in enumerate(values)}


def _unpack(prefix: str, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    keys = sorted(k for k in arrays if k.startswith(prefix + "/"))
    return [arrays[k] for k in keys]


def _fingerprint(model: keras.Model, monitor: str, mode: str) -> dict[str, Any]:
    """What a checkpoint must match to be resumed (the same model and optimizer)."""
    return {
        "weights": [list(v.shape) for v in _weights(model)],
        "optimizer": type(model.optimizer).__name__ if model.optimizer is not None else None,
        "optimizer_variables": [list(v.shape) for v in _optimizer_variables(model)],
        "monitor": monitor,
        "mode": mode,
    }


def _assign(variables: list, values: list[np.ndarray]) -> None:
    for var, value in zip(variables, values, strict=True):
        var.assign(value)


def _build(model: keras.Model, ds: tf.data.Dataset, strategy: tf.distribute.Strategy) -> None:
    """Create every model, metric and optimizer variable from the dataset's element spec.

    This is what ``Model.fit`` does before its first step, but from the (local) element spec
    instead of a distributed batch, which is where Keras fails under multi_worker.
    """
    if model.optimizer is None:
        raise ValueError("compile the model before training it (no optimizer)")
    spec = ds.element_spec
    with strategy.scope():
        symbolic_build(model, spec)


class _Tensorboard:
    """Keras' TensorBoard epoch scalars (``epoch_<metric>`` in train/ and validation/)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.writers: dict[str, Any] = {}

    def write(self, epoch: int, logs: dict[str, float], learning_rate: float | None) -> None:
        if self.folder is None:
            return
        for key, value in logs.items():
            kind, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            if kind not in self.writers:
                self.writers[kind] = tf.summary.create_file_writer(str(self.folder / kind))
            with self.writers[kind].as_default():
                tf.summary.scalar(f"epoch_{name}", value, step=epoch)
        if learning_rate is not None and "train" in self.writers:
            with self.writers["train"].as_default():
                tf.summary.scalar("epoch_learning_rate", learning_rate, step=epoch)
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def _learning_rate(model: keras.Model) -> float | None:
    try:
        return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    except Exception:  # noqa: BLE001 - a custom optimizer without a readable rate
        return None


def _result(rows: list[dict[str, float]], monitor: str, mode: str) -> dict[str, Any]:
    keys = sorted({key for row in rows for key in row if key != "epoch"})
    history = {key: [row.get(key, float("nan")) for row in rows] for key in keys}
    values = history.get(monitor, [])
    finite = [(i, v) for i, v in enumerate(values) if not math.isnan(v)]
    best_epoch, best = (
        (min if mode == "min" else max)(finite, key=lambda item: item[1]) if finite else (-1, None)
    )
    return {"history": history, "monitor": monitor, "mode": mode, "best_epoch": best_epoch,
            "best": best, "epochs_run": len(values)}


def _lost_workers(text: str) -> str:
    """Name the peers a collective-op error blames ("worker 1 stopped responding")."""
    listed = text.split("unhealthy", 1)[1] if "unhealthy" in text else ""
    tasks = sorted(set(re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", listed)))
    if not tasks:
        return "lost contact with another worker"
    names = ", ".join(f"{job} {index}" for job, index in tasks)
    return f"{names} stopped responding (no heartbeats: the process died or is unreachable)"


def _agree(strategy: tf.distribute.Strategy, value: int, checkpoints: Path) -> None:
    """Check that every worker resumes at the same epoch (they read the chief's folder)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    mine = tf.constant([float(value), float(value) ** 2])

    @tf.function
    def average():
        return strategy.reduce(tf.distribute.ReduceOp.MEAN,
                               strategy.run(lambda: tf.identity(mine)), axis=None)

    mean = average().numpy()
    if abs(mean[1] - mean[0] ** 2) > 1e-6:
        raise RuntimeError(
            f"the workers found different checkpoints in {checkpoints} (this worker resumes "
            f"at epoch {value + 1}): every worker must read the chief's --output folder (a "
            f"shared filesystem) to resume a multi_worker run, or start it afresh in a new "
            f"--output")


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
    validation_metrics: Callable[[keras.Model], Mapping[str, float]] | None = None,
    verbose: int | str = "auto",
    strategy: tf.distribute.Strategy | None = None,
    shard_policy: str = "data",
    steps_per_epoch: int | None = None,
    keep_checkpoints: int = 2,
) -> dict[str, Any]:
    """Train a compiled model with rnnkit's loop (see the module docstring); return its history.

    Running it again with the same ``output_dir`` after an interruption resumes after the
    last finished epoch; after a finished run whose model :func:`save_model` has not saved
    yet it restores that run's best weights and result without training. Once the model is
    saved the next call trains from scratch.

    Args:
        model: a compiled Keras model (build and compile it under ``strategy.scope()``).
        train_ds: the training ``tf.data.Dataset`` of ``(inputs, targets[, weights])``
            batches of the GLOBAL batch size (any cardinality, shapes may vary per batch).
        val_ds: the validation dataset, same structure.
        output_dir: the run folder (``--output``).
        epochs: the maximum number of epochs.
        monitor: the metric early stopping and "best weights" watch.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (see :func:`resolve_mode`).
        patience: epochs without improvement before stopping.
        extra_callbacks: Keras callbacks called after the loop's own work each epoch; their
            counters (``wait``, ``best``, ``cooldown_counter``...) are checkpointed.
        validation_metrics: called with the model after each epoch's validation pass; the
            ``{name: value}`` it returns joins the epoch's metrics, so ``monitor`` can name
            one (for a measure the compiled metrics cannot express, such as a decoded
            output's quality). Every worker calls it, so it must not depend on the worker.
        verbose: 0 silent, 1 (or "auto") a progress bar, 2 one line per epoch.
        strategy: the strategy the model was built under (default: the model's own).
        shard_policy: how batches are shared between workers (see
            :func:`rnnkit.distributed.distribute_dataset`).
        steps_per_epoch: at most this many training batches per epoch (default: all).
        keep_checkpoints: how many epoch checkpoints to keep (at least 1).

    Returns:
        ``{"history": {metric: [per epoch]}, "best_epoch": int, "best": float,
        "monitor": str, "mode": str, "epochs_run": int}``; the same object is in
        ``history.json``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, not {epochs}")
    strategy = strategy or model.distribute_strategy
    chief = is_chief(strategy)
    out = Path(output_dir)
    if chief:
        out.mkdir(parents=True, exist_ok=True)
        # Left by the Keras BackupAndRestore of earlier versions; never read any more.
        shutil.rmtree(out / "backup", ignore_errors=True)
    mode = resolve_mode(monitor, mode)
    verbose = 1 if verbose == "auto" else int(verbose)
    callbacks = list(extra_callbacks)
    better = (lambda a, b: a < b) if mode == "min" else (lambda a, b: a > b)

    _build(model, train_ds, strategy)
    store = _Checkpoints(out / CHECKPOINTS, writable=chief, keep=keep_checkpoints)
    fingerprint = _fingerprint(model, monitor, mode)
    loaded = store.load()
    state: dict[str, Any] | None = None
    if loaded is not None:
        path, state, arrays = loaded
        if state.get("fingerprint") != fingerprint or (
                state.get("finished") and state.get("epochs") != epochs):
            _say(f"note: the checkpoint in {path} belongs to another model or setting; "
                 f"training starts from scratch (it is removed)")
            state = None
    start = 0 if state is None else int(state["epoch"]) + 1
    _agree(strategy, start, store.folder)
    store.clean_partial()
    if state is None:
        if loaded is not None or store.existing():
            store.remove_all()
        rows: list[dict[str, float]] = []
        best, best_epoch, wait, known_steps = None, -1, 0, None
        best_weights = _values(_weights(model))
    else:
        _assign(_weights(model), _unpack("model", arrays))
        _assign(_optimizer_variables(model), _unpack("optimizer", arrays))
        best_weights = _unpack("best", arrays)
        rows = state["rows"]
        best, best_epoch, wait = state["best"], state["best_epoch"], state["wait"]
        known_steps = state.get("steps_per_epoch")
        if state.get("finished"):
            _say(f"training in {out} already finished at epoch {start}; its model was not "
                 f"saved yet: restoring the best weights (epoch {best_epoch + 1}) without "
                 f"training")
            _assign(_weights(model), best_weights)
            return _finish(out, chief, rows, monitor, mode)
        if verbose:
            _say(f"resuming from {path} after epoch {start} of {epochs}")

    for cb in callbacks:
        cb.set_model(model)
        cb.set_params({"epochs": epochs, "steps": known_steps, "verbose": verbose})
        cb.on_train_begin({})
    if state is not None:
        for cb, saved in zip(callbacks, state.get("callbacks", []), strict=False):
            for key, value in saved.items():
                setattr(cb, key, value)

    dist_train = distribute_dataset(train_ds, strategy, shard_policy)
    dist_val = distribute_dataset(val_ds, strategy, shard_policy)

    def _reduced(outputs: dict[str, Any]) -> dict[str, tf.Tensor]:
        return {key: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                for key, value in outputs.items()}

    # Traced once each, for the datasets' element specs (unknown batch size and lengths,
    # as Keras' own fit traces them): tracing for the first batch's concrete shape would
    # retrace per bucket and give loops static shapes that later batches do not have.
    @tf.function(input_signature=[dist_train.element_spec])
    def train_step(batch):
        return _reduced(strategy.run(model.train_step, args=(batch,)))

    @tf.function(input_signature=[dist_val.element_spec])
    def test_step(batch):
        return _reduced(strategy.run(model.test_step, args=(batch,)))

    board = _Tensorboard(out / "tensorboard" if chief else None)
    show = verbose if chief else 0
    model.stop_training = False
    epoch = start
    try:
        for epoch in range(start, epochs):
            started = time.time()
            model.reset_metrics()
            for cb in callbacks:
                cb.on_epoch_begin(epoch, {})
            if show == 1:
                print(f"Epoch {epoch + 1}/{epochs}", flush=True)
            bar = keras.utils.Progbar(known_steps, verbose=1) if show == 1 else None
            step, logs = 0, {}
            for batch in dist_train:
                for cb in callbacks:
                    cb.on_train_batch_begin(step, {})
                logs = train_step(batch)
                step += 1
                if bar is not None:
                    bar.update(step, [(k, _to_float(v)) for k, v in logs.items()],
                               finalize=False)  # the epoch's line ends after validation
                for cb in callbacks:
                    cb.on_train_batch_end(step - 1, logs)
                if step == steps_per_epoch or model.stop_training:
                    break
            if step == 0:
                raise ValueError("the training dataset is empty")
            known_steps = step
            row = {key: _to_float(value) for key, value in logs.items()}
            model.reset_metrics()
            val_logs = {}
            for batch in dist_val:
                val_logs = test_step(batch)
            row.update({f"val_{key}": _to_float(value) for key, value in val_logs.items()})
            if validation_metrics is not None:
                row.update({key: float(value)
                            for key, value in validation_metrics(model).items()})
            if bar is not None:
                bar.update(step, [(k, v) for k, v in row.items()], finalize=True)
            elif show == 2:
                print(f"Epoch {epoch + 1}/{epochs} - {time.time() - started:.0f}s - "
                      + " - ".join(f"{k}: {v:.4f}" for k, v in row.items()), flush=True)
            if not math.isfinite(row.get("loss", 0.0)):
                _say(f"epoch {epoch + 1}: invalid loss {row.get('loss')}, terminating training")
                model.stop_training = True
            value = row.get(monitor)
            if value is not None and not math.isnan(value) and (best is None
                                                                or better(value, best)):
                best, best_epoch, wait = value, epoch, 0
                best_weights = _values(_weights(model))
                if chief:
                    with atomic_path(out / "best.weights.h5", suffix=".weights.h5") as tmp:
                        model.save_weights(tmp)
            else:
                wait += 1
            row["epoch"] = epoch
            rows.append(row)
            for cb in callbacks:
                cb.on_epoch_end(epoch, dict(row))
            learning_rate = _learning_rate(model)
            board.write(epoch, {k: v for k, v in row.items() if k != "epoch"}, learning_rate)
            stop = wait >= patience or model.stop_training or epoch + 1 == epochs
            if stop and verbose and chief and epoch + 1 < epochs:
                _say(f"stopped after epoch {epoch + 1}: no {monitor} improvement in {wait} "
                     f"epochs (best epoch {best_epoch + 1})")
            store.save(epoch, {
                "version": _STATE_VERSION, "epoch": epoch, "epochs": epochs, "finished": stop,
                "fingerprint": fingerprint, "rows": rows, "best": best,
                "best_epoch": best_epoch, "wait": wait, "steps_per_epoch": known_steps,
                "learning_rate": learning_rate,
                "callbacks": [{key: _to_float(getattr(cb, key)) if key == "best"
                               else getattr(cb, key)
                               for key in _CALLBACK_STATE if isinstance(
                                   getattr(cb, key, None), (int, float, np.floating,
                                                            np.integer))}
                              for cb in callbacks],
            }, {**_pack("model", _values(_weights(model))),
                **_pack("optimizer", _values(_optimizer_variables(model))),
                **_pack("best", best_weights)})
            if chief:
                atomic_write_json(out / "history.json", _result(rows, monitor, mode))
            if stop:
                break
    except _PEER_ERRORS as err:
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            raise
        raise WorkerLostError(
            f"{_lost_workers(str(err))} during epoch {epoch + 1} ({type(err).__name__}). "
            f"Start every worker again with the same command: training resumes from the "
            f"last checkpoint in {store.folder}") from err
    finally:
        board.close()
    for cb in callbacks:
        cb.on_train_end(dict(rows[-1]) if rows else {})
    _assign(_weights(model), best_weights)
    return _finish(out, chief, rows, monitor, mode)


def _finish(out: Path, chief: bool, rows: list[dict[str, float]], monitor: str,
            mode: str) -> dict[str, Any]:
    result = _result(rows, monitor, mode)
    if chief:
        atomic_write_json(out / "history.json", result)
    return result


def save_model(model: keras.Model, path: str | os.PathLike[str]) -> Path:
    """Save a Keras model to a ``.keras`` file atomically (temp file, then rename).

    Only the chief writes (other workers of a ``multi_worker`` job write nothing). Once the
    file is in place, the finished training checkpoints of the run folder it is saved into
    (``<parent>/checkpoints``) are removed: the run is complete.

    Args:
        model: the model to save.
        path: the destination, ending in ``.keras``.
    """
    final = Path(path)
    if final.suffix != ".keras":
        raise ValueError(f"a Keras model file must end in .keras: {final}")
    if not is_chief():
        return final
    with atomic_path(final, suffix=".keras") as tmp:
        model.save(tmp)
    store = _Checkpoints(final.parent / CHECKPOINTS, writable=True)
    if store.latest_finished():
        store.remove_all()
    return final
