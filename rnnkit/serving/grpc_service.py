"""TF Serving's gRPC services on grpcio with the official tensorflow-serving-api stubs.

PredictionService: Predict, GetModelMetadata (Classify / Regress / MultiInference answer
UNIMPLEMENTED). ModelService: GetModelStatus.
"""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from rnnkit.serving.codec import array_to_tensor_proto, tensor_proto_to_array
from rnnkit.serving.errors import ServingError, invalid
from rnnkit.serving.registry import ModelRegistry
from rnnkit.serving.status import metadata_response, status_response

log = logging.getLogger("rnnkit.serving")


def _lookup(registry: ModelRegistry, spec):
    if not spec.name:
        raise invalid("model_spec.name is empty")
    which = spec.WhichOneof("version_choice")
    if which == "version":
        return registry.get(spec.name, spec.version.value)
    if which == "version_label":
        return registry.get(spec.name, None, spec.version_label)
    return registry.get(spec.name)


def _guard(fn):
    """Turn ServingError into a gRPC status, and anything unexpected into INTERNAL."""

    def wrapper(self, request, context):
        try:
            return fn(self, request, context)
        except ServingError as exc:
            context.abort(exc.grpc_code, exc.message)
        except Exception as exc:  # keep serving; report it
            log.exception("unexpected error in %s", fn.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")

    wrapper.__name__ = fn.__name__
    return wrapper


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService over a ModelRegistry."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    @_guard
    def Predict(self, request, context):
        model = _lookup(self.registry, request.model_spec)
        key, sig = model.signature(request.model_spec.signature_name)
        given, names = set(request.inputs), set(sig.inputs)
        if given != names:
            parts = []
            if names - given:
                parts.append(f"missing input(s) {sorted(names - given)}")
            if given - names:
                parts.append(f"unknown input(s) {sorted(given - names)}")
            raise invalid(f"{' and '.join(parts)}; signature {key!r} takes {sorted(names)}")
        arrays = {n: tensor_proto_to_array(request.inputs[n], n, sig.inputs[n]) for n in names}
        outputs = model.run(key, arrays, request.output_filter)
        resp = predict_pb2.PredictResponse()
        resp.model_spec.name = model.name
        resp.model_spec.version.value = model.version
        resp.model_spec.signature_name = key
        for k, arr in outputs.items():
            resp.outputs[k].CopyFrom(array_to_tensor_proto(arr, sig.outputs[k].dtype))
        return resp

    @_guard
    def GetModelMetadata(self, request, context):
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise invalid(f"metadata_field must be ['signature_def'], got {fields}")
        return metadata_response(_lookup(self.registry, request.model_spec))


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService.GetModelStatus over a ModelRegistry."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    @_guard
    def GetModelStatus(self, request, context):
        spec = request.model_spec
        if not spec.name:
            raise invalid("model_spec.name is empty")
        version = spec.version.value if spec.WhichOneof("version_choice") == "version" else None
        if spec.WhichOneof("version_choice") == "version_label":
            version = self.registry.get(spec.name, None, spec.version_label).version
        return status_response(self.registry, spec.name, version)


def build_grpc_server(
    registry: ModelRegistry,
    address: str,
    max_workers: int = 16,
    max_message_bytes: int = 16 * 1024 * 1024,
) -> tuple[grpc.Server, int]:
    """A started-later gRPC server with both services bound to ``address``; returns (server, port)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rnnkit-grpc"),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(registry), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(registry), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind gRPC to {address}")
    return server, port
