"""rnnkit.gradient_flow against a plain NumPy unrolled reference (forward and BPTT by hand)."""

from __future__ import annotations

import json
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf

from rnnkit import SimpleRecurrentLayer
from rnnkit.gradient_flow import gradient_flow, write_gradient_flow_report
from rnnkit.layers import _fused

B, T, D, H = 5, 9, 3, 4
ACTIVATIONS = ("tanh", "sigmoid", "relu")


def _act(name, a):
    if name == "tanh":
        return np.tanh(a)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-a))
    return np.maximum(a, 0.0)


def _act_grad(name, h):
    if name == "tanh":
        return 1.0 - h ** 2
    if name == "sigmoid":
        return h * (1.0 - h)
    return (h > 0).astype(np.float64)


def reference_deltas(x, mask, wx, wh, b, activation, go_backwards, dh_last, dh_steps):
    """dL/da_t (B, T, H) by an explicit Python loop over time (float64).

    ``dh_last``: dL/d(last state) (B, H) or None; ``dh_steps``: dL/dh_t from per-step
    outputs (B, T, H) in input order, or None. Masked steps carry the state unchanged.
    """
    x, wx, wh, b = (np.asarray(v, np.float64) for v in (x, wx, wh, b))
    batch, steps, _ = x.shape
    order = list(range(steps))[::-1] if go_backwards else list(range(steps))
    h = np.zeros((batch, wh.shape[0]))
    hs = {}
    for t in order:
        a = x[:, t] @ wx + b + h @ wh
        h = np.where(mask[:, t:t + 1], _act(activation, a), h)
        hs[t] = h
    g = np.zeros_like(h) if dh_last is None else np.asarray(dh_last, np.float64).copy()
    deltas = np.zeros((batch, steps, wh.shape[0]))
    for t in reversed(order):
        if dh_steps is not None:
            g = g + dh_steps[:, t]
        delta = np.where(mask[:, t:t + 1], g * _act_grad(activation, hs[t]), 0.0)
        deltas[:, t] = delta
        g = np.where(mask[:, t:t + 1], delta @ wh.T, g)
    return deltas, hs


def _data(masked, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, T, D)).astype(np.float32)
    mask = np.ones((B, T), bool)
    if masked:
        # Post- and pre-padding and a fully kept row; Masking reads zeros as padding.
        mask[0, 6:] = False
        mask[1, :3] = False
        mask[3, 2:5] = False
        x[~mask] = 0.0
    y = rng.normal(size=(B, 1)).astype(np.float32)
    return x, mask, y


