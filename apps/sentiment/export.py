"""Export the trained sentiment model for TF Serving and run exports (``export``, ``predict``).

``serving_default`` takes ``text``: a batch of raw UTF-8 strings (``[None]`` tf.string) and
returns ``label`` (``"negative"``/``"positive"``), ``probability`` (of positive) and
``scores`` (``[negative, positive]``). Preprocessing is in the graph (core ops only);
reviews are cut to the model's token budget and empty strings still get an answer.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from apps.sentiment.model import CLASS_NAMES
from apps.sentiment.train import load_trained
from rnnkit.app_cli import read_texts
from rnnkit.export import export_saved_model, keras_variables, latest_export

WARMUP_TEXTS = [
    "A wonderful film: the cast is superb and the story moved me.",
    "Dull, badly acted and far too long. I want my two hours back.",
    "",
]


class SentimentServable(tf.Module):
    """The serving module: raw strings in, named outputs out."""

    def __init__(self, model: keras.Model) -> None:
        super().__init__()
        self.model = model
        # Track the weights as plain tf.Variables so TF Serving restores them.
        self.model_variables = keras_variables(model)
        self.class_names = tf.constant(CLASS_NAMES)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        logit = self.model(text, training=False)[:, 0]
        probability = tf.sigmoid(logit)
        label = tf.gather(self.class_names, tf.cast(probability >= 0.5, tf.int32))
        scores = tf.stack([1.0 - probability, probability], axis=1)
        return {"label": label, "probability": probability, "scores": scores}


def export(args: argparse.Namespace) -> int:
    """The ``export`` verb: write ``<export-dir>/<version>`` with metrics and warmup."""
    model = load_trained(args.output)
    metrics_path = Path(args.output) / "reports" / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else None
    if metrics is None:
        print(f"note: {metrics_path} not found (run `evaluate` first); exporting without "
              "an evaluation card")
    module = SentimentServable(model)
    path = export_saved_model(
        module, args.export_dir, {"serving_default": module.serve},
        version=args.version, metrics=metrics,
        warmup_requests=[{"text": np.array(WARMUP_TEXTS, dtype=object)}],
    )
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(f"exported {path} ({size / 2**20:.1f} MiB)")
    return 0


def predict(args: argparse.Namespace) -> int:
    """The ``predict`` verb: label and probability per text (arguments or stdin lines)."""
    texts = read_texts(args.inputs)
    path = args.model or latest_export(args.export_dir)
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    out = serve(text=tf.constant(texts))
    for text, label, prob in zip(texts, out["label"].numpy(), out["probability"].numpy()):
        snippet = text if len(text) <= 70 else text[:67] + "..."
        print(f"{label.decode():<8} {prob:.4f}  {snippet}")
    return 0
