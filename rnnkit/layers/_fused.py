"""Fused Elman recurrence for the TensorFlow backend (the fast path of SimpleRecurrentLayer).

Forward, over time-major inputs, with the projection ``xw_t = x_t W_x + b`` done as one
GEMM for many steps at once:

    z_t = xw_t + h_{t-1} W_h,   h_t = m_t ? f(z_t) : h_{t-1}

Backward (hand-written, ``tf.custom_gradient``), with ``g`` the running dL/dh:

    g      += dL/dh_t (from the outputs)
    dz_t    = m_t ? g * f'(z_t) : 0          (f' from h_t: tanh, sigmoid, relu, linear)
    g       = m_t ? dz_t W_h^T : g           (dL/dh_{t-1})

then ``dW_x = X^T dZ``, ``dW_h = H_prev^T dZ``, ``db = sum dZ`` and ``dX = dZ W_x^T`` as
GEMMs/sums over all steps.

The two loops are XLA-compiled or not as the layer's ``jit_compile`` says (see
:func:`use_xla`; for an unknown time axis XLA runs on inputs padded to a multiple of 32
steps, see :func:`_bucketed`). Without XLA they are plain ``tf.while_loop``s of standard
TensorFlow ops only (MatMul, TanhGrad, While, TensorArray, ...), which is what SavedModels
get by default. On CPU the batch may run as several independent slices (see
:func:`stream_count`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from rnnkit.layers._compat import in_save_context


def _activate(name: str, z: tf.Tensor) -> tf.Tensor:
    if name == "tanh":
        return tf.tanh(z)
    if name == "sigmoid":
        return tf.sigmoid(z)
    if name == "relu":
        return tf.nn.relu(z)
    return z


def _activation_grad(name: str, g: tf.Tensor, h: tf.Tensor) -> tf.Tensor:
    """dL/dz from dL/dh and the activation's output h (the same kernels TF's autodiff uses)."""
    if name == "tanh":
        return tf.raw_ops.TanhGrad(y=h, dy=g)
    if name == "sigmoid":
        return tf.raw_ops.SigmoidGrad(y=h, dy=g)
    if name == "relu":
        return tf.raw_ops.ReluGrad(gradients=g, features=h)
    return g


def _forward_loop(xw, h0, wh, mask, activation: str, steps=None):
    """All states ``hs (T, B, H)`` of the recurrence over time-major ``xw (T, B, H)``.

    With ``steps`` (a scalar tensor), only the first ``steps`` rows of a time-padded ``xw``
    are processed; the rows after them in the result are zeros.
    """
    size = tf.shape(xw)[0]
    steps = size if steps is None else steps
    out_ta = tf.TensorArray(xw.dtype, size=size, element_shape=h0.shape)

    def body(t, h, out_ta):
        z = xw[t] + tf.matmul(h, wh)
        h_new = _activate(activation, z)
        if mask is not None:
            h_new = tf.where(mask[t], h_new, h)
        h_new.set_shape(h.shape)  # as in _backward_loop: the loop variable keeps its shape
        return t + 1, h_new, out_ta.write(t, h_new)

    _, _, out_ta = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (tf.constant(0), h0, out_ta),
        maximum_iterations=steps,
    )
    return out_ta.stack()


def _backward_loop(dhs, g_last, hs, wh, mask, activation: str, steps=None):
    """``(dZ (T, B, H), dL/dh0)`` for the upstream gradients of the states.

    ``g_last`` is dL/dh of the last state from outside the outputs; ``dhs`` holds
    dL/dh_t of every step's output (``return_sequences``), or is None when only the last
    state was used. With ``steps``, only the first ``steps`` rows of time-padded
    ``hs``/``mask`` are used (``dZ`` is zero after them).
    """
    size = tf.shape(hs)[0]
    steps = size if steps is None else steps
    dz_ta = tf.TensorArray(hs.dtype, size=size, element_shape=hs.shape[1:])

    def body(t, g, dz_ta):
        if dhs is not None:
            g = g + dhs[t]
        dz = _activation_grad(activation, g, hs[t])
        if mask is not None:
            dz = tf.where(mask[t], dz, tf.zeros_like(dz))
            g_prev = tf.where(mask[t], tf.matmul(dz, wh, transpose_b=True), g)
        else:
            g_prev = tf.matmul(dz, wh, transpose_b=True)
        # A batch slice can bring g_last with a static batch while hs (traced
        # shape-generic) has none: keep the loop variable's shape as it came in.
        g_prev.set_shape(g.shape)
        return t - 1, g_prev, dz_ta.write(t, dz)

    _, dh0, dz_ta = tf.while_loop(
        lambda t, *_: t >= 0,
        body,
        (steps - 1, g_last, dz_ta),
        maximum_iterations=steps,
    )
    return dz_ta.stack(), dh0


_forward_xla = tf.function(_forward_loop, jit_compile=True, reduce_retracing=True,
                           autograph=False)
_backward_xla = tf.function(_backward_loop, jit_compile=True, reduce_retracing=True,
                            autograph=False)

_xla_override: list[bool] = []


@contextlib.contextmanager
def xla_loops(enabled: bool) -> Iterator[None]:
    """Within this context, fused loops traced into graphs are (not) XLA-compiled.

    Overrides every layer's ``jit_compile`` while the context is active (nested contexts:
    the innermost wins). Use ``with xla_loops(False):`` around tracing a serving function
    whose SavedModel must not need XLA (TF Serving runs XLA only with
    ``--xla_cpu_compilation_enabled``, and not at all on some GPU builds). Functions traced
    by ``tf.saved_model.save`` itself (e.g. ``model.export()``) need no context: layers with
    ``jit_compile="auto"`` (the default) detect it and stay XLA-free.

    Args:
        enabled: Whether loops traced within the context are XLA-compiled.
    """
    _xla_override.append(bool(enabled))
    try:
        yield
    finally:
        _xla_override.pop()


def use_xla(jit_compile: bool | str = "auto") -> bool:
    """Whether fused loops traced now are XLA-compiled, for a layer's ``jit_compile``.

    Args:
        jit_compile: ``True``/``False`` as set on the layer, or ``"auto"``: XLA except in
            graphs traced by ``tf.saved_model.save``. An active :func:`xla_loops` context
            decides instead of all three.

    Returns:
        True to run the XLA-compiled loops, False for the plain ``tf.while_loop``s.
    """
    if _xla_override:
        return _xla_override[-1]
    if jit_compile == "auto":
        # Graphs traced while saving a SavedModel stay XLA-free, so exports are portable.
        return not in_save_context()
    return bool(jit_compile)


# With an unknown time axis, the XLA loops run on inputs padded to a multiple of this many
# steps (stopping at the real length), so XLA compiles once per bucket, not per length.
_TIME_BUCKET = 32


def _bucketed(forward, backward):
    """XLA loops for an unknown time axis: pad time to a multiple of ``_TIME_BUCKET``.

    The loops stop at the real length, so the padding costs no steps and needs no mask;
    XLA then compiles once per (batch, bucket) shape instead of once per length.
    """

    def pad(t, steps, value=0):
        extra = (-steps) % _TIME_BUCKET
        return tf.pad(t, [[0, extra]] + [[0, 0]] * (len(t.shape) - 1), constant_values=value)

    def forward_bucketed(xw, h0, wh, mask, activation):
        steps = tf.shape(xw)[0]
        padded_mask = None if mask is None else pad(mask, steps, False)
        # Keep the padded states: the backward pass takes them as they are.
        hs_padded = forward(pad(xw, steps), h0, wh, padded_mask, activation, steps)
        return hs_padded[:steps], hs_padded

    def backward_bucketed(dhs, g_last, hs_padded, wh, mask, activation, steps):
        padded_mask = None if mask is None else pad(mask, steps, False)
        dz, dh0 = backward(dhs, g_last, hs_padded, wh, padded_mask, activation, steps)
        return dz[:steps], dh0

    return forward_bucketed, backward_bucketed


def _fused_run(x, h0, wx, wh, b, mask, activation: str, return_all: bool, xla: bool):
    """Projection + recurrence over time-major ``x (T, B, D)`` with the hand-written gradient.

    Returns every state ``hs (T, B, H)`` if ``return_all``, else only the last ``(B, H)``
    (then the backward pass needs no dense all-steps upstream gradient).
    """
    # XLA compiles one program per input shape: with an unknown time axis (a dataset of
    # varying lengths, traced once with T=None) the loops run time-bucketed.
    bucketed = xla and x.shape[0] is None
    if bucketed:
        forward, backward = _bucketed(_forward_xla, _backward_xla)
    elif xla:
        forward, backward = _forward_xla, _backward_xla
    else:
        forward, backward = _forward_loop, _backward_loop
    units = wh.shape[-1]
    has_bias = b is not None

    def project(x, wx, b):
        shape = tf.shape(x)
        y = tf.matmul(tf.reshape(x, [-1, shape[2]]), wx)
        if b is not None:
            # BiasAdd (not AddV2): Grappler fuses MatMul+BiasAdd into one oneDNN kernel.
            y = tf.nn.bias_add(y, b)
        return tf.reshape(y, [shape[0], shape[1], units])

    @tf.custom_gradient
    def run(*args):
        # stop_gradient: the custom gradient below replaces autodiff, and it keeps a tape
        # from asking the compiled loops for their intermediates (XLA cannot export them).
        x, h0, wx, wh = (tf.stop_gradient(a) for a in args[:4])
        b = tf.stop_gradient(args[4]) if has_bias else None
        xw = project(x, wx, b)
        hs = forward(xw, h0, wh, mask, activation)
        hs_padded = None
        if bucketed:
            hs, hs_padded = hs
        # Compiled functions are traced shape-generic (reduce_retracing); restore the
        # static shape Keras needs to build the following layers.
        hs.set_shape(xw.shape)
        out = hs if return_all else hs[-1]

        def grad(upstream):
            upstream = tf.stop_gradient(upstream)
            g_last = tf.zeros_like(h0) if return_all else upstream
            dhs = upstream if return_all else None
            if bucketed:
                dz, dh0 = backward(dhs, g_last, hs_padded, wh, mask, activation, tf.shape(x)[0])
            else:
                dz, dh0 = backward(dhs, g_last, hs, wh, mask, activation)
            dz.set_shape(hs.shape)
            dh0.set_shape(h0.shape)
            # The weight gradients as GEMMs over all steps at once; dW_h pairs h_{t-1}
            # with dz_t (slices are views, no copies).
            features = tf.shape(x)[2]
            flat_dz = tf.reshape(dz, [-1, units])
            dwx = tf.matmul(tf.reshape(x, [-1, features]), flat_dz, transpose_a=True)
            dwh = (tf.matmul(tf.reshape(hs[:-1], [-1, units]),
                             tf.reshape(dz[1:], [-1, units]), transpose_a=True)
                   + tf.matmul(h0, dz[0], transpose_a=True))
            # Unused (e.g. for a model's input) -> pruned from the graph.
            dx_shape = tf.concat([tf.shape(dz)[:2], [features]], 0)
            dx = tf.reshape(tf.matmul(flat_dz, wx, transpose_b=True), dx_shape)
            grads = [dx, dh0, dwx, dwh]
            return grads + ([tf.reduce_sum(flat_dz, 0)] if has_bias else [])

        return out, grad

    return run(x, h0, wx, wh, *([b] if has_bias else []))


def _as_tensor(value: Any, dtype: tf.DType) -> tf.Tensor:
    # Keras variables convert to their (autocast) value; cast for mixed precision.
    return tf.cast(tf.convert_to_tensor(value), dtype)


# Rows per batch slice at least, when the slice count is chosen automatically.
_MIN_STREAM_ROWS = 16


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _gpu_visible() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def stream_count(batch: int | None, batch_slices: int | str = "auto") -> int:
    """How many independent batch slices ("streams") to run the recurrence in.

    One step of the recurrence is a small ``(B, H) x (H, H)`` GEMM that one core does
    nearly as fast as all of them (the per-step threading costs as much as it saves),
    so on CPU the batch is cut into slices whose loops TensorFlow's executor runs on
    different cores at once. On a GPU one kernel already covers the batch: one stream.

    Args:
        batch: The static batch size, or None when it is unknown at trace time.
        batch_slices: A positive int (used as given) or ``"auto"``: 1 when TensorFlow sees
            a GPU; otherwise one slice per CPU core this process may use, at most
            ``batch // 16`` (at least 16 rows a slice), or for an unknown batch at most
            4 slices (sized at run time by :func:`elman_sequence`).

    Returns:
        The number of slices, at least 1.
    """
    if batch_slices != "auto":
        return int(batch_slices)
    if _gpu_visible():
        return 1
    if batch is None:
        # Decided at run time (see elman_sequence); at most 4 slices, as beyond that
        # the slices' GEMMs get too thin to pay (measured only on 2 cores so far).
        return min(_cpu_count(), 4)
    return max(1, min(_cpu_count(), batch // _MIN_STREAM_ROWS))


def _split_sizes(batch, streams: int, base=None) -> list:
    """Row counts of ``streams`` slices of ``batch`` rows: ``base`` rows each (default:
    near-equal) and the remainder in the last. Python ints or scalar tensors."""
    base = batch // streams if base is None else base
    return [base] * (streams - 1) + [batch - base * (streams - 1)]


def elman_sequence(
    sequences: tf.Tensor,
    h0: tf.Tensor,
    kernel: Any,
    recurrent_kernel: Any,
    bias: Any,
    activation: str,
    mask: tf.Tensor | None = None,
    go_backwards: bool = False,
    zero_output_for_mask: bool = False,
    return_sequences: bool = True,
    jit_compile: bool | str = "auto",
    batch_slices: int | str = "auto",
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Run the Elman RNN over a batch-major sequence, with Keras ``backend.rnn`` semantics.

    Args:
        sequences: ``(B, T, D)`` inputs (dropout already applied).
        h0: ``(B, H)`` initial state.
        kernel, recurrent_kernel, bias: ``W_x (D, H)``, ``W_h (H, H)``, ``b (H,)`` or None.
        activation: One of ``tanh``, ``sigmoid``, ``relu``, ``linear``.
        mask: Optional ``(B, T)`` mask; a masked step keeps the previous state.
        go_backwards: Iterate from the last step; outputs come in processing order.
        zero_output_for_mask: Masked steps output zeros instead of the previous output.
        return_sequences: Whether ``outputs`` holds all steps (else just the last, ``(B,1,H)``).
        jit_compile: ``True``, ``False`` or ``"auto"``: whether the loops are XLA-compiled
            (see :func:`use_xla`).
        batch_slices: ``"auto"`` or a positive int: how many independent batch slices
            run the recurrence (see :func:`stream_count`).

    Returns:
        ``(last_output (B, H), outputs (B, T|1, H), last_state (B, H))``.
    """
    sequences = tf.convert_to_tensor(sequences)
    batch = sequences.shape[0]
    xla = use_xla(jit_compile)
    streams = stream_count(batch, batch_slices)
    if batch is None and batch_slices == "auto" and not xla:
        # Plain (exported) loops cost several microseconds per step even on 0 rows, which
        # the run-time sizing below gives the unused slices of a small batch.
        streams = 1
    if streams > 1:
        args = (kernel, recurrent_kernel, bias, activation)
        # Each slice runs whole (one stream) with the XLA choice made here.
        options = (go_backwards, zero_output_for_mask, return_sequences, xla, 1)

        def sliced(sizes):
            # Rows are independent, so each slice runs the whole fused path; autodiff
            # sums the slices' weight gradients.
            parts = zip(
                tf.split(sequences, sizes),
                tf.split(h0, sizes),
                tf.split(mask, sizes) if mask is not None else [None] * streams,
            )
            results = [elman_sequence(x, h, *args, m, *options) for x, h, m in parts]
            return tuple(tf.concat(list(r), 0) for r in zip(*results))

        if batch is not None:
            return sliced(_split_sizes(batch, streams))
        # Unknown batch (e.g. traced by fit): the slices' sizes are decided at run time;
        # a batch too small to pay goes whole into the last slice (the others get 0 rows,
        # whose compiled loops cost next to nothing). A tf.cond between a sliced and a
        # whole path would be neater but cannot carry the custom gradient's captures.
        rows = tf.shape(sequences)[0]
        base = tf.where(rows >= streams * _MIN_STREAM_ROWS, rows // streams, 0)
        return sliced(tf.stack(_split_sizes(rows, streams, base)))
    dtype = sequences.dtype
    h0 = tf.cast(h0, dtype)
    wx = _as_tensor(kernel, dtype)
    wh = _as_tensor(recurrent_kernel, dtype)

    x = tf.transpose(sequences, [1, 0, 2])  # time-major (T, B, D)
    if go_backwards:
        x = tf.reverse(x, [0])
    b = None if bias is None else _as_tensor(bias, dtype)

    time_mask = None
    if mask is not None:
        time_mask = tf.transpose(tf.cast(mask, tf.bool), [1, 0])[:, :, tf.newaxis]
        if go_backwards:
            time_mask = tf.reverse(time_mask, [0])

    if not return_sequences:
        last_state = _fused_run(x, h0, wx, wh, b, time_mask, activation, False, xla)
        last_output = last_state
        if time_mask is not None:
            keep = time_mask[-1] if zero_output_for_mask else tf.reduce_any(time_mask, axis=0)
            last_output = tf.where(keep, last_state, tf.zeros_like(last_state))
        return last_output, last_output[:, tf.newaxis], last_state

    hs = _fused_run(x, h0, wx, wh, b, time_mask, activation, True, xla)
    last_state = hs[-1]
    outputs = hs
    if time_mask is not None:
        if zero_output_for_mask:
            keep = time_mask
        else:
            # Keras repeats the previous *output*, which starts at zeros: steps before the
            # first unmasked one output 0 even when the initial state is not zero.
            keep = tf.cumsum(tf.cast(time_mask, tf.int32), axis=0) > 0
        outputs = tf.where(keep, hs, tf.zeros_like(hs))
    last_output = outputs[-1]
    return last_output, tf.transpose(outputs, [1, 0, 2]), last_state
