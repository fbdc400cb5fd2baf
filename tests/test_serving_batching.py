"""Server-side batching (--enable_batching): parameters file, Batcher, and a batching server."""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from rnnkit.serving import testing
from rnnkit.serving.batching import (
    Batcher,
    BatchingOptions,
    load_batching_parameters,
    parse_batching_parameters,
)
from rnnkit.serving.errors import ServingError, invalid

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_parse_deploy_batching_config():
    o = load_batching_parameters(DEPLOY / "batching.config")
    assert o.max_batch_size == 32 and o.batch_timeout_micros == 2000 and o.num_batch_threads == 4
    assert o.pad_variable_length_inputs is True


@pytest.mark.parametrize("text, msg", [
    ("max_batch_sise { value: 3 }", "unknown BatchingParameters field 'max_batch_sise'"),
    ("max_batch_size { value: x }", "must be an integer"),
    ("max_batch_size { value: 0 }", "must be positive"),
    ("max_batch_size {", "cannot parse"),
])
def test_parse_errors(text, msg):
    with pytest.raises(ValueError, match=msg):
        parse_batching_parameters(text)


def test_batcher_merges_splits_and_isolates_bad_requests():
    calls: list[int] = []
    lock = threading.Lock()

    def run(inputs):
        x = inputs["x"]
        with lock:
            calls.append(x.shape[0])
        time.sleep(0.01)  # a model call long enough for requests to queue up
        if (x < 0).any():
            raise invalid("negative value")
        return {"y": x * 2, "s": x.sum(axis=1)}

    b = Batcher(run, BatchingOptions(max_batch_size=8, batch_timeout_micros=20_000, num_batch_threads=1), "t")

    def one(i):
        x = np.full((1 + i % 2, 3), float(i if i != 5 else -1), np.float32)
        try:
            return i, b.submit({"x": x}), None
        except ServingError as exc:
            return i, None, exc

    with ThreadPoolExecutor(12) as ex:
        results = list(ex.map(one, range(12)))
    b.stop()
    for i, out, err in results:
        rows = 1 + i % 2
        if i == 5:
            assert err is not None and err.code == "INVALID_ARGUMENT" and "negative" in err.message
            continue
        assert err is None
        np.testing.assert_array_equal(out["y"], np.full((rows, 3), 2.0 * i))
        np.testing.assert_array_equal(out["s"], np.full((rows,), 3.0 * i))
    assert max(calls) > 2, calls  # requests were merged
    assert all(c <= 8 for c in calls)  # never over max_batch_size


def test_batcher_keeps_different_shapes_apart():
    seen = []

    def run(inputs):
        seen.append(inputs["x"].shape)
        time.sleep(0.005)
        return {"y": inputs["x"].sum(axis=1)}

    b = Batcher(run, BatchingOptions(max_batch_size=16, batch_timeout_micros=10_000, num_batch_threads=1), "t")
    with ThreadPoolExecutor(8) as ex:
        outs = list(ex.map(lambda i: b.submit({"x": np.ones((1, 2 + i % 2), np.float32)})["y"], range(8)))
    b.stop()
    assert [o.tolist() for o in outs] == [[2.0 + i % 2] for i in range(8)]
    assert all(s[1] in (2, 3) for s in seen)


def test_batcher_pads_variable_length_inputs_like_tf_serving():
    seen = []

    def run(inputs):
        seen.append({k: v.copy() for k, v in inputs.items()})
        time.sleep(0.02)  # long enough for the other requests to queue up behind the first
        x, n = inputs["x"], inputs["length"]
        return {"mean": np.array([row[:k].sum() / max(k, 1) for row, k in zip(x, n)], np.float32), "x_back": x}

    opts = BatchingOptions(max_batch_size=16, batch_timeout_micros=50_000, num_batch_threads=1, pad_variable_length_inputs=True)
    b = Batcher(run, opts, "t")
    lengths = [3, 5, 2, 4]

    def one(k):
        x = np.arange(1, k + 1, dtype=np.float32)[None, :] + 10 * k  # first element 10k + 1
        return b.submit({"x": x, "length": np.array([k], np.int64)})

    with ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(one, lengths))
    # an input with no elements has no value to pad with: it only joins its own shape
    empty = b.submit({"x": np.zeros((1, 0), np.float32), "length": np.array([0], np.int64)})
    b.stop()
    merged = [s for s in seen if s["x"].shape[0] > 1]
    assert merged, [s["x"].shape for s in seen]  # requests of different lengths shared a batch
    for batch in merged:
        width = batch["x"].shape[1]
        for row, k in zip(batch["x"], batch["length"]):
            # padded at the end, with the request's own first element
            np.testing.assert_array_equal(row[:k], np.arange(1, k + 1) + 10 * k)
            np.testing.assert_array_equal(row[k:], np.full(width - k, 10 * k + 1))
    for k, out in zip(lengths, outs):
        assert out["mean"].tolist() == [pytest.approx(10 * k + (k + 1) / 2)]
        assert out["x_back"].shape[0] == 1  # its own rows, at the batch's padded width
    assert empty["x_back"].shape == (1, 0)


