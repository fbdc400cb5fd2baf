"""Quiet by default: a command prints its own progress and answer, not TensorFlow's.

TensorFlow's C++ runtime logs about ten lines when it is imported (CUDA probing, oneDNN,
CPU features). ``TF_CPP_MIN_LOG_LEVEL`` hides some, but only when it is set before
TensorFlow is imported; the rest are written by absl before its logging is initialised,
which no setting reaches. So when the process is the ``rnnkit`` command (or
``python -m apps.<app>`` / ``python -m rnnkit.cli``) without ``--verbose``,
``import rnnkit`` calls :func:`quiet_startup` first: it sets ``TF_CPP_MIN_LOG_LEVEL``
and imports TensorFlow once with file descriptor 2 pointed at /dev/null (Python errors
still raise). A library user's own program is left alone.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

__all__ = ["configure_logging", "is_quiet_command", "quiet_startup"]

_VERBOSE_FLAGS = ("-v", "--verbose")


def is_quiet_command(argv: list[str] | None = None) -> bool:
    """Whether this process is an rnnkit command run without ``--verbose``.

    Args:
        argv: the process's arguments (default ``sys.argv``).
    """
    argv = sys.argv if argv is None else argv
    if not argv or any(a in _VERBOSE_FLAGS for a in argv[1:]):
        return False
    program = Path(argv[0])
    if program.name == "rnnkit" or argv[0] == "-m":  # the console script; python -m rnnkit.cli
        return True
    # python -m apps.<app>: rnnkit is imported while argv[0] is the app's __main__.py
    return program.name == "__main__.py" and program.parent.parent.name in ("apps", "rnnkit_apps")


def quiet_startup() -> None:
    """Hide TensorFlow's start-up logs: set its log level and import it with fd 2 silenced."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # 3: its start-up "errors" (no CUDA) too
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401  (the import is the point)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def configure_logging(verbose: bool = False) -> None:
    """Set up Python logging for a command-line run.

    Args:
        verbose: debug logging; otherwise the chatty libraries log warnings only.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if verbose:
        return
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    # TFDS, absl and TensorFlow log every file they open at INFO: too chatty.
    for name in ("absl", "tensorflow", "h5py", "matplotlib", "PIL", "numba"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
