"""The ``train`` verb: one model per fold of the data, then the final model.

The default real-speaker data trains ``fold0``..``fold4`` (each tested on its own
speakers, ``<output>/folds/<name>/``) and ``final`` on every real speaker
(``<output>/model.keras``, the model ``export`` ships); Fillets trains ``cs_to_nl`` and
``nl_to_cs`` and ``final`` on both languages; user data trains ``final`` only (see
:mod:`.pipeline`). Every run: Adam with a cosine-decayed learning rate and gradient
clipping, early stopping on the validation loss, loss weights under which every class weighs
the same (and with ``--speaker-balance`` every speaker within a class too).

The summary ``train`` returns (``run.json``'s ``train`` entry) holds what ``evaluate`` and
``export`` read: the class names, the recipe and one entry per fold (its splits, model file
and training figures). It is written after every fold, so a ``train`` that is interrupted
and run again skips the folds whose model was finished with the same recipe.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from rnnkit.app import Run
from rnnkit.errors import DataError, ModelError

from . import data, pipeline
from .augment import AUGMENT_VERSION
from .model import build_model

#: Optimisation of every fold (``--epochs``, ``--batch-size`` and ``--patience`` are flags).
LEARNING_RATE = 2e-3
LR_FLOOR = 0.05  # the cosine decay ends at this fraction of LEARNING_RATE
CLIPNORM = 1.0


def recipe_of(run: Run, extra, b) -> dict[str, Any]:
    """What decides a fold's model: a finished fold is reused only under the same recipe.

    Args:
        run: the ``train`` run.
        extra: the extra-voice builder, or None.
        b: the built dataset: its config name changes when the clips do (a reader added,
            a speaker admitted), which ``--data real`` alone does not say.
    """
    recipe = {"data": run.data, "limit": run.limit, "seed": run.seed, "epochs": run.epochs,
              "batch_size": run.batch_size, "augment": AUGMENT_VERSION,
              "fmax": float(run.fmax), "speaker_balance": bool(run.speaker_balance)}
    if extra is not None:
        # Only recorded when used, so runs without extra voices keep their recipe.
        recipe["extra_voices"] = extra.builder_config.name
    if run.pitch_prob:
        recipe["pitch_prob"] = float(run.pitch_prob)  # likewise
    if run.fmin:
        recipe["fmin"] = float(run.fmin)  # likewise
    recipe["dataset"] = b.builder_config.name
    return recipe


def _finished_folds(run: Run, recipe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The folds an earlier ``train`` in this run folder finished with ``recipe``."""
    try:
        previous = run.run_config().get("train", {})
    except ModelError:  # no run.json yet: nothing finished
        return {}
    if previous.get("recipe") != recipe:
        return {}
    return {name: info for name, info in previous.get("folds", {}).items()
            if run.model_path(info["model"]).is_file()}


