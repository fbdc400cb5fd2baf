"""``rnnkit serve``: a TF-Serving-compatible REST + gRPC server for rnnkit's SavedModels.

Import stays light: the server (TensorFlow, Starlette, grpcio) is loaded only by ``main``.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``rnnkit serve ...``; see ``rnnkit.serving.server.main``."""
    from rnnkit.serving.server import main as _main

    return _main(argv)


__all__ = ["main"]
