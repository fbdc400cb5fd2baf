"""Gradient flow through time in the Elman layers of a Keras model.

For a model that contains :class:`rnnkit.SimpleRecurrentLayer` (directly, inside
``keras.layers.Bidirectional`` or inside nested models) and one batch, this module measures
what the textbooks say limits an Elman network:

* the norm of the loss gradient with respect to the pre-activation
  ``a_t = x_t W_x + h_{t-1} W_h + b`` at every step (the back-propagated error
  ``delta_t``), as a function of the distance from the last step the layer processes:
  ``dL/da_t = dL/dh_t * f'(a_t)``, and ``dL/dh_{t-1}`` picks up ``delta_t W_h^T``, so each
  step back multiplies the error by ``diag(f'(a_t)) W_h^T``; it shrinks (vanishes) or grows
  (explodes) geometrically with the distance unless that product stays near norm one;
* the spectral radius of ``W_h`` (the largest ``|eigenvalue|``), which sets that factor for
  a linear network;
* the fraction of saturated units over the batch's steps (``|tanh| > 0.99``, sigmoid outside
  ``[0.01, 0.99]``, ReLU at exactly 0), where ``f'`` is near zero and the error stops.

How ``dL/da_t`` is obtained through the layer's own fast path: the fused kernel
(``rnnkit.layers._fused``) computes ``a_t`` as ``[x_t W_x + b]`` (one GEMM over all steps)
``+ h_{t-1} W_h``, and its hand-written backward pass gives the gradient of that projection's
input. While measuring, each measured layer is called with its input widened by a zero
tensor ``z (B, T, H)`` and its input kernel widened by the identity, ``[x_t, z_t] [W_x; I]``;
the forward values are unchanged (``z = 0``), and ``dL/dz_t`` is exactly ``dL/da_t`` as the
layer's fused forward loop, XLA-compiled backward loop and custom gradient compute it.
The layer's own ``inner_loop`` runs (so masks, ``go_backwards``, ``return_sequences`` and
the batch streams behave as in training); only its ``cell.kernel`` attribute is swapped for
the widened kernel during the call and restored afterwards.

Public API: :func:`gradient_flow` returns a :class:`GradientFlow`;
:func:`write_gradient_flow_report` also writes ``gradient_flow.png`` and returns the
summary numbers for an app's ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "GradientFlow",
    "LayerFlow",
    "find_recurrent_layers",
    "gradient_flow",
    "plot_gradient_flow",
    "write_gradient_flow_report",
]

# Thresholds of "saturated" per activation (see module docstring).
_TANH_SATURATED = 0.99
_SIGMOID_LOW, _SIGMOID_HIGH = 0.01, 0.99


@dataclass
class LayerFlow:
    """Gradient flow through one ``SimpleRecurrentLayer``.

    Attributes:
        name: the layer's path in the model (e.g. ``"birnn/forward_simple_recurrent_layer"``).
        activation: ``"tanh"``, ``"sigmoid"``, ``"relu"`` or ``"linear"``.
        go_backwards: whether the layer reads the sequence from the end.
        distance: ``0, 1, ..., D``: steps between a step and the last step the layer
            processes for that sequence (masked steps are not counted).
        grad_norm: mean over the batch's sequences of ``||dL/da_t||_2`` at each distance
            (over the sequences that have a step at that distance).
        count: how many sequences have a step at each distance.
        step_norms: ``(B, T)`` array of ``||dL/da_t||_2`` in input order; NaN at masked steps.
        spectral_radius: largest absolute eigenvalue of ``W_h`` (NaN if ``W_h`` holds
            non-finite values, e.g. after a diverged training run).
        saturation: fraction of saturated (unit, step) pairs over unmasked steps.
        calls: how many times the layer ran in the forward pass (a shared layer called
            twice is measured over both calls, concatenated along the batch).
    """

    name: str
    activation: str
    go_backwards: bool
    distance: np.ndarray
    grad_norm: np.ndarray
    count: np.ndarray
    step_norms: np.ndarray
    spectral_radius: float
    saturation: float
    calls: int = 1

    def decay_per_step(self, max_distance: int | None = None) -> float:
        """Geometric-mean factor by which the gradient norm changes per step back.

        Fitted as ``exp(slope)`` of a least-squares line through ``log(grad_norm)`` over the
        distances with a non-zero norm (up to ``max_distance``). Below 1: vanishing; above 1:
        exploding. NaN when fewer than two distances have a non-zero norm.

        Args:
            max_distance: only use distances up to this one (default: all).
        """
        d, g = self.distance, self.grad_norm
        keep = (g > 0) & np.isfinite(g)
        if max_distance is not None:
            keep &= d <= max_distance
        if keep.sum() < 2:
            return float("nan")
        slope = np.polyfit(d[keep].astype(np.float64), np.log(g[keep].astype(np.float64)), 1)[0]
        return float(np.exp(slope))

    def summary(self) -> dict[str, float]:
        """A few JSON numbers: norms near and far from the loss, their ratio, decay, W_h, f."""
        near = float(self.grad_norm[0]) if self.grad_norm.size else float("nan")
        far = float(self.grad_norm[-1]) if self.grad_norm.size else float("nan")
        ratio = far / near if near > 0 else float("nan")
        return {
            "max_distance": int(self.distance[-1]) if self.distance.size else 0,
            "grad_norm_nearest": near,
            "grad_norm_farthest": far,
            "log10_far_over_near": math.log10(ratio) if ratio > 0 else float("nan"),
            "decay_per_step": self.decay_per_step(),
            "spectral_radius": self.spectral_radius,
            "saturation": self.saturation,
        }


@dataclass
class GradientFlow:
    """Gradient flow of one batch through every measured ``SimpleRecurrentLayer``.

    Attributes:
        loss: the batch loss the gradients are taken of.
        layers: one :class:`LayerFlow` per measured layer, in the model's layer order.
    """

    loss: float
    layers: list[LayerFlow] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers: the loss and, per layer path, :meth:`LayerFlow.summary`."""
        return {"loss": self.loss, "layers": {f.name: f.summary() for f in self.layers}}