def train_fold(run: Run, b, fold: dict[str, Any], extra=None) -> dict[str, Any]:
    """Train one fold's model and save it (:func:`pipeline.fold_model_name`).

    Args:
        run: the ``train`` run (``epochs``, ``batch_size``, ``seed``, ``patience``...).
        b: the built dataset.
        fold: an entry of :func:`pipeline.folds_for`.
        extra: the extra-voice builder (training data only), or None.

    Returns:
        The fold's entry of the training summary.

    Raises:
        DataError: the training side lacks a class.
    """
    run.seed_everything()
    names = data.class_names(b)
    train_ex, val_ex = pipeline.fold_examples(b, fold, extra, bool(run.pitch_prob), run.seed)
    keep = ("audio", "label", "speaker") + (("pitch_audio",) if run.pitch_prob else ())
    train_raw = pipeline.drop_too_short(train_ex.map(lambda ex: tuple(ex[k] for k in keep),
                                                     num_parallel_calls=tf.data.AUTOTUNE))
    val_raw = pipeline.drop_too_short(val_ex.map(lambda ex: (ex["audio"], ex["label"]),
                                                 num_parallel_calls=tf.data.AUTOTUNE))
    rows = list(train_raw.map(lambda a, y, s, *copy: (y, s)).as_numpy_iterator())
    labels = np.array([int(y) for y, _ in rows], dtype=np.int64)
    speakers = [s.decode() for _, s in rows]
    counts = np.bincount(labels, minlength=len(names)).astype(float)
    if (counts == 0).any():
        missing = [n for n, c in zip(names, counts) if c == 0]
        raise DataError(f"training split has no clips of class(es) {missing}")
    weights = pipeline.loss_weights(labels, speakers, len(names), run.speaker_balance)
    train_ds = pipeline.train_dataset(train_raw, run.batch_size, run.seed, weights,
                                      run.pitch_prob)
    val_ds = pipeline.eval_dataset(val_raw, run.batch_size)
    with run.strategy.scope():
        model = build_model(len(names), seed=run.seed, frontend={"fmin": float(run.fmin),
                                                                  "fmax": float(run.fmax)})
        steps = max(1, math.ceil(len(labels) / run.batch_size)) * run.epochs
        lr = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, decay_steps=steps,
                                                    alpha=LR_FLOOR)
        model.compile(optimizer=keras.optimizers.Adam(lr, clipnorm=CLIPNORM),
                      loss="sparse_categorical_crossentropy",
                      weighted_metrics=[], metrics=["accuracy"])
    extra_note = f" + Festival extra voices {extra.builder_config.name}" if extra is not None else ""
    if run.pitch_prob:
        extra_note += f", {run.pitch_prob:.0%} of views from pitch copies"
    print(f"[voice_gender] training {fold['name']}: {len(labels)} clips "
          f"({', '.join(f'{n} {int(c)}' for n, c in zip(names, counts))}), "
          f"train on {'+'.join(fold['train'])}{extra_note}", flush=True)
    start = time.time()
    result = run.fit(model, train_ds, val_ds, subdir=pipeline.fold_subdir(fold),
                     monitor="val_loss", patience=run.patience)
    model_name = pipeline.fold_model_name(fold)
    run.save_model(model, model_name)
    return {"train": fold["train"], "val": fold["val"], "test": fold["test"],
            "model": model_name, "seconds": round(time.time() - start, 1),
            "train_clips": len(labels), "params": int(model.count_params()),
            "best_epoch": result["best_epoch"] + 1, "epochs_run": result["epochs_run"]}


def train(run: Run) -> dict[str, Any]:
    """The ``train`` verb: every fold of the data, then the final model (resumable).

    Returns:
        The summary for ``run.json``: ``class_names``, ``recipe``, ``folds`` (name ->
        splits, model file, seconds, clips, best epoch...), and the final model's
        ``params`` and ``train_clips``.
    """
    b = data.prepare(run.data, run.limit, run.seed)
    extra = pipeline.extra_voices_for(run, b)
    recipe = recipe_of(run, extra, b)
    folds = pipeline.folds_for(b)
    summary: dict[str, Any] = {"class_names": data.class_names(b), "recipe": recipe,
                               "folds": _finished_folds(run, recipe)}
    for fold in folds:
        info = summary["folds"].get(fold["name"])
        if info is not None:
            print(f"[voice_gender] {fold['name']} already trained ({info['model']}); skipping",
                  file=sys.stderr, flush=True)
            continue
        info = train_fold(run, b, fold, extra)
        summary["folds"][fold["name"]] = info
        # Recorded now, so that a `train` interrupted in a later fold keeps this one.
        run.write_run_config(summary)
        print(f"[voice_gender] {fold['name']}: done ({info['seconds']} s, "
              f"best epoch {info['best_epoch']}/{info['epochs_run']})", flush=True)
    final = summary["folds"][pipeline.FINAL]
    return {**summary, "params": final["params"], "train_clips": final["train_clips"],
            "runs": ", ".join(f["name"] for f in folds)}
