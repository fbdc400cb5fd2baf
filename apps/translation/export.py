"""Serving export: Spanish strings in, English strings out, everything inside the graph.

Signatures (``saved_models/translation/<N>/``):

``serving_default``
    input ``text``: string ``[B]`` -> ``translation`` string ``[B]``, ``score`` float ``[B]``
    (length-normalised log-probability of the beam), ``token_scores`` float ``[B, T]``
    (log-probability of each output token; 0 after the end).
``attention``
    input ``text`` -> ``translation``, ``source_tokens`` string ``[B, S]`` (``</s>`` closes
    each source), ``output_tokens`` string ``[B, T]`` and ``attention`` float ``[B, T, S]``.

Defined answers: an empty (or all-blank) input gives ``""``; inputs are cut to 200
tokens and outputs to ``2 * words + 10`` (at most 300) tokens; invalid UTF-8 is replaced
with U+FFFD; words the model does not know (any script) are copied from the source.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from apps.translation.model import TextCodec, Translator
from apps.translation.train import BEAM_WIDTH, LENGTH_PENALTY, load_trained, make_translate_fn
from rnnkit.export import export_saved_model


class TranslationServable(tf.Module):
    """The exported module: the trained network, the codec tables and two signatures."""

    def __init__(self, model: Translator, codec: TextCodec, beam_width: int = BEAM_WIDTH,
                 length_penalty: float = LENGTH_PENALTY) -> None:
        super().__init__(name="translation")
        # Keras 3 variables wrap tf.Variables that tf.Module does not track on its own;
        # without this TF Serving's loader cannot restore them (keras-team/keras#20095).
        # The Keras model itself is deliberately NOT an attribute: it would save every
        # weight a second time (its own object graph) and double the export's size.
        self.model_variables = [w.value for w in model.weights]
        self.codec = codec
        self._translate = make_translate_fn(model, codec, beam_width, length_penalty)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        res = self._translate(text)
        return {"translation": res["translation"], "score": res["score"],
                "token_scores": res["token_scores"]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve_attention(self, text):
        res = self._translate(text)
        words = self.codec.words(res["tokens"], res["lengths"], res["source_tokens"],
                                 res["attention"])
        return {"translation": res["translation"], "source_tokens": res["source_tokens"],
                "output_tokens": words, "attention": res["attention"]}


def export(output: Path, export_base: Path, version: int | None = None) -> Path:
    """Export the trained model of run folder ``output`` as ``export_base/<version>``.

    The evaluate metrics (``<output>/reports/metrics.json``), when present, are copied to
    ``assets.extra/metrics.json``; a warmup request is written for TF Serving.
    """
    model, codec, _ = load_trained(output)
    module = TranslationServable(model, codec)
    metrics_path = Path(output) / "reports" / "metrics.json"
    metrics: dict[str, Any] | None = None
    if metrics_path.exists():
        full = json.loads(metrics_path.read_text())
        metrics = {k: full[k] for k in ("data", "test_pairs", "greedy", "beam",
                                        "translation_memory", "parameters") if k in full}
    warmup = [{"text": np.array([b"Abre un documento nuevo.", b"Vaya a Ver \xe2\x96\xb8 Barra de herramientas"])}]
    return export_saved_model(
        module, export_base,
        signatures={"serving_default": module.serve, "attention": module.serve_attention},
        version=version, metrics=metrics, warmup_requests=warmup)
