"""Batch inference over many inputs of different lengths, in length order.

Sorting by length keeps the padding inside each batch small (an RNN pays for every padded
step) and keeps the number of distinct batch shapes low; results come back in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["map_by_length"]

T = TypeVar("T")


def map_by_length(
    fn: Callable[[list[T]], Sequence[Any]],
    items: Sequence[T],
    *,
    batch_size: int,
    length: Callable[[T], int] = len,
    desc: str | None = None,
) -> list[Any]:
    """Apply ``fn`` to batches of ``items`` taken in length order; return results in input order.

    Args:
        fn: maps a list of items to a sequence of results, one per item, in the same order
            (e.g. a batch of texts to their probabilities).
        items: the inputs.
        batch_size: items per call of ``fn``.
        length: the length of one item (default ``len``).
        desc: a progress-bar label (tqdm); None shows no bar.

    Raises:
        ValueError: ``batch_size`` < 1, or ``fn`` returned the wrong number of results.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(items)), key=lambda i: length(items[i]))
    results: list[Any] = [None] * len(items)
    starts = range(0, len(order), batch_size)
    if desc is not None:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, unit="batch", leave=False)
    for start in starts:
        idx = order[start:start + batch_size]
        out = fn([items[i] for i in idx])
        if len(out) != len(idx):
            raise ValueError(f"fn returned {len(out)} results for a batch of {len(idx)}")
        for i, value in zip(idx, out):
            results[i] = value
    return results
