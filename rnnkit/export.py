"""Versioned, atomic SavedModel export in TF Serving's layout.

``export_base/<version>/`` holds a SavedModel plus ``assets.extra/`` (ignored by TF
Serving's loader) with:

* ``metrics.json``: the evaluation metrics, so each export carries its evaluation card;
* ``tf_serving_warmup_requests``: warmup records TF Serving replays at load time.

The export is written to a hidden ``export_base/.tmp-<version>-<pid>`` folder (TF
Serving only picks up integer-named folders) and renamed into place once complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from rnnkit.atomic import atomic_write_json
from rnnkit.layers import xla_loops

__all__ = [
    "ServingModule",
    "export_saved_model",
    "keras_variables",
    "latest_export",
    "list_versions",
    "lookup_tables",
    "read_export_metrics",
]

log = logging.getLogger(__name__)


def keras_variables(model: Any) -> list[tf.Variable]:
    """Return the backing ``tf.Variable`` of every weight of a Keras 3 model, each once.

    Args:
        model: a Keras model or layer.
    """
    seen: set[int] = set()
    out = []
    for weight in model.weights:
        variable = getattr(weight, "value", weight)
        if id(variable) not in seen:
            seen.add(id(variable))
            out.append(variable)
    return out


_LOOKUP_TABLES = (tf.lookup.StaticHashTable, tf.lookup.StaticVocabularyTable,
                  tf.lookup.experimental.MutableHashTable, tf.lookup.experimental.DenseHashTable)


def lookup_tables(model: Any) -> list[Any]:
    """Return the lookup tables held by a Keras model's layers (``TextVectorization``,
    ``StringLookup``...), found by walking the layers' attributes.

    Args:
        model: a Keras model or layer.
    """
    import keras

    tables: dict[int, Any] = {}
    seen: set[int] = set()
    stack: list[Any] = [model]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, _LOOKUP_TABLES):
            tables[id(obj)] = obj
        elif isinstance(obj, keras.layers.Layer):
            stack.extend(vars(obj).values())
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
    return list(tables.values())


class ServingModule(tf.Module):
    """Base of every app's serving module: holds Keras models so that each weight is saved
    once and TF Serving's loader restores all of them.

    A Keras 3 model held as an attribute of a ``tf.Module`` is saved through its own object
    graph as well as through the variables the signatures capture, so every weight would be
    written twice; and its variables are not tracked one by one, so TF Serving's loader
    would not restore them (keras-team/keras#20095). This class keeps the models out of the
    object graph and tracks their variables and lookup tables once, as plain attributes.

    Args:
        models: name -> Keras model (or layer); each is readable as ``self.<name>`` in the
            subclass's ``tf.function`` signatures.
        name: the module name.

    Example:

    ```python
    class Servable(ServingModule):
        def __init__(self, model):
            super().__init__({"model": model})

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text):
            return {"score": self.model(text)[:, 0]}
    ```
    """

    def __init__(self, models: Mapping[str, Any], name: str | None = None) -> None:
        super().__init__(name=name)
        variables: dict[int, tf.Variable] = {}
        tables: dict[int, Any] = {}
        for key, model in models.items():
            # object.__setattr__ skips tf.Module's attribute tracking (see the class doc).
            object.__setattr__(self, key, model)
            variables.update((id(v), v) for v in keras_variables(model))
            tables.update((id(t), t) for t in lookup_tables(model))
        self.model_variables = list(variables.values())
        self.lookup_tables = list(tables.values())


def list_versions(export_base: str | os.PathLike[str]) -> list[int]:
    """Return the integer version folders under ``export_base``, ascending.

    Args:
        export_base: e.g. ``saved_models/sentiment``. A missing folder has no versions.
    """
    base = Path(export_base)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def latest_export(export_base: str | os.PathLike[str]) -> Path:
    """Return ``export_base/<highest version>``.

    Args:
        export_base: the export folder of one model.

    Raises:
        FileNotFoundError: no integer version folder exists (names the folder).
    """
    versions = list_versions(export_base)
    if not versions:
        raise FileNotFoundError(
            f"no exported model under {Path(export_base)} (expected integer version folders); "
            "run the app's `export` verb first or pass --model"
        )
    return Path(export_base) / str(versions[-1])


def read_export_metrics(export_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Return ``assets.extra/metrics.json`` of an export, or None if it has none."""
    import json

    path = Path(export_dir) / "assets.extra" / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def export_saved_model(
    module: tf.Module,
    export_base: str | os.PathLike[str],
    signatures: Mapping[str, Any],
    *,
    version: int | None = None,
    metrics: Mapping[str, Any] | None = None,
    warmup_requests: Sequence[Mapping[str, np.ndarray]] | None = None,
    check: bool = True,
) -> Path:
    """Export ``module`` as ``export_base/<version>`` atomically and return that folder.

    Args:
        module: the tf.Module (or Keras model) to save; keep everything the signatures
            need tracked on it.
        export_base: the model's export folder, e.g. ``saved_models/sentiment``.
        signatures: signature name -> ``tf.function`` with an input signature (or a
            concrete function); include ``"serving_default"``. Pass the ``tf.function``
            itself: it is traced here with the layer's XLA loops switched off, because
            TF Serving does not run XLA-compiled functions by default. A function traced
            earlier (outside this call) may hold XLA loops, which the servable check
            rejects.
        version: the integer version; default: highest existing + 1 (1 for the first).
        metrics: evaluation metrics copied to ``assets.extra/metrics.json``.
        warmup_requests: TF Serving warmup requests (input name -> array, one dict per
            request) for ``serving_default``, written with ``rnnkit.warmup``.
        check: run ``rnnkit.servable.check_servable`` (core ops, named signatures) on the
            temporary export before it is renamed into place, when that module exists.

    Raises:
        FileExistsError: ``version`` is given and already exported.
        ValueError: bad version or signatures, or the servable check failed.
    """
    if "serving_default" not in signatures:
        raise ValueError("signatures must include 'serving_default' (TF Serving's default)")
    base = Path(export_base)
    base.mkdir(parents=True, exist_ok=True)
    if version is None:
        existing = list_versions(base)
        version = (existing[-1] + 1) if existing else 1
    if int(version) < 1:
        raise ValueError(f"export version must be a positive integer, got {version}")
    final = base / str(int(version))
    if final.exists():
        raise FileExistsError(f"{final} already exists; pick another --version")
    tmp = base / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with xla_loops(False):
            concrete = {name: (fn.get_concrete_function()
                               if hasattr(fn, "get_concrete_function") else fn)
                        for name, fn in signatures.items()}
            tf.saved_model.save(module, str(tmp), signatures=concrete)
        extra = tmp / "assets.extra"
        extra.mkdir(parents=True, exist_ok=True)
        if metrics is not None:
            atomic_write_json(extra / "metrics.json", dict(metrics))
        if warmup_requests:
            from rnnkit.warmup import write_warmup_requests

            write_warmup_requests(extra / "tf_serving_warmup_requests",
                                  list(warmup_requests), signature_name="serving_default")
        if check:
            from rnnkit.servable import check_servable

            check_servable(tmp)
        os.rename(tmp, final)  # rename fails (instead of merging) if final appeared meanwhile
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
    log.info("exported %s", final)
    return final