def find_recurrent_layers(model: Any) -> list[Any]:
    """Every ``SimpleRecurrentLayer`` in ``model`` (nested models and wrappers included).

    Args:
        model: a Keras layer or model.
    """
    from rnnkit.layers.simple_recurrent import SimpleRecurrentLayer

    found = [model] if isinstance(model, SimpleRecurrentLayer) else []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, SimpleRecurrentLayer) and all(layer is not f for f in found):
            found.append(layer)
    return found


def _layer_name(layer: Any) -> str:
    return str(getattr(layer, "path", None) or layer.name)


class _Tap:
    """Records, for one layer, the zero tensors added to its pre-activations and its states."""

    def __init__(self, layer: Any, tape: Any) -> None:
        self.layer = layer
        self.tape = tape
        self.zs: list[Any] = []
        self.states: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []


def _activation(layer: Any) -> str:
    from rnnkit.layers.simple_recurrent import _activation_name

    return _activation_name(layer.cell.activation) or "unsupported"


def _check_fast_path(layer: Any) -> None:
    if not layer._fused_supported(False):
        activation = getattr(layer.cell.activation, "__name__", layer.cell.activation)
        raise ValueError(
            f"gradient_flow: layer '{_layer_name(layer)}' does not run on the fused fast path "
            f"(use_fused={layer.use_fused}, unroll={layer.unroll}, activation={activation}); "
            "gradient flow is measured through the fused kernel only. Use a tanh, sigmoid, "
            "relu or linear activation with use_fused=True and unroll=False."
        )


