"""TF Serving's REST API on Starlette: model status, metadata and predict.

Routes (as documented for tensorflow_model_server):
  GET  /v1/models/{name}[/versions/{v} | /labels/{l}]            -> model status
  GET  /v1/models/{name}[/versions/{v} | /labels/{l}]/metadata   -> signature defs
  POST /v1/models/{name}[/versions/{v} | /labels/{l}]:predict    -> predictions
Errors answer ``{"error": "..."}`` with a 4xx/5xx status. Decoding, the model call and
encoding run in a worker thread so the event loop keeps accepting requests.
"""

from __future__ import annotations

import json
import logging
import re

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rnnkit.serving.codec import decode_rest_predict, encode_rest_predict
from rnnkit.serving.errors import ServingError, invalid, not_found
from rnnkit.serving.registry import ModelRegistry
from rnnkit.serving.status import metadata_response, status_response

log = logging.getLogger("rnnkit.serving")

_PATH = re.compile(
    r"^(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/metadata|:[A-Za-z]+)?$"
)

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
# With batching, bodies / outputs up to these sizes are decoded / encoded on the event loop
# (tens of microseconds); larger ones go to a worker thread so the loop stays responsive.
_INLINE_BODY_BYTES = 64 * 1024
_INLINE_OUTPUT_VALUES = 10_000


def _error(exc: ServingError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.http_status)


async def _read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing more than ``limit`` bytes without buffering the excess."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise ServingError("RESOURCE_EXHAUSTED", f"request body is {int(declared)} bytes; the limit is {limit} bytes")
        except ValueError:
            raise invalid("invalid Content-Length header") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServingError("RESOURCE_EXHAUSTED", f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(registry: ModelRegistry, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Starlette:
    """The Starlette app serving ``registry`` with TF Serving's REST routes.

    Args:
        registry: the loaded models.
        max_body_bytes: requests with a larger body get 413 and are not read further.
    """

    def resolve(m: re.Match) -> tuple[str, int | None, str | None]:
        name, version, label = m["name"], m["version"], m["label"]
        v = None
        if version is not None:
            if not version.isdigit():
                raise invalid(f"version must be a non-negative integer, got {version!r}")
            v = int(version)
        return name, v, label

    def decode(name: str, version: int | None, label: str | None, raw: bytes):
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise invalid(f"malformed JSON request body: {exc}") from None
        if not isinstance(body, dict):
            raise invalid("request body must be a JSON object with 'instances' or 'inputs'")
        sig_name = body.get("signature_name", "")
        if not isinstance(sig_name, str):
            raise invalid("'signature_name' must be a string")
        model = registry.get(name, version, label)
        key, sigdef = model.signature(sig_name)
        inputs, fmt = decode_rest_predict(body, sigdef, key)
        return model, key, inputs, fmt

    def encode(outputs, fmt: str) -> bytes:
        # allow_nan: TF Serving also writes NaN / Infinity literals for non-finite floats.
        return json.dumps(encode_rest_predict(outputs, fmt), separators=(",", ":")).encode("utf-8")

    def predict_sync(name: str, version: int | None, label: str | None, raw: bytes) -> bytes:
        model, key, inputs, fmt = decode(name, version, label, raw)
        return encode(model.run(key, inputs), fmt)

    async def predict(name: str, version: int | None, label: str | None, raw: bytes) -> bytes:
        # With batching, a small request is decoded on the event loop and queued for the
        # batch threads directly: no worker-thread hop per request. The model call itself
        # never runs on the loop. Everything else (large bodies, no batching) goes to a
        # worker thread as a whole.
        if len(raw) <= _INLINE_BODY_BYTES and registry.batching is not None:
            model, key, inputs, fmt = decode(name, version, label, raw)
            pending = model.submit_async(key, inputs)
            if pending is not None:
                outputs = await pending
                if sum(v.size for v in outputs.values()) <= _INLINE_OUTPUT_VALUES:
                    return encode(outputs, fmt)
                return await run_in_threadpool(encode, outputs, fmt)
            return await run_in_threadpool(lambda: encode(model.run(key, inputs), fmt))
        return await run_in_threadpool(predict_sync, name, version, label, raw)

    async def models(request: Request) -> Response:
        m = _PATH.match(request.path_params["path"])
        try:
            if m is None:
                raise not_found(f"malformed model path {request.url.path!r}")
            name, version, label = resolve(m)
            tail = m["tail"]
            if tail == ":predict":
                if request.method != "POST":
                    return JSONResponse({"error": "use POST for :predict"}, status_code=405)
                raw = await _read_body(request, max_body_bytes)
                payload = await predict(name, version, label, raw)
                return Response(payload, media_type="application/json")
            if tail is not None and tail.startswith(":"):
                if tail in (":classify", ":regress"):
                    raise ServingError("UNIMPLEMENTED", f"{tail[1:]} is not supported by rnnkit serve; use :predict")
                raise not_found(f"unknown method {tail!r}; expected :predict")
            if request.method != "GET":
                return JSONResponse({"error": f"use GET for {request.url.path}"}, status_code=405)
            if tail == "/metadata":
                model = registry.get(name, version, label)
                return JSONResponse(metadata_response(model, as_json=True))
            if label is not None:
                version = registry.get(name, None, label).version
            return JSONResponse(status_response(registry, name, version, as_json=True))
        except ServingError as exc:
            return _error(exc)
        except ClientDisconnect:
            return Response(status_code=499)
        except Exception as exc:  # never let one request take the server down
            log.exception("unexpected error for %s", request.url.path)
            return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return JSONResponse({"error": f"{exc.detail}: {request.method} {request.url.path}"}, status_code=exc.status_code)

    routes = [Route("/v1/models/{path:path}", models, methods=["GET", "POST"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})
