"""TF Serving's gRPC services on grpcio with the official tensorflow-serving-api stubs.

PredictionService: Predict, GetModelMetadata (Classify / Regress / MultiInference answer
UNIMPLEMENTED). ModelService: GetModelStatus.

Shutdown drains first: calls already inside a handler finish, calls that start after the
signal are answered UNAVAILABLE at once, and only then is grpcio's server stopped. (Stopping
it straight away would cancel calls that grpcio had received but not yet handed to a
thread: their clients would see CANCELLED, which they do not retry.)

Limits: grpcio's ``maximum_concurrent_rpcs`` bounds the calls admitted at once (running on
a worker thread or queued for one); beyond it grpcio answers RESOURCE_EXHAUSTED without
running anything. A call's deadline is honoured: a call that waited in the queue past it is
not run (DEADLINE_EXCEEDED), and a batched call stops waiting for its batch when it passes.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures

import grpc
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from rnnkit.serving.codec import array_to_tensor_proto, tensor_proto_to_array
from rnnkit.serving.errors import ServingError, invalid, public_message
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


class InFlight:
    """Calls inside a handler right now (the server's exit waits for, or abandons, them),
    and whether the server is draining: then a call that has not started yet is answered
    UNAVAILABLE (retryable) instead of being run."""

    def __init__(self) -> None:
        self._n = 0
        self._lock = threading.Lock()
        self.draining = False

    def add(self, d: int) -> None:
        with self._lock:
            self._n += d

    @property
    def count(self) -> int:
        """Calls in progress."""
        return self._n


def _deadline(context) -> float | None:
    """The call's deadline on ``time.monotonic()``'s clock (None: the client set none)."""
    left = context.time_remaining()
    return None if left is None else time.monotonic() + left


def _guard(fn):
    """Turn ServingError into a gRPC status and anything unexpected into INTERNAL, refuse
    calls whose deadline passed while they were queued, and count each call in the metrics."""

    api = "predict" if fn.__name__ == "Predict" else fn.__name__

    def wrapper(self, request, context):
        t0 = time.monotonic()
        code = "OK"
        metrics = self.metrics
        self.in_flight.add(1)
        if metrics is not None:
            metrics.in_flight.labels("GRPC").inc()
        try:
            if self.in_flight.draining:
                raise ServingError("UNAVAILABLE", "server is shutting down; retry")
            left = context.time_remaining()
            if left is not None and left <= 0:
                raise ServingError("DEADLINE_EXCEEDED", "deadline passed before the call was started")
            return fn(self, request, context)
        except ServingError as exc:
            code = exc.code
            context.abort(exc.grpc_code, public_message(exc.message))
        except Exception as exc:  # keep serving; report it
            log.exception("unexpected error in %s", fn.__name__)
            code = "INTERNAL"
            context.abort(grpc.StatusCode.INTERNAL, public_message(f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            self.in_flight.add(-1)
            if metrics is not None:
                metrics.in_flight.labels("GRPC").dec()
                metrics.observe(request.model_spec.name, api, "GRPC", code, time.monotonic() - t0)

    wrapper.__name__ = fn.__name__
    return wrapper


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService over a ModelRegistry.

    Args:
        registry: the models.
        metrics: a ``rnnkit.serving.metrics.Metrics`` to count calls in, or None.
    """

    def __init__(self, registry: ModelRegistry, metrics=None, in_flight: InFlight | None = None):
        self.registry = registry
        self.metrics = metrics
        self.in_flight = in_flight or InFlight()

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
        outputs = model.run(key, arrays, request.output_filter, deadline=_deadline(context))
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
    """tensorflow.serving.ModelService.GetModelStatus over a ModelRegistry.

    Args:
        registry: the models.
        metrics: a ``rnnkit.serving.metrics.Metrics`` to count calls in, or None.
    """

    def __init__(self, registry: ModelRegistry, metrics=None, in_flight: InFlight | None = None):
        self.registry = registry
        self.metrics = metrics
        self.in_flight = in_flight or InFlight()

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
    max_concurrent_rpcs: int | None = None,
    metrics=None,
) -> tuple[grpc.Server, int]:
    """A started-later gRPC server with both services bound to ``address``.

    Args:
        registry: the models.
        address: ``host:port`` to bind (port 0: any free one).
        max_workers: threads running calls.
        max_message_bytes: largest request / answer message.
        max_concurrent_rpcs: calls admitted at once (running or queued for a thread); more
            are answered RESOURCE_EXHAUSTED by grpcio. None: unbounded.
        metrics: a ``rnnkit.serving.metrics.Metrics`` to count calls in, or None.

    Returns:
        (server, bound port); ``server.in_flight`` (an ``InFlight``) counts calls in progress.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rnnkit-grpc"),
        maximum_concurrent_rpcs=max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )
    in_flight = InFlight()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(registry, metrics, in_flight), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(registry, metrics, in_flight), server)
    server.in_flight = in_flight
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind gRPC to {address}")
    return server, port
