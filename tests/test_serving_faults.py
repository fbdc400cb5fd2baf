"""`rnnkit serve` under faults: full queues, stalled and oversized requests, timeouts, a
version copied in slowly, the Prometheus endpoint, and SIGTERM / SIGINT with requests in
flight. Each test runs a real server process on 127.0.0.1.

The model that makes requests last is ``testing.export_sleep_model``: it answers ``2 x``
after ``sleep_ms`` without using the CPU, so "a request is in flight" needs no timing luck.
Concurrent calls to it take turns (see its docstring). Waits are bounded polls; nothing
asserts on how long something took.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from rnnkit.serving import testing
from rnnkit.serving.errors import public_message
from rnnkit.serving.metrics import DEFAULT_PATH, load_monitoring_config

REPO = Path(__file__).resolve().parents[1]
METRICS = "/monitoring/prometheus/metrics"


def _wait(cond, timeout: float = 60.0, step: float = 0.1) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(step)
    return False


def _write_config(base: Path, names: list[str]) -> Path:
    cfg = base / "models.config"
    cfg.write_text(
        "model_config_list {\n"
        + "".join(f'  config {{ name: "{n}" base_path: "{n}" model_platform: "tensorflow" }}\n' for n in names)
        + "}\n"
    )
    mon = base / "monitoring.config"
    mon.write_text(f'prometheus_config {{\n  enable: true\n  path: "{METRICS}"\n}}\n')
    return cfg


def _sleep_body(xs, sleep_ms: int) -> dict:
    return {"inputs": {"x": list(xs), "sleep_ms": [sleep_ms] * len(xs)}}


def _sleep_request(xs, sleep_ms: int) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "sleep"
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray(xs, np.float32)))
    req.inputs["sleep_ms"].CopyFrom(tf.make_tensor_proto(np.full(len(xs), sleep_ms, np.int64)))
    return req


def _scrape(port: int) -> dict:
    """Metric families by name, parsed with prometheus_client's own parser."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", METRICS)
        r = conn.getresponse()
        assert r.status == 200
        assert r.getheader("Content-Type").startswith("text/plain")
        text = r.read().decode()
    finally:
        conn.close()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _sample(families: dict, family: str, sample_name: str | None = None, **labels) -> float:
    """Sum of the samples of ``family`` (named ``sample_name``) whose labels include ``labels``."""
    total = 0.0
    for s in families[family].samples:
        if (sample_name is None or s.name == sample_name) and all(s.labels.get(k) == v for k, v in labels.items()):
            total += s.value
    return total


def _in_flight(port: int, entrypoint: str) -> float:
    return _sample(_scrape(port), ":rnnkit:serving:requests_in_flight", entrypoint=entrypoint)


def _stalled_upload(port: int) -> socket.socket:
    """A connection that sends headers and 10 of its 100 body bytes, then nothing."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(
        b"POST /v1/models/sleep:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + b'{"inputs":'
    )
    return s


def _read_all(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("fault_models")
    testing.export_sleep_model(base / "sleep", version=1)
    testing.export_text_model(base / "text", version=1, scale=1.0)
    cfg = _write_config(base, ["sleep", "text"])
    return base, cfg


@pytest.fixture(scope="module")
def limited(models):
    """One REST worker thread admitting 2 predict requests, one gRPC thread admitting 2
    calls, a 5 s REST timeout, at most 8 rows per request, fast load retries."""
    base, cfg = models
    rest, grpc_port = testing.free_port(), testing.free_port()
    proc = testing.start_server(
        ["--port", str(grpc_port), "--rest_api_port", str(rest), "--model_config_file", str(cfg),
         "--file_system_poll_wait_seconds", "0.2",
         "--rest_api_num_threads", "1", "--rest_api_max_pending_requests", "2",
         "--grpc_max_threads", "1", "--grpc_max_concurrent_rpcs", "2",
         "--rest_api_timeout_in_ms", "5000", "--max_rows_per_request", "8",
         "--max_num_load_retries", "1000", "--load_retry_interval_micros", "200000",
         "--monitoring_config_file", str(base / "monitoring.config")],
        rest, "text",
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    yield {
        "base": base, "proc": proc, "rest": testing.RestClient(rest), "port": rest,
        "predict": prediction_service_pb2_grpc.PredictionServiceStub(channel),
    }
    channel.close()
    testing.stop_server(proc)


def _idle(srv) -> None:
    """Wait until no REST request holds the server's one worker thread."""
    assert _wait(lambda: _in_flight(srv["port"], "REST") == 0 and _in_flight(srv["port"], "GRPC") == 0, 30)


