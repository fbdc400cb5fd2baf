"""Small, fast SavedModels in TF Serving layout for testing and benchmarking the server.

They are real SavedModels with variables and core-op preprocessing inside the graph (no
training needed), so the server, the servable check and the load script can be exercised
before (or without) an app export. Nothing here is used at serving time.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np


def _export(module, signatures: dict, base: Path, version: int) -> Path:
    """Save ``module`` to ``base/<version>`` through a temp dir + rename (as TF Serving expects)."""
    import tensorflow as tf

    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tf.saved_model.save(module, str(tmp), signatures=signatures)
    final = base / str(version)
    os.replace(tmp, final)
    return final


def export_text_model(base: Path, version: int = 1, scale: float = 1.0, seed: int = 0) -> Path:
    """A bag-of-hashed-words text classifier: ``text`` (string [batch]) ->
    ``probabilities`` (float32 [batch, 2]), ``label`` (string [batch]), ``num_tokens`` (int64 [batch]).

    Args:
        base: model base path (versions go in ``base/<version>``).
        version: version directory name.
        scale: multiplies the logits, so two versions give different answers.
        seed: seed for the (fixed, untrained) weights.
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    buckets, dim = 64, 8

    class TextModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.embedding = tf.Variable(rng.normal(size=(buckets, dim)).astype("float32"))
            self.dense = tf.Variable((rng.normal(size=(dim, 2)) * scale).astype("float32"))
            self.labels = tf.constant(["negative", "positive"])

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text):
            cleaned = tf.strings.regex_replace(tf.strings.lower(text), r"[^a-z0-9' ]", " ")
            tokens = tf.strings.split(cleaned)
            ids = tf.strings.to_hash_bucket_fast(tokens, buckets)
            vectors = tf.gather(self.embedding, ids)
            counts = tf.cast(tokens.row_lengths(), tf.float32)
            pooled = tf.math.divide_no_nan(
                tf.reduce_sum(vectors, axis=1), counts[:, None]
            )
            logits = tf.matmul(pooled, self.dense)
            probs = tf.nn.softmax(logits)
            return {
                "probabilities": probs,
                "label": tf.gather(self.labels, tf.argmax(probs, axis=-1)),
                "num_tokens": tokens.row_lengths(),
            }

    m = TextModel()
    return _export(m, {"serving_default": m.serve}, Path(base), version)


def export_dense_model(base: Path, version: int = 1, seed: int = 0) -> Path:
    """Two-input float model: ``x`` (float32 [batch, 3]), ``k`` (int32 [batch]) ->
    ``y`` (float32 [batch, 2]) = x @ W + k * b, plus a second signature ``double`` (``x`` ->
    ``doubled``) so signature selection can be tested.
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    class DenseModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(rng.normal(size=(3, 2)).astype("float32"))
            self.b = tf.Variable(rng.normal(size=(2,)).astype("float32"))

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 3], tf.float32, name="x"),
                tf.TensorSpec([None], tf.int32, name="k"),
            ]
        )
        def serve(self, x, k):
            return {"y": tf.matmul(x, self.w) + tf.cast(k, tf.float32)[:, None] * self.b}

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def double(self, x):
            return {"doubled": 2.0 * x}

    m = DenseModel()
    return _export(m, {"serving_default": m.serve, "double": m.double}, Path(base), version)


def export_image_model(base: Path, version: int = 1) -> Path:
    """Image bytes in, mean pixel out: ``image_bytes`` (string [batch]) -> ``mean`` (float32
    [batch]). Corrupt bytes make ``tf.io.decode_image`` raise InvalidArgument, which the server
    must answer with a 400 / INVALID_ARGUMENT and keep serving.
    """
    import tensorflow as tf

    class ImageModel(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            def one(b):
                img = tf.io.decode_image(b, channels=3, expand_animations=False)
                img = tf.image.resize(tf.cast(img, tf.float32), [8, 8])
                return tf.reduce_mean(img)

            return {"mean": tf.map_fn(one, image_bytes, fn_output_signature=tf.float32)}

    m = ImageModel()
    return _export(m, {"serving_default": m.serve}, Path(base), version)


def png_bytes(height: int = 4, width: int = 5, value: int = 100) -> bytes:
    """A small solid-colour PNG, encoded with TF's core op."""
    import tensorflow as tf

    img = tf.fill([height, width, 3], tf.constant(value, tf.uint8))
    return tf.io.encode_png(img).numpy()
