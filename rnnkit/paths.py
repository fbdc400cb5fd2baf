"""Where rnnkit keeps downloads, prepared datasets, runs and exports.

Every location is derived here so apps never hard-code paths:

* ``$RNNKIT_CACHE`` (default ``~/.cache/rnnkit``): raw downloads (``raw/``), extracted
  Debian packages (``deb/<name>/``), TFDS data (``tfds/``), converted weights (``weights/``).
* ``runs/<app>`` (relative to the working directory): checkpoints, logs, the trained model.
* ``saved_models/<app>`` (or ``$RNNKIT_SAVED_MODELS/<app>``): TF Serving exports.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "cache_dir",
    "default_output_dir",
    "raw_dir",
    "reports_dir",
    "run_dir",
    "saved_models_dir",
    "tfds_dir",
    "weights_dir",
]


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Return the data cache root (``$RNNKIT_CACHE`` or ``~/.cache/rnnkit``), created."""
    root = os.environ.get("RNNKIT_CACHE")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "rnnkit"
    return _ensure(path.resolve())


def raw_dir() -> Path:
    """Return ``<cache>/raw``: downloaded wheels, archives and files, created."""
    return _ensure(cache_dir() / "raw")


def tfds_dir() -> Path:
    """Return ``<cache>/tfds``: the ``data_dir`` every rnnkit TFDS builder uses, created."""
    return _ensure(cache_dir() / "tfds")


def weights_dir() -> Path:
    """Return ``<cache>/weights``: converted pretrained weights, created."""
    return _ensure(cache_dir() / "weights")


def default_output_dir(app: str) -> Path:
    """Return the default run folder of ``app``: ``runs/<app>`` relative to the cwd.

    Args:
        app: the app's package name, e.g. ``"sentiment"``.
    """
    return Path("runs") / app


# The architecture document names it run_dir; keep both spellings.
run_dir = default_output_dir


def reports_dir(output_dir: str | os.PathLike[str]) -> Path:
    """Return ``<output_dir>/reports`` (metrics.json and PNG figures), created.

    Args:
        output_dir: a run folder, e.g. the value of ``--output``.
    """
    return _ensure(Path(output_dir) / "reports")


def saved_models_dir(app: str) -> Path:
    """Return the export base of ``app``: ``saved_models/<app>`` (TF Serving layout).

    Relative to the working directory unless ``$RNNKIT_SAVED_MODELS`` names another root.
    Not created: exporting creates it, reading a missing one is an error the caller reports.

    Args:
        app: the app's package name, e.g. ``"sentiment"``.
    """
    root = os.environ.get("RNNKIT_SAVED_MODELS")
    return (Path(root).expanduser() if root else Path("saved_models")) / app