def test_rest_full_answers_503_retryable(limited):
    c = limited["rest"]

    def call(i):
        conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=60)
        try:
            conn.request("POST", "/v1/models/sleep:predict", json.dumps(_sleep_body([float(i)], 1000)))
            r = conn.getresponse()
            return r.status, r.getheader("Retry-After"), json.loads(r.read())
        finally:
            conn.close()

    with ThreadPoolExecutor(5) as ex:
        results = list(ex.map(call, range(5)))
    ok = [(i, body) for i, (status, _, body) in enumerate(results) if status == 200]
    refused = [(retry, body) for status, retry, body in results if status == 503]
    # two admitted (one running, one queued for the single thread), the rest refused at once
    assert len(ok) == 2 and len(refused) == 3, results
    for i, body in ok:
        assert body == {"outputs": [2.0 * i]}
    for retry, body in refused:
        assert retry == "1" and "server busy" in body["error"] and "--rest_api_max_pending_requests" in body["error"]
    assert limited["proc"].poll() is None


def test_grpc_full_answers_resource_exhausted(limited):
    stub = limited["predict"]
    futures = [stub.Predict.future(_sleep_request([float(i)], 1500), timeout=60) for i in range(5)]
    ok, exhausted = 0, 0
    for i, f in enumerate(futures):
        try:
            resp = f.result()
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
            exhausted += 1
        else:
            np.testing.assert_array_equal(tf.make_ndarray(resp.outputs["y"]), [2.0 * i])
            ok += 1
    assert ok == 2 and exhausted == 3


def test_rest_request_timeout_answers_504_and_server_recovers(limited):
    c = limited["rest"]
    status, body = c.post("/v1/models/sleep:predict", _sleep_body([1.0], 5600))
    assert status == 504, body
    assert "request timeout (5 s)" in body["error"]
    _idle(limited)  # the timed-out call keeps its thread until the model returns
    status, body = c.post("/v1/models/sleep:predict", _sleep_body([1.5], 0))
    assert status == 200 and body == {"outputs": [3.0]}


def test_stalled_upload_is_cut_at_the_timeout(limited):
    s = _stalled_upload(limited["port"])
    try:
        answer = _read_all(s)  # returns only once the server closes the connection
    finally:
        s.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert b"connection: close" in head.lower()
    assert "request body not received within the request timeout" in json.loads(body)["error"]
    assert limited["rest"].get("/v1/models/text")[0] == 200


