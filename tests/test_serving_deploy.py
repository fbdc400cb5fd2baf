"""Deployment files: model configs parse with the tensorflow-serving-api protos, compose
files have the structure TF Serving needs (pinned image matching the installed TensorFlow,
loopback ports, metrics, a healthcheck that works against the REST API), batching and
monitoring parameters are valid text protos."""

from __future__ import annotations

import re
import subprocess
import time
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from tensorflow_serving.config import model_server_config_pb2

from rnnkit.serving import testing
from rnnkit.serving.config import load_model_config_file
from rnnkit.serving.metrics import load_monitoring_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
APPS = ["sentiment", "voice_gender", "translation", "captioning"]


def _parse_config(name: str) -> model_server_config_pb2.ModelServerConfig:
    cfg = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((DEPLOY / name).read_text(), cfg)  # strict: unknown fields fail
    return cfg


def test_models_config_serves_every_app_from_absolute_paths():
    cfg = _parse_config("models.config")
    configs = cfg.model_config_list.config
    assert [c.name for c in configs] == APPS
    for c in configs:
        assert c.base_path == f"/models/{c.name}"  # TF Serving requires absolute paths
        assert c.model_platform == "tensorflow"
        assert c.model_version_policy.WhichOneof("policy_choice") == "latest"
        assert c.model_version_policy.latest.num_versions == 1


def test_local_config_resolves_against_its_directory():
    cfg = _parse_config("models.local.config")
    assert [c.name for c in cfg.model_config_list.config] == APPS
    specs = load_model_config_file(DEPLOY / "models.local.config")
    repo = DEPLOY.parent
    assert [(s.name, s.base_path) for s in specs] == [(a, (repo / "saved_models" / a).resolve()) for a in APPS]


def _batching_parameters_class():
    """BatchingParameters (tensorflow_serving/servables/tensorflow/session_bundle_config.proto)
    is not shipped in the pip package: declare its fields here so the text proto is parsed
    strictly (a misspelt or mistyped field fails)."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="rnnkit_test_batching.proto", package="rnnkit_test", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    msg = fdp.message_type.add(name="BatchingParameters")
    F = descriptor_pb2.FieldDescriptorProto
    wrapped = [
        ("max_batch_size", 1, ".google.protobuf.Int64Value"),
        ("batch_timeout_micros", 2, ".google.protobuf.Int64Value"),
        ("max_enqueued_batches", 3, ".google.protobuf.Int64Value"),
        ("num_batch_threads", 4, ".google.protobuf.Int64Value"),
        ("thread_pool_name", 5, ".google.protobuf.StringValue"),
    ]
    for name, num, tname in wrapped:
        msg.field.add(name=name, number=num, type=F.TYPE_MESSAGE, type_name=tname, label=F.LABEL_OPTIONAL)
    msg.field.add(name="allowed_batch_sizes", number=6, type=F.TYPE_INT64, label=F.LABEL_REPEATED)
    msg.field.add(name="pad_variable_length_inputs", number=7, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    from google.protobuf import wrappers_pb2

    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("rnnkit_test.BatchingParameters"))


def test_batching_config_is_valid():
    cls = _batching_parameters_class()
    params = cls()
    text_format.Parse((DEPLOY / "batching.config").read_text(), params)
    assert 1 <= params.max_batch_size.value <= 512
    assert 0 < params.batch_timeout_micros.value <= 100_000
    assert params.num_batch_threads.value >= 1 and params.max_enqueued_batches.value >= 1
    with pytest.raises(text_format.ParseError):
        text_format.Parse("max_batch_sise { value: 3 }", cls())  # the check can fail


def _image_tag(suffix: str) -> str:
    """The tensorflow/serving tag that matches the installed TensorFlow (2.21.x -> 2.21.0)."""
    major, minor = version("tensorflow").split(".")[:2]
    return f"tensorflow/serving:{major}.{minor}.0{suffix}"


def _service(name: str) -> dict:
    doc = yaml.safe_load((DEPLOY / name).read_text())
    (svc,) = doc["services"].values()
    return svc


@pytest.mark.parametrize("name, suffix", [("docker-compose.yml", ""), ("docker-compose.gpu.yml", "-gpu")])
def test_compose_files(name, suffix):
    svc = _service(name)
    assert svc["image"] == _image_tag(suffix)  # pinned, never :latest
    # loopback unless the operator sets RNNKIT_SERVING_BIND
    assert set(svc["ports"]) == {"${RNNKIT_SERVING_BIND:-127.0.0.1}:8500:8500", "${RNNKIT_SERVING_BIND:-127.0.0.1}:8501:8501"}
    mounts = {}
    for v in svc["volumes"]:
        host, container, *_mode = v.split(":")
        mounts[container] = host
        # host paths are relative to deploy/ and must exist (saved_models/ has its README)
        assert (DEPLOY / host).resolve().exists(), v
    assert (DEPLOY / mounts["/models"]).resolve() == (DEPLOY.parent / "saved_models").resolve()
    flags = dict(f.lstrip("-").split("=", 1) for f in svc["command"])
    assert flags["enable_batching"] == "true"
    # every file the server reads is mounted from deploy/
    for flag, local in [("model_config_file", "models.config"), ("batching_parameters_file", "batching.config"),
                        ("monitoring_config_file", "monitoring.config")]:
        container_path = flags[flag]
        assert container_path in mounts and (DEPLOY / mounts[container_path]).resolve() == (DEPLOY / local).resolve()
    hc = svc["healthcheck"]
    assert hc["test"][0] == "CMD" and hc["retries"] >= 1
    # the healthcheck asks for every served model
    script = hc["test"][-1]
    names = re.search(r"for m in ([\w ]+); do", script)[1].split()
    assert names == [c.name for c in _parse_config("models.config").model_config_list.config]
    if "gpu" in name:
        (dev,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert dev["driver"] == "nvidia" and "gpu" in dev["capabilities"]


def test_monitoring_config_is_valid():
    assert load_monitoring_config(DEPLOY / "monitoring.config") == "/monitoring/prometheus/metrics"


def test_compose_healthcheck_against_rnnkit_serve(tmp_path):
    """The healthcheck script run against `rnnkit serve` (same REST API as TF Serving):
    unhealthy while one model has no version, healthy once every model has one."""
    script = _service("docker-compose.yml")["healthcheck"]["test"][-1].replace("$$", "$")  # compose unescapes $$
    names = re.search(r"for m in ([\w ]+); do", script)[1].split()
    for n in names[:-1]:
        testing.export_text_model(tmp_path / n, version=1)
    (tmp_path / names[-1]).mkdir()
    cfg = tmp_path / "models.config"
    cfg.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{n}" base_path: "{n}" model_platform: "tensorflow" }}\n' for n in names) + "}\n")
    rest = testing.free_port()
    script = script.replace("/8501", f"/{rest}")
    proc = testing.start_server(
        ["--port", "0", "--rest_api_port", str(rest), "--model_config_file", str(cfg),
         "--file_system_poll_wait_seconds", "0.2"], rest, names[0],
    )
    try:
        def healthy() -> bool:
            return subprocess.run(["bash", "-c", script], check=False, timeout=30).returncode == 0

        assert not healthy()
        testing.export_text_model(tmp_path / names[-1], version=1)
        deadline = time.time() + 60
        while not healthy():
            assert time.time() < deadline, "healthcheck never passed"
            time.sleep(0.3)
    finally:
        testing.stop_server(proc)
