"""Tests for rnnkit.servable.check_servable: core-op and named-signature checks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from rnnkit.servable import NotServableError, check_servable, core_ops
from rnnkit.serving import testing


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("servable")
    testing.export_text_model(base / "text")
    testing.export_dense_model(base / "dense")
    return base


def test_core_ops_excludes_py_funcs_and_test_ops():
    ops = core_ops()
    assert {"MatMul", "StringSplitV2", "StatefulPartitionedCall", "While"} <= ops
    assert not {"PyFunc", "PyFuncStateless", "EagerPyFunc"} & ops
    # registered in the process by TF internals/tests, but not public core ops
    assert "Foo1" not in ops


def test_good_models_pass_with_report(models):
    r = check_servable(models / "text" / "1")
    sig = r.signatures["serving_default"]
    assert set(sig.inputs) == {"text"} and sig.inputs["text"].dtype == "string"
    assert set(sig.outputs) == {"probabilities", "label", "num_tokens"}
    assert sig.outputs["probabilities"].shape == [None, 2]
    assert "StringSplitV2" in r.ops and r.num_functions > 0
    r2 = check_servable(models / "dense" / "1")
    assert set(r2.signatures) >= {"serving_default", "double"}


def _save(module, path: Path, signatures) -> Path:
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path


def test_py_function_rejected(tmp_path):
    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def f(self, x):
            y = tf.py_function(lambda a: a * 2, [x], tf.float32)
            z = tf.numpy_function(lambda a: a + 1, [x], tf.float32)
            return {"y": y + z}

    m = M()
    p = _save(m, tmp_path / "m", {"serving_default": m.f})
    with pytest.raises(NotServableError) as ei:
        check_servable(p)
    msg = str(ei.value)
    assert "EagerPyFunc" in msg and "PyFunc" in msg and "Python" in msg


def test_custom_op_rejected(models, tmp_path):
    """Rename a node's op to a tensorflow-text op in the proto: the check must name it."""
    from tensorflow.core.protobuf import saved_model_pb2

    dst = tmp_path / "custom"
    shutil.copytree(models / "text" / "1", dst)
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((dst / "saved_model.pb").read_bytes())
    changed = 0
    for fn in sm.meta_graphs[0].graph_def.library.function:
        for node in fn.node_def:
            if node.op == "StringSplitV2":
                node.op = "RegexSplitWithOffsets"
                changed += 1
    assert changed
    (dst / "saved_model.pb").write_bytes(sm.SerializeToString())
    with pytest.raises(NotServableError, match="RegexSplitWithOffsets: not a core TensorFlow op"):
        check_servable(dst)


def test_unnamed_and_missing_signature(tmp_path):
    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def f(self, x):
            return x * 2.0  # a bare tensor: TF names the output "output_0"

    m = M()
    p = _save(m, tmp_path / "m", {"serving_default": m.f})
    with pytest.raises(NotServableError, match="auto-named outputs .*output_0"):
        check_servable(p)
    p2 = _save(m, tmp_path / "m2", {"other": m.f})
    with pytest.raises(NotServableError, match="no signature 'serving_default'"):
        check_servable(p2)


def test_not_a_saved_model(tmp_path):
    with pytest.raises(NotServableError, match="no saved_model.pb"):
        check_servable(tmp_path)


def test_saved_model_cli_show_and_run(models):
    """TensorFlow's own tool reads the export and runs its serving signature."""
    cli = Path(sys.executable).with_name("saved_model_cli")
    if not cli.exists():
        pytest.skip("saved_model_cli not installed next to python")
    d = str(models / "dense" / "1")
    show = subprocess.run([str(cli), "show", "--dir", d, "--all"], check=False, capture_output=True, text=True, timeout=120)
    assert show.returncode == 0, show.stderr
    assert "signature_def['serving_default']" in show.stdout and "outputs['y']" in show.stdout
    run = subprocess.run(
        [str(cli), "run", "--dir", d, "--tag_set", "serve", "--signature_def", "double",
         "--input_exprs", "x=[[1.0,2.0,3.0]]"],
        check=False, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "[[2. 4. 6.]]" in run.stdout


def test_keras_model_in_tf_module_needs_tracked_variables(tmp_path):
    """tf.saved_model.load runs it, but TF Serving's session loader cannot restore its
    variables: the check must say so, and pass once they are tracked."""
    p = testing.export_keras_in_module(tmp_path / "untracked", track_variables=False)
    x = np.ones((1, 4), np.float32)
    tf.saved_model.load(str(p)).signatures["serving_default"](x=tf.constant(x))  # python path works
    with pytest.raises(NotServableError, match=r"variable\(s\) read by 'serving_default' are not restored.*d/kernel"):
        check_servable(p)
    assert check_servable(p, session_check=False)  # the static checks alone cannot see it
    check_servable(testing.export_keras_in_module(tmp_path / "tracked", track_variables=True))


def test_failing_warmup_record_rejected(tmp_path):
    from rnnkit.warmup import write_warmup_requests

    base = tmp_path / "image"
    v = testing.export_image_model(base)
    write_warmup_requests(v / "assets.extra" / "tf_serving_warmup_requests",
                          [{"image_bytes": np.array([testing.png_bytes()], dtype=object)}])
    check_servable(v)
    write_warmup_requests(v / "assets.extra" / "tf_serving_warmup_requests",
                          [{"image_bytes": np.array([b"not an image"], dtype=object)}])
    with pytest.raises(NotServableError, match="warmup record 0 fails in TF Serving's session loader"):
        check_servable(v)


def test_xla_compiled_loops_rejected_and_export_avoids_them(tmp_path):
    import keras

    import rnnkit
    from rnnkit.export import export_saved_model, keras_variables

    inputs = keras.Input((None, 3))
    model = keras.Model(inputs, rnnkit.SimpleRecurrentLayer(4)(inputs))

    class Serve(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.model_variables = keras_variables(model)

        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32, name="x")])
        def serve(self, x):
            return {"h": self.model(x)}

    # Traced by hand outside any save: the fused loops are XLA-compiled for speed.
    eager = Serve()
    p = _save(eager, tmp_path / "xla", {"serving_default": eager.serve.get_concrete_function()})
    with pytest.raises(NotServableError, match="XLA-compiled"):
        check_servable(p)

    # export_saved_model traces the signatures itself, with the XLA loops off.
    fresh = Serve()
    path = export_saved_model(fresh, tmp_path / "export", {"serving_default": fresh.serve})
    check_servable(path)