@contextlib.contextmanager
def _tapped(taps: list[_Tap]) -> Iterator[None]:
    """Within this context, each tapped layer's calls add a watched zero to ``a_t``."""
    import tensorflow as tf

    originals = []
    for tap in taps:
        layer = tap.layer

        def inner_loop(sequences, initial_state, mask, training=False, _tap=tap):
            lay = _tap.layer
            if training:
                raise ValueError("gradient_flow measures inference-mode calls (training=False)")
            units = lay.cell.units
            kernel = lay.cell.kernel
            sequences = tf.convert_to_tensor(sequences)
            shape = tf.shape(sequences)
            z = tf.zeros(tf.stack([shape[0], shape[1], units]), dtype=sequences.dtype)
            _tap.tape.watch(z)
            wide_x = tf.concat([sequences, z], axis=-1)
            wide_kernel = tf.concat(
                [tf.cast(tf.convert_to_tensor(kernel), sequences.dtype),
                 tf.eye(units, dtype=sequences.dtype)], axis=0)
            mask0 = mask[0] if isinstance(mask, (list, tuple)) else mask
            # The layer's own inner_loop runs, reading the widened kernel from its cell.
            object.__setattr__(lay.cell, "kernel", wide_kernel)
            try:
                result = type(lay).inner_loop(lay, wide_x, initial_state, mask, training=False)
            finally:
                object.__setattr__(lay.cell, "kernel", kernel)
            # All states, forward only, for the saturation count: the layer's inner_loop
            # again, asked for every step's output.
            flags = (lay.return_sequences, lay.zero_output_for_mask)
            object.__setattr__(lay, "return_sequences", True)
            object.__setattr__(lay, "zero_output_for_mask", False)
            try:
                _, hs, _ = type(lay).inner_loop(
                    lay, tf.stop_gradient(sequences), initial_state, mask, training=False)
            finally:
                object.__setattr__(lay, "return_sequences", flags[0])
                object.__setattr__(lay, "zero_output_for_mask", flags[1])
            _tap.zs.append(z)
            _tap.states.append(hs.numpy())
            batch, steps = int(shape[0]), int(shape[1])
            _tap.masks.append(np.ones((batch, steps), bool) if mask0 is None
                              else np.asarray(tf.cast(mask0, tf.bool)))
            return result

        originals.append(layer.__dict__.get("inner_loop"))
        object.__setattr__(layer, "inner_loop", inner_loop)
    try:
        yield
    finally:
        for tap, original in zip(taps, originals):
            if original is None:
                object.__delattr__(tap.layer, "inner_loop")
            else:
                object.__setattr__(tap.layer, "inner_loop", original)


def _saturated(activation: str, hs: np.ndarray) -> np.ndarray:
    if activation == "tanh":
        return np.abs(hs) > _TANH_SATURATED
    if activation == "sigmoid":
        return (hs < _SIGMOID_LOW) | (hs > _SIGMOID_HIGH)
    if activation == "relu":
        return hs == 0
    return np.zeros(hs.shape, bool)  # linear: never saturates


def _distances(mask: np.ndarray, go_backwards: bool) -> np.ndarray:
    """``(B, T)`` distance of each unmasked step from the last processed one; -1 if masked."""
    order = mask[:, ::-1] if go_backwards else mask
    # Unmasked steps processed after this one (processing order = reversed for backwards).
    after = np.cumsum(order[:, ::-1], axis=1)[:, ::-1] - order
    dist = np.where(order, after, -1)
    return dist[:, ::-1] if go_backwards else dist


