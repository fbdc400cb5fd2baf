"""SimpleRecurrentLayer round trips (.keras file, SavedModel export in a process where rnnkit
is not importable) and a small learning check that needs memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from rnnkit import SimpleRecurrentLayer

REPO = Path(__file__).resolve().parents[1]


def _run_fresh(code: str, cwd: Path, with_repo: bool) -> dict:
    """Run ``code`` in a new interpreter (isolated mode, cwd outside the repo); parse its JSON.

    With ``with_repo`` the repo is put on ``sys.path`` (a fresh clone's `import rnnkit`);
    otherwise ``rnnkit`` is made unimportable, even through an editable install.
    """
    prelude = "import sys\n"
    if with_repo:
        prelude += f"sys.path.insert(0, {str(REPO)!r})\n"
    else:
        prelude += "sys.modules['rnnkit'] = None\nsys.modules['apps'] = None\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run(
        [sys.executable, "-I", "-c", prelude + textwrap.dedent(code)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _model() -> keras.Model:
    inputs = keras.Input((None, 4))
    masked = keras.layers.Masking(0.0)(inputs)
    seq = keras.layers.Bidirectional(
        SimpleRecurrentLayer(6, return_sequences=True, activation="relu")
    )(masked)
    # Non-default fast-path options: they must survive the round trips (and an export of
    # explicit batch slices must still load and run).
    last = SimpleRecurrentLayer(5, go_backwards=True, dropout=0.1, jit_compile=False,
                                batch_slices=2, name="last")(seq)
    return keras.Model(inputs, keras.layers.Dense(3)(last))


def _inputs() -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(3, 7, 4)).astype("float32")
    x[1, 5:] = 0.0  # a padded row exercises the mask
    return x


@pytest.mark.slow
def test_keras_file_round_trip_in_fresh_process(tmp_path):
    model = _model()
    x = _inputs()
    expected = model.predict(x, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    result = _run_fresh(
        f"""
        import json, numpy as np, keras
        import rnnkit  # registers the layer: nothing else is needed to load
        model = keras.saving.load_model({str(path)!r})
        y = model.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0)
        kinds = sorted({{type(l).__name__ for l in model._flatten_layers()}})
        last = model.get_layer("last")
        options = [last.use_fused, last.jit_compile, last.batch_slices]
        print(json.dumps({{"y": y.tolist(), "kinds": kinds, "options": options}}))
        """,
        cwd=tmp_path, with_repo=True,
    )
    np.testing.assert_allclose(np.array(result["y"]), expected, atol=1e-6)
    assert "SimpleRecurrentLayer" in result["kinds"]
    assert result["options"] == [True, False, 2]


@pytest.mark.slow
def test_export_loads_without_rnnkit(tmp_path):
    model = _model()
    x = _inputs()
    expected = model.predict(x, verbose=0)
    export_dir = tmp_path / "export"
    model.export(str(export_dir), verbose=False)
    np.save(tmp_path / "x.npy", x)
    result = _run_fresh(
        f"""
        import json, numpy as np, tensorflow as tf
        try:
            import rnnkit  # noqa: F401
            importable = True
        except ImportError:
            importable = False
        loaded = tf.saved_model.load({str(export_dir)!r})
        y = loaded.serve(tf.constant(np.load({str(tmp_path / 'x.npy')!r}))).numpy()
        print(json.dumps({{"y": y.tolist(), "importable": importable}}))
        """,
        cwd=tmp_path, with_repo=False,
    )
    assert result["importable"] is False
    np.testing.assert_allclose(np.array(result["y"]), expected, atol=1e-5)
    # Every op of the serving graph (and of its functions) must be a registered core op.
    from tensorflow.core.protobuf import saved_model_pb2

    from rnnkit.layers._compat import is_registered_op

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    graph = sm.meta_graphs[0].graph_def
    ops = {n.op for n in graph.node}
    xla = []
    for f in graph.library.function:
        ops |= {n.op for n in f.node_def}
        if f.attr.get("_XlaMustCompile") is not None and f.attr["_XlaMustCompile"].b:
            xla.append(f.signature.name)
    library = {f.signature.name for f in graph.library.function}
    core_ops = ops - library
    # The fused loops are in there, as plain while loops.
    assert "MatMul" in core_ops and core_ops & {"While", "StatelessWhile"}
    unknown = sorted(o for o in core_ops if not is_registered_op(o))
    assert unknown == []
    assert not any(op.startswith("Xla") for op in core_ops), sorted(core_ops)
    # Exports must not need XLA (TF Serving only JIT-compiles with a non-default flag).
    assert xla == []


@pytest.mark.slow
def test_learns_to_recall_first_token():
    # The class is the first token; 20 distractor tokens follow. Needs 20 steps of memory.
    rng = np.random.default_rng(0)
    classes, distractors, steps = 4, 4, 21
    n = 2048
    labels = rng.integers(0, classes, size=n)
    tokens = rng.integers(classes, classes + distractors, size=(n, steps))
    tokens[:, 0] = labels
    x = np.eye(classes + distractors, dtype="float32")[tokens]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((steps, classes + distractors)),
        SimpleRecurrentLayer(32),
        keras.layers.Dense(classes, activation="softmax"),
    ])
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x[:1536], labels[:1536], epochs=25, batch_size=64, verbose=0)
    _, accuracy = model.evaluate(x[1536:], labels[1536:], verbose=0)
    assert accuracy >= 0.97, accuracy
