"""One error type for the server, carrying a gRPC-style code that maps to HTTP and gRPC."""

from __future__ import annotations

# canonical code -> HTTP status, as TF Serving's REST front maps tensorflow::error codes
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 413,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "INTERNAL": 500,
}


class ServingError(Exception):
    """A request that cannot be answered; ``code`` is a canonical gRPC status name.

    Args:
        code: one of HTTP_STATUS's keys.
        message: what is wrong, naming the offending model / input / value.
    """

    def __init__(self, code: str, message: str):
        if code not in HTTP_STATUS:
            raise ValueError(f"unknown status code {code}")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        """The HTTP status the REST front answers with."""
        return HTTP_STATUS[self.code]

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
