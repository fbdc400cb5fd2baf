"""Fused Elman recurrence for the TensorFlow backend (the fast path of SimpleRecurrentLayer).

Forward, for a time-major projected input ``xw_t = x_t W_x + b`` (one GEMM for all steps):

    z_t = xw_t + h_{t-1} W_h,   h_t = m_t ? f(z_t) : h_{t-1}

Backward (hand-written, ``tf.custom_gradient``), with ``g`` the running dL/dh:

    g      += dL/dh_t (from the outputs)
    dz_t    = m_t ? g * f'(z_t) : 0          (f' from h_t: tanh, sigmoid, relu, linear)
    g       = m_t ? dz_t W_h^T : g           (dL/dh_{t-1})

then ``dW_h = H_prev^T dZ`` as one GEMM over all steps and ``dxw = dZ`` (TensorFlow's
autodiff turns that into the ``W_x``/``b``/input gradients of the projection GEMM).

Everything here is a standard TensorFlow op (MatMul, TanhGrad, While, TensorArray...), so
SavedModels containing it load anywhere TensorFlow does.
"""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf

# XLA-compile the two loops (see docs/layer.md for the measurements). RNNKIT_FUSED_XLA=0
# turns it off (plain tf.while_loop) without touching code.
_USE_XLA = os.environ.get("RNNKIT_FUSED_XLA", "1") != "0"


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


def _forward_loop(xw, h0, wh, mask, activation: str):
    """All states ``hs (T, B, H)`` of the recurrence over time-major ``xw (T, B, H)``."""
    steps = tf.shape(xw)[0]
    out_ta = tf.TensorArray(xw.dtype, size=steps, element_shape=h0.shape)

    def body(t, h, out_ta):
        z = xw[t] + tf.matmul(h, wh)
        h_new = _activate(activation, z)
        if mask is not None:
            h_new = tf.where(mask[t], h_new, h)
        return t + 1, h_new, out_ta.write(t, h_new)

    _, _, out_ta = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (tf.constant(0), h0, out_ta),
        maximum_iterations=steps,
    )
    return out_ta.stack()


def _backward_loop(dhs, g_last, hs, wh, mask, activation: str):
    """``(dZ (T, B, H), dL/dh0)`` for the upstream gradients of the states.

    ``dhs`` holds dL/dh_t for every step (``return_sequences``), or is None when only the
    last state was used, whose gradient is ``g_last``.
    """
    steps = tf.shape(hs)[0]
    dz_ta = tf.TensorArray(hs.dtype, size=steps, element_shape=hs.shape[1:])

    def body(t, g, dz_ta):
        if dhs is not None:
            g = g + dhs[t]
        dz = _activation_grad(activation, g, hs[t])
        if mask is not None:
            dz = tf.where(mask[t], dz, tf.zeros_like(dz))
            g_prev = tf.where(mask[t], tf.matmul(dz, wh, transpose_b=True), g)
        else:
            g_prev = tf.matmul(dz, wh, transpose_b=True)
        return t - 1, g_prev, dz_ta.write(t, dz)

    g0 = tf.zeros_like(hs[0]) if g_last is None else g_last
    _, dh0, dz_ta = tf.while_loop(
        lambda t, *_: t >= 0,
        body,
        (steps - 1, g0, dz_ta),
        maximum_iterations=steps,
    )
    return dz_ta.stack(), dh0


if _USE_XLA:
    _forward = tf.function(_forward_loop, jit_compile=True, reduce_retracing=True,
                           autograph=False)
    _backward = tf.function(_backward_loop, jit_compile=True, reduce_retracing=True,
                            autograph=False)
else:
    _forward, _backward = _forward_loop, _backward_loop


def _recurrence(xw, h0, wh, mask, activation: str, return_all: bool):
    """The recurrence with the hand-written gradient.

    Returns every state ``hs (T, B, H)`` if ``return_all``, else only the last ``(B, H)``
    (then the backward pass needs no dense all-steps upstream gradient).
    """

    @tf.custom_gradient
    def run(xw, h0, wh):
        # stop_gradient: the custom gradient below replaces autodiff, and it keeps a tape
        # from asking the compiled loop for its intermediates (which XLA cannot export).
        hs = _forward(tf.stop_gradient(xw), tf.stop_gradient(h0), tf.stop_gradient(wh),
                      mask, activation)
        # The compiled function is traced shape-generic (reduce_retracing); restore the
        # static shape Keras needs to build the following layers.
        hs.set_shape(xw.shape)

        def grad(upstream):
            upstream = tf.stop_gradient(upstream)
            dhs, g_last = (upstream, None) if return_all else (None, upstream)
            dz, dh0 = _backward(dhs, g_last, tf.stop_gradient(hs), tf.stop_gradient(wh),
                                mask, activation)
            dz.set_shape(xw.shape)
            dh0.set_shape(h0.shape)
            hidden = tf.shape(h0)[-1]
            # dW_h = sum_t h_{t-1}^T dz_t: one GEMM over steps 1..T-1 (views, no copy)
            # plus the h0 term.
            dwh = tf.matmul(
                tf.reshape(hs[:-1], [-1, hidden]), tf.reshape(dz[1:], [-1, hidden]),
                transpose_a=True,
            ) + tf.matmul(h0, dz[0], transpose_a=True)
            return dz, dh0, dwh

        return (hs if return_all else hs[-1]), grad

    return run(xw, h0, wh)


def _as_tensor(value: Any, dtype: tf.DType) -> tf.Tensor:
    # Keras variables convert to their (autocast) value; cast for mixed precision.
    return tf.cast(tf.convert_to_tensor(value), dtype)


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

    Returns:
        ``(last_output (B, H), outputs (B, T|1, H), last_state (B, H))``.
    """
    sequences = tf.convert_to_tensor(sequences)
    dtype = sequences.dtype
    h0 = tf.cast(h0, dtype)
    wx = _as_tensor(kernel, dtype)
    wh = _as_tensor(recurrent_kernel, dtype)
    units = wh.shape[-1]

    x = tf.transpose(sequences, [1, 0, 2])  # time-major (T, B, D)
    if go_backwards:
        x = tf.reverse(x, [0])
    shape = tf.shape(x)
    # One GEMM projects every step's input.
    xw = tf.matmul(tf.reshape(x, [-1, shape[2]]), wx)
    if bias is not None:
        xw = xw + _as_tensor(bias, dtype)
    xw = tf.reshape(xw, [shape[0], shape[1], units])

    time_mask = None
    if mask is not None:
        time_mask = tf.transpose(tf.cast(mask, tf.bool), [1, 0])[:, :, tf.newaxis]
        if go_backwards:
            time_mask = tf.reverse(time_mask, [0])

    if not return_sequences:
        last_state = _recurrence(xw, h0, wh, time_mask, activation, return_all=False)
        last_output = last_state
        if time_mask is not None:
            keep = time_mask[-1] if zero_output_for_mask else tf.reduce_any(time_mask, axis=0)
            last_output = tf.where(keep, last_state, tf.zeros_like(last_state))
        return last_output, last_output[:, tf.newaxis], last_state

    hs = _recurrence(xw, h0, wh, time_mask, activation, return_all=True)
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
