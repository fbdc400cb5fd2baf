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


def export_sequence_model(base: Path, version: int = 1) -> Path:
    """Variable-length sequences with their lengths, as voice_gender's ``waveform`` + ``length``:
    ``x`` (float32 [batch, time]) and ``length`` (int64 [batch]) -> ``mean`` (float32 [batch]),
    the mean of each row's first ``length`` values. Padding after ``length`` never changes the
    answer, which is what batching with ``pad_variable_length_inputs`` relies on.
    """
    import tensorflow as tf

    class SequenceModel(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None], tf.float32, name="x"),
                tf.TensorSpec([None], tf.int64, name="length"),
            ]
        )
        def serve(self, x, length):
            mask = tf.sequence_mask(length, tf.shape(x, out_type=tf.int64)[1], dtype=tf.float32)
            total = tf.reduce_sum(x * mask, axis=1)
            return {"mean": total / tf.cast(tf.maximum(length, 1), tf.float32)}

    m = SequenceModel()
    return _export(m, {"serving_default": m.serve}, Path(base), version)


def export_sleep_model(base: Path, version: int = 1) -> Path:
    """A model that takes as long as it is told, without using the CPU while it waits:
    ``x`` (float32 [batch]) and ``sleep_ms`` (int64 [batch]) -> ``y`` = 2 x (float32
    [batch]), answered after the largest ``sleep_ms`` of the request has passed. For testing
    what a server does with requests in flight (shutdown, full queues, timeouts).

    The wait is a one-element tf.data pipeline through ``SleepDataset``, a core kernel, so
    TF Serving could load this model too. Concurrent calls of one loaded model take turns in
    the wait (tf.data's reduce kernel runs on one background thread per kernel), so N
    concurrent requests of ``sleep_ms`` each are answered over N x ``sleep_ms``: they are all
    in flight at once, and leave one by one.
    """
    import tensorflow as tf

    from rnnkit.layers._compat import tf_data_sleep

    class SleepModel(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.float32, name="x"),
                tf.TensorSpec([None], tf.int64, name="sleep_ms"),
            ]
        )
        def serve(self, x, sleep_ms):
            # the dataset sleeps before each of its two fetches (the element, then the end)
            micros = tf.reduce_max(tf.concat([sleep_ms, tf.zeros([1], tf.int64)], 0)) * 500
            waited = tf.data.Dataset.range(1).apply(tf_data_sleep(micros)).reduce(
                tf.constant(0, tf.int64), lambda acc, v: acc + v
            )
            # `waited` is 0; using it makes the output depend on the wait
            return {"y": 2.0 * x + tf.cast(waited, tf.float32)}

    m = SleepModel()
    return _export(m, {"serving_default": m.serve}, Path(base), version)


def export_keras_in_module(base: Path, version: int = 1, track_variables: bool = True) -> Path:
    """A Keras 3 model inside a tf.Module: ``x`` float32 [batch, 4] -> ``y`` float32 [batch, 2].

    With ``track_variables=False`` this is the pattern TF Serving cannot load (its loader
    does not restore the variables the signature reads; keras-team/keras#20095), although
    ``tf.saved_model.load`` runs it fine.
    """
    import keras
    import tensorflow as tf

    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2, name="d")(keras.layers.Dense(3, name="h")(inp)))

    class KerasServable(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            if track_variables:
                self.model_variables = [w.value for w in model.weights]

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"y": self.model(x, training=False)}

    m = KerasServable()
    return _export(m, {"serving_default": m.serve}, Path(base), version)


def png_bytes(height: int = 4, width: int = 5, value: int = 100) -> bytes:
    """A small solid-colour PNG, encoded with TF's core op."""
    import tensorflow as tf

    img = tf.fill([height, width, 3], tf.constant(value, tf.uint8))
    return tf.io.encode_png(img).numpy()


# ---- running a server in a subprocess (tests, benchmarks) ---------------------------------

def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RestClient:
    """Minimal REST client on http.client (TF Serving's REST API is plain HTTP + JSON).

    Args:
        port: REST port on 127.0.0.1.
    """

    def __init__(self, port: int):
        self.port = port

    def request(self, method: str, path: str, body: bytes | str | None = None, timeout: float = 60):
        """Send one request; returns (status, decoded JSON body or None)."""
        import http.client
        import json

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, str):
                body = body.encode()
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            return r.status, json.loads(data) if data else None
        finally:
            conn.close()

    def get(self, path: str):
        """GET ``path``."""
        return self.request("GET", path)

    def post(self, path: str, obj):
        """POST ``obj`` as JSON to ``path``."""
        import json

        return self.request("POST", path, json.dumps(obj))


def start_server(args: list[str], rest_port: int, wait_model: str, timeout: float = 120, repo: Path | None = None):
    """Start ``python -m rnnkit.serving ARGS`` and wait until ``wait_model`` reports status 200.

    The subprocess output is drained into ``proc.log`` (a list of lines) so it never blocks.
    """
    import subprocess
    import sys
    import threading
    import time

    repo = repo or Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(repo), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnkit.serving", *args],
        cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    proc.log = []  # type: ignore[attr-defined]
    threading.Thread(target=lambda: [proc.log.append(line) for line in proc.stdout], daemon=True).start()  # type: ignore[attr-defined]
    client = RestClient(rest_port)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited:\n" + "".join(proc.log))  # type: ignore[attr-defined]
        try:
            if client.get(f"/v1/models/{wait_model}")[0] == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not come up:\n" + "".join(proc.log))  # type: ignore[attr-defined]


def stop_server(proc) -> None:
    """SIGTERM, then SIGKILL after 20 s."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
