"""The one place where rnnkit reaches into private Keras and TensorFlow modules.

Neither library exposes these things publicly, and rnnkit needs each of them:

* ``DropoutRNNCell`` (``keras.src.layers.rnn.dropout_rnn_cell``): ``keras.layers.RNN``
  prepares and resets per-sequence dropout masks only for cells that are instances of
  this exact class, so :class:`rnnkit.SimpleRecurrentCell` must inherit from it.
* :func:`in_save_context` (``tensorflow.python.saved_model.save_context``): whether the
  current trace happens inside ``tf.saved_model.save`` (e.g. ``model.export()``), so the
  fused loops can stay XLA-free in SavedModels.
* :func:`silence_tf_deprecations` (``tensorflow.python.util.deprecation``): quiets the
  warnings of TensorFlow's deprecated TF1 loader, which TF Serving itself still uses.
* :func:`is_registered_op` (``tensorflow.python.framework.op_def_registry``): whether an
  op name is a kernel registered in this TensorFlow build (a SavedModel that uses only
  registered ops loads in a plain TensorFlow / TF Serving).
* :func:`tf_data_sleep` (``tensorflow.python.data.experimental.ops.testing.sleep``): a
  ``tf.data`` transformation that waits in a core kernel (``SleepDataset``), used by the
  serving tests' slow model; its public alias was removed.
* :func:`symbolic_build` (``keras.Model._symbolic_build``): creates every model, metric
  and optimizer variable from a dataset's element spec, as ``Model.fit`` does before its
  first step; :func:`rnnkit.training.fit` needs it because ``fit``'s own build step fails
  under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585).

``tests/test_layer.py::test_private_api_shim`` fails when a Keras or TensorFlow release
moves any of them, so an upgrade shows at once what to fix here (and nowhere else).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "DropoutRNNCell",
    "in_save_context",
    "is_registered_op",
    "silence_tf_deprecations",
    "symbolic_build",
    "tf_data_sleep",
]

_KERAS_MOVED = (
    "rnnkit needs keras.src.layers.rnn.dropout_rnn_cell.DropoutRNNCell (the mixin that "
    "keras.layers.RNN recognises to manage per-sequence dropout masks); this Keras ({}) "
    "does not have it there. Update rnnkit/layers/_compat.py for this Keras version."
)

try:
    from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell
except ImportError as exc:  # pragma: no cover - only if Keras moves it
    # No silent substitute: without the real class keras.layers.RNN would never reset the
    # dropout masks, and training with dropout would quietly reuse stale masks.
    import keras

    raise ImportError(_KERAS_MOVED.format(keras.__version__)) from exc


def in_save_context() -> bool:
    """Whether the caller is being traced by ``tf.saved_model.save`` (or ``model.export``).

    Returns:
        True inside a SavedModel save, False otherwise.
    """
    from tensorflow.python.saved_model import save_context

    return save_context.in_save_context()


@contextlib.contextmanager
def silence_tf_deprecations() -> Iterator[None]:
    """Within this context TensorFlow logs no deprecation warnings (e.g. of the TF1 loader)."""
    from tensorflow.python.util import deprecation

    with deprecation.silence():
        yield


def is_registered_op(name: str) -> bool:
    """Whether ``name`` is an op registered in this TensorFlow build (``MatMul``, ``While``...).

    Args:
        name: An op type as it appears in ``NodeDef.op``.

    Returns:
        True if TensorFlow has an ``OpDef`` for it; False for unknown names (including the
        names of graph functions, which are not ops).
    """
    from tensorflow.python.framework import op_def_registry

    return op_def_registry.get(name) is not None


def tf_data_sleep(micros: Any) -> Callable:
    """A ``tf.data`` transformation (for ``Dataset.apply``) that sleeps before each element.

    Args:
        micros: Microseconds to wait, a Python int or a scalar int64 tensor.

    Returns:
        The transformation function.
    """
    from tensorflow.python.data.experimental.ops import testing

    return testing.sleep(micros)


def symbolic_build(model: Any, element_spec: Any) -> None:
    """Build a compiled Keras model's, metrics' and optimizer's variables from a spec.

    Args:
        model: a compiled ``keras.Model``.
        element_spec: a dataset's ``element_spec`` (``(inputs, targets)``).
    """
    model._symbolic_build(data_batch=element_spec)
