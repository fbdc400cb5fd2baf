"""One split of captioned pictures, whatever the data source, and reading its pictures."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator

import numpy as np

from .compositing import IMAGE_SIZE

__all__ = ["Split", "iter_images", "limit_split", "load_image_file", "picture"]


@dataclasses.dataclass
class Split:
    """One split as parallel lists (images are loaded lazily by :func:`iter_images`).

    Attributes:
        images: encoded image bytes (Tux Paint), uint8 arrays, or file paths (user data).
        references: reference captions per picture (one for Tux Paint, five for Flickr8k).
        kinds: "single", "scene" or "photo".
        heads: the single stamp's head noun ("" otherwise).
        stamps: component stamp ids per picture (empty for user data).
    """

    images: list
    references: list[list[str]]
    kinds: list[str]
    heads: list[str]
    stamps: list[list[str]]

    def __len__(self) -> int:
        return len(self.references)


def limit_split(split: Split, limit: int | None) -> Split:
    """The first ``limit`` pictures of ``split`` (all of them when ``limit`` is None)."""
    if limit is None or len(split) <= limit:
        return split
    return Split(*(getattr(split, f.name)[:limit] for f in dataclasses.fields(Split)))


def load_image_file(path, size: int = IMAGE_SIZE) -> np.ndarray:
    """Reads an image file as uint8 RGB resized to ``size`` (transparency composited on white)."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        im = im.convert("RGB").resize((size, size), Image.BILINEAR)
        return np.asarray(im)


def picture(split: Split, index: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """The ``index``-th picture of a split as uint8 RGB (size, size, 3)."""
    from PIL import Image

    img = split.images[index]
    if isinstance(img, (bytes, bytearray)):
        img = io.BytesIO(img)
    if isinstance(img, np.ndarray):
        if img.shape[:2] != (size, size):
            img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
        return img
    return load_image_file(img, size)


def iter_images(split: Split, size: int = IMAGE_SIZE) -> Iterator[np.ndarray]:
    """uint8 (size, size, 3) arrays of a split's pictures, in order."""
    for i in range(len(split)):
        yield picture(split, i, size)