def _recurrent(activation):
    # Scaled-up weights so relu/sigmoid/tanh all have live and dead/saturated units.
    return SimpleRecurrentLayer(
        H, activation=activation, name="rnn",
        kernel_initializer=keras.initializers.RandomNormal(stddev=1.2, seed=1),
        recurrent_initializer=keras.initializers.Orthogonal(gain=1.1, seed=2),
        bias_initializer=keras.initializers.RandomNormal(stddev=0.3, seed=3),
    )


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_last_state_classifier_matches_reference(activation, masked):
    x, mask, y = _data(masked)
    inputs = keras.Input((T, D))
    seq = keras.layers.Masking(0.0)(inputs) if masked else inputs
    rnn = _recurrent(activation)
    out = keras.layers.Dense(1, name="head")(rnn(seq))
    model = keras.Model(inputs, out)

    calls = []
    real = _fused.elman_sequence

    def spy(*args, **kwargs):
        calls.append(kwargs.get("return_sequences"))
        return real(*args, **kwargs)

    with mock.patch.object(_fused, "elman_sequence", spy):
        flow = gradient_flow(model, x, y, loss_fn=keras.losses.MeanSquaredError())
    # The layer's own call went through the fused kernel (plus one forward-only pass for
    # the saturation count).
    assert calls and False in calls
    (f,) = flow.layers
    wx, wh, b = (w.numpy() for w in rnn.weights)
    wd, bd = model.get_layer("head").get_weights()
    # Reference forward to the prediction, then the loss gradient to the last state.
    _, hs = reference_deltas(x, mask, wx, wh, b, activation, False, np.zeros((B, H)), None)
    pred = hs[T - 1] @ wd.astype(np.float64) + bd
    dpred = 2.0 * (pred - y) / pred.size
    deltas, _ = reference_deltas(x, mask, wx, wh, b, activation, False, dpred @ wd.T, None)
    np.testing.assert_allclose(flow.loss, float(np.mean((pred - y) ** 2)), rtol=1e-5)

    ref_norms = np.sqrt((deltas ** 2).sum(-1))
    got = np.where(mask, f.step_norms, 0.0)
    np.testing.assert_allclose(got, ref_norms, atol=1e-5, rtol=1e-5)
    assert np.isnan(f.step_norms[~mask]).all()
    # Per distance: mean over the rows that have a step that far from their last one.
    for d in range(int(f.distance[-1]) + 1):
        vals = [ref_norms[i, t] for i in range(B) for t in range(T)
                if mask[i, t] and mask[i, t + 1:].sum() == d]
        assert f.count[d] == len(vals)
        np.testing.assert_allclose(f.grad_norm[d], np.mean(vals), atol=1e-5, rtol=1e-5)
    assert f.distance[-1] == mask.sum(1).max() - 1

    np.testing.assert_allclose(f.spectral_radius,
                               np.abs(np.linalg.eigvals(wh.astype(np.float64))).max(),
                               rtol=1e-5)
    states = np.stack([hs[t] for t in range(T)], 1)[mask]
    expected_sat = {"tanh": np.abs(states) > 0.99,
                    "sigmoid": (states < 0.01) | (states > 0.99),
                    "relu": states == 0}[activation].mean()
    np.testing.assert_allclose(f.saturation, expected_sat, atol=1e-6)
    # The measured layer is restored: a later call gives the plain model's output.
    np.testing.assert_allclose(model(x).numpy(), pred, atol=1e-5)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_bidirectional_per_step_loss_matches_reference(activation, masked):
    """Per-step loss (return_sequences) through a Bidirectional pair, backward half reversed."""
    x, mask, _ = _data(masked, seed=1)
    targets = np.random.default_rng(5).normal(size=(B, T, 1)).astype(np.float32)
    inputs = keras.Input((T, D))
    seq = keras.layers.Masking(0.0)(inputs) if masked else inputs
    cell = SimpleRecurrentLayer(
        H, activation=activation, return_sequences=True, zero_output_for_mask=True,
        kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=4),
        bias_initializer=keras.initializers.RandomNormal(stddev=0.3, seed=6),
    )
    bi = keras.layers.Bidirectional(cell, name="birnn")
    head = keras.layers.Dense(1, name="head")
    model = keras.Model(inputs, head(bi(seq)))

    def loss_fn(y_true, y_pred):
        # Per-step squared error on the unmasked steps only, averaged over all entries.
        return tf.reduce_sum(tf.square(y_pred - y_true) * mask[..., None]) / (B * T)

    flow = gradient_flow(model, x, targets, loss_fn=loss_fn)
    by_name = {f.name: f for f in flow.layers}
    assert len(by_name) == 2
    assert {name.split("_")[0] for name in by_name} == {"birnn/forward", "birnn/backward"}
    wd, bd = head.get_weights()
    wd = wd.astype(np.float64)
    fwd, bwd = bi.forward_layer, bi.backward_layer
    outs = []
    for lay, back in ((fwd, False), (bwd, True)):
        wx, wh, b = (w.numpy() for w in lay.weights)
        _, hs = reference_deltas(x, mask, wx, wh, b, activation, back, None, np.zeros((B, T, H)))
        outs.append(np.stack([np.where(mask[:, t:t + 1], hs[t], 0.0) for t in range(T)], 1))
    pred = np.concatenate(outs, -1) @ wd + bd
    dpred = 2.0 * (pred - targets) * mask[..., None] / (B * T)
    dout = dpred @ wd.T * mask[..., None]
    for k, (lay, back) in enumerate(((fwd, False), (bwd, True))):
        wx, wh, b = (w.numpy() for w in lay.weights)
        deltas, _ = reference_deltas(x, mask, wx, wh, b, activation, back, None,
                                     dout[..., k * H:(k + 1) * H])
        ref = np.sqrt((deltas ** 2).sum(-1))
        f = by_name[lay.path]
        assert f.go_backwards is back
        np.testing.assert_allclose(np.where(mask, f.step_norms, 0.0), ref, atol=1e-5, rtol=1e-5)
        # Distance 0 of the backward layer is the first unmasked input step of each row.
        first = [int(np.argmax(mask[i])) for i in range(B)]
        last = [int(T - 1 - np.argmax(mask[i, ::-1])) for i in range(B)]
        at0 = [ref[i, first[i] if back else last[i]] for i in range(B)]
        np.testing.assert_allclose(f.grad_norm[0], np.mean(at0), atol=1e-5, rtol=1e-5)


