"""Correctness of rnnkit.SimpleRecurrentLayer: golden values, equivalence with Keras's
SimpleRNN (outputs and gradients, on the fused fast path), masking, options, errors."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import rnnkit
from rnnkit import SimpleRecurrentCell, SimpleRecurrentLayer
from rnnkit.layers import SimpleRecurrentLayer as LayerFromSubpackage

TOL = 1e-5


@pytest.fixture
def fallback_calls(monkeypatch):
    """Counts calls of the Keras loop (the fallback) made by SimpleRecurrentLayer instances."""
    calls = []
    original = keras.layers.RNN.inner_loop

    def spy(self, *args, **kwargs):
        if isinstance(self, SimpleRecurrentLayer):
            calls.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(keras.layers.RNN, "inner_loop", spy)
    return calls


def _constant_layer(cls, **kwargs):
    return cls(
        4,
        kernel_initializer=keras.initializers.Constant(0.01),
        recurrent_initializer=keras.initializers.Constant(0.02),
        bias_initializer=keras.initializers.Constant(0.03),
        **kwargs,
    )


GOLDEN_X = np.arange(24, dtype="float32").reshape(2, 3, 4)


# ------------------------------------------------------------------------ golden values
def test_exports():
    assert rnnkit.SimpleRecurrentLayer is LayerFromSubpackage
    assert isinstance(rnnkit.__version__, str)


def test_golden_last_output(fallback_calls):
    out = _constant_layer(SimpleRecurrentLayer)(GOLDEN_X)
    np.testing.assert_allclose(out.numpy()[:, 0], [0.405432, 0.73605347], rtol=1e-6)
    assert fallback_calls == []


def test_golden_go_backwards(fallback_calls):
    out = _constant_layer(SimpleRecurrentLayer, go_backwards=True)(GOLDEN_X)
    np.testing.assert_allclose(out.numpy()[:, 0], [0.11144729, 0.5528889], rtol=1e-6)
    assert fallback_calls == []


def test_golden_stateful_second_call():
    layer = _constant_layer(SimpleRecurrentLayer, stateful=True)
    layer(GOLDEN_X)
    out = layer(GOLDEN_X)
    np.testing.assert_allclose(out.numpy()[:, 0], [0.40559256, 0.7361247], rtol=1e-6)
    layer.reset_state()
    np.testing.assert_allclose(layer(GOLDEN_X).numpy()[:, 0], [0.405432, 0.73605347], rtol=1e-6)


# ------------------------------------------------------------------------ equivalence
# Arguments only SimpleRecurrentLayer has (how it runs, not what it computes).
_OWN_ARGS = ("use_fused", "jit_compile", "batch_slices")


def _pair(units, **kwargs):
    ours = SimpleRecurrentLayer(units, **kwargs)
    for name in _OWN_ARGS:
        kwargs.pop(name, None)
    zero_output = kwargs.pop("zero_output_for_mask", False)
    theirs = keras.layers.SimpleRNN(units, zero_output_for_mask=zero_output, **kwargs)
    return ours, theirs


def _run_with_grads(layer, x, h0, mask, weights_seed, graph=False, dynamic=False):
    """Outputs (flattened list) and gradients w.r.t. x, h0 and every trainable weight.

    ``graph``: inside a tf.function; ``dynamic``: traced with unknown batch and time axes.
    """

    def compute(x, h0, mask=None):
        with tf.GradientTape() as tape:
            tape.watch([x, h0])
            result = layer(x, initial_state=h0, mask=mask, training=True)
            result = list(result) if isinstance(result, (list, tuple)) else [result]
            # A loss that weights every output element differently.
            loss = 0.0
            for i, r in enumerate(result):
                w = tf.sin(tf.reshape(tf.range(tf.size(r), dtype=r.dtype), tf.shape(r)) + i)
                loss += tf.reduce_sum(r * w)
        grads = tape.gradient(loss, [x, h0] + layer.trainable_weights)
        return result, grads

    if dynamic:
        signature = [tf.TensorSpec([None, None, x.shape[2]], x.dtype),
                     tf.TensorSpec([None, h0.shape[1]], h0.dtype)]
        if mask is not None:
            signature.append(tf.TensorSpec([None, None], tf.bool))
        traced = tf.function(compute, input_signature=signature)
        return traced(x, h0) if mask is None else traced(x, h0, mask)
    if graph:
        compute = tf.function(compute)
    return compute(x, h0, mask)


def _assert_close(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    scale = max(1.0, float(np.max(np.abs(b))) if b.size else 1.0)
    err = float(np.max(np.abs(a - b))) if a.size else 0.0
    assert err <= TOL * scale, f"{what}: max abs diff {err:.3g} (scale {scale:.3g})"


def _check_equivalence(units=6, batch=5, steps=7, features=3, masked=False, seed=0,
                       graph=False, dynamic=False, with_initial_state=True, **kwargs):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(batch, steps, features)).astype("float32"))
    h0 = tf.constant(0.5 * rng.normal(size=(batch, units)).astype("float32"))
    mask = None
    if masked:
        # Variable lengths incl. a full row and an all-masked row, right and left padding.
        lengths = rng.integers(0, steps + 1, size=batch)
        lengths[0], lengths[-1] = steps, 0
        m = np.arange(steps)[None, :] < lengths[:, None]
        m[1] = m[1][::-1]  # one left-padded row
        mask = tf.constant(m)
    ours, theirs = _pair(units, **kwargs)
    ours(x)
    theirs(x)
    theirs.set_weights(ours.get_weights())
    init = h0 if with_initial_state else None
    out_a, grads_a = _run_with_grads(ours, x, init if init is not None else h0 * 0, mask, seed,
                                     graph, dynamic)
    out_b, grads_b = _run_with_grads(theirs, x, init if init is not None else h0 * 0, mask,
                                     seed, graph, dynamic)
    assert len(out_a) == len(out_b)
    for i, (a, b) in enumerate(zip(out_a, out_b)):
        _assert_close(a, b, f"output {i}")
    names = ["d/dx", "d/dh0"] + [w.name for w in ours.trainable_weights]
    for name, a, b in zip(names, grads_a, grads_b):
        assert a is not None and b is not None, name
        _assert_close(a, b, name)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_equivalence_fast_path(activation, masked, go_backwards, return_sequences,
                               fallback_calls):
    _check_equivalence(
        activation=activation,
        masked=masked,
        go_backwards=go_backwards,
        return_sequences=return_sequences,
        return_state=True,
        seed=hash((activation, masked, go_backwards, return_sequences)) % 1000,
    )
    assert fallback_calls == [], "the fused path was not used"


@pytest.mark.parametrize("return_sequences", [False, True])
def test_equivalence_zero_output_for_mask(return_sequences, fallback_calls):
    _check_equivalence(masked=True, zero_output_for_mask=True,
                       return_sequences=return_sequences, return_state=True)
    assert fallback_calls == []


def test_equivalence_no_bias_linear_no_state_graph_mode(fallback_calls):
    _check_equivalence(activation=None, use_bias=False, return_sequences=True,
                       with_initial_state=False, graph=True, masked=True)
    _check_equivalence(activation="linear", return_sequences=False, graph=True)
    assert fallback_calls == []


def test_equivalence_larger_shapes(fallback_calls):
    _check_equivalence(units=32, batch=16, steps=40, features=24, masked=True,
                       return_sequences=True)
    assert fallback_calls == []


@pytest.mark.parametrize("return_sequences", [False, True])
def test_equivalence_long_sequences(return_sequences, fallback_calls):
    _check_equivalence(units=8, batch=4, steps=70, features=5, masked=True,
                       go_backwards=return_sequences, return_sequences=return_sequences,
                       return_state=True)
    _check_equivalence(units=8, batch=4, steps=70, features=5, activation="relu",
                       return_sequences=return_sequences, graph=True)
    assert fallback_calls == []


@pytest.mark.parametrize("steps", [37, 64])
@pytest.mark.parametrize("xla", [True, False])
def test_equivalence_unknown_time_axis(steps, xla, fallback_calls, monkeypatch):
    # Graphs traced with T=None: time-bucketed XLA loops (padded to a multiple of 32 steps,
    # stopping at the real length), or the plain loops (as in exported SavedModels).
    from rnnkit.layers import _fused, xla_loops

    bucketed_calls = []
    original = _fused._bucketed

    def spy(*args):
        bucketed_calls.append(1)
        return original(*args)

    monkeypatch.setattr(_fused, "_bucketed", spy)
    with xla_loops(xla):
        _check_equivalence(units=8, batch=3, steps=steps, features=5, masked=True,
                           dynamic=True, return_sequences=True, return_state=True,
                           go_backwards=True, seed=steps)
        _check_equivalence(units=8, batch=3, steps=steps, features=5, dynamic=True,
                           return_sequences=False, return_state=True, activation="relu",
                           zero_output_for_mask=False, seed=steps + 1)
        _check_equivalence(units=8, batch=3, steps=steps, features=5, masked=True,
                           dynamic=True, zero_output_for_mask=True, return_sequences=False,
                           seed=steps + 2)
    assert fallback_calls == []
    # Each batch slice (see test_batch_streams_match_keras) runs its own bucketed loops.
    assert len(bucketed_calls) == (3 * _fused.stream_count(None) if xla else 0)


@pytest.mark.parametrize("dynamic", [False, True])
def test_batch_streams_match_keras(dynamic, fallback_calls, monkeypatch):
    # On CPU the batch is cut into slices run in parallel (one per core): forcing 3 slices
    # of uneven size (50 rows: 16, 16, 18; for a dynamic batch sized at run time) must
    # keep outputs and gradients equal to Keras's, masks and initial state included.
    from rnnkit.layers import _fused

    assert _fused.stream_count(50, 3) == 3
    split_sizes = []
    original = _fused._split_sizes

    def spy(*args):
        split_sizes.append(original(*args))
        return split_sizes[-1]

    monkeypatch.setattr(_fused, "_split_sizes", spy)
    for seq in (False, True):
        _check_equivalence(units=8, batch=50, steps=9, features=5, masked=True, graph=True,
                           dynamic=dynamic, return_sequences=seq, return_state=True,
                           go_backwards=seq, seed=11 + seq, batch_slices=3)
    assert fallback_calls == []
    if not dynamic:
        assert split_sizes and split_sizes[0] == [16, 16, 18]
    else:
        # Sized at run time in the traced graph (the eager build call has a static batch).
        assert any(all(isinstance(t, tf.Tensor) for t in sizes) for sizes in split_sizes)


def test_batch_stream_count_rules(monkeypatch):
    from rnnkit.layers import _fused

    monkeypatch.setattr(_fused, "_gpu_visible", lambda: False)
    monkeypatch.setattr(_fused, "_cpu_count", lambda: 2)
    assert _fused.stream_count(1) == 1  # too few rows to pay
    assert _fused.stream_count(31) == 1
    assert _fused.stream_count(32) == 2
    assert _fused.stream_count(512) == 2  # never more slices than cores
    assert _fused.stream_count(None) == 2
    monkeypatch.setattr(_fused, "_cpu_count", lambda: 16)
    assert _fused.stream_count(64) == 4  # at least 16 rows per slice
    assert _fused.stream_count(None) == 4  # unknown batch: at most 4
    monkeypatch.setattr(_fused, "_gpu_visible", lambda: True)
    assert _fused.stream_count(512) == 1  # one GPU kernel covers the batch
    assert _fused.stream_count(None) == 1
    # An explicit count is used as given, whatever the batch or the cores.
    assert _fused.stream_count(1, 3) == 3
    assert _fused.stream_count(None, 1) == 1
    assert _fused.stream_count(512, 1) == 1


def test_fallback_options_match_keras(fallback_calls):
    # Options outside the fused path: another activation, unroll, use_fused=False.
    _check_equivalence(activation="softplus", return_sequences=True, masked=True)
    _check_equivalence(unroll=True, return_sequences=True, go_backwards=True)
    ours = SimpleRecurrentLayer(4, use_fused=False)
    ours(GOLDEN_X)
    assert len(fallback_calls) >= 3


def test_dropout_fast_path_trains_and_is_identity_at_inference(fallback_calls):
    x = tf.constant(np.random.default_rng(3).normal(size=(8, 6, 5)).astype("float32"))
    layer = SimpleRecurrentLayer(7, dropout=0.5, seed=2)
    plain = SimpleRecurrentLayer(7)
    layer(x)
    plain(x)
    plain.set_weights(layer.get_weights())
    np.testing.assert_allclose(layer(x, training=False), plain(x), atol=1e-6)
    with tf.GradientTape() as tape:
        y = layer(x, training=True)
        loss = tf.reduce_sum(y)
    assert not np.allclose(y, plain(x), atol=1e-3)
    grads = tape.gradient(loss, layer.trainable_weights)
    assert all(g is not None for g in grads)
    assert fallback_calls == []
    # recurrent_dropout while training uses the Keras loop.
    SimpleRecurrentLayer(7, recurrent_dropout=0.3)(x, training=True)
    assert len(fallback_calls) == 1


@pytest.mark.parametrize("use_fused", [True, False])
def test_recurrent_weight_dropout_one_mask_per_sequence(use_fused, fallback_calls, monkeypatch):
    # DropConnect on W_h: while training, every step of a sequence batch uses the same
    # masked W_h (recomputed here by hand from the mask the cell drew); inference uses W_h.
    x = np.random.default_rng(4).normal(size=(8, 12, 5)).astype("float32")
    layer = SimpleRecurrentLayer(6, recurrent_weight_dropout=0.5, seed=3,
                                 return_sequences=True, use_fused=use_fused)
    plain = SimpleRecurrentLayer(6, return_sequences=True)
    layer(x)
    plain(x)
    plain.set_weights(layer.get_weights())
    np.testing.assert_allclose(layer(x, training=False), plain(x), atol=1e-6)

    drawn = []
    draw = SimpleRecurrentCell._weight_mask

    def recording(cell):
        mask = draw(cell)
        drawn.append(mask)
        return mask

    monkeypatch.setattr(SimpleRecurrentCell, "_weight_mask", recording)
    with tf.GradientTape() as tape:
        y = layer(x, training=True)
        loss = tf.reduce_sum(y)
    assert len({id(m) for m in drawn}) == 1  # one mask for the whole sequence
    mask = drawn[0].numpy()
    assert set(np.unique(mask)) == {0.0, 2.0}  # kept entries scaled by 1 / (1 - 0.5)
    w_x, w_h, b = layer.get_weights()
    h, expected = np.zeros((8, 6), "float32"), []
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ w_x + b + h @ (w_h * mask))
        expected.append(h)
    np.testing.assert_allclose(y, np.stack(expected, 1), atol=1e-5)
    grad = tape.gradient(loss, layer.cell.recurrent_kernel).numpy()
    assert np.all(grad[mask == 0] == 0) and np.all(grad[mask > 0] != 0)
    # The next batch draws a new mask; the fused path stays fused.
    layer(x, training=True)
    assert len({id(m) for m in drawn}) == 2
    assert fallback_calls == ([] if use_fused else [layer.name] * 4)


# ------------------------------------------------------------------------ fast-path options
def _xla_function_names(fn_or_graph_def) -> list[str]:
    """Names of the XLA-compiled (``_XlaMustCompile``) functions in a GraphDef's library."""
    return [f.signature.name for f in fn_or_graph_def.library.function
            if "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b]


def _traced_xla_functions(layer, x) -> list[str]:
    layer(x)  # build eagerly, outside the trace
    fn = tf.function(lambda x: layer(x))
    concrete = fn.get_concrete_function(tf.TensorSpec(x.shape, tf.float32))
    return _xla_function_names(concrete.graph.as_graph_def())


def test_use_fused_selects_the_loop(fallback_calls, monkeypatch):
    from rnnkit.layers import _fused

    fused_calls = []
    original = _fused.elman_sequence

    def spy(*args, **kwargs):
        fused_calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(_fused, "elman_sequence", spy)
    out = _constant_layer(SimpleRecurrentLayer, use_fused=True)(GOLDEN_X)
    assert (len(fused_calls), fallback_calls) == (1, [])
    keras_loop = _constant_layer(SimpleRecurrentLayer, use_fused=False, name="keras_loop")
    out_keras = keras_loop(GOLDEN_X)
    assert (len(fused_calls), fallback_calls) == (1, ["keras_loop"])
    for result in (out, out_keras):
        np.testing.assert_allclose(result.numpy()[:, 0], [0.405432, 0.73605347], rtol=1e-6)


def test_jit_compile_selects_xla_or_plain_loops(fallback_calls):
    from rnnkit.layers import xla_loops

    x = tf.constant(GOLDEN_X)
    on = SimpleRecurrentLayer(4, jit_compile=True)
    off = SimpleRecurrentLayer(4, jit_compile=False)
    auto = SimpleRecurrentLayer(4)
    assert auto.jit_compile == "auto"
    # One XLA function per loop (forward; the backward one is traced only for gradients).
    assert len(_traced_xla_functions(on, x)) >= 1
    assert len(_traced_xla_functions(auto, x)) >= 1
    assert _traced_xla_functions(off, x) == []
    # The xla_loops context decides for every layer while it is active.
    with xla_loops(False):
        assert _traced_xla_functions(on, x) == []
        assert _traced_xla_functions(auto, x) == []
    with xla_loops(True):
        assert len(_traced_xla_functions(off, x)) >= 1
    assert fallback_calls == []


def test_jit_compile_in_saved_models(tmp_path):
    # "auto" keeps SavedModels XLA-free; True asks for XLA there too.
    from tensorflow.core.protobuf import saved_model_pb2

    found = {}
    for jit in ("auto", True):
        layer = SimpleRecurrentLayer(4, jit_compile=jit)
        layer(GOLDEN_X)
        module = tf.Module()
        module.layer = layer
        module.serve = tf.function(layer.__call__,
                                   input_signature=[tf.TensorSpec((None, None, 4), tf.float32)])
        path = tmp_path / str(jit)
        tf.saved_model.save(module, str(path))
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((path / "saved_model.pb").read_bytes())
        found[jit] = _xla_function_names(proto.meta_graphs[0].graph_def)
        loaded = tf.saved_model.load(str(path))
        np.testing.assert_allclose(loaded.serve(tf.constant(GOLDEN_X)), layer(GOLDEN_X),
                                   atol=1e-6)
    assert found["auto"] == []
    assert found[True] != []


def test_plain_loops_match_keras(fallback_calls):
    _check_equivalence(jit_compile=False, masked=True, return_sequences=True, graph=True,
                       go_backwards=True, return_state=True)
    _check_equivalence(jit_compile=False, activation="relu", dynamic=True, seed=3)
    assert fallback_calls == []


@pytest.mark.parametrize(("batch_slices", "cores", "expected"), [
    (1, 2, None),          # one slice: the batch is never split
    (2, 1, [32, 32]),      # explicit: split even on one core
    (3, 2, [21, 21, 22]),
    ("auto", 2, [32, 32]),  # auto: one slice per core...
    ("auto", 1, None),      # ...and none to split on one core
])
def test_batch_slices_selects_the_split(batch_slices, cores, expected, fallback_calls,
                                        monkeypatch):
    from rnnkit.layers import _fused

    monkeypatch.setattr(_fused, "_gpu_visible", lambda: False)
    monkeypatch.setattr(_fused, "_cpu_count", lambda: cores)
    split_sizes = []
    original = _fused._split_sizes

    def spy(*args):
        split_sizes.append(original(*args))
        return split_sizes[-1]

    monkeypatch.setattr(_fused, "_split_sizes", spy)
    x = np.random.default_rng(12).normal(size=(64, 5, 3)).astype("float32")
    ours = SimpleRecurrentLayer(4, batch_slices=batch_slices)
    theirs = keras.layers.SimpleRNN(4)
    ours(x)
    theirs(x)
    theirs.set_weights(ours.get_weights())
    split_sizes.clear()
    np.testing.assert_allclose(ours(x), theirs(x), atol=1e-5)
    assert split_sizes == ([] if expected is None else [expected])
    assert fallback_calls == []


def test_fast_path_options_saved_in_keras_file(tmp_path):
    inputs = keras.Input((None, 3))
    x = SimpleRecurrentLayer(5, return_sequences=True, use_fused=False, name="a")(inputs)
    x = SimpleRecurrentLayer(5, return_sequences=True, jit_compile=False, batch_slices=2,
                             name="b")(x)
    x = SimpleRecurrentLayer(4, jit_compile=True, name="c")(x)
    model = keras.Model(inputs, x)
    data = np.random.default_rng(13).normal(size=(6, 7, 3)).astype("float32")
    expected = model.predict(data, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    options = {name: tuple(getattr(loaded.get_layer(name), key) for key in _OWN_ARGS)
               for name in "abc"}
    assert options == {"a": (False, "auto", "auto"), "b": (True, False, 2),
                       "c": (True, True, "auto")}
    np.testing.assert_allclose(loaded.predict(data, verbose=0), expected, atol=1e-6)


def test_configs_without_fast_path_options_load_with_defaults():
    # Configs saved before these arguments existed (or by hand) get the defaults.
    config = SimpleRecurrentLayer(3).get_config()
    for name in _OWN_ARGS:
        del config[name]
    layer = SimpleRecurrentLayer.from_config(config)
    assert (layer.use_fused, layer.jit_compile, layer.batch_slices) == (True, "auto", "auto")


def test_docstring_example():
    import doctest

    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(SimpleRecurrentLayer, globs={"SimpleRecurrentLayer":
                                                          SimpleRecurrentLayer}):
        runner.run(test)
    assert runner.tries >= 5 and runner.failures == 0


def test_private_api_shim(tmp_path):
    # Fails when a Keras or TensorFlow release moves a private name rnnkit depends on.
    import logging

    from rnnkit.layers import _compat

    # keras.layers.RNN manages dropout masks only for subclasses of this very class; its
    # own public SimpleRNNCell is one.
    assert issubclass(keras.layers.SimpleRNNCell, _compat.DropoutRNNCell)
    assert issubclass(SimpleRecurrentCell, _compat.DropoutRNNCell)

    seen = []
    module = tf.Module()
    module.f = tf.function(lambda x: (seen.append(_compat.in_save_context()), x * 2)[1],
                           input_signature=[tf.TensorSpec((), tf.float32)])
    module.f(tf.constant(1.0))
    tf.saved_model.save(module, str(tmp_path / "sm"))
    assert seen[0] is False and True in seen[1:]
    assert _compat.in_save_context() is False

    assert _compat.is_registered_op("MatMul") and _compat.is_registered_op("While")
    assert not _compat.is_registered_op("NoSuchOpInTensorFlow")

    waited = tf.data.Dataset.range(2).apply(_compat.tf_data_sleep(tf.constant(1, tf.int64)))
    assert [int(v) for v in waited] == [0, 1]

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("adam", "mse", metrics=["mae"])
    assert not model.optimizer.built
    ds = tf.data.Dataset.from_tensor_slices((tf.zeros((4, 3)), tf.zeros((4, 2)))).batch(2)
    _compat.symbolic_build(model, ds.element_spec)
    assert model.optimizer.built and model.built  # built as fit() would build it

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    tf.get_logger().addHandler(handler)
    try:
        # tf.compat.v1.to_float is deprecated and nothing else in rnnkit calls it, so its
        # warning (printed once per process) is still due.
        with _compat.silence_tf_deprecations():
            tf.compat.v1.to_float(tf.constant(1))
        silenced = [r for r in records if "deprecat" in r.getMessage().lower()]
        tf.compat.v1.to_float(tf.constant(1))
        warned = [r for r in records if "deprecat" in r.getMessage().lower()]
    finally:
        tf.get_logger().removeHandler(handler)
    assert silenced == [] and warned != []


# ------------------------------------------------------------------------ API
def test_return_state_and_mask_propagation():
    inputs = keras.Input((None,), dtype="int32")
    emb = keras.layers.Embedding(10, 3, mask_zero=True)(inputs)
    seq = SimpleRecurrentLayer(5, return_sequences=True)(emb)
    assert getattr(seq, "_keras_mask", None) is not None
    out, state = SimpleRecurrentLayer(5, return_state=True)(seq)
    model = keras.Model(inputs, [out, state])
    tokens = np.array([[1, 2, 3, 0, 0], [4, 5, 0, 0, 0]])
    o, s = model(tokens)
    assert o.shape == (2, 5) and s.shape == (2, 5)
    np.testing.assert_allclose(o, s, atol=1e-6)
    # Padding does not change the result: the state carries over masked steps.
    o_short, _ = model(tokens[:, :3])
    np.testing.assert_allclose(o, o_short, atol=1e-6)


def test_step_equals_one_timestep():
    rng = np.random.default_rng(4)
    layer = SimpleRecurrentLayer(6, return_sequences=True)
    x = tf.constant(rng.normal(size=(3, 4, 5)).astype("float32"))
    seq = layer(x)
    h = tf.zeros((3, 6))
    for t in range(4):
        h = layer.step(x[:, t], h)
        np.testing.assert_allclose(h, seq[:, t], atol=1e-6)

    # Inside tf.while_loop, as the decoders use it.
    @tf.function
    def decode(x):
        def body(t, h):
            return t + 1, layer.step(x[:, t], h)

        return tf.while_loop(lambda t, h: t < 4, body, (0, tf.zeros((3, 6))))[1]

    np.testing.assert_allclose(decode(x), seq[:, -1], atol=1e-6)


def test_cell_works_with_keras_rnn():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    ours = SimpleRecurrentLayer(4)
    ours(x)
    rnn = keras.layers.RNN(SimpleRecurrentCell(4))
    rnn(x)
    rnn.set_weights(ours.get_weights())
    np.testing.assert_allclose(rnn(x), ours(x), atol=1e-6)
    assert isinstance(ours.cell, SimpleRecurrentCell)


def test_weights_named_and_shaped_like_keras():
    layer = SimpleRecurrentLayer(8)
    layer.build((None, None, 3))
    assert [w.name for w in layer.weights] == ["kernel", "recurrent_kernel", "bias"]
    assert [tuple(w.shape) for w in layer.weights] == [(3, 8), (8, 8), (8,)]
    keras_layer = keras.layers.SimpleRNN(8)
    keras_layer.build((None, None, 3))
    keras_layer.set_weights(layer.get_weights())
    layer.set_weights(keras_layer.get_weights())


def test_get_config_round_trip():
    layer = SimpleRecurrentLayer(
        5, activation="relu", use_bias=False, dropout=0.1, recurrent_dropout=0.2, seed=3,
        recurrent_weight_dropout=0.25,
        return_sequences=True, return_state=True, go_backwards=True, stateful=False,
        unroll=True, zero_output_for_mask=True, kernel_regularizer="l2",
        recurrent_constraint="non_neg", activity_regularizer="l1", name="rec",
        use_fused=False, jit_compile=True, batch_slices=3,
    )
    config = layer.get_config()
    clone = SimpleRecurrentLayer.from_config(config)
    assert clone.get_config() == config
    for key in ("units", "use_bias", "dropout", "recurrent_dropout", "recurrent_weight_dropout",
                "seed", "go_backwards",
                "return_sequences", "return_state", "unroll", "zero_output_for_mask",
                "use_fused", "jit_compile", "batch_slices"):
        assert getattr(clone, key) == getattr(layer, key), key
    assert clone.activation is keras.activations.relu
    assert config["activation"] == "relu"
    cell = SimpleRecurrentCell(3, activation="sigmoid", seed=1)
    assert SimpleRecurrentCell.from_config(cell.get_config()).get_config() == cell.get_config()


@pytest.mark.parametrize("style", ["sequential", "functional", "subclassed", "bidirectional"])
def test_model_styles(style):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4, 6, 3)).astype("float32")
    if style == "sequential":
        model = keras.Sequential([keras.Input((None, 3)), SimpleRecurrentLayer(5),
                                  keras.layers.Dense(2)])
    elif style == "functional":
        inputs = keras.Input((6, 3))
        seq = SimpleRecurrentLayer(5, return_sequences=True)(inputs)
        model = keras.Model(inputs, keras.layers.Dense(2)(SimpleRecurrentLayer(4)(seq)))
    elif style == "subclassed":
        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.rnn = SimpleRecurrentLayer(5)
                self.out = keras.layers.Dense(2)

            def call(self, x):
                return self.out(self.rnn(x))

        model = Net()
    else:
        model = keras.Sequential([
            keras.Input((None, 3)),
            keras.layers.Bidirectional(SimpleRecurrentLayer(5, return_sequences=True)),
            keras.layers.Bidirectional(SimpleRecurrentLayer(5)),
            keras.layers.Dense(2),
        ])
    model.compile("adam", "mse")
    history = model.fit(x, np.zeros((4, 2)), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.predict(x, verbose=0).shape == (4, 2)


def test_bidirectional_matches_keras():
    rng = np.random.default_rng(7)
    x = tf.constant(rng.normal(size=(3, 5, 4)).astype("float32"))
    mask = tf.constant(np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], bool))
    ours = keras.layers.Bidirectional(SimpleRecurrentLayer(6, return_sequences=True))
    theirs = keras.layers.Bidirectional(keras.layers.SimpleRNN(6, return_sequences=True))
    ours(x)
    theirs(x)
    theirs.set_weights(ours.get_weights())
    np.testing.assert_allclose(ours(x, mask=mask), theirs(x, mask=mask), atol=1e-5)