def test_server_with_batching_matches_in_process(tmp_path):
    base = tmp_path / "text"
    testing.export_text_model(base)
    testing.export_image_model(tmp_path / "image")
    testing.export_sequence_model(tmp_path / "seq")
    cfg = tmp_path / "models.config"
    cfg.write_text('model_config_list { config { name: "text" base_path: "text" } config { name: "image" base_path: "image" }'
                   ' config { name: "seq" base_path: "seq" } }')
    texts = [f"review {i}: " + " ".join(["good", "bad", "fine"][j % 3] for j in range(i % 7 + 1)) for i in range(48)]
    fn = tf.saved_model.load(str(base / "1")).signatures["serving_default"]
    want = fn(text=tf.constant(texts))["probabilities"].numpy()
    rest, grpc_port = testing.free_port(), testing.free_port()
    proc = testing.start_server(
        ["--port", str(grpc_port), "--rest_api_port", str(rest), "--model_config_file", str(cfg),
         "--enable_batching=true",
         "--batching_parameters_file", str(DEPLOY / "batching.config")],
        rest, "text",
    )
    try:
        c = testing.RestClient(rest)
        with ThreadPoolExecutor(16) as ex:
            answers = list(ex.map(lambda t: c.post("/v1/models/text:predict", {"instances": [t]}), texts))
        assert all(status == 200 for status, _ in answers), answers[:2]
        got = np.array([body["predictions"][0]["probabilities"] for _, body in answers], np.float32)
        # batch composition may change float rounding in the last bits, nothing more
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        status, body = c.post("/v1/models/text:predict", {"instances": []})
        assert status == 400 and "empty batch" in body["error"]
        # a corrupt image among good ones: merged into a batch, only it fails
        good = {"instances": [{"b64": base64.b64encode(testing.png_bytes(value=50)).decode()}]}
        bad = {"instances": [{"b64": base64.b64encode(b"\x89PNG broken").decode()}]}
        with ThreadPoolExecutor(16) as ex:
            res = list(ex.map(lambda i: c.post("/v1/models/image:predict", bad if i == 7 else good), range(32)))
        for i, (status, body) in enumerate(res):
            if i == 7:
                assert status == 400 and "rejected the input" in body["error"], body
            else:
                assert status == 200 and body["predictions"] == [pytest.approx(50.0)], body
        # sequences of different lengths (deploy/batching.config pads them) over gRPC: the
        # answers are the in-process model's, whatever batch each request ran in
        seq_fn = tf.saved_model.load(str(tmp_path / "seq" / "1")).signatures["serving_default"]
        rng = np.random.default_rng(0)
        seqs = [rng.normal(size=(1 + i % 2, 3 + (7 * i) % 11)).astype(np.float32) for i in range(40)]
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))

        def seq_call(x):
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "seq"
            req.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
            req.inputs["length"].CopyFrom(tf.make_tensor_proto(np.full(len(x), x.shape[1], np.int64)))
            return tf.make_ndarray(stub.Predict(req, timeout=30).outputs["mean"])

        with ThreadPoolExecutor(16) as ex:
            got = list(ex.map(seq_call, seqs))
        for x, g in zip(seqs, got):
            want = seq_fn(x=tf.constant(x), length=tf.constant(np.full(len(x), x.shape[1], np.int64)))["mean"].numpy()
            np.testing.assert_allclose(g, want, rtol=1e-5)
    finally:
        testing.stop_server(proc)


def _blocked_batcher(max_enqueued_batches: int = 1):
    """A one-thread, one-row-per-batch Batcher whose model call waits for ``gate``; returns
    (batcher, gate, entered, rows it ran); ``entered`` is set once a call is in the model."""
    gate, entered, ran = threading.Event(), threading.Event(), []

    def run(inputs):
        entered.set()
        gate.wait(30)
        ran.append(float(inputs["x"][0]))
        return {"y": inputs["x"] * 2}

    opts = BatchingOptions(max_batch_size=1, max_enqueued_batches=max_enqueued_batches, num_batch_threads=1)
    return Batcher(run, opts, "test"), gate, entered, ran


def _until(cond) -> None:
    deadline = time.time() + 30
    while not cond():
        assert time.time() < deadline
        time.sleep(0.01)


def test_full_batch_queue_is_retryable_resource_exhausted():
    b, gate, entered, ran = _blocked_batcher()
    with ThreadPoolExecutor(2) as ex:
        first = ex.submit(b.submit, {"x": np.array([1.0])})
        _until(entered.is_set)  # taken by the batch thread, blocked in the model
        second = ex.submit(b.submit, {"x": np.array([2.0])})
        _until(lambda: len(b._queue) == 1)
        with pytest.raises(ServingError) as err:
            b.submit({"x": np.array([3.0])})
        assert err.value.code == "RESOURCE_EXHAUSTED" and err.value.http_status == 503 and err.value.retryable
        assert "batch queue is full" in err.value.message
        gate.set()
        assert first.result()["y"].tolist() == [2.0] and second.result()["y"].tolist() == [4.0]
    assert ran == [1.0, 2.0]
    b.stop()


def test_batched_request_past_its_deadline_is_dropped_not_run():
    b, gate, entered, ran = _blocked_batcher(max_enqueued_batches=4)
    with ThreadPoolExecutor(1) as ex:
        first = ex.submit(b.submit, {"x": np.array([1.0])})
        _until(entered.is_set)
        with pytest.raises(ServingError) as err:
            b.submit({"x": np.array([5.0])}, timeout=0.05)  # waits behind the blocked call
        assert err.value.code == "DEADLINE_EXCEEDED" and err.value.retryable
        gate.set()
        first.result()
    b.stop()
    for t in b._threads:
        t.join(10)
    assert ran == [1.0]  # the cancelled request never reached the model
