"""One error type for the server, carrying a gRPC-style code that maps to HTTP and gRPC."""

from __future__ import annotations

import re

# canonical code -> HTTP status, as TF Serving's REST front maps tensorflow::error codes
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 413,
    "DEADLINE_EXCEEDED": 504,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "INTERNAL": 500,
}

# Codes a client may retry unchanged (the same request can succeed later).
RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


class ServingError(Exception):
    """A request that cannot be answered; ``code`` is a canonical gRPC status name.

    Args:
        code: one of HTTP_STATUS's keys.
        message: what is wrong, naming the offending model / input / value.
        http_status: the REST status when it differs from the code's usual one (a full
            queue is RESOURCE_EXHAUSTED for gRPC but 503, not 413, for REST).
        retryable: the same request may succeed later (REST adds ``Retry-After``).
    """

    def __init__(self, code: str, message: str, http_status: int | None = None, retryable: bool | None = None):
        if code not in HTTP_STATUS:
            raise ValueError(f"unknown status code {code}")
        super().__init__(message)
        self.code = code
        self.message = message
        self._http_status = http_status
        self.retryable = code in RETRYABLE if retryable is None else retryable

    @property
    def http_status(self) -> int:
        """The HTTP status the REST front answers with."""
        return self._http_status or HTTP_STATUS[self.code]

    @property
    def grpc_code(self):
        """The ``grpc.StatusCode`` the gRPC front aborts with."""
        import grpc

        return getattr(grpc.StatusCode, self.code)


def invalid(message: str) -> ServingError:
    """Shorthand for an INVALID_ARGUMENT error."""
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message: str) -> ServingError:
    """Shorthand for a NOT_FOUND error."""
    return ServingError("NOT_FOUND", message)


def overloaded(message: str) -> ServingError:
    """The server is full right now: RESOURCE_EXHAUSTED for gRPC, 503 for REST, retryable."""
    return ServingError("RESOURCE_EXHAUSTED", message, http_status=503, retryable=True)


# An absolute file path of two or more components (``/models/text/1/saved_model.pb``) or a
# file: URL, starting a word or following a quote / bracket / '=' / ':'.
_PATH = re.compile(r"(?:(?<=^)|(?<=[\s'\"(\[=:,]))(?:file://)?/[^\s'\"/,;()\[\]]+(?:/[^\s'\"/,;()\[\]]*)+")


def public_message(text: str) -> str:
    """``text`` with absolute server paths replaced by ``<path>``, for answers to clients.

    Errors from TensorFlow and the loader quote file names (``SavedModel file does not exist
    at: /srv/models/...``); the server's logs keep them, clients learn only what failed.

    Args:
        text: an error message.
    """
    return _PATH.sub("<path>", text)