def test_vanishing_versus_identity():
    """A contracting tanh network loses the gradient with distance; an IRNN keeps it."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(16, 60, 2)).astype(np.float32)
    y = rng.uniform(size=(16, 1)).astype(np.float32)
    decays = {}
    for name, act, init in (("tanh", "tanh", keras.initializers.Orthogonal(0.5, seed=0)),
                            ("irnn", "relu", keras.initializers.Identity())):
        inputs = keras.Input((60, 2))
        out = keras.layers.Dense(1)(SimpleRecurrentLayer(16, activation=act,
                                                         recurrent_initializer=init)(inputs))
        model = keras.Model(inputs, out)
        model.compile(loss="mse")  # the default loss_fn is the compiled loss
        f = gradient_flow(model, x, y).layers[0]
        decays[name] = f.decay_per_step()
        assert f.distance[-1] == 59
    assert decays["tanh"] < 0.7
    assert 0.9 < decays["irnn"] <= 1.01


def test_report_writes_png_and_json_numbers(tmp_path):
    x, _, y = _data(False)
    inputs = keras.Input((T, D))
    model = keras.Model(inputs, keras.layers.Dense(1)(_recurrent("tanh")(inputs)))
    summary = write_gradient_flow_report(model, x, y, tmp_path,
                                         loss_fn=keras.losses.MeanSquaredError())
    png = (tmp_path / "gradient_flow.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    layer = summary["layers"]["rnn"]
    assert layer["max_distance"] == T - 1
    assert {"spectral_radius", "saturation", "decay_per_step", "grad_norm_nearest"} <= set(layer)
    json.dumps(summary)


def test_errors_name_the_problem():
    x, _, y = _data(False)
    inputs = keras.Input((T, D))
    plain = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="contains no SimpleRecurrentLayer"):
        gradient_flow(plain, x, y, loss_fn=keras.losses.MeanSquaredError())
    slow = SimpleRecurrentLayer(H, use_fused=False)
    model = keras.Model(inputs, keras.layers.Dense(1)(slow(inputs)))
    with pytest.raises(ValueError, match="fused fast path"):
        gradient_flow(model, x, y, loss_fn=keras.losses.MeanSquaredError())
    model = keras.Model(inputs, keras.layers.Dense(1)(_recurrent("tanh")(inputs)))
    with pytest.raises(ValueError, match="not compiled with a loss"):
        gradient_flow(model, x, y)
    with pytest.raises(ValueError, match="no SimpleRecurrentLayer named 'nope'"):
        gradient_flow(model, x, y, loss_fn=keras.losses.MeanSquaredError(), layer="nope")


def test_diverged_weights_give_nan_not_an_error():
    x, _, y = _data(False)
    inputs = keras.Input((T, D))
    rnn = _recurrent("relu")
    model = keras.Model(inputs, keras.layers.Dense(1)(rnn(inputs)))
    wx, wh, b = rnn.get_weights()
    rnn.set_weights([wx, np.full_like(wh, np.nan), b])
    f = gradient_flow(model, x, y, loss_fn=keras.losses.MeanSquaredError()).layers[0]
    assert np.isnan(f.spectral_radius)
