"""Quiet by default: a command prints its own progress and answer, not TensorFlow's.

TensorFlow's C++ runtime logs about ten lines when it is imported (CUDA probing, oneDNN,
CPU features). ``TF_CPP_MIN_LOG_LEVEL`` hides some; the rest are written by absl before
its logging is initialised, which no setting reaches, so :func:`configure_logging`
imports TensorFlow once with the process's stderr pointed at /dev/null. It must run
before anything else imports TensorFlow, which is why ``rnnkit`` (the package) imports
TensorFlow only when the layer is first used.
"""

from __future__ import annotations

import logging
import os
import warnings

__all__ = ["configure_logging"]


def configure_logging(verbose: bool = False) -> None:
    """Set up Python logging and TensorFlow's log level for a command-line run.

    Args:
        verbose: show debug logging and TensorFlow's own start-up logs.
    """
    if not verbose:
        # 3 = errors hidden too: the start-up "errors" (no CUDA driver) are not ours to show;
        # real failures still reach the user as Python exceptions.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        # TFDS, absl and TensorFlow log every file they open at INFO: too chatty.
        for name in ("absl", "tensorflow", "h5py", "matplotlib", "PIL", "numba"):
            logging.getLogger(name).setLevel(logging.WARNING)
        _import_tensorflow_quietly()


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 silenced (Python errors still raise)."""
    import sys

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
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
