"""CNN features of every picture: computed once by the frozen backbone, cached as ``.npz``.

The decoder never sees pixels in training: ``prepare`` runs the backbone once per picture
and caches the grid (float16, ``(N, cells, C)``) and the pooled vector (float32,
``(N, C)``) under ``<cache>/features/<data>-<split>-<backbone>.npz``, so an epoch costs
only the decoder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from rnnkit.errors import DataError

from . import formats
from .splits import Split, iter_images

__all__ = ["Prepared", "cached_features", "compute_features", "load_cached_features",
           "prepare_features"]


@dataclasses.dataclass
class Prepared:
    """Splits plus their cached CNN features.

    Attributes:
        splits: split name -> :class:`.splits.Split`.
        grid: split name -> float16 (N, cells, C).
        pooled: split name -> float32 (N, C).
        backbone: the backbone's name.
    """

    splits: dict
    grid: dict
    pooled: dict
    backbone: str


def prepare_features(spec: str | None, quick: bool, limit: int | None, seed: int,
                     backbone_name: str) -> Prepared:
    """Loads (building if needed) the data and the cached features of every split.

    Args:
        spec: ``--data`` value.
        quick: the smaller Tux Paint recipe.
        limit: at most this many pictures per split.
        seed: seed for user-data splits.
        backbone_name: ``--backbone`` (a short name such as ``lite2`` is expanded).
    """
    from rnnkit.backbones import canonical_name, get_backbone

    from .extra_drawings import parse_extras

    backbone_name = canonical_name(backbone_name)
    extras = parse_extras(spec)
    if extras:
        return _with_extras(extras, quick, limit, seed, backbone_name)
    splits = formats.load_splits(spec, quick=quick, limit=limit, seed=seed)
    name = formats.dataset_name(spec, quick, limit)
    grid, pooled = {}, {}
    backbone = None
    for split_name, split in splits.items():
        if len(split) == 0:
            raise DataError(f"the {split_name} split of {spec or 'tuxpaint'} is empty")
        key = f"{name}-{split_name}-{backbone_name}"
        try:
            grid[split_name], pooled[split_name] = load_cached_features(key, len(split))
        except FileNotFoundError:
            if backbone is None:
                backbone = get_backbone(backbone_name)
            grid[split_name], pooled[split_name] = cached_features(split, key, backbone)
    return Prepared(splits, grid, pooled, backbone_name)


def _with_extras(extras: tuple[str, ...], quick: bool, limit: int | None, seed: int,
                 backbone_name: str) -> Prepared:
    """Tux Paint's splits and features with each extra source's training pictures (and
    their features, cached per source) appended to the training split."""
    from rnnkit.backbones import get_backbone

    from .extra_drawings import extra_training_split
    from .splits import limit_split

    prep = prepare_features(None, quick, limit, seed, backbone_name)
    train = prep.splits["train"]
    grids, pooled = [prep.grid["train"]], [prep.pooled["train"]]
    backbone = None
    for source in extras:
        extra = limit_split(extra_training_split(source), limit)
        key = f"extra-{source}-{limit or 'all'}-train-{backbone_name}"
        try:
            g, p = load_cached_features(key, len(extra))
        except FileNotFoundError:
            if backbone is None:
                backbone = get_backbone(backbone_name)
            g, p = cached_features(extra, key, backbone)
        grids.append(g)
        pooled.append(p)
        train = Split(train.images + extra.images, train.references + extra.references,
                      train.kinds + extra.kinds, train.heads + extra.heads,
                      train.stamps + extra.stamps)
    prep.splits["train"] = train
    prep.grid["train"] = np.concatenate(grids)
    prep.pooled["train"] = np.concatenate(pooled)
    return prep


def compute_features(split: Split, backbone, batch_size: int = 32,
                     desc: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Runs the frozen backbone over a split: (grid float16 (N, g*g, C), pooled float32 (N, C)).

    Args:
        split: the pictures.
        backbone: a :class:`rnnkit.backbones.Backbone`.
        batch_size: pictures per CNN call.
        desc: progress-bar label.
    """
    import tensorflow as tf
    from tqdm import tqdm

    size = backbone.image_size
    fn = tf.function(lambda x: backbone(x),
                     input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
    grids, pooled = [], []
    batch: list[np.ndarray] = []
    bar = tqdm(total=len(split), desc=desc, unit="img", mininterval=2.0)

    def flush():
        g, p = fn(tf.constant(np.stack(batch).astype(np.float32)))
        g = g.numpy()
        grids.append(g.reshape(g.shape[0], -1, g.shape[-1]).astype(np.float16))
        pooled.append(p.numpy().astype(np.float32))
        bar.update(len(batch))
        batch.clear()

    for img in iter_images(split, backbone.image_size):
        batch.append(img)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    bar.close()
    if not grids:
        raise DataError(f"{desc}: the split is empty")
    return np.concatenate(grids), np.concatenate(pooled)


def _features_path(key: str) -> Path:
    from rnnkit import paths

    return paths.cache_dir() / "features" / f"{key}.npz"


def load_cached_features(key: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Cached (grid, pooled) for ``key`` holding ``n`` pictures.

    Raises:
        FileNotFoundError: when not cached yet (or cached for a different picture count).
    """
    target = _features_path(key)
    if target.exists():
        with np.load(target) as z:
            if int(z["n"]) == n:
                return z["grid"], z["pooled"]
    raise FileNotFoundError(f"no cached features {target}")


def cached_features(split: Split, key: str, backbone, batch_size: int = 32
                    ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`compute_features`, cached as ``<cache>/features/<key>.npz`` (written atomically).

    Args:
        split: the pictures.
        key: a unique name (dataset, split, backbone).
        backbone: the backbone.
        batch_size: pictures per CNN call.
    """
    from rnnkit.atomic import atomic_path

    try:
        return load_cached_features(key, len(split))
    except FileNotFoundError:
        pass
    target = _features_path(key)
    grid, pooled = compute_features(split, backbone, batch_size, desc=key)
    with atomic_path(target, suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, grid=grid, pooled=pooled, n=np.int64(len(split)))
    return grid, pooled
