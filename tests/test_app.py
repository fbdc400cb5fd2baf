"""The app lifecycle (rnnkit.app) with a small app of its own: options, run folder, errors,
export (each weight saved once), predict and the checks on exports of another app."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rnnkit.app import App, Evaluation, GradientProbe, Run, Servable
from rnnkit.errors import DataError


class SumApp(App):
    """Learns the sign of a sequence's sum with a SimpleRecurrentLayer (real training)."""

    name = "demo_sum"
    description = "demo app"
    defaults = {"data": "builtin", "epochs": 3, "batch_size": 16, "units": 8}
    quick = {"epochs": 1}
    signature_inputs = ("sequence",)

    def add_arguments(self, verb, parser):
        if verb == "train":
            parser.add_argument("--units", type=int, default=None)
            parser.add_argument("--bug", action="store_true")

    def _data(self, run: Run, n: int = 256):
        if run.data != "builtin":
            raise DataError(f"unknown --data {run.data!r}")
        rng = np.random.default_rng(run.seed)
        x = rng.normal(size=(n, 6, 1)).astype("float32")
        return x, (x.sum(axis=(1, 2)) > 0).astype("float32")

    def prepare(self, run):
        x, _ = self._data(run)
        return {"examples": len(x)}

    def train(self, run):
        import keras
        import tensorflow as tf

        import rnnkit

        if run.get("bug"):
            raise RuntimeError("a bug, not a user error")
        run.seed_everything()
        x, y = self._data(run)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(run.batch_size)
        with run.strategy.scope():
            model = keras.Sequential([keras.Input((None, 1)),
                                      rnnkit.SimpleRecurrentLayer(run.units),
                                      keras.layers.Dense(1)])
            model.compile("adam", keras.losses.BinaryCrossentropy(from_logits=True))
        result = run.fit(model, ds, ds, monitor="val_loss", patience=5)
        run.save_model(model)
        return {"best_val_loss": result["best"], "epochs_run": result["epochs_run"]}

    def evaluate(self, run):
        x, y = self._data(run, 64)
        logits = run.load_model().predict(x, verbose=0)[:, 0]
        accuracy = float(((logits > 0) == (y > 0)).mean())
        return Evaluation(metrics={"accuracy": accuracy}, headline={"accuracy": accuracy})

    def gradient_probe(self, run):
        import keras

        x, y = self._data(run, 32)
        return GradientProbe(run.load_model(), x, y[:, None],
                             keras.losses.BinaryCrossentropy(from_logits=True))

    def servable(self, run):
        import tensorflow as tf

        from rnnkit.export import ServingModule

        class Module(ServingModule):
            @tf.function(input_signature=[tf.TensorSpec([None, None, 1], tf.float32,
                                                        name="sequence")])
            def serve(self, sequence):
                check = tf.debugging.assert_all_finite(sequence, "sequence contains NaN")
                with tf.control_dependencies([check]):
                    return {"logit": self.model(sequence)[:, 0]}

        module = Module({"model": run.load_model()})
        return Servable(module, {"serving_default": module.serve},
                        warmup=[{"sequence": np.zeros((1, 3, 1), np.float32)}])

    def predict(self, run, loaded, inputs):
        import tensorflow as tf

        values = [[[float(v)] for v in text.split(",")] for text in inputs]
        out = loaded.signature()(sequence=tf.constant(values, tf.float32))
        for logit in out["logit"].numpy():
            yield "positive" if logit > 0 else "negative"


class OtherApp(SumApp):
    name = "demo_other"
    signature_inputs = ("text",)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    out, exports = work / "run", work / "exports"
    common = ["--output", str(out), "--export-dir", str(exports)]
    for verb in ("prepare", "train", "evaluate", "export"):
        assert SumApp.main([verb, *common]) == 0, verb
    return out, exports


def test_options_defaults_quick_and_command_line():
    run = SumApp().parse(["train", "--quick", "--batch-size", "4"])
    assert (run.verb, run.epochs, run.batch_size, run.seed, run.data) == ("train", 1, 4, 1337, "builtin")
    assert run.output == Path("runs/demo_sum") and run.export_dir == Path("saved_models/demo_sum")
    assert run.get("units") == 8 and run.get("missing", "x") == "x"
    with pytest.raises(AttributeError, match="no option 'nope'"):
        _ = run.nope


@pytest.mark.slow
def test_run_folder_schema_and_reports(demo_run):
    out, exports = demo_run
    config = json.loads((out / "run.json").read_text())
    assert config["app"] == "demo_sum" and config["options"]["epochs"] == 3
    assert config["train"]["epochs_run"] == 3 and config["train_seconds"] > 0
    assert config["tensorflow_version"]
    metrics = json.loads((out / "reports" / "metrics.json").read_text())
    assert metrics["app"] == "demo_sum" and metrics["train"] == config["train"]
    assert 0.5 < metrics["accuracy"] <= 1.0  # the sign of a sum is learnt in 3 epochs
    for png in ("training_curves.png", "gradient_flow.png"):
        assert (out / "reports" / png).read_bytes()[:4] == b"\x89PNG"
    assert metrics["gradient_flow"]  # the probe's summary numbers are in the metrics
    card = json.loads((exports / "1" / "assets.extra" / "metrics.json").read_text())
    assert card["accuracy"] == metrics["accuracy"]


@pytest.mark.slow
def test_export_saves_each_weight_once(demo_run):
    import tensorflow as tf

    out, exports = demo_run
    model = SumApp().parse(["export", "--output", str(out)]).load_model()
    reader = tf.train.load_checkpoint(str(exports / "1" / "variables" / "variables"))
    shapes = reader.get_variable_to_shape_map()
    stored = sum(int(np.prod(s)) for k, s in shapes.items() if "OBJECT_GRAPH" not in k)
    assert stored == model.count_params()  # not twice: the Keras object graph is not saved


@pytest.mark.slow
def test_predict_answers_and_names_errors(demo_run, capsys, tmp_path):
    out, exports = demo_run
    capsys.readouterr()
    assert SumApp.main(["predict", "--export-dir", str(exports), "1,2,3", "--", "-4,-5,-6"]) == 0
    assert capsys.readouterr().out.split() == ["positive", "negative"]
    # NaN input: the graph's assertion becomes one error line, not a traceback.
    assert SumApp.main(["predict", "--export-dir", str(exports), "1,nan,3"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: sequence contains NaN")
    # An empty folder and another app's export are named as such.
    (tmp_path / "empty").mkdir()
    assert SumApp.main(["predict", "--model", str(tmp_path / "empty"), "1"]) == 2
    assert "not a SavedModel folder" in capsys.readouterr().err
    assert OtherApp.main(["predict", "--model", str(exports / "1"), "1"]) == 2
    assert "is not a demo_other export" in capsys.readouterr().err
    assert SumApp.main(["predict", "--export-dir", str(tmp_path / "none"), "1"]) == 2
    assert "no exported model" in capsys.readouterr().err


def test_user_errors_print_one_line_and_bugs_keep_their_traceback(tmp_path, capsys):
    out = ["--output", str(tmp_path / "run")]
    assert SumApp.main(["prepare", "--data", "elsewhere", *out]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown --data 'elsewhere'"
    assert SumApp.main(["evaluate", *out]) == 2  # nothing trained yet
    assert "run `rnnkit demo_sum train` first" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="a bug"):
        SumApp.main(["train", "--bug", *out])
    with pytest.raises(SystemExit) as exit_info:
        SumApp.main(["train", "--help"])
    assert exit_info.value.code == 0
