"""End-to-end tests of `rnnkit serve` on small SavedModels (no app training needed).

One server subprocess serves three models from a ModelServerConfig; tests talk to it over
plain HTTP (http.client) and over gRPC with the official tensorflow-serving-api stubs, and
compare answers with the SavedModel called in-process.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from rnnkit.serving import testing

REPO = Path(__file__).resolve().parents[1]


Client = testing.RestClient
free_port, start_server, stop_server = testing.free_port, testing.start_server, testing.stop_server


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    testing.export_text_model(base / "text", version=1, scale=1.0)
    testing.export_dense_model(base / "dense", version=1)
    testing.export_image_model(base / "image", version=1)
    # relative base paths resolve against the config file's directory
    cfg = base / "models.config"
    cfg.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{n}" base_path: "{n}" model_platform: "tensorflow" }}\n'
            for n in ("text", "dense", "image")
        )
        + "}\n"
    )
    rest, grpc_port = free_port(), free_port()
    proc = start_server(
        ["--port", str(grpc_port), "--rest_api_port", str(rest), "--model_config_file", str(cfg),
         "--file_system_poll_wait_seconds", "0.3", "--max_request_bytes", str(4 * 1024 * 1024)],
        rest, "image",
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    yield {
        "base": base, "proc": proc, "rest": Client(rest), "channel": channel,
        "predict": prediction_service_pb2_grpc.PredictionServiceStub(channel),
        "models": model_service_pb2_grpc.ModelServiceStub(channel),
    }
    channel.close()
    stop_server(proc)


@pytest.fixture(scope="module")
def local(served):
    """The same SavedModels called in-process."""
    b = served["base"]
    return {n: tf.saved_model.load(str(b / n / "1")) for n in ("text", "dense", "image")}


TEXTS = ["A wonderful, moving film!", "dull and far too long", "ok"]


def test_status_and_metadata_rest(served):
    c = served["rest"]
    status, body = c.get("/v1/models/text")
    assert status == 200
    assert body == {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert c.get("/v1/models/text/versions/1")[0] == 200
    status, md = c.get("/v1/models/dense/metadata")
    assert status == 200 and md["model_spec"] == {"name": "dense", "signature_name": "", "version": "1"}
    sigs = md["metadata"]["signature_def"]["signature_def"]
    assert set(sigs["serving_default"]["inputs"]) == {"x", "k"}
    assert sigs["serving_default"]["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert sigs["double"]["outputs"]["doubled"]["tensor_shape"]["dim"][1]["size"] == "3"


def test_predict_rest_row_and_columnar_match_in_process(served, local):
    c = served["rest"]
    want = local["text"].signatures["serving_default"](text=tf.constant(TEXTS))
    status, body = c.post("/v1/models/text:predict", {"instances": TEXTS})
    assert status == 200, body
    preds = body["predictions"]
    assert len(preds) == 3
    np.testing.assert_array_equal(np.array([p["probabilities"] for p in preds], np.float32), want["probabilities"].numpy())
    assert [p["label"] for p in preds] == [s.decode() for s in want["label"].numpy()]
    assert [p["num_tokens"] for p in preds] == want["num_tokens"].numpy().tolist()
    status, body = c.post("/v1/models/text/versions/1:predict", {"signature_name": "serving_default", "inputs": {"text": TEXTS}})
    assert status == 200, body
    np.testing.assert_array_equal(np.array(body["outputs"]["probabilities"], np.float32), want["probabilities"].numpy())
    # b64 for a DT_STRING input gives the same answer as the plain string
    b64 = [{"b64": base64.b64encode(t.encode()).decode()} for t in TEXTS]
    status, body2 = c.post("/v1/models/text:predict", {"inputs": b64})
    assert status == 200 and body2["outputs"] == body["outputs"]


def test_predict_multi_input_and_signature(served, local):
    c = served["rest"]
    x = [[1.0, 2.0, 3.0], [-0.5, 0.25, 4.0]]
    k = [1, 3]
    want = local["dense"].signatures["serving_default"](x=tf.constant(x), k=tf.constant(k, tf.int32))["y"].numpy()
    status, body = c.post("/v1/models/dense:predict", {"instances": [{"x": x[0], "k": k[0]}, {"x": x[1], "k": k[1]}]})
    assert status == 200, body
    np.testing.assert_array_equal(np.array(body["predictions"], np.float32), want)  # single output: bare values
    status, body = c.post("/v1/models/dense:predict", {"signature_name": "double", "inputs": x})
    assert status == 200 and body == {"outputs": [[2.0, 4.0, 6.0], [-1.0, 0.5, 8.0]]}


def test_image_bytes(served, local):
    png = testing.png_bytes(value=77)
    status, body = served["rest"].post("/v1/models/image:predict", {"instances": [{"b64": base64.b64encode(png).decode()}]})
    assert status == 200 and body == {"predictions": [pytest.approx(77.0)]}


def _grpc_request(name: str, **inputs) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    for k, v in inputs.items():
        req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
    return req


def test_grpc_predict_metadata_status(served, local):
    stub = served["predict"]
    req = _grpc_request("text", text=np.array([t.encode() for t in TEXTS], dtype=object))
    resp = stub.Predict(req, timeout=30)
    want = local["text"].signatures["serving_default"](text=tf.constant(TEXTS))
    assert resp.model_spec.version.value == 1 and resp.model_spec.signature_name == "serving_default"
    np.testing.assert_array_equal(tf.make_ndarray(resp.outputs["probabilities"]), want["probabilities"].numpy())
    np.testing.assert_array_equal(tf.make_ndarray(resp.outputs["label"]), want["label"].numpy())
    # output_filter and a specific version
    req.output_filter.append("num_tokens")
    req.model_spec.version.value = 1
    resp = stub.Predict(req, timeout=30)
    assert list(resp.outputs) == ["num_tokens"]

    mreq = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    mreq.model_spec.name = "dense"
    md = stub.GetModelMetadata(mreq, timeout=30)
    sdm = get_model_metadata_pb2.SignatureDefMap()
    md.metadata["signature_def"].Unpack(sdm)
    assert set(sdm.signature_def["serving_default"].inputs) == {"x", "k"}

    sreq = get_model_status_pb2.GetModelStatusRequest()
    sreq.model_spec.name = "dense"
    st = served["models"].GetModelStatus(sreq, timeout=30)
    assert [(s.version, s.state) for s in st.model_version_status] == [(1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]


BIG = 50 * 1024 * 1024  # a 50 MB body, far over the 4 MiB limit the fixture sets

BAD_REST = [
    ("malformed JSON", "POST", "/v1/models/text:predict", '{"instances": [', 400, "malformed JSON"),
    ("unknown model", "POST", "/v1/models/nope:predict", '{"instances": ["a"]}', 404, "model 'nope' not found"),
    ("unknown version", "POST", "/v1/models/text/versions/9:predict", '{"instances": ["a"]}', 404, "version 9 is not available"),
    ("non-integer version", "GET", "/v1/models/text/versions/latest", None, 400, "version must be"),
    ("unknown model status", "GET", "/v1/models/nope", None, 404, "model 'nope' not found"),
    ("unknown signature", "POST", "/v1/models/text:predict", '{"signature_name": "zz", "instances": ["a"]}', 400, "signature 'zz' not found"),
    ("missing input", "POST", "/v1/models/dense:predict", '{"instances": [{"x": [1, 2, 3]}]}', 400, "missing input(s) ['k']"),
    ("extra input", "POST", "/v1/models/dense:predict", '{"inputs": {"x": [[1, 2, 3]], "k": [1], "z": [0]}}', 400, "unknown input(s) ['z']"),
    ("wrong dtype", "POST", "/v1/models/dense:predict", '{"inputs": {"x": [["a", "b", "c"]], "k": [1]}}', 400, "expects DT_FLOAT numbers; got strings"),
    ("huge integer for int", "POST", "/v1/models/dense:predict", '{"inputs": {"x": [[1, 2, 3]], "k": [123456789012345678901234567890]}}', 400, "input 'k'"),
    ("non-integer for int", "POST", "/v1/models/dense:predict", '{"inputs": {"x": [[1, 2, 3]], "k": [1.5]}}', 400, "expects integers"),
    ("number for string", "POST", "/v1/models/text:predict", '{"instances": [3]}', 400, "is a string tensor"),
    ("wrong shape", "POST", "/v1/models/dense:predict", '{"inputs": {"x": [[1, 2]], "k": [1]}}', 400, "has shape [1, 2] but the signature expects [?, 3]"),
    ("ragged", "POST", "/v1/models/dense:predict", '{"inputs": {"x": [[1, 2, 3], [1, 2]], "k": [1, 2]}}', 400, "ragged"),
    ("both formats", "POST", "/v1/models/text:predict", '{"instances": ["a"], "inputs": ["a"]}', 400, "both 'instances' and 'inputs'"),
    ("neither format", "POST", "/v1/models/text:predict", '{"signature_name": "serving_default"}', 400, "needs 'instances'"),
    ("empty batch rows", "POST", "/v1/models/text:predict", '{"instances": []}', 400, "empty batch"),
    ("empty batch cols", "POST", "/v1/models/text:predict", '{"inputs": {"text": []}}', 400, "empty batch"),
    ("invalid base64", "POST", "/v1/models/text:predict", '{"instances": [{"b64": "%%%not base64"}]}', 400, "invalid base64"),
    ("b64 for float", "POST", "/v1/models/dense:predict", '{"signature_name": "double", "inputs": [[{"b64": "AAAA"}, 1, 2]]}', 400, "only for string inputs"),
    ("corrupt image", "POST", "/v1/models/image:predict", '{"instances": [{"b64": "' + base64.b64encode(b"\x89PNG not really").decode() + '"}]}', 400, "rejected the input"),
    ("not an object", "POST", "/v1/models/text:predict", '["a"]', 400, "must be a JSON object"),
    ("unknown field", "POST", "/v1/models/text:predict", '{"instance": ["a"]}', 400, "unknown request field(s) ['instance']"),
    ("unknown verb", "POST", "/v1/models/text:explain", '{}', 404, "unknown method"),
    ("bad route", "GET", "/v2/whatever", None, 404, "Not Found"),
]


@pytest.mark.parametrize("case", BAD_REST, ids=[c[0] for c in BAD_REST])
def test_bad_rest_requests(served, case):
    _, method, path, body, want_status, want_msg = case
    status, resp = served["rest"].request(method, path, body)
    assert status == want_status, resp
    assert set(resp) == {"error"} and want_msg in resp["error"], resp


def test_nan_in_and_out_and_keep_alive(served, local):
    """NaN literals in a request are read (the model decides), non-finite outputs come back
    as NaN literals like TF Serving's, and one keep-alive connection serves many requests."""
    body = '{"inputs": {"x": [[NaN, 1, 2], [1, 2, 3]], "k": [1, 2]}}'
    status, resp = served["rest"].request("POST", "/v1/models/dense:predict", body)
    assert status == 200, resp
    got = np.array(resp["outputs"], np.float32)
    want = local["dense"].signatures["serving_default"](
        x=tf.constant([[np.nan, 1, 2], [1, 2, 3]], tf.float32), k=tf.constant([1, 2], tf.int32))["y"].numpy()
    assert np.isnan(got[0]).all() and np.isnan(want[0]).all()
    np.testing.assert_array_equal(got[1], want[1])
    conn = http.client.HTTPConnection("127.0.0.1", served["rest"].port, timeout=60)
    try:
        conn.request("POST", "/v1/models/dense:predict", body=body, headers={"Content-Type": "application/json"})
        raw = conn.getresponse().read()
        assert b"NaN" in raw and b"null" not in raw, raw  # a literal, as TF Serving writes it
        for i in range(5):
            conn.request("POST", "/v1/models/text:predict", body=json.dumps({"instances": [f"review {i}"]}),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            assert r.status == 200 and r.getheader("Content-Type") == "application/json"
            assert set(json.loads(r.read())["predictions"][0]) == {"probabilities", "label", "num_tokens"}
        conn.request("POST", "/v1/models/text:predict", body="{oops", headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 400 and "malformed JSON" in json.loads(r.read())["error"]
        conn.request("GET", "/v1/models/text")
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["model_version_status"][0]["state"] == "AVAILABLE"
    finally:
        conn.close()


def test_huge_body_rejected_and_server_keeps_serving(served):
    c = served["rest"]
    payload = b'{"instances": ["' + b"a" * BIG + b'"]}'
    try:
        status, resp = c.request("POST", "/v1/models/text:predict", payload)
    except (BrokenPipeError, ConnectionResetError):
        # The server may answer 413 and close before the client finishes sending; what
        # matters is that it refused it and keeps serving (checked below).
        status, resp = 413, {"error": "limit"}
    assert status == 413 and "limit" in resp["error"]
    # a chunked body (no Content-Length) is cut off at the limit too
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=60)
    try:
        conn.request("POST", "/v1/models/text:predict", body=iter([payload[i : i + 65536] for i in range(0, len(payload), 65536)]), encode_chunked=True)
        r = conn.getresponse()
        assert r.status == 413 and "limit" in json.loads(r.read())["error"]
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        conn.close()
    assert c.post("/v1/models/text:predict", {"instances": ["still up"]})[0] == 200


def test_bad_grpc_requests(served):
    stub = served["predict"]
    cases = [
        (_grpc_request("nope", text=np.array([b"a"], dtype=object)), grpc.StatusCode.NOT_FOUND, "model 'nope' not found"),
        (_grpc_request("text", text=np.array([1.0], np.float32)), grpc.StatusCode.INVALID_ARGUMENT, "expects DT_STRING"),
        (_grpc_request("dense", x=np.ones((1, 3), np.float32)), grpc.StatusCode.INVALID_ARGUMENT, "missing input(s) ['k']"),
        (_grpc_request("dense", x=np.ones((1, 3), np.float32), k=np.ones(1, np.int32), z=np.ones(1, np.int32)), grpc.StatusCode.INVALID_ARGUMENT, "unknown input(s) ['z']"),
        (_grpc_request("dense", x=np.ones((1, 4), np.float32), k=np.ones(1, np.int32)), grpc.StatusCode.INVALID_ARGUMENT, "has shape [1, 4]"),
        (_grpc_request("text", text=np.array([], dtype=object).astype(bytes)), grpc.StatusCode.INVALID_ARGUMENT, "empty batch"),
        (_grpc_request("image", image_bytes=np.array([b"GIF89a broken"], dtype=object)), grpc.StatusCode.INVALID_ARGUMENT, "rejected the input"),
        (_grpc_request("text", text=np.array([b"a" * BIG], dtype=object)), grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    ]
    v = _grpc_request("text", text=np.array([b"a"], dtype=object))
    v.model_spec.version.value = 42
    cases.append((v, grpc.StatusCode.NOT_FOUND, "version 42 is not available"))
    for req, code, msg in cases:
        with pytest.raises(grpc.RpcError) as ei:
            stub.Predict(req, timeout=30)
        assert ei.value.code() == code, (req.model_spec.name, ei.value.details())
        assert msg in ei.value.details()
    sreq = get_model_status_pb2.GetModelStatusRequest()
    sreq.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as ei:
        served["models"].GetModelStatus(sreq, timeout=30)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    # still serving
    assert stub.Predict(_grpc_request("text", text=np.array([b"fine"], dtype=object)), timeout=30).outputs["label"]


def test_concurrent_requests(served):
    c = served["rest"]

    def one(i):
        return c.post("/v1/models/text:predict", {"instances": [f"request number {i}"]})[0]

    with ThreadPoolExecutor(16) as ex:
        codes = list(ex.map(one, range(64)))
    assert codes == [200] * 64


def _wait(cond, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return False


def test_new_version_served_without_restart_and_half_written_ignored(served):
    c, base = served["rest"], served["base"] / "text"
    # A half-written export under a temp name, and a non-integer dir: both must be ignored.
    partial = base / ".tmp-5-1234"
    partial.mkdir()
    (partial / "saved_model.pb").write_bytes(b"\x00partial")
    (base / "latest").mkdir()
    time.sleep(1.0)
    status, body = c.get("/v1/models/text")
    assert [s["version"] for s in body["model_version_status"]] == ["1"]

    # Export v2 the way rnnkit.export does: temp dir, then rename into place.
    testing.export_text_model(base, version=2, scale=-3.0)
    def state(v):
        status, body = c.get(f"/v1/models/text/versions/{v}")
        return body["model_version_status"][0]["state"] if status == 200 else None

    assert _wait(lambda: state(2) == "AVAILABLE")
    status, body = c.post("/v1/models/text:predict", {"instances": TEXTS})
    want = tf.saved_model.load(str(base / "2")).signatures["serving_default"](text=tf.constant(TEXTS))
    np.testing.assert_array_equal(np.array([p["probabilities"] for p in body["predictions"]], np.float32), want["probabilities"].numpy())
    resp = served["predict"].Predict(_grpc_request("text", text=np.array([b"x"], dtype=object)), timeout=30)
    assert resp.model_spec.version.value == 2
    # the old version is unloaded (latest policy serves one version)
    assert _wait(lambda: c.post("/v1/models/text/versions/1:predict", {"instances": ["a"]})[0] == 404)
    states = {s["version"]: s["state"] for s in c.get("/v1/models/text")[1]["model_version_status"]}
    assert states == {"2": "AVAILABLE", "1": "END"}

    # A broken version 3 fails to load, is reported, and version 2 keeps serving.
    broken = base / ".tmp-3"
    shutil.copytree(base / "2", broken)
    (broken / "saved_model.pb").write_bytes(b"garbage, not a proto")
    os.replace(broken, base / "3")
    assert _wait(lambda: any(s["version"] == "3" and s["state"] == "END" for s in c.get("/v1/models/text")[1]["model_version_status"]))
    st = next(s for s in c.get("/v1/models/text")[1]["model_version_status"] if s["version"] == "3")
    assert st["status"]["error_code"] != "OK" and st["status"]["error_message"]
    status, body = c.post("/v1/models/text:predict", {"instances": ["a"]})
    assert status == 200

    # A version TF Serving could not serve (Keras variables its loader would not restore)
    # is refused the same way, with the reason in the status.
    testing.export_keras_in_module(base, version=4, track_variables=False)
    assert _wait(lambda: any(s["version"] == "4" and s["state"] == "END" for s in c.get("/v1/models/text")[1]["model_version_status"]))
    st = next(s for s in c.get("/v1/models/text")[1]["model_version_status"] if s["version"] == "4")
    assert "TF Serving could not serve it" in st["status"]["error_message"]
    assert "not restored" in st["status"]["error_message"]
    resp = served["predict"].Predict(_grpc_request("text", text=np.array([b"x"], dtype=object)), timeout=30)
    assert resp.model_spec.version.value == 2
    assert served["proc"].poll() is None
