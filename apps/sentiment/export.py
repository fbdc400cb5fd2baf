"""The sentiment SavedModel: raw strings in, label and probability out.

``serving_default`` takes ``text``: a batch of raw UTF-8 strings (``[None]`` tf.string) and
returns ``label`` (``"negative"``/``"positive"``), ``probability`` (of positive) and
``scores`` (``[negative, positive]``). Preprocessing is in the graph (core ops only);
reviews are cut to the model's token budget and empty strings still get an answer.
"""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf

from rnnkit.app import LoadedExport, Run, Servable
from rnnkit.export import ServingModule

from .data import CLASS_NAMES

WARMUP_TEXTS = [
    "A wonderful film: the cast is superb and the story moved me.",
    "Dull, badly acted and far too long. I want my two hours back.",
    "",
]


class SentimentServing(ServingModule):
    """The serving module: raw strings in, named outputs out."""

    def __init__(self, model: keras.Model) -> None:
        super().__init__({"model": model}, name="sentiment")
        self.class_names = tf.constant(CLASS_NAMES)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        logit = self.model(text, training=False)[:, 0]
        probability = tf.sigmoid(logit)
        label = tf.gather(self.class_names, tf.cast(probability >= 0.5, tf.int32))
        scores = tf.stack([1.0 - probability, probability], axis=1)
        return {"label": label, "probability": probability, "scores": scores}


def servable(run: Run) -> Servable:
    """The ``export`` verb's module: the trained string -> logit model."""
    module = SentimentServing(run.load_model())
    return Servable(module, {"serving_default": module.serve},
                    warmup=[{"text": np.array(WARMUP_TEXTS, dtype=object)}])


def predict(run: Run, export: LoadedExport, texts: list[str]) -> Iterator[str]:
    """One line per text: label, probability of positive, the text's start."""
    out = export.signature()(text=tf.constant(texts))
    for text, label, prob in zip(texts, out["label"].numpy(), out["probability"].numpy()):
        snippet = text if len(text) <= 70 else text[:67] + "..."
        yield f"{label.decode():<8} {prob:.4f}  {snippet}"
