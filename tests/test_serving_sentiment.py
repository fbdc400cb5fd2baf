"""End to end on a real (tiny) sentiment export: `rnnkit serve` answers over REST and gRPC
exactly as the SavedModel does in a process where rnnkit is not importable, picks up a
newly exported version while running, and refuses bad requests without going down."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from conftest import last_json_line
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from rnnkit.servable import check_servable
from rnnkit.serving import testing

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
TEXTS = [
    "One of the best films of the decade, I loved every minute.",
    "Terrible. Boring plot, wooden acting, a complete waste of time.",
    "Ünïcödé — and an emoji 🎬 in a review",
    "",
]
TINY = ["--limit", "200", "--epochs", "1", "--max-len", "40", "--units", "8", "--vocab-size", "500"]


def _app(*args: str, timeout: float = 600) -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    r = subprocess.run([sys.executable, "-m", "apps.sentiment", *args], check=False, cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


def _export(run: Path, export_base: Path) -> None:
    """Export a trained run with the app's own `export` verb (a new version each call)."""
    _app("export", "--output", str(run), "--export-dir", str(export_base))


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
    pytest.importorskip("apps.sentiment.export")
    tmp = tmp_path_factory.mktemp("sentiment")
    _app("prepare", "--limit", "200")
    _app("train", *TINY, "--output", str(tmp / "run1"))
    _app("train", *TINY, "--seed", "7", "--output", str(tmp / "run2"))
    _export(tmp / "run1", tmp / "saved")
    return tmp


def _reference(isolated_python, version_dir: Path) -> dict:
    """The SavedModel's answers computed where rnnkit cannot be imported."""
    code = f"""
import json, tensorflow as tf
fn = tf.saved_model.load({str(version_dir)!r}).signatures["serving_default"]
out = fn(text=tf.constant({TEXTS!r}))
print(json.dumps({{
    "label": [s.decode() for s in out["label"].numpy()],
    "probability": [float(x) for x in out["probability"].numpy()],
    "scores": [[float(v) for v in row] for row in out["scores"].numpy()],
}}))
"""
    r = isolated_python(code)
    assert r.returncode == 0, r.stderr[-3000:]
    return last_json_line(r.stdout)


def test_sentiment_served_like_tf_serving(sentiment, isolated_python):
    base = sentiment / "saved"
    report = check_servable(base / "1")
    assert set(report.signatures["serving_default"].inputs) == {"text"}
    want = _reference(isolated_python, base / "1")
    # TensorFlow's own tool reads and runs the export
    cli = Path(sys.executable).with_name("saved_model_cli")
    run = subprocess.run(
        [str(cli), "run", "--dir", str(base / "1"), "--tag_set", "serve", "--signature_def",
         "serving_default", "--input_exprs", f"text={TEXTS[:2]!r}"],
        check=False, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "probability" in run.stdout and want["label"][0] in run.stdout

    rest, gport = testing.free_port(), testing.free_port()
    cfg = sentiment / "models.config"
    cfg.write_text(f'model_config_list {{ config {{ name: "sentiment" base_path: "{base}" model_platform: "tensorflow" }} }}\n')
    proc = testing.start_server(
        ["--port", str(gport), "--rest_api_port", str(rest), "--model_config_file", str(cfg),
         "--file_system_poll_wait_seconds", "0.5"], rest, "sentiment")
    c = testing.RestClient(rest)
    channel = grpc.insecure_channel(f"127.0.0.1:{gport}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    try:
        # the export's warmup records were replayed at load, as TF Serving does
        assert any("warmup requests" in line and "(0 warmup" not in line for line in proc.log), proc.log

        # REST row format == in-process
        status, body = c.post("/v1/models/sentiment:predict", {"instances": TEXTS})
        assert status == 200, body
        preds = body["predictions"]
        assert [p["label"] for p in preds] == want["label"]
        assert [p["probability"] for p in preds] == want["probability"]
        assert [p["scores"] for p in preds] == want["scores"]
        # columnar, with b64 strings and an explicit version + signature
        b64 = [{"b64": base64.b64encode(t.encode()).decode()} for t in TEXTS]
        status, body = c.post("/v1/models/sentiment/versions/1:predict", {"signature_name": "serving_default", "inputs": {"text": b64}})
        assert status == 200 and body["outputs"]["probability"] == want["probability"]

        # gRPC with the official stubs == in-process
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "sentiment"
        req.inputs["text"].CopyFrom(tf.make_tensor_proto(TEXTS, dtype=tf.string))
        resp = stub.Predict(req, timeout=60)
        assert resp.model_spec.version.value == 1
        assert [s.decode() for s in tf.make_ndarray(resp.outputs["label"])] == want["label"]
        np.testing.assert_array_equal(tf.make_ndarray(resp.outputs["probability"]), np.array(want["probability"], np.float32))

        # bad requests: 4xx naming the problem, server keeps serving
        bad = [
            ('{"instances": ["a"', 400, "malformed JSON"),
            ('{"instances": [1, 2]}', 400, "string tensor"),
            ('{"instances": [{"review": "x"}]}', 400, "unknown input(s) ['review']"),
            ('{"inputs": {"text": ["x"], "extra": ["y"]}}', 400, "unknown input(s) ['extra']"),
            ('{"inputs": {"text": [["x"]]}}', 400, "has shape [1, 1]"),
            ('{"instances": ["x"], "inputs": ["x"]}', 400, "both 'instances' and 'inputs'"),
            ('{"instances": []}', 400, "empty batch"),
            ('{"instances": [{"b64": "@@@"}]}', 400, "invalid base64"),
        ]
        for payload, code, msg in bad:
            status, body = c.request("POST", "/v1/models/sentiment:predict", payload)
            assert status == code and msg in body["error"], (payload, body)
        status, body = c.post("/v1/models/sentiment/versions/3:predict", {"instances": ["x"]})
        assert status == 404 and "not available" in body["error"]
        try:
            status, body = c.request("POST", "/v1/models/sentiment:predict", b'{"instances": ["' + b"x" * (50 << 20) + b'"]}')
            assert status == 413 and "limit" in body["error"]
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the upload finished; the next call shows it is still up
        assert c.post("/v1/models/sentiment:predict", {"instances": ["still serving"]})[0] == 200

        # export a new version while it runs: served without a restart
        _export(sentiment / "run2", base)
        assert (base / "2").is_dir()
        want2 = _reference(isolated_python, base / "2")
        assert want2["probability"] != want["probability"]  # a different model
        deadline = time.time() + 60
        def v2_state():
            status, body = c.get("/v1/models/sentiment/versions/2")
            return body["model_version_status"][0]["state"] if status == 200 else None

        while time.time() < deadline and v2_state() != "AVAILABLE":
            time.sleep(0.3)
        status, body = c.post("/v1/models/sentiment:predict", {"instances": TEXTS})
        assert [p["probability"] for p in body["predictions"]] == want2["probability"]
        assert stub.Predict(req, timeout=60).model_spec.version.value == 2
        sreq = get_model_status_pb2.GetModelStatusRequest()
        sreq.model_spec.name = "sentiment"
        st = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(sreq, timeout=30)
        states = {s.version: get_model_status_pb2.ModelVersionStatus.State.Name(s.state) for s in st.model_version_status}
        assert states[2] == "AVAILABLE"
        assert proc.poll() is None
    finally:
        channel.close()
        testing.stop_server(proc)