def _layer_flow(tap: _Tap, grads: list[Any]) -> LayerFlow:
    layer = tap.layer
    activation = _activation(layer)
    norms, dists, saturated, valid = [], [], 0, 0
    for z_grad, hs, mask in zip(grads, tap.states, tap.masks):
        g = np.zeros(hs.shape, np.float64) if z_grad is None else np.asarray(z_grad, np.float64)
        step_norm = np.sqrt((g ** 2).sum(-1))
        step_norm[~mask] = np.nan
        norms.append(step_norm)
        dists.append(_distances(mask, layer.go_backwards))
        sat = _saturated(activation, hs)
        saturated += int(sat[mask].sum())
        valid += int(mask.sum()) * hs.shape[-1]
    steps = max(n.shape[1] for n in norms)
    pad = [np.pad(n, ((0, 0), (0, steps - n.shape[1])), constant_values=np.nan) for n in norms]
    step_norms = np.concatenate(pad, 0)
    dist = np.concatenate(
        [np.pad(d, ((0, 0), (0, steps - d.shape[1])), constant_values=-1) for d in dists], 0)
    max_d = int(dist.max()) if dist.size else -1
    distance = np.arange(max_d + 1)
    grad_norm = np.zeros(max_d + 1)
    count = np.zeros(max_d + 1, np.int64)
    keep = dist >= 0
    np.add.at(grad_norm, dist[keep], step_norms[keep])
    np.add.at(count, dist[keep], 1)
    grad_norm = np.divide(grad_norm, count, out=np.zeros_like(grad_norm), where=count > 0)
    wh = np.asarray(layer.cell.recurrent_kernel, np.float64)
    # A diverged training run leaves non-finite weights: report NaN rather than fail.
    finite = bool(np.isfinite(wh).all())
    radius = float(np.max(np.abs(np.linalg.eigvals(wh)))) if wh.size and finite else float("nan")
    return LayerFlow(
        name=_layer_name(layer), activation=activation, go_backwards=bool(layer.go_backwards),
        distance=distance, grad_norm=grad_norm, count=count, step_norms=step_norms,
        spectral_radius=radius, saturation=saturated / valid if valid else float("nan"),
        calls=len(norms),
    )


def _default_loss(model: Any) -> Callable[[Any, Any, Any], Any]:
    if getattr(model, "compiled", False) and getattr(model, "loss", None) is not None:
        def compiled(x, y, y_pred):
            return model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)

        return compiled
    raise ValueError(
        "gradient_flow: the model is not compiled with a loss; pass loss_fn "
        "(e.g. keras.losses.BinaryCrossentropy(from_logits=True))."
    )