def test_stateful_with_keras_input_batch_size():
    inputs = keras.Input((3, 4), batch_size=2)
    layer = _constant_layer(SimpleRecurrentLayer, stateful=True)
    model = keras.Model(inputs, layer(inputs))
    first = model.predict(GOLDEN_X, verbose=0)
    second = model.predict(GOLDEN_X, verbose=0)
    np.testing.assert_allclose(first[:, 0], [0.405432, 0.73605347], rtol=1e-6)
    np.testing.assert_allclose(second[:, 0], [0.40559256, 0.7361247], rtol=1e-6)
    layer.reset_state()
    np.testing.assert_allclose(model.predict(GOLDEN_X, verbose=0), first, rtol=1e-6)


# ------------------------------------------------------------------------ errors
def test_error_wrong_rank():
    with pytest.raises(ValueError, match="rank 3"):
        SimpleRecurrentLayer(3)(np.zeros((2, 4), "float32"))
    layer = SimpleRecurrentLayer(3)
    layer(np.zeros((2, 5, 4), "float32"))
    with pytest.raises(ValueError, match="rank 3"):
        layer(np.zeros((2, 5, 4, 1), "float32"))


def test_error_initial_state_shape():
    layer = SimpleRecurrentLayer(3)
    with pytest.raises(ValueError, match=r"initial_state must have shape \(batch, 3\)"):
        layer(np.zeros((2, 5, 4), "float32"), initial_state=np.zeros((2, 4), "float32"))
    with pytest.raises(ValueError, match="batch size"):
        layer(np.zeros((2, 5, 4), "float32"), initial_state=np.zeros((3, 3), "float32"))


