"""rnnkit.training.fit: history, best-weights restore and resume after an interruption (an
exception in-process here; tests/test_crash_safety.py kills real processes);
rnnkit.reports figures."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from rnnkit import reports, training


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0], dtype="float32") > 0).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y[:, None])).batch(32)
    return ds, ds.take(2)


def _model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(keras.optimizers.SGD(0.5), "binary_crossentropy", metrics=["accuracy"])
    return model


class _Crash(keras.callbacks.Callback):
    def __init__(self, at_epoch: int) -> None:
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise RuntimeError("simulated interruption")


def test_fit_resumes_after_interruption(tmp_path):
    training.seed_everything(1)
    train, val = _data()
    model = _model()
    with pytest.raises(RuntimeError, match="simulated"):
        training.fit(model, train, val, output_dir=tmp_path, epochs=4,
                     extra_callbacks=[_Crash(2)], verbose=0)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["epoch-0002"] or sorted(
        p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch-0001", "epoch-0002"]
    resumed = _model()  # a new process would rebuild the model from scratch
    seen = []
    epochs_seen = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(e))
    result = training.fit(resumed, train, val, output_dir=tmp_path, epochs=4,
                          extra_callbacks=[epochs_seen], verbose=0)
    assert seen == [2, 3]  # the two finished epochs were not redone
    assert result["epochs_run"] == 4 and len(result["history"]["loss"]) == 4
    # The finished run's checkpoint stays until its model is saved; then the run is complete.
    assert (tmp_path / "checkpoints").is_dir()
    training.save_model(resumed, tmp_path / "model.keras")
    assert not (tmp_path / "checkpoints").exists()
    on_disk = json.loads((tmp_path / "history.json").read_text())
    assert on_disk["history"]["val_loss"] == pytest.approx(result["history"]["val_loss"])
    assert (tmp_path / "tensorboard").is_dir()


def test_fit_restores_best_weights(tmp_path):
    training.seed_everything(2)
    train, val = _data()
    model = _model()
    result = training.fit(model, train, val, output_dir=tmp_path, epochs=3,
                          monitor="val_accuracy", verbose=0)
    assert result["mode"] == "max"
    best = max(result["history"]["val_accuracy"])
    assert result["best"] == pytest.approx(best)
    score = model.evaluate(val, verbose=0, return_dict=True)["accuracy"]
    assert score == pytest.approx(best, abs=1e-6)
    path = training.save_model(model, tmp_path / "m.keras")
    assert [p.name for p in tmp_path.glob("*.keras*")] == ["m.keras"] and path.stat().st_size
    with pytest.raises(ValueError, match="must end in .keras"):
        training.save_model(model, tmp_path / "m.h5")


def test_fit_monitors_a_validation_metric_of_its_own(tmp_path):
    """``validation_metrics`` adds a measure the compiled metrics cannot express (here the
    first kernel's norm, read from the model after each epoch); early stopping watches it
    and the weights of its best epoch are the ones restored, even when that epoch is not
    the best by the loss."""
    training.seed_everything(4)
    train, val = _data()
    model = _model()
    norm = lambda m: float(np.linalg.norm(m.layers[0].kernel.numpy()))
    seen = []

    def smallest_kernel(m):
        seen.append(norm(m))
        return {"val_kernel_norm": -seen[-1]}

    result = training.fit(model, train, val, output_dir=tmp_path, epochs=4,
                          monitor="val_kernel_norm", mode="max",
                          validation_metrics=smallest_kernel, verbose=0)
    assert len(seen) == 4 and result["history"]["val_kernel_norm"] == pytest.approx(
        [-n for n in seen])
    assert result["best_epoch"] == int(np.argmin(seen))
    assert result["best_epoch"] != int(np.argmin(result["history"]["val_loss"]))
    assert norm(model) == pytest.approx(min(seen), rel=1e-6)
    on_disk = json.loads((tmp_path / "history.json").read_text())
    assert on_disk["monitor"] == "val_kernel_norm"


def test_fit_steps_per_epoch_and_a_foreign_checkpoint(tmp_path, capfd):
    training.seed_everything(3)
    train, val = _data()
    batches = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: batches.append(b))
    with pytest.raises(RuntimeError, match="simulated"):
        training.fit(_model(), train, val, output_dir=tmp_path, epochs=3, steps_per_epoch=3,
                     extra_callbacks=[counter, _Crash(1)], verbose=0)
    assert batches == [0, 1, 2]  # 3 of the 8 batches, then the epoch ended
    state = json.loads((tmp_path / "checkpoints" / "epoch-0001" / "state.json").read_text())
    assert state["steps_per_epoch"] == 3 and not state["finished"]
    # Another model in the same folder: its checkpoint is not forced onto this one.
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                              keras.layers.Dense(1, activation="sigmoid")])
    other.compile("sgd", "binary_crossentropy")
    capfd.readouterr()
    result = training.fit(other, train, val, output_dir=tmp_path, epochs=2, verbose=0)
    assert "belongs to another model" in capfd.readouterr().err
    assert result["epochs_run"] == 2
    with pytest.raises(ValueError, match="at least 1"):
        training.fit(other, train, val, output_dir=tmp_path, epochs=0)


def test_strategies_and_modes():
    assert training.get_strategy("default") is tf.distribute.get_strategy()
    mirrored = training.get_strategy("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert training.get_strategy("mirrored") is mirrored  # one per process
    with pytest.raises(ValueError, match="unknown strategy"):
        training.get_strategy("tpu")
    assert training.resolve_mode("val_accuracy") == "max"
    assert training.resolve_mode("val_loss") == "min"


def test_report_figures_and_metrics(tmp_path):
    history = {"loss": [0.7, 0.5], "val_loss": [0.69, 0.6], "accuracy": [0.5, 0.8],
               "val_accuracy": [0.55, 0.7]}
    curves = reports.plot_history({"history": history}, tmp_path / "r" / "curves.png")
    cm = reports.plot_confusion_matrix([[40, 10], [5, 45]], ["neg", "pos"], tmp_path / "cm.png")
    for png in (curves, cm):
        assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="does not match"):
        reports.plot_confusion_matrix([[1, 2], [3, 4]], ["a", "b", "c"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
    path = reports.write_metrics(tmp_path / "r", {"accuracy": np.float64(0.9)})
    assert json.loads(path.read_text()) == {"accuracy": 0.9}
    assert "0.9000" in reports.format_headline("t", {"accuracy": 0.9})
