"""TF Serving's REST API on uvicorn (+ Starlette): model status, metadata and predict.

Routes (as documented for tensorflow_model_server):
  GET  /v1/models/{name}[/versions/{v} | /labels/{l}]            -> model status
  GET  /v1/models/{name}[/versions/{v} | /labels/{l}]/metadata   -> signature defs
  POST /v1/models/{name}[/versions/{v} | /labels/{l}]:predict    -> predictions
Errors answer ``{"error": "..."}`` with a 4xx/5xx status.

``POST ...:predict`` is the hot path, so it is a plain ASGI handler in front of the
Starlette app: uvicorn (httptools) still parses the HTTP, but no middleware stack, router,
Request or Response objects are built per request. Everything else (status, metadata, 404s,
wrong methods) goes through Starlette. JSON is parsed and written with orjson when it is
installed (several times faster than the standard library for these small bodies); the
standard library takes over for what orjson does not accept (NaN / Infinity literals in a
request, non-finite floats in an answer, which TF Serving writes as NaN / Infinity), so the
answers and error messages do not depend on it. One difference: an integer literal beyond
64 bits reads as the nearest double with orjson (as in TF Serving's RapidJSON), as a Python
int without it; an integer input rejects it either way. The model never runs
on the event loop: without batching, decoding, the model call and encoding run in one of
``num_threads`` worker threads; with batching a small request is decoded on the loop and
handed straight to the batch threads.

Limits (what keeps an overloaded or abused server answering): at most ``max_pending``
predict requests are admitted at once (reading their body, waiting for a worker thread or
a batch, running); the next one gets 503 with ``Retry-After`` at once, without its body
being read. Each predict request has ``timeout_seconds`` (``--rest_api_timeout_in_ms``) from
its arrival: a client that has not sent its whole body by then gets 408 and its connection
is closed; a request not answered by then gets 504 (a request still queued is then
dropped, one already running finishes in its thread and keeps its slot until it does).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rnnkit.serving.codec import decode_rest_predict, encode_rest_predict, has_non_finite
from rnnkit.serving.errors import ServingError, invalid, not_found, overloaded, public_message
from rnnkit.serving.registry import ModelRegistry
from rnnkit.serving.status import metadata_response, status_response

try:  # optional speed-up; the standard library gives the same answers
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency, but serving must not need it
    orjson = None  # type: ignore[assignment]

log = logging.getLogger("rnnkit.serving")

_PATH = re.compile(
    r"^(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/metadata|:[A-Za-z]+)?$"
)
_PREFIX = "/v1/models/"

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
# With batching, bodies / outputs up to these sizes are decoded / encoded on the event loop
# (tens of microseconds); larger ones go to a worker thread so the loop stays responsive.
_INLINE_BODY_BYTES = 64 * 1024
_INLINE_OUTPUT_VALUES = 10_000

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


def default_num_threads() -> int:
    """Worker threads for predict calls (REST without batching; gRPC): 4 per CPU, at least 8.

    More threads than cores lets a slow model call overlap with others (TF releases the GIL),
    while a bound keeps dozens of concurrent requests from all running the model at once and
    fighting over the cores.
    """
    return max(8, 4 * (os.cpu_count() or 1))


def loads_json(raw: bytes) -> Any:
    """Parse a request body; a ServingError naming the problem if it is not JSON."""
    if orjson is not None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # NaN / Infinity literals, or truly malformed: let json decide
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid(f"malformed JSON request body: {exc}") from None


def dumps_json(obj: Any, allow_orjson: bool = True) -> bytes:
    """Compact JSON bytes. NaN / Infinity are written as literals (as TF Serving does), which
    orjson would turn into null, so callers pass ``allow_orjson=False`` when outputs hold them."""
    if orjson is not None and allow_orjson:
        try:
            return orjson.dumps(obj)
        except (orjson.JSONEncodeError, TypeError):
            pass  # e.g. integers beyond 64 bits: the standard library writes them
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def _error_body(exc: ServingError) -> bytes:
    return dumps_json({"error": public_message(exc.message)})


def default_max_pending(num_threads: int) -> int:
    """Requests admitted at once by default (REST predict; gRPC calls): four per worker
    thread, at least 64, so a burst waits briefly in a short queue instead of being refused,
    and a flood is refused at once instead of queueing without bound."""
    return max(64, 4 * num_threads)


def build_app(
    registry: ModelRegistry,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    num_threads: int | None = None,
    max_pending: int | None = None,
    timeout_seconds: float | None = 30.0,
    metrics=None,
    metrics_path: str | None = None,
) -> ASGIApp:
    """The ASGI app serving ``registry`` with TF Serving's REST routes.

    Args:
        registry: the loaded models.
        max_body_bytes: requests with a larger body get 413 and are not read further.
        num_threads: worker threads that run predict calls without batching (TF Serving's
            ``--rest_api_num_threads``); None: ``default_num_threads()``.
        max_pending: predict requests admitted at once; more get 503 (retryable). None:
            ``default_max_pending(num_threads)``.
        timeout_seconds: per predict request, from arrival to answer (TF Serving's
            ``--rest_api_timeout_in_ms``); None or <= 0: no limit.
        metrics: a ``rnnkit.serving.metrics.Metrics`` to count requests in, or None.
        metrics_path: GET path answering the Prometheus text (needs ``metrics``).
    """
    threads = num_threads or default_num_threads()
    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rnnkit-rest")
    limit = max_pending or default_max_pending(threads)
    timeout = timeout_seconds if timeout_seconds and timeout_seconds > 0 else None
    admitted = [0]  # predict requests admitted and not finished (event loop and worker threads)
    admitted_lock = threading.Lock()

    def release() -> None:
        with admitted_lock:
            admitted[0] -= 1
        if metrics is not None:
            metrics.in_flight.labels("REST").dec()

    def resolve(m: re.Match) -> tuple[str, int | None, str | None]:
        name, version, label = m["name"], m["version"], m["label"]
        v = None
        if version is not None:
            if not version.isdigit():
                raise invalid(f"version must be a non-negative integer, got {version!r}")
            v = int(version)
        return name, v, label

    def decode(name: str, version: int | None, label: str | None, raw: bytes):
        body = loads_json(raw)
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
        return dumps_json(encode_rest_predict(outputs, fmt), allow_orjson=not has_non_finite(outputs))

    def predict_sync(name: str, version: int | None, label: str | None, raw: bytes, deadline: float | None) -> bytes:
        model, key, inputs, fmt = decode(name, version, label, raw)
        return encode(model.run(key, inputs, deadline=deadline), fmt)

    async def in_thread(fn, *args, deadline: float | None):
        """Run ``fn(*args)`` in a worker thread, waiting at most until ``deadline``."""
        fut = asyncio.wrap_future(executor.submit(fn, *args))
        if deadline is None:
            return await fut
        try:
            return await asyncio.wait_for(fut, max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            # a queued call was cancelled with the wait; a running one finishes unobserved
            raise ServingError("DEADLINE_EXCEEDED", f"no answer within the request timeout ({timeout:g} s)") from None

    async def predict_batched(name: str, version: int | None, label: str | None, raw: bytes, deadline: float | None) -> bytes:
        """With batching, a small request: decoded on the event loop and queued for the batch
        threads directly, no worker-thread hop. The model call itself never runs on the loop.
        (Everything else, large bodies or no batching, goes to a worker thread as a whole:
        ``run_counted``.)"""
        model, key, inputs, fmt = decode(name, version, label, raw)
        pending = model.submit_async(key, inputs)
        if pending is None:  # not batchable: run it alone in a worker thread
            return await in_thread(lambda: encode(model.run(key, inputs, deadline=deadline), fmt), deadline=deadline)
        try:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            outputs = await asyncio.wait_for(pending, left)
        except TimeoutError:
            raise ServingError("DEADLINE_EXCEEDED", f"no answer within the request timeout ({timeout:g} s)") from None
        if sum(v.size for v in outputs.values()) <= _INLINE_OUTPUT_VALUES:
            return encode(outputs, fmt)
        return await in_thread(encode, outputs, fmt, deadline=None)

    async def read_body(scope: dict, receive) -> bytes | None:
        """The request body, refusing more than ``max_body_bytes`` without buffering the
        excess; None if the client went away."""
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    raise invalid("invalid Content-Length header") from None
                if declared > max_body_bytes:
                    raise ServingError("RESOURCE_EXHAUSTED", f"request body is {declared} bytes; the limit is {max_body_bytes} bytes")
                break
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            chunk = msg.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > max_body_bytes:
                    raise ServingError("RESOURCE_EXHAUSTED", f"request body exceeds the limit of {max_body_bytes} bytes")
                chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def send_json(send, status: int, payload: bytes, extra_headers: tuple = ()) -> None:
        await send({
            "type": "http.response.start", "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                        *extra_headers],
        })
        await send({"type": "http.response.body", "body": payload})

    async def predict_endpoint(m: re.Match, scope: dict, receive, send) -> None:
        t0 = time.monotonic()
        deadline = None if timeout is None else t0 + timeout
        headers: tuple = ()
        code = "OK"
        with admitted_lock:
            full = admitted[0] >= limit
            if not full:
                admitted[0] += 1
        if full:
            exc = overloaded(f"server busy: {limit} predict requests in progress (--rest_api_max_pending_requests); retry")
            if metrics is not None:
                metrics.observe(m["name"], "predict", "REST", exc.code, time.monotonic() - t0)
            await send_json(send, exc.http_status, _error_body(exc), ((b"retry-after", b"1"),))
            return
        if metrics is not None:
            metrics.in_flight.labels("REST").inc()
        released = False
        try:
            name, version, label = resolve(m)
            try:
                left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                raw = await asyncio.wait_for(read_body(scope, receive), left)
            except TimeoutError:
                code = "DEADLINE_EXCEEDED"
                # a stalled upload: answer, and close the connection it holds
                exc = ServingError("DEADLINE_EXCEEDED", f"request body not received within the request timeout ({timeout:g} s)",
                                   http_status=408)
                status, payload, headers = 408, _error_body(exc), ((b"connection", b"close"),)
            else:
                if raw is None:
                    code = "CANCELLED"
                    return  # the client disconnected: nobody to answer
                if registry.batching is None or len(raw) > _INLINE_BODY_BYTES:
                    # the worker thread releases the slot when it really ends (below)
                    released = True
                    status, payload = 200, await run_counted(name, version, label, raw, deadline)
                else:
                    status, payload = 200, await predict_batched(name, version, label, raw, deadline)
        except ServingError as exc:
            code = exc.code
            status, payload = exc.http_status, _error_body(exc)
            if exc.retryable:
                headers = ((b"retry-after", b"1"),)
        except Exception as exc:  # never let one request take the server down
            log.exception("unexpected error for %s", scope["path"])
            code = "INTERNAL"
            status, payload = 500, dumps_json({"error": public_message(f"internal error: {type(exc).__name__}: {exc}")})
        finally:
            if not released:
                release()
            if metrics is not None:
                metrics.observe(m["name"], "predict", "REST", code, time.monotonic() - t0)
        await send_json(send, status, payload, headers)

    async def run_counted(name: str, version: int | None, label: str | None, raw: bytes, deadline: float | None) -> bytes:
        """Decode, run and encode in a worker thread whose admission slot is released when the thread
        finishes (or the queued call is cancelled), not when the client is answered: a
        timed-out call still running keeps counting against the limit."""
        cf = executor.submit(predict_sync, name, version, label, raw, deadline)
        cf.add_done_callback(lambda _f: release())
        fut = asyncio.wrap_future(cf)
        if deadline is None:
            return await fut
        try:
            return await asyncio.wait_for(fut, max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            raise ServingError("DEADLINE_EXCEEDED", f"no answer within the request timeout ({timeout:g} s)") from None

    async def models(request: Request) -> Response:
        m = _PATH.match(request.path_params["path"])
        try:
            if m is None:
                raise not_found(f"malformed model path {request.url.path!r}")
            name, version, label = resolve(m)
            tail = m["tail"]
            if tail == ":predict":  # POSTs never get here (see app below)
                return JSONResponse({"error": "use POST for :predict"}, status_code=405)
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
            return JSONResponse({"error": public_message(exc.message)}, status_code=exc.http_status)
        except Exception as exc:  # never let one request take the server down
            log.exception("unexpected error for %s", request.url.path)
            return JSONResponse({"error": public_message(f"internal error: {type(exc).__name__}: {exc}")}, status_code=500)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return JSONResponse({"error": f"{exc.detail}: {request.method} {request.url.path}"}, status_code=exc.status_code)

    routes = [Route("/v1/models/{path:path}", models, methods=["GET", "POST"])]
    starlette_app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})

    async def serve_metrics(send) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST

        body = metrics.exposition()
        await send({
            "type": "http.response.start", "status": 200,
            "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode()), (b"content-length", str(len(body)).encode())],
        })
        await send({"type": "http.response.body", "body": body})

    async def app(scope: dict, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith(_PREFIX) and path.endswith(":predict"):
                m = _PATH.match(path[len(_PREFIX):])
                if m is not None:
                    await predict_endpoint(m, scope, receive, send)
                    return
        elif scope["type"] == "http" and metrics_path and scope["path"] == metrics_path and scope["method"] == "GET":
            await serve_metrics(send)
            return
        await starlette_app(scope, receive, send)

    app.executor = executor  # type: ignore[attr-defined]  (shut down by the server on exit)
    app.admitted = lambda: admitted[0]  # type: ignore[attr-defined]  (requests not finished, for the exit)
    return app
