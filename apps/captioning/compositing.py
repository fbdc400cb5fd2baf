"""Compositing: cut-out pictures (RGBA) pasted onto generated backgrounds.

Every captioned picture of the default data is made here: one stamp on a background (a
*single*) or two or three side by side, left to right (a *scene*). The backgrounds are
plain, gradient, sky-and-ground or noisy, and each stamp gets a random scale and position,
so no two pictures of a stamp are alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .data import Stamp

__all__ = ["IMAGE_SIZE", "compose"]

IMAGE_SIZE = 224


def _background(rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """A random plain, gradient, sky-and-ground or textured background (uint8 RGB)."""
    kind = rng.integers(4)
    c1 = rng.integers(120, 256, 3)
    c2 = rng.integers(60, 256, 3)
    y = np.linspace(0.0, 1.0, size)[:, None, None]
    if kind == 0:
        img = np.broadcast_to(c1, (size, size, 3)).astype(np.float32)
    elif kind == 1:
        img = np.broadcast_to(c1 * (1 - y) + c2 * y, (size, size, 3)).astype(np.float32)
    elif kind == 2:
        horizon = int(size * rng.uniform(0.55, 0.8))
        sky = np.array([rng.integers(140, 210), rng.integers(180, 235), 255])
        ground = np.array([rng.integers(60, 140), rng.integers(120, 200), rng.integers(40, 110)])
        img = np.empty((size, size, 3), np.float32)
        img[:horizon], img[horizon:] = sky, ground
    else:
        img = np.broadcast_to(c1, (size, size, 3)).astype(np.float32)
        img = img + rng.normal(0, 12, (size, size, 1))
    return np.clip(img, 0, 255).astype(np.uint8)


def _load_rgba(path: str, cache: dict | None = None):
    from PIL import Image

    if cache is not None and path in cache:
        return cache[path]
    with Image.open(path) as im:
        im = im.convert("RGBA")
        # Trim transparent margins so the object, not empty space, fills its slot.
        bbox = im.getchannel("A").getbbox()
        if bbox:
            im = im.crop(bbox)
        im.load()
    if cache is not None:
        cache[path] = im
    return im


def _paste(canvas, stamp, box_w: int, box_h: int, x0: int, y0: int,
           rng: np.random.Generator) -> None:
    """Scales ``stamp`` to fit (box_w, box_h) and alpha-composites it at a random spot inside."""
    from PIL import Image

    w, h = stamp.size
    scale = min(box_w / w, box_h / h)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    resized = stamp.resize((nw, nh), Image.LANCZOS)
    x = x0 + int(rng.integers(0, max(1, box_w - nw + 1)))
    y = y0 + int(rng.integers(0, max(1, box_h - nh + 1)))
    canvas.alpha_composite(resized, (x, y))


def compose(stamps: Sequence[Stamp], rng: np.random.Generator,
            cache: dict | None = None, size: int = IMAGE_SIZE) -> np.ndarray:
    """Composites 1-3 stamps left to right onto a random background.

    One stamp fills 55-90% of the picture; with several, each gets an equal vertical slot
    (in the given order, left to right) and fills 75-95% of its width.

    Args:
        stamps: the stamps, left to right.
        rng: the random generator (background, scale, position).
        cache: optional dict caching decoded stamp pictures by path.
        size: output side in pixels.

    Returns:
        uint8 RGB array (size, size, 3).
    """
    from PIL import Image

    canvas = Image.fromarray(_background(rng, size)).convert("RGBA")
    n = len(stamps)
    if n == 1:
        side = int(size * rng.uniform(0.55, 0.9))
        off = (size - side) // 2
        jitter = int((size - side) / 2)
        x0 = off + int(rng.integers(-jitter, jitter + 1))
        y0 = off + int(rng.integers(-jitter, jitter + 1))
        _paste(canvas, _load_rgba(stamps[0].png, cache), side, side, x0, y0, rng)
    else:
        slot = size // n
        for i, s in enumerate(stamps):
            bw = int(slot * rng.uniform(0.75, 0.95))
            bh = min(size, int(bw * rng.uniform(1.0, 1.3)))
            x0 = i * slot + (slot - bw) // 2
            y0 = int(rng.integers(0, size - bh + 1))
            _paste(canvas, _load_rgba(s.png, cache), bw, bh, x0, y0, rng)
    return np.asarray(canvas.convert("RGB"))
