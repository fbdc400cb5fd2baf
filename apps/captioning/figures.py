"""PNG figures of the captioning app: the evaluation grid and ``predict --plot``."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from rnnkit.reports import save_figure


def _save(fig, path: str | Path) -> Path:
    return save_figure(fig, path, dpi=110)


def plot_examples(images: Sequence[np.ndarray], generated: Sequence[str],
                  references: Sequence[str], baseline: Sequence[str], path: str | Path,
                  title: str = "", cols: int = 4) -> Path:
    """A grid of pictures, each with its generated, reference and baseline captions.

    Args:
        images: uint8 RGB pictures.
        generated: the model's captions.
        references: the reference captions.
        baseline: the nearest-neighbour captions.
        path: the PNG to write (atomically).
        title: the figure title.
        cols: pictures per row.
    """
    n = len(images)
    rows = max(1, (n + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 4.9 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, gen, ref, nn in zip(axes.ravel(), images, generated, references, baseline):
        ax.imshow(img)
        ok = gen == ref
        text = "\n".join([
            "model: " + textwrap.shorten(gen, 46, placeholder=" ..."),
            "ref:   " + textwrap.shorten(ref, 46, placeholder=" ..."),
            "NN:    " + textwrap.shorten(nn, 46, placeholder=" ...")])
        ax.set_title(text, fontsize=7.5, loc="left", family="monospace",
                     color="darkgreen" if ok else "black")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_prediction(image: np.ndarray, caption: str, path: str | Path,
                    attention: np.ndarray | None = None, score: float | None = None) -> Path:
    """The picture with its caption and, when given, one attention map per word.

    Args:
        image: uint8 RGB picture (any size).
        caption: the generated caption.
        path: the PNG to write (atomically).
        attention: (words, cells) attention weights over a square grid of cells, or None.
        score: the caption's score, shown in the title.
    """
    words = caption.split()
    maps = 0 if attention is None else min(len(words), attention.shape[0], 8)
    fig, axes = plt.subplots(1, 1 + maps, figsize=(4 + 2.2 * maps, 4.4), squeeze=False)
    ax0 = axes[0, 0]
    ax0.imshow(image)
    ax0.axis("off")
    head = textwrap.fill(caption or "(empty caption)", 40)
    ax0.set_title(head + (f"\nscore {score:.3f}" if score is not None else ""), fontsize=10)
    h, w = image.shape[:2]
    for k in range(maps):
        ax = axes[0, 1 + k]
        cells = attention.shape[1]
        g = int(round(np.sqrt(cells)))
        ax.imshow(image)
        ax.imshow(attention[k].reshape(g, g), cmap="magma", alpha=0.55,
                  extent=(0, w, h, 0), interpolation="bilinear")
        ax.set_title(words[k], fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)
