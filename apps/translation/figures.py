"""The attention heat map (``evaluate``'s ``attention.png`` and ``predict --plot``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rnnkit.modeling.vocabulary import UNK

from .model import TextCodec


def output_words(codec: TextCodec, ids: np.ndarray, source_tokens: Sequence[str],
                 attention: np.ndarray) -> list[str]:
    """Readable words of extended ids (plot labels): copies name their source word and
    ``<unk>`` the most attended one, as the decoded sentence does."""
    words = []
    vocab_size = codec.target_size
    for t, i in enumerate(ids):
        if i >= vocab_size:
            j = int(i - vocab_size)
            words.append(source_tokens[j] if j < len(source_tokens) else "?")
        elif i == UNK and len(source_tokens):
            words.append(source_tokens[int(np.argmax(attention[t, : len(source_tokens)]))])
        else:
            words.append(codec.target_vocab.itos[int(i)])
    return words


def plot_attention(source_tokens: Sequence[str], target_tokens: Sequence[str],
                   weights: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Heat map of attention weights (rows: output words, columns: source tokens).

    Args:
        source_tokens: the column labels (Spanish tokens, end token included).
        target_tokens: the row labels (English output words).
        weights: ``(len(target_tokens), len(source_tokens))`` attention weights.
        path: the PNG to write (atomically).
        title: the figure title (the translation).
    """
    import matplotlib.pyplot as plt

    from rnnkit.reports import save_figure

    fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(source_tokens) + 2),
                                    max(3, 0.4 * len(target_tokens) + 1.5)))
    ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(source_tokens)), source_tokens, rotation=60, ha="right")
    ax.set_yticks(range(len(target_tokens)), target_tokens)
    ax.set_xlabel("Spanish (source)")
    ax.set_ylabel("English (output)")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
