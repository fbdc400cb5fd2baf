"""`rnnkit serve` over deploy/models.local.config with the apps' real exports.

Runs against whatever `make all` (or `make <app>`) left in saved_models/<app>; an app with
no export yet is skipped (the sentiment end-to-end test trains its own tiny model). For
each exported app: the export is servable, the server answers the export's own warmup
requests over gRPC and REST exactly as the SavedModel does in-process, and corrupt
image/audio bytes get INVALID_ARGUMENT / 400 while the server keeps serving.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from rnnkit.servable import check_servable
from rnnkit.serving import testing
from rnnkit.serving.config import load_model_config_file
from rnnkit.warmup import read_warmup_requests

REPO = Path(__file__).resolve().parents[1]
# RNNKIT_SERVE_TEST_CONFIG: another ModelServerConfig with the same app names (e.g. exports
# kept outside the repository).
CONFIG = Path(os.environ.get("RNNKIT_SERVE_TEST_CONFIG", REPO / "deploy" / "models.local.config"))
SPECS = {s.name: s for s in load_model_config_file(CONFIG)}


def _latest(app: str) -> Path | None:
    base = SPECS[app].base_path
    versions = sorted(int(p.name) for p in base.iterdir() if p.name.isdigit()) if base.is_dir() else []
    return base / str(versions[-1]) if versions else None


EXPORTED = [a for a in SPECS if _latest(a) is not None]


@pytest.fixture(scope="module")
def server():
    if not EXPORTED:
        pytest.skip("no app exports under saved_models/ (run `make all QUICK=1` first)")
    rest, gport = testing.free_port(), testing.free_port()
    proc = testing.start_server(
        ["--port", str(gport), "--rest_api_port", str(rest), "--model_config_file", str(CONFIG)],
        rest, EXPORTED[0], timeout=300,
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{gport}", options=[("grpc.max_receive_message_length", 64 << 20)])
    yield testing.RestClient(rest), prediction_service_pb2_grpc.PredictionServiceStub(channel), proc
    channel.close()
    testing.stop_server(proc)


@pytest.mark.slow
@pytest.mark.parametrize("app", list(SPECS))
def test_app_served(server, app):
    version_dir = _latest(app)
    rest, stub, proc = server
    if version_dir is None:
        status, body = rest.get(f"/v1/models/{app}")
        assert status == 404 and "no versions" in body["error"]
        pytest.skip(f"{app}: no export under {SPECS[app].base_path}")
    check_servable(version_dir)  # raises, naming the problem, for an export TF Serving would refuse
    status, body = rest.get(f"/v1/models/{app}")
    assert status == 200 and body["model_version_status"][0]["version"] == version_dir.name
    st = body["model_version_status"][0]
    assert st["state"] == "AVAILABLE", st["status"]["error_message"]

    loaded = tf.saved_model.load(str(version_dir))
    warm = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    assert warm.is_file(), "every export ships TF Serving warmup requests"
    for log in read_warmup_requests(warm)[:2]:
        req = log.predict_log.request
        sig_name = req.model_spec.signature_name or "serving_default"
        inputs = {k: tf.make_ndarray(v) for k, v in req.inputs.items()}
        want = {k: v.numpy() for k, v in loaded.signatures[sig_name](**{k: tf.constant(v) for k, v in inputs.items()}).items()}
        g = predict_pb2.PredictRequest()
        g.CopyFrom(req)
        g.model_spec.name = app
        resp = stub.Predict(g, timeout=300)
        assert set(resp.outputs) == set(want)
        for k, v in want.items():
            got = tf.make_ndarray(resp.outputs[k])
            if v.dtype == object:
                np.testing.assert_array_equal(got, v)
            else:
                np.testing.assert_allclose(got, v, rtol=1e-5, atol=1e-6)
        # REST columnar with the same inputs (bytes as b64)
        cols = {}
        for k, v in inputs.items():
            if v.dtype == object:
                cols[k] = np.vectorize(lambda b: {"b64": base64.b64encode(b).decode()}, otypes=[object])(v).tolist()
            else:
                cols[k] = v.tolist()
        status, body = rest.post(f"/v1/models/{app}:predict", {"signature_name": sig_name, "inputs": cols})
        assert status == 200, body
        outs = body["outputs"] if len(want) > 1 else {next(iter(want)): body["outputs"]}
        for k, v in want.items():
            if v.dtype != object:
                np.testing.assert_allclose(np.array(outs[k], dtype=v.dtype), v, rtol=1e-5, atol=1e-6)

    # corrupt encoded media -> 400 / INVALID_ARGUMENT naming the model's complaint
    for sig_name, sig in check_servable(version_dir).signatures.items():
        if len(sig.inputs) == 1:
            (name, spec), = sig.inputs.items()
            if spec.dtype == "string" and name.endswith("_bytes"):
                bad = base64.b64encode(b"\x89PNG\r\n\x1a\n truncated garbage").decode()
                status, body = rest.post(f"/v1/models/{app}:predict", {"signature_name": sig_name, "instances": [{"b64": bad}]})
                assert status == 400 and "rejected the input" in body["error"], body
                g = predict_pb2.PredictRequest()
                g.model_spec.name = app
                g.model_spec.signature_name = sig_name
                g.inputs[name].CopyFrom(tf.make_tensor_proto([b"RIFF\x00\x00 not audio or image"], dtype=tf.string))
                with pytest.raises(grpc.RpcError) as ei:
                    stub.Predict(g, timeout=120)
                assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert proc.poll() is None
