"""GetModelStatus / GetModelMetadata answers, shared by the REST and gRPC fronts."""

from __future__ import annotations

from typing import Any

from rnnkit.serving.registry import LoadedVersion, ModelRegistry

_STATE_ENUM = {"UNKNOWN": 0, "START": 10, "LOADING": 20, "AVAILABLE": 30, "UNLOADING": 40, "END": 50}


def status_response(registry: ModelRegistry, name: str, version: int | None, as_json: bool = False) -> Any:
    """TF Serving's GetModelStatusResponse (or, with ``as_json``, its REST JSON) for a model.

    Raises:
        ServingError: NOT_FOUND for an unknown model or version.
    """
    from google.protobuf import json_format
    from tensorflow.core.protobuf import error_codes_pb2
    from tensorflow_serving.apis import get_model_status_pb2

    resp = get_model_status_pb2.GetModelStatusResponse()
    for v, st in registry.statuses(name, version):
        mvs = resp.model_version_status.add()
        mvs.version = v
        mvs.state = _STATE_ENUM[st.state]
        mvs.status.error_code = error_codes_pb2.Code.Value(st.error_code)
        mvs.status.error_message = st.error_message
    if not as_json:
        return resp
    return json_format.MessageToDict(
        resp, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def signature_def_map(model: LoadedVersion):
    """The model's SignatureDefMap proto (what GetModelMetadata's ``signature_def`` holds)."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    m = get_model_metadata_pb2.SignatureDefMap()
    for k, sig in model.signature_defs.items():
        m.signature_def[k].CopyFrom(sig)
    return m


def metadata_response(model: LoadedVersion, as_json: bool = False) -> Any:
    """TF Serving's GetModelMetadataResponse for ``signature_def`` (or its REST JSON)."""
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    sdm = signature_def_map(model)
    if as_json:
        return {
            "model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
            "metadata": {
                "signature_def": json_format.MessageToDict(
                    sdm, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
                )
            },
        }
    resp = get_model_metadata_pb2.GetModelMetadataResponse()
    resp.model_spec.name = model.name
    resp.model_spec.version.value = model.version
    resp.metadata["signature_def"].Pack(sdm)
    return resp