def gradient_flow(
    model: Any,
    x: Any,
    y: Any,
    loss_fn: Callable[[Any, Any], Any] | None = None,
    layer: Any | str | None = None,
) -> GradientFlow:
    """Measure the gradient flow through time of one batch (inference mode, no update).

    Args:
        model: a Keras model (or layer) containing ``SimpleRecurrentLayer``s on the fused
            fast path (tanh, sigmoid, relu or linear; ``use_fused=True``; ``unroll=False``).
        x: the batch's inputs, as the model takes them (tensor, array, dict or list).
        y: the batch's targets, as ``loss_fn`` takes them.
        loss_fn: ``loss_fn(y_true, y_pred) -> loss``: a Keras loss object or any function;
            a per-example or per-step result is averaged to a scalar. Default: the loss the
            model was compiled with (``model.compute_loss``).
        layer: measure only this layer (the layer object, or its name or path); default:
            every ``SimpleRecurrentLayer`` in the model.

    Returns:
        A :class:`GradientFlow` with one :class:`LayerFlow` per measured layer.

    Raises:
        ValueError: no ``SimpleRecurrentLayer`` found, the named layer is not in the model,
            a layer is off the fast path, or no loss is known.
    """
    import tensorflow as tf

    layers = find_recurrent_layers(model)
    if not layers:
        raise ValueError(f"gradient_flow: model '{getattr(model, 'name', model)}' contains no "
                         "SimpleRecurrentLayer")
    if layer is not None:
        if isinstance(layer, str):
            chosen = [lay for lay in layers if layer in (lay.name, _layer_name(lay))]
            if not chosen:
                raise ValueError(f"gradient_flow: no SimpleRecurrentLayer named {layer!r}; "
                                 f"the model has {[_layer_name(lay) for lay in layers]}")
        else:
            chosen = [lay for lay in layers if lay is layer]
            if not chosen:
                raise ValueError(f"gradient_flow: layer '{_layer_name(layer)}' is not a "
                                 "SimpleRecurrentLayer of this model")
        layers = chosen
    for lay in layers:
        _check_fast_path(lay)
    if loss_fn is None:
        compiled = _default_loss(model)

        def compute(y_true, y_pred):
            return compiled(x, y_true, y_pred)
    else:
        compute = loss_fn

    with tf.GradientTape(persistent=False) as tape:
        taps = [_Tap(lay, tape) for lay in layers]
        with _tapped(taps):
            y_pred = model(x, training=False)
        loss = tf.reduce_mean(tf.cast(compute(y, y_pred), tf.float32))
    sources = [z for tap in taps for z in tap.zs]
    if not sources:
        raise ValueError("gradient_flow: no SimpleRecurrentLayer ran on a sequence in the "
                         "forward pass (decoders stepping with layer.step are not measured)")
    grads = tape.gradient(loss, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    flows, start = [], 0
    for tap in taps:
        n = len(tap.zs)
        if n:
            flows.append(_layer_flow(tap, grads[start:start + n]))
        start += n
    return GradientFlow(loss=float(loss), layers=flows)


def plot_gradient_flow(
    flows: GradientFlow | dict[str, GradientFlow],
    path: str | os.PathLike[str],
    title: str | None = None,
    max_curves: int = 6,
) -> Path:
    """Draw gradient norm against distance (log scale) and write the PNG atomically.

    Args:
        flows: one :class:`GradientFlow`, or several keyed by a label (e.g. ``"init"``,
            ``"trained"``), drawn on the same axes.
        path: the PNG file to write.
        title: an optional title.
        max_curves: at most this many curves are drawn (the first ones); the legend gives
            each curve's spectral radius and saturation.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rnnkit.reports import save_figure

    if isinstance(flows, GradientFlow):
        flows = {"": flows}
    curves = [(label, f) for label, flow in flows.items() for f in flow.layers][:max_curves]
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    for label, f in curves:
        name = f"{label}: {f.name}" if label else f.name
        keep = f.grad_norm > 0
        ax.semilogy(f.distance[keep], f.grad_norm[keep], lw=1.6,
                    label=f"{name} ({f.activation}, rho(W_h)={f.spectral_radius:.2f}, "
                          f"sat={f.saturation:.0%}, x{f.decay_per_step():.3f}/step)")
    ax.set_xlabel("distance from the last step (steps back in time)")
    ax.set_ylabel("mean ||dL/da_t||  (log scale)")
    ax.grid(alpha=0.3, which="both")
    if curves:
        ax.legend(fontsize=7, loc="best")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


def write_gradient_flow_report(
    model: Any,
    x: Any,
    y: Any,
    report_dir: str | os.PathLike[str],
    loss_fn: Callable[[Any, Any], Any] | None = None,
    title: str | None = None,
) -> dict[str, Any]:
    """Measure :func:`gradient_flow`, write ``<report_dir>/gradient_flow.png``, return numbers.

    Args:
        model: the trained model (see :func:`gradient_flow`).
        x: one batch of inputs (a few dozen sequences are enough).
        y: its targets.
        report_dir: the reports folder; created if missing.
        loss_fn: the loss (default: the model's compiled loss).
        title: the figure title (default: "gradient flow through time").

    Returns:
        :meth:`GradientFlow.summary` (for ``metrics.json``, e.g. under ``"gradient_flow"``).
    """
    flow = gradient_flow(model, x, y, loss_fn=loss_fn)
    plot_gradient_flow(flow, Path(report_dir) / "gradient_flow.png",
                       title=title or "gradient flow through time")
    return flow.summary()
