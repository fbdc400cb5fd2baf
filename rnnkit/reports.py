"""Evaluation reports: metrics.json and PNG figures, written atomically.

Figures use matplotlib's Agg backend (no display needed) and are rendered to memory
first, so a crash never leaves a truncated PNG.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from rnnkit.atomic import atomic_write_bytes, atomic_write_json

__all__ = ["format_headline", "plot_confusion_matrix", "plot_history", "save_figure",
           "write_metrics"]


def write_metrics(report_dir: str | os.PathLike[str], metrics: Mapping[str, Any]) -> Path:
    """Write ``metrics`` to ``<report_dir>/metrics.json`` atomically and return the path.

    Args:
        report_dir: the reports folder (``rnnkit.paths.reports_dir(output)``), created.
        metrics: JSON-serialisable values (numpy scalars and arrays allowed).
    """
    return atomic_write_json(Path(report_dir) / "metrics.json", dict(metrics))


def save_figure(fig: plt.Figure, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    """Render ``fig`` to PNG in memory, close it, and write it to ``path`` atomically.

    Args:
        fig: a matplotlib figure.
        path: the PNG file to write.
        dpi: the resolution.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def plot_history(
    history: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    title: str | None = None,
) -> Path:
    """Plot training curves: one panel per metric, train and validation together.

    ``history`` is Keras' history dict (``{"loss": [...], "val_loss": [...], ...}``) or the
    ``"history"`` entry of ``history.json``. The learning rate, if logged, gets its own panel.

    Args:
        history: per-epoch values keyed by metric name.
        path: the PNG file to write.
        title: an optional figure title.
    """
    if "history" in history and isinstance(history["history"], Mapping):
        history = history["history"]  # accept the whole history.json object
    bases = [k for k in history if not k.startswith("val_")]
    if not bases:
        bases = [k[4:] for k in history]
    bases = list(dict.fromkeys(bases))
    fig, axes = plt.subplots(1, len(bases), figsize=(4.2 * len(bases), 3.4), squeeze=False)
    for ax, base in zip(axes[0], bases):
        for key, style in ((base, "-o"), (f"val_{base}", "-s")):
            values = history.get(key)
            if values:
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, markersize=3,
                        label="validation" if key.startswith("val_") else "train")
        ax.set_title(base)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_confusion_matrix(
    cm: np.ndarray | Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    title: str | None = None,
) -> Path:
    """Plot a confusion matrix (rows: true class, columns: predicted) with counts and %.

    Args:
        cm: square matrix of counts, ``cm[true, predicted]``.
        class_names: one name per class, in matrix order.
        path: the PNG file to write.
        title: an optional title.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(class_names):
        raise ValueError(f"confusion matrix of shape {cm.shape} does not match "
                         f"{len(class_names)} class names")
    totals = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=float), where=totals > 0)
    size = max(3.5, 0.6 * len(class_names) + 2.0)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45 if len(class_names) > 3 else 0, ha="right"
                  if len(class_names) > 3 else "center")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]:,}\n{share[i, j]:.1%}", ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black", fontsize=9)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


def format_headline(title: str, rows: Mapping[str, Any]) -> str:
    """Format headline figures as an aligned block for the terminal.

    Args:
        title: the first line.
        rows: label -> value; floats are printed with 4 decimals.
    """
    width = max((len(k) for k in rows), default=0)
    lines = [title]
    for key, value in rows.items():
        if isinstance(value, float) and not math.isnan(value):
            value = f"{value:.4f}"
        lines.append(f"  {key:<{width}}  {value}")
    return "\n".join(lines)