def test_error_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation 'tanhh'"):
        SimpleRecurrentLayer(3, activation="tanhh")


def test_error_stateful_needs_fixed_batch():
    with pytest.raises(ValueError, match="stateful=True needs a fixed batch size"):
        keras.Sequential([keras.Input((5, 4)), SimpleRecurrentLayer(3, stateful=True)])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"use_fused": "no"}, "`use_fused` must be True or False, got 'no'"),
    ({"jit_compile": "xla"}, "`jit_compile` must be 'auto', True or False, got 'xla'"),
    ({"jit_compile": 1}, "`jit_compile` must be 'auto', True or False, got 1"),
    ({"batch_slices": 0}, "`batch_slices` must be 'auto' or a positive integer, got 0"),
    ({"batch_slices": "4"}, "`batch_slices` must be 'auto' or a positive integer, got '4'"),
    ({"batch_slices": True}, "`batch_slices` must be 'auto' or a positive integer, got True"),
])
def test_error_bad_fast_path_options(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SimpleRecurrentLayer(3, **kwargs)


@pytest.mark.parametrize("rate", [1.0, -0.1])
def test_error_bad_recurrent_weight_dropout(rate):
    with pytest.raises(ValueError, match=r"`recurrent_weight_dropout` must be in \[0, 1\)"):
        SimpleRecurrentLayer(4, recurrent_weight_dropout=rate)


def test_error_bad_units_and_unbuilt_step():
    with pytest.raises(ValueError, match="positive integer"):
        SimpleRecurrentLayer(0)
    with pytest.raises(ValueError, match="not built"):
        SimpleRecurrentLayer(3).step(np.zeros((1, 2), "float32"), np.zeros((1, 3), "float32"))


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "float64"])
def test_other_dtype_policies(policy, fallback_calls):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(3, 70, 4)).astype("float32")
    ours = SimpleRecurrentLayer(6, return_sequences=True, dtype=policy)
    theirs = keras.layers.SimpleRNN(6, return_sequences=True, dtype=policy)
    ours(x)
    theirs(x)
    theirs.set_weights(ours.get_weights())
    with tf.GradientTape(persistent=True) as tape:
        a = ours(x)
        b = theirs(x)
        la = tf.reduce_sum(tf.cast(a, "float32") ** 2)
        lb = tf.reduce_sum(tf.cast(b, "float32") ** 2)
    assert a.dtype == b.dtype == keras.mixed_precision.Policy(policy).compute_dtype
    tol = 2e-2 if policy == "mixed_bfloat16" else 1e-10
    np.testing.assert_allclose(np.asarray(tf.cast(a, "float32")), np.asarray(tf.cast(b, "float32")),
                               atol=tol, rtol=tol)
    for ga, gb in zip(tape.gradient(la, ours.trainable_weights),
                      tape.gradient(lb, theirs.trainable_weights)):
        assert ga.dtype == gb.dtype
        scale = max(1.0, float(np.max(np.abs(np.asarray(gb)))))
        assert float(np.max(np.abs(np.asarray(ga) - np.asarray(gb)))) <= 5 * tol * scale
    assert fallback_calls == []


def test_step_with_dropout_layer_and_mixed_policy():
    # step() never applies (nor caches) dropout masks and follows the layer's compute dtype.
    layer = SimpleRecurrentLayer(4, dropout=0.5, recurrent_dropout=0.5, dtype="mixed_bfloat16")
    x = np.random.default_rng(9).normal(size=(2, 3, 5)).astype("float32")
    seq = SimpleRecurrentLayer(4, return_sequences=True, dtype="mixed_bfloat16")
    layer(x)
    seq(x)
    seq.set_weights(layer.get_weights())

    @tf.function
    def decode(x):
        return tf.while_loop(lambda t, h: t < 3, lambda t, h: (t + 1, layer.step(x[:, t], h)),
                             (0, tf.zeros((2, 4), "bfloat16")))[1]

    out = decode(tf.constant(x))
    assert out.dtype == tf.bfloat16
    np.testing.assert_allclose(np.asarray(tf.cast(out, "float32")),
                               np.asarray(tf.cast(seq(x)[:, -1], "float32")), atol=3e-2)
    layer(x, training=True)  # masks created in decode()'s graph would break this call