def test_oversized_and_malformed_requests(limited):
    c = limited["rest"]
    status, body = c.post("/v1/models/text:predict", {"instances": ["good film"] * 9})
    assert status == 413 and "9 rows" in body["error"] and "at most 8" in body["error"]
    assert c.post("/v1/models/text:predict", {"instances": ["good film"] * 8})[0] == 200
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "text"
    req.inputs["text"].CopyFrom(tf.make_tensor_proto(np.array([b"a"] * 9, dtype=object)))
    with pytest.raises(grpc.RpcError) as err:
        limited["predict"].Predict(req, timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "at most 8" in err.value.details()
    status, body = c.request("POST", "/v1/models/text:predict", b'{"instances": [')
    assert status == 400 and "malformed JSON" in body["error"]


def test_error_bodies_name_no_server_path(limited):
    c, base = limited["rest"], str(limited["base"])
    for path in ("/v1/models/nope", "/v1/models/text/versions/7", "/v1/models/text/versions/7/metadata"):
        status, body = c.get(path)
        assert status == 404 and body["error"] and base not in body["error"], body
    status, body = c.post("/v1/models/nope:predict", {"instances": ["a"]})
    assert status == 404 and base not in body["error"]


def test_slowly_copied_version_is_loaded_once_complete(limited, tmp_path):
    c, base = limited["rest"], limited["base"] / "text"
    src = testing.export_text_model(tmp_path / "export", version=2, scale=-2.0)
    # A copy caught half-way, as `cp -r` makes it: the directories and saved_model.pb are
    # there, the variables not yet. The version directory's own mtime does not change
    # when the variables arrive later.
    dst = base / "2"
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, dst / f.name)
        else:
            (dst / f.name).mkdir()

    def status2():
        status, body = c.get("/v1/models/text/versions/2")
        return body["model_version_status"][0] if status == 200 else None

    assert _wait(lambda: (status2() or {}).get("state") == "END")
    failed = status2()
    assert failed["status"]["error_message"] and str(limited["base"]) not in failed["status"]["error_message"]
    assert c.post("/v1/models/text:predict", {"instances": ["still served"]})[0] == 200  # version 1 serves
    mtime = dst.stat().st_mtime_ns
    for f in (src / "variables").iterdir():
        shutil.copy2(f, dst / "variables" / f.name)
    assert dst.stat().st_mtime_ns == mtime  # what a retry keyed on the folder's mtime missed
    assert _wait(lambda: (status2() or {}).get("state") == "AVAILABLE"), status2()
    texts = ["A wonderful, moving film!", "dull"]
    want = tf.saved_model.load(str(src)).signatures["serving_default"](text=tf.constant(texts))
    status, body = c.post("/v1/models/text:predict", {"instances": texts})
    assert status == 200
    np.testing.assert_array_equal(np.array([p["probabilities"] for p in body["predictions"]], np.float32),
                                  want["probabilities"].numpy())


def test_metrics_endpoint(limited):
    port, c = limited["port"], limited["rest"]
    _idle(limited)
    before = _scrape(port)
    assert c.post("/v1/models/sleep:predict", _sleep_body([1.0, 2.0], 0))[0] == 200
    assert c.post("/v1/models/sleep:predict", {"inputs": {"x": [1.0]}})[0] == 400
    limited["predict"].Predict(_sleep_request([3.0], 0), timeout=30)
    after = _scrape(port)

    def delta(**labels):
        name = ":tensorflow:serving:request_count"
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    assert delta(model_name="sleep", API="predict", entrypoint="REST", status="OK") == 1
    assert delta(model_name="sleep", API="predict", entrypoint="REST", status="INVALID_ARGUMENT") == 1
    assert delta(model_name="sleep", API="predict", entrypoint="GRPC", status="OK") == 1
    # the counter follows Prometheus' naming rule: samples end in _total
    assert {s.name for s in after[":tensorflow:serving:request_count"].samples} == {":tensorflow:serving:request_count_total"}

    lat = after[":tensorflow:serving:request_latency"]
    assert lat.type == "histogram"
    rest_sleep = {"model_name": "sleep", "API": "predict", "entrypoint": "REST"}
    count = _sample(after, lat.name, lat.name + "_count", **rest_sleep)
    inf = _sample(after, lat.name, lat.name + "_bucket", le="+Inf", **rest_sleep)
    assert count >= 2 and inf == count
    assert _sample(after, lat.name, lat.name + "_sum", **rest_sleep) > 0

    assert _sample(after, ":rnnkit:serving:model_available_versions", model_name="sleep") == 1
    assert _sample(after, ":rnnkit:serving:model_version_state", model_name="sleep", version="1", state="AVAILABLE") == 1
    assert _sample(after, ":rnnkit:serving:model_load_attempt_count", model_name="sleep", status="OK") >= 1
    # unknown model names share one label value
    assert c.post("/v1/models/no_such_model:predict", {"instances": [1]})[0] == 404
    assert _sample(_scrape(port), ":tensorflow:serving:request_count", model_name="<unknown>", status="NOT_FOUND") >= 1


def test_public_message_removes_server_paths():
    msg = ("SavedModel file does not exist at: /srv/models/text/3/{saved_model.pbtxt|saved_model.pb}; "
           "open '/srv/models/text/3/variables/variables.index' failed (file:///srv/x/y)")
    out = public_message(msg)
    assert "/srv" not in out and out.count("<path>") == 3
    # what is not a server path stays: shapes, ratios, URLs' hosts, model names
    keep = "input 'x' has shape [2,3] not [?,4]; 3/4 rows; see https://www.tensorflow.org/tfx; model 'text'"
    assert public_message(keep) == keep


