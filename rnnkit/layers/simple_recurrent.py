"""The Elman recurrent layer of rnnkit: ``h_t = f(x_t W_x + h_{t-1} W_h + b)``, ``y_t = h_t``.

Two public classes:

* :class:`SimpleRecurrentCell` - one time step, following the Keras RNN-cell protocol
  (``call(x_t, states) -> (y_t, [h_t])``, ``state_size``, ``output_size``,
  ``get_initial_state``), so it also works inside ``keras.layers.RNN``.
* :class:`SimpleRecurrentLayer` - the whole sequence. It is a ``keras.layers.RNN`` built on
  the cell, so stateful mode, ``reset_state()``, ``return_state``, ``go_backwards``,
  ``unroll``, ``zero_output_for_mask``, mask propagation and ``keras.layers.Bidirectional``
  behave exactly as for ``keras.layers.SimpleRNN``. Its weights are named and shaped like
  SimpleRNN's (``kernel (D,H)``, ``recurrent_kernel (H,H)``, ``bias (H,)``, in that order),
  so weights copy both ways with ``set_weights``/``get_weights``.

Fast path (TensorFlow backend): :meth:`SimpleRecurrentLayer.inner_loop` replaces Keras's
generic per-step loop with a fused kernel (see ``rnnkit/layers/_fused.py``): one GEMM
projects the inputs of all steps, a lean ``tf.while_loop`` runs the recurrence, and a
hand-written backward pass (``tf.custom_gradient``) does only ``dz_t = dh_t * f'(z_t)`` and
``dh_{t-1} += dz_t W_h^T`` per step, with the weight gradients computed as single GEMMs
after the loop. Three constructor arguments, saved by ``get_config``, choose how:
``use_fused`` (fused kernel or Keras's loop), ``jit_compile`` (XLA-compiled loops or
plain ones; by default XLA except in graphs traced for a SavedModel, see
``rnnkit.layers.xla_loops``) and ``batch_slices`` (on CPU, independent batch slices run on
different cores). The fast path is used when all of these hold; otherwise the layer falls
back to Keras's loop (same results, slower):

* the Keras backend is TensorFlow;
* the activation is ``tanh``, ``sigmoid``, ``relu`` or linear (``None``/``"linear"``);
* ``unroll=False`` (``unroll=True`` asks for Keras's statically unrolled graph);
* no ``recurrent_dropout`` while training (input ``dropout`` and
  ``recurrent_weight_dropout`` are supported);
* ``use_fused=True`` (the default; pass ``False`` to force the Keras loop).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import activations, constraints, initializers, ops, regularizers

from rnnkit.layers._compat import DropoutRNNCell

_FUSED_ACTIVATIONS = ("tanh", "sigmoid", "relu", "linear")


def _activation_name(fn: Any) -> str | None:
    """The fused-kernel name of a Keras activation function, or None if unsupported."""
    if fn is None:
        return "linear"
    for name in _FUSED_ACTIVATIONS:
        if fn is activations.get(name):
            return name
    return None


def _get_activation(identifier: Any) -> Any:
    """``keras.activations.get`` with an error message that names this layer."""
    try:
        fn = activations.get(identifier)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"SimpleRecurrentLayer: unknown activation {identifier!r}. Use a Keras activation "
            f"name (e.g. 'tanh', 'sigmoid', 'relu'), a callable, or None. ({exc})"
        ) from None
    if fn is None:
        raise ValueError(f"SimpleRecurrentLayer: unknown activation {identifier!r}.")
    return fn


@keras.saving.register_keras_serializable(package="rnnkit")
class SimpleRecurrentCell(keras.layers.Layer, DropoutRNNCell):
    """One step of an Elman RNN: ``h_t = f(x_t W_x + h_{t-1} W_h + b)``; output ``h_t``.

    Follows the Keras RNN-cell protocol, so ``keras.layers.RNN(SimpleRecurrentCell(8))``
    works; :class:`SimpleRecurrentLayer` wraps it with a fused fast path.

    Args:
        units: Positive integer, size of the state ``H``.
        activation: Activation ``f`` (name, callable or None for linear). Default ``tanh``.
        use_bias: Whether to add the bias vector ``b``.
        kernel_initializer: Initializer of ``kernel`` (``W_x``, shape ``(D, H)``).
        recurrent_initializer: Initializer of ``recurrent_kernel`` (``W_h``, ``(H, H)``).
        bias_initializer: Initializer of ``bias`` (``(H,)``).
        kernel_regularizer, recurrent_regularizer, bias_regularizer: Optional regularizers.
        kernel_constraint, recurrent_constraint, bias_constraint: Optional constraints.
        dropout: Fraction of the input units dropped (same mask for every step of a
            sequence) while training.
        recurrent_dropout: Fraction of the state units dropped before ``W_h`` while training.
        recurrent_weight_dropout: Fraction of the entries of ``W_h`` dropped while training
            (DropConnect on the recurrent weights, Wan et al. 2013, as in AWD-LSTM, Merity
            et al. 2018): one mask per sequence batch, kept entries scaled by
            ``1 / (1 - rate)``. From 0 (off) up to, not including, 1.
        seed: Seed of the dropout masks.
        **kwargs: Base ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).
    """

    def __init__(
        self,
        units: int,
        activation: Any = "tanh",
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        recurrent_initializer: Any = "orthogonal",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        recurrent_regularizer: Any = None,
        bias_regularizer: Any = None,
        kernel_constraint: Any = None,
        recurrent_constraint: Any = None,
        bias_constraint: Any = None,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        recurrent_weight_dropout: float = 0.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ValueError(
                f"SimpleRecurrentCell: `units` must be a positive integer, got {units!r}."
            )
        super().__init__(**kwargs)
        self.units = units
        self.activation = _get_activation(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.recurrent_constraint = constraints.get(recurrent_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        # Clipped like Keras's cells so configs behave identically.
        self.dropout = min(1.0, max(0.0, float(dropout)))
        self.recurrent_dropout = min(1.0, max(0.0, float(recurrent_dropout)))
        rate = float(recurrent_weight_dropout)
        if not 0.0 <= rate < 1.0:  # 1 would drop every weight and scale by 1/0
            raise ValueError(
                "SimpleRecurrentCell: `recurrent_weight_dropout` must be in [0, 1), got "
                f"{recurrent_weight_dropout!r}."
            )
        self.recurrent_weight_dropout = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.state_size = units
        self.output_size = units

    def build(self, input_shape: tuple) -> None:
        """Create ``kernel``, ``recurrent_kernel`` and ``bias`` (in this order).

        Args:
            input_shape: Shape of one step's input, ``(batch, D)``.
        """
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                "SimpleRecurrentCell: the last (feature) dimension of the input must be "
                f"known to build the layer; got input shape {tuple(input_shape)}."
            )
        self.kernel = self.add_weight(
            shape=(input_dim, self.units),
            name="kernel",
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, self.units),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.units,),
                name="bias",
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None

    def call(self, inputs: Any, states: Any, training: bool = False) -> tuple[Any, Any]:
        """One step: returns ``(h_t, [h_t])`` (or ``(h_t, h_t)`` if ``states`` is a tensor).

        Args:
            inputs: ``x_t``, shape ``(batch, D)``.
            states: ``[h_{t-1}]`` (a list of one tensor) or the tensor itself, ``(batch, H)``.
            training: Whether dropout masks apply.
        """
        prev = states[0] if isinstance(states, (list, tuple)) else states
        if training:
            # Masks are made once per sequence (keras.layers.RNN prepares them) and cached;
            # they are only touched when training, so inference calls inside other graphs
            # (e.g. a decoder's tf.while_loop) never cache a tensor of that graph.
            dp_mask = self.get_dropout_mask(inputs)
            rec_dp_mask = self.get_recurrent_dropout_mask(prev)
            if dp_mask is not None:
                inputs = inputs * dp_mask
            if rec_dp_mask is not None:
                prev = prev * rec_dp_mask
        h = self._affine_activate(inputs, prev, self.kernel,
                                  self.training_recurrent_kernel(training), self.bias)
        new_state = [h] if isinstance(states, (list, tuple)) else h
        return h, new_state

    def training_recurrent_kernel(self, training: Any) -> Any:
        """``W_h`` as this sequence batch uses it: with its DropConnect mask while training,
        else as it is."""
        if not training or self.recurrent_weight_dropout == 0:
            return self.recurrent_kernel
        return ops.cast(self.recurrent_kernel, self.compute_dtype) * self._weight_mask()

    def _weight_mask(self) -> Any:
        # Drawn once per sequence batch and cached until keras.layers.RNN resets the masks.
        if getattr(self, "_recurrent_weight_mask", None) is None:
            self._recurrent_weight_mask = keras.random.dropout(
                ops.ones(self.recurrent_kernel.shape, dtype=self.compute_dtype),
                rate=self.recurrent_weight_dropout, seed=self.seed_generator)
        return self._recurrent_weight_mask

    def get_recurrent_dropout_mask(self, step_input: Any) -> Any:
        """The state's dropout mask (Keras's); also draws the ``W_h`` mask, because
        ``keras.layers.RNN`` prepares every mask here, before its loop: one drawn inside
        the loop would be drawn anew at every step."""
        if self.recurrent_weight_dropout > 0:
            self._weight_mask()
        return super().get_recurrent_dropout_mask(step_input)

    def reset_recurrent_dropout_mask(self) -> None:
        """Forget the cached recurrent masks (state and weight), as Keras's RNN asks after
        every sequence batch."""
        super().reset_recurrent_dropout_mask()
        self._recurrent_weight_mask = None

    def _affine_activate(self, x: Any, h: Any, kernel: Any, recurrent_kernel: Any,
                         bias: Any) -> Any:
        # Same operation order as keras.layers.SimpleRNNCell, so results match bit for bit.
        z = ops.matmul(x, kernel)
        if bias is not None:
            z = ops.add(z, bias)
        z = z + ops.matmul(h, recurrent_kernel)
        return self.activation(z) if self.activation is not None else z

    def get_initial_state(self, batch_size: Any = None) -> list:
        """Zero state ``[(batch_size, units)]`` in the compute dtype."""
        return [ops.zeros((batch_size, self.state_size), dtype=self.compute_dtype)]

    def get_config(self) -> dict:
        config = {
            "units": self.units,
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": constraints.serialize(self.recurrent_constraint),
            "bias_constraint": constraints.serialize(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "recurrent_weight_dropout": self.recurrent_weight_dropout,
            "seed": self.seed,
        }
        return {**super().get_config(), **config}


_CELL_ARGS = (
    "units",
    "activation",
    "use_bias",
    "kernel_initializer",
    "recurrent_initializer",
    "bias_initializer",
    "kernel_regularizer",
    "recurrent_regularizer",
    "bias_regularizer",
    "kernel_constraint",
    "recurrent_constraint",
    "bias_constraint",
    "dropout",
    "recurrent_dropout",
    "recurrent_weight_dropout",
    "seed",
)


def _check_fast_path_options(use_fused: Any, jit_compile: Any, batch_slices: Any) -> None:
    """Raise a ValueError naming the argument when a fast-path option has a bad value."""
    # ValueError, as Keras raises for bad constructor arguments, also for wrong types.
    if not isinstance(use_fused, bool):
        raise ValueError(  # noqa: TRY004
            f"SimpleRecurrentLayer: `use_fused` must be True or False, got {use_fused!r}."
        )
    if not (isinstance(jit_compile, bool) or jit_compile == "auto"):
        raise ValueError(
            "SimpleRecurrentLayer: `jit_compile` must be 'auto', True or False, got "
            f"{jit_compile!r}."
        )
    if batch_slices != "auto" and (
        not isinstance(batch_slices, int) or isinstance(batch_slices, bool) or batch_slices < 1
    ):
        raise ValueError(
            "SimpleRecurrentLayer: `batch_slices` must be 'auto' or a positive integer, got "
            f"{batch_slices!r}."
        )


@keras.saving.register_keras_serializable(package="rnnkit")
class SimpleRecurrentLayer(keras.layers.RNN):
    """Fully connected Elman RNN layer, a fast drop-in for ``keras.layers.SimpleRNN``.

    Computes ``h_t = f(x_t W_x + h_{t-1} W_h + b)`` over a ``(batch, T, D)`` sequence and
    outputs ``h_t``. Arguments up to ``zero_output_for_mask`` have the meaning they have in
    ``keras.layers.SimpleRNN``; the last three choose how the TensorFlow backend runs the
    recurrence and never change the results beyond float rounding.

    Args:
        units: Positive integer, size ``H`` of the state/output.
        activation: ``tanh`` (default), ``sigmoid``, ``relu``, None/linear, or any Keras
            activation (others than these four run on the Keras fallback loop).
        use_bias: Whether to use the bias ``b``.
        kernel_initializer: Initializer of ``kernel`` (``W_x``, shape ``(D, H)``).
        recurrent_initializer: Initializer of ``recurrent_kernel`` (``W_h``, ``(H, H)``).
        bias_initializer: Initializer of ``bias`` (``(H,)``).
        kernel_regularizer: Regularizer of ``kernel``.
        recurrent_regularizer: Regularizer of ``recurrent_kernel``.
        bias_regularizer: Regularizer of ``bias``.
        activity_regularizer: Regularizer of the layer output.
        kernel_constraint: Constraint on ``kernel``.
        recurrent_constraint: Constraint on ``recurrent_kernel``.
        bias_constraint: Constraint on ``bias``.
        dropout: Input dropout rate (one mask per sequence), fused path supported.
        recurrent_dropout: Recurrent dropout rate; while training it uses the fallback loop.
        recurrent_weight_dropout: DropConnect rate on ``W_h`` (one mask per sequence batch,
            AWD-LSTM's weight drop), fused path supported; not in ``SimpleRNN``.
        seed: Dropout seed.
        return_sequences: Return all ``T`` outputs ``(batch, T, H)`` instead of the last.
        return_state: Also return the last state.
        go_backwards: Process the sequence backwards (outputs in processing order).
        stateful: Keep the last state of each batch row as the next batch's initial state
            (needs a fixed batch size; ``reset_state()`` clears it).
        unroll: Use Keras's statically unrolled loop (short fixed ``T`` only; fallback).
        zero_output_for_mask: With a mask and ``return_sequences``, masked steps output 0
            (instead of repeating the previous output).
        use_fused: ``True`` (default): run the fused fast path whenever the other options
            allow it (TensorFlow backend, activation ``tanh``/``sigmoid``/``relu``/linear,
            ``unroll=False``, no ``recurrent_dropout`` while training). ``False``: always
            run Keras's generic loop, as ``keras.layers.SimpleRNN`` does.
        jit_compile: Whether the fused loops are XLA-compiled: ``"auto"`` (default) compiles
            them except in graphs traced by ``tf.saved_model.save`` (``model.export()``),
            so SavedModels need no XLA to serve; ``True`` always compiles them (a SavedModel
            traced with it needs XLA on the server); ``False`` never does (plain
            ``tf.while_loop``s). Inside ``with rnnkit.layers.xla_loops(enabled):`` that
            context decides instead, for every layer.
        batch_slices: On how many independent batch slices the fused recurrence runs;
            TensorFlow's executor runs the slices' loops on different CPU cores at once.
            ``"auto"`` (default) decides when the layer is traced: one slice when
            TensorFlow sees a GPU; on CPU one per core this process may use, but at least
            16 rows per slice (a batch under 32 rows runs whole); with an unknown batch
            size, up to 4 slices sized at run time (one when the loops are not
            XLA-compiled). A positive integer ``N`` always cuts the batch into ``N``
            slices (the last takes the remainder).
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: ``(batch, T, D)`` tensor.
        initial_state: Optional ``(batch, H)`` tensor (or a list holding one).
        mask: Optional ``(batch, T)`` boolean mask; a masked step carries the state forward.
        training: Whether dropout applies.

    Example:

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(32, 10, 8)).astype("float32")
    >>> layer = SimpleRecurrentLayer(4)
    >>> layer(x).shape
    TensorShape([32, 4])
    >>> seq = SimpleRecurrentLayer(4, return_sequences=True, return_state=True)
    >>> outputs, state = seq(x)
    >>> tuple(outputs.shape), tuple(state.shape)
    ((32, 10, 4), (32, 4))
    >>> # Keras's loop instead of the fused kernel; or fused without XLA, batch whole:
    >>> keras_loop = SimpleRecurrentLayer(4, use_fused=False)
    >>> plain = SimpleRecurrentLayer(4, jit_compile=False, batch_slices=1)
    >>> plain.get_config()["jit_compile"], plain.get_config()["batch_slices"]
    (False, 1)
    """

    def __init__(
        self,
        units: int,
        activation: Any = "tanh",
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        recurrent_initializer: Any = "orthogonal",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        recurrent_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        kernel_constraint: Any = None,
        recurrent_constraint: Any = None,
        bias_constraint: Any = None,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        recurrent_weight_dropout: float = 0.0,
        seed: int | None = None,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        zero_output_for_mask: bool = False,
        use_fused: bool = True,
        jit_compile: bool | str = "auto",
        batch_slices: int | str = "auto",
        **kwargs: Any,
    ) -> None:
        kwargs.pop("cell", None)  # configs of the earlier SimpleRNN-based shim may carry it
        _check_fast_path_options(use_fused, jit_compile, batch_slices)
        cell = SimpleRecurrentCell(
            units,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            recurrent_weight_dropout=recurrent_weight_dropout,
            seed=seed,
            dtype=kwargs.get("dtype", None),
            trainable=kwargs.get("trainable", True),
            name="simple_recurrent_cell",
        )
        super().__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            zero_output_for_mask=zero_output_for_mask,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )
        self.use_fused = use_fused
        self.jit_compile = jit_compile
        self.batch_slices = batch_slices

    # ----------------------------------------------------------------- properties
    units = property(lambda self: self.cell.units)
    activation = property(lambda self: self.cell.activation)
    use_bias = property(lambda self: self.cell.use_bias)
    kernel_initializer = property(lambda self: self.cell.kernel_initializer)
    recurrent_initializer = property(lambda self: self.cell.recurrent_initializer)
    bias_initializer = property(lambda self: self.cell.bias_initializer)
    kernel_regularizer = property(lambda self: self.cell.kernel_regularizer)
    recurrent_regularizer = property(lambda self: self.cell.recurrent_regularizer)
    bias_regularizer = property(lambda self: self.cell.bias_regularizer)
    kernel_constraint = property(lambda self: self.cell.kernel_constraint)
    recurrent_constraint = property(lambda self: self.cell.recurrent_constraint)
    bias_constraint = property(lambda self: self.cell.bias_constraint)
    dropout = property(lambda self: self.cell.dropout)
    recurrent_dropout = property(lambda self: self.cell.recurrent_dropout)
    recurrent_weight_dropout = property(lambda self: self.cell.recurrent_weight_dropout)
    seed = property(lambda self: self.cell.seed)

    # ----------------------------------------------------------------- checks
    def _check_sequence_shape(self, shape: Any) -> None:
        shape = tuple(shape)
        if len(shape) != 3:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' expects inputs of rank 3 "
                f"(batch, timesteps, features); got rank {len(shape)} with shape {shape}."
            )

    def build(self, sequences_shape: Any, initial_state_shape: Any = None) -> None:
        """Check the input rank, the stateful batch size, then build the cell.

        Args:
            sequences_shape: ``(batch, T, D)``.
            initial_state_shape: Shape(s) of the initial state, if given.
        """
        self._check_sequence_shape(sequences_shape)
        if self.stateful and sequences_shape[0] is None:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': stateful=True needs a fixed batch "
                "size, but the input's batch dimension is unknown "
                f"(shape {tuple(sequences_shape)}). Pass `batch_size=...` to keras.Input "
                "(or `batch_shape=`), or call the layer on a concrete batch first."
            )
        super().build(sequences_shape, initial_state_shape)

    def _check_initial_state(self, sequences: Any, initial_state: Any) -> None:
        states = initial_state if isinstance(initial_state, (list, tuple)) else [initial_state]
        if len(states) != 1:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' has one state; got {len(states)} "
                "initial_state tensors."
            )
        shape = tuple(states[0].shape)
        batch = sequences.shape[0]
        if len(shape) != 2 or (shape[1] is not None and shape[1] != self.units):
            raise ValueError(
                f"{type(self).__name__} '{self.name}': initial_state must have shape "
                f"(batch, {self.units}); got {shape}."
            )
        if shape[0] is not None and batch is not None and shape[0] != batch:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': initial_state batch size {shape[0]} "
                f"does not match the input batch size {batch}."
            )

    # ----------------------------------------------------------------- forward
    def call(
        self,
        sequences: Any,
        initial_state: Any = None,
        mask: Any = None,
        training: Any = False,
    ) -> Any:
        self._check_sequence_shape(sequences.shape)
        if initial_state is not None:
            self._check_initial_state(sequences, initial_state)
        return super().call(sequences, initial_state=initial_state, mask=mask, training=training)

    def _fused_supported(self, training: Any) -> bool:
        """Whether this call can take the fused path (see the module docstring)."""
        if not self.use_fused or self.unroll or keras.backend.backend() != "tensorflow":
            return False
        if _activation_name(self.cell.activation) is None:
            return False
        # Recurrent dropout multiplies h_{t-1} inside the step: only Keras's loop does that.
        training_on = training is not None and training is not False  # a tensor counts as on
        recurrent_dropout_active = self.cell.recurrent_dropout > 0 and training_on
        return not recurrent_dropout_active

    def inner_loop(self, sequences: Any, initial_state: Any, mask: Any, training: Any = False):
        """Run the recurrence; returns ``(last_output, outputs, states)`` like ``backend.rnn``.

        Uses the fused kernel (``_fused.elman_sequence``) when :meth:`_fused_supported`,
        else Keras's loop.
        """
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if not self._fused_supported(training):
            return super().inner_loop(sequences, initial_state, mask=mask, training=training)
        from rnnkit.layers import _fused

        h0 = initial_state[0] if isinstance(initial_state, (list, tuple)) else initial_state
        if training and self.cell.dropout > 0:
            dp_mask = self.cell.get_dropout_mask(sequences[:, 0, :])
            if dp_mask is not None:
                sequences = sequences * ops.expand_dims(dp_mask, 1)
        last, outputs, state = _fused.elman_sequence(
            sequences,
            h0,
            self.cell.kernel,
            self.cell.training_recurrent_kernel(training),
            self.cell.bias,
            activation=_activation_name(self.cell.activation),
            mask=mask,
            go_backwards=self.go_backwards,
            zero_output_for_mask=self.zero_output_for_mask,
            return_sequences=self.return_sequences,
            jit_compile=self.jit_compile,
            batch_slices=self.batch_slices,
        )
        return last, outputs, [state]

    def step(self, x_t: Any, h: Any) -> Any:
        """One recurrence step without dropout, for in-graph decoders (``tf.while_loop``).

        Args:
            x_t: Input of this step, ``(batch, D)``.
            h: Previous state ``h_{t-1}``, ``(batch, H)``.

        Returns:
            ``h_t = f(x_t W_x + h W_h + b)``, ``(batch, H)``.
        """
        if not self.built:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' is not built: call it once on a "
                "sequence or call `layer.build((None, None, D))` before `step()`."
            )
        x_t = ops.convert_to_tensor(x_t, dtype=self.compute_dtype)
        h = ops.convert_to_tensor(h, dtype=self.compute_dtype)
        cell = self.cell

        def cast(w: Any) -> Any:  # variables may be float32 under a mixed policy
            return None if w is None else ops.cast(w, self.compute_dtype)

        return cell._affine_activate(x_t, h, cast(cell.kernel), cast(cell.recurrent_kernel),
                                     cast(cell.bias))

    # ----------------------------------------------------------------- config
    def get_config(self) -> dict:
        config = self.cell.get_config()
        cell_config = {k: config[k] for k in _CELL_ARGS}
        base = super().get_config()
        del base["cell"]
        return {
            **base,
            **cell_config,
            "activity_regularizer": regularizers.serialize(self.activity_regularizer),
            "use_fused": self.use_fused,
            "jit_compile": self.jit_compile,
            "batch_slices": self.batch_slices,
        }

    @classmethod
    def from_config(cls, config: dict) -> SimpleRecurrentLayer:
        return cls(**config)