def test_monitoring_config_file_parsing(tmp_path):
    f = tmp_path / "m.config"
    f.write_text("prometheus_config { enable: true }\n")
    assert load_monitoring_config(f) == DEFAULT_PATH
    f.write_text('prometheus_config { enable: false path: "/m" }\n')
    assert load_monitoring_config(f) is None
    f.write_text('prometheus_config { enable: true path: "/metrics" }\n')
    assert load_monitoring_config(f) == "/metrics"
    f.write_text("prometheus_config { enabled: true }\n")
    with pytest.raises(ValueError, match="not a valid MonitoringConfig"):
        load_monitoring_config(f)
    f.write_text('prometheus_config { enable: true path: "metrics" }\n')
    with pytest.raises(ValueError, match="must start with '/'"):
        load_monitoring_config(f)


def test_sigterm_answers_accepted_requests_then_exits_0(models):
    base, cfg = models
    rest, grpc_port = testing.free_port(), testing.free_port()
    proc = testing.start_server(
        ["--port", str(grpc_port), "--rest_api_port", str(rest), "--model_config_file", str(cfg),
         "--rest_api_timeout_in_ms", "6000", "--shutdown_grace_seconds", "30",
         "--monitoring_config_file", str(base / "monitoring.config")],
        rest, "sleep",
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    stalled = None
    try:
        with ThreadPoolExecutor(3) as ex:
            rest_calls = [
                ex.submit(testing.RestClient(rest).post, "/v1/models/sleep:predict", _sleep_body([float(i)], 400))
                for i in range(3)
            ]
            # the sleep model answers concurrent calls one after the other: the last of
            # these six is answered about 2.4 s after the first arrived
            grpc_calls = [stub.Predict.future(_sleep_request([10.0 + i], 400), timeout=60) for i in range(3)]
            stalled = _stalled_upload(rest)
            # every request accepted: 3 REST + the stalled upload, 3 gRPC
            assert _wait(lambda: _in_flight(rest, "REST") == 4 and _in_flight(rest, "GRPC") == 3, 30)
            proc.send_signal(signal.SIGTERM)
            for i, f in enumerate(rest_calls):
                assert f.result() == (200, {"outputs": [2.0 * i]})
            for i, f in enumerate(grpc_calls):
                np.testing.assert_array_equal(tf.make_ndarray(f.result().outputs["y"]), [2.0 * (10 + i)])
        # the stalled client is answered at the request timeout, not waited for
        head = _read_all(stalled).split(b"\r\n", 1)[0]
        assert head.startswith(b"HTTP/1.1 408"), head
        assert proc.wait(timeout=60) == 0, "".join(proc.log)
        # nothing listens any more
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", rest), timeout=5).close()
        assert any("shutdown finished" in line for line in proc.log)
    finally:
        if stalled is not None:
            stalled.close()
        channel.close()
        if proc.poll() is None:
            proc.kill()


def test_sigint_grpc_only_waits_past_two_seconds(models):
    """With gRPC alone a call longer than 2 s (the old fixed grace) is answered, then exit 0."""
    _, cfg = models
    grpc_port = testing.free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnkit.serving", "--port", str(grpc_port), "--model_config_file", str(cfg)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    try:
        status_stub = model_service_pb2_grpc.ModelServiceStub(channel)

        def up():
            req = get_model_status_pb2.GetModelStatusRequest()
            req.model_spec.name = "sleep"
            try:
                return status_stub.GetModelStatus(req, timeout=5).model_version_status[0].state == 30
            except grpc.RpcError:
                return proc.poll() is not None  # stop polling a dead server (asserted below)

        assert _wait(up, 120, 0.3) and proc.poll() is None
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        calls = [stub.Predict.future(_sleep_request([float(i)], 3000), timeout=60) for i in range(2)]
        time.sleep(1.0)  # let both calls reach their handler (answered 1.5 s and 3 s after arriving)
        proc.send_signal(signal.SIGINT)
        for i, f in enumerate(calls):
            np.testing.assert_array_equal(tf.make_ndarray(f.result().outputs["y"]), [2.0 * i])
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
    finally:
        channel.close()
        if proc.poll() is None:
            proc.kill()
