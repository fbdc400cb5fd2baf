"""Tux Paint's SVG-only stamps, rasterised into stamps like the PNG ones.

Of the 950 captioned stamps in Debian's ``tuxpaint-stamps-default``, 165 ship only as SVG
(two more have a caption and no picture at all); :func:`apps.captioning.data.list_stamps`
skips them. Here each SVG is rendered once with resvg (the ``resvg-py`` wheel: no system
library) to an RGBA PNG whose longer side is ``size`` pixels, cached under
``$RNNKIT_CACHE/tuxpaint-svg-stamps/<package version>-<size>px/``, and returned as a
:class:`apps.captioning.data.Stamp` with the caption and head noun the PNG stamps get
(first line of ``NAME.txt``, :func:`~apps.captioning.data.caption_phrase`,
:func:`~apps.captioning.data.head_noun`), so the compositing and scene code take them
unchanged. The same folders are left out as for the PNG stamps (letters, coins, signs).

The held-out split must not move when these are added: split the PNG stamps exactly as
before and give the SVG stamps to training only, without those whose caption is a held-out
stamp's (:func:`training_svg_stamps`).
"""

from __future__ import annotations

import dataclasses
import glob
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "SvgStamp",
    "find_svg_only",
    "rasterise",
    "svg_stamps",
    "training_svg_stamps",
]


@dataclasses.dataclass(frozen=True)
class SvgStamp:
    """A captioned stamp that ships as SVG only.

    Attributes:
        id: path relative to the stamps folder, without extension ("people/body_parts/ear").
        svg: absolute path of the SVG file.
        first_line: the first line of its ``NAME.txt`` (the English caption).
    """

    id: str
    svg: str
    first_line: str


def find_svg_only(root: str | os.PathLike[str]) -> tuple[list[SvgStamp], dict[str, int]]:
    """Every captioned stamp under ``root`` that has an SVG and no PNG.

    Args:
        root: the ``usr/share/tuxpaint/stamps`` folder.

    Returns:
        (stamps sorted by id, {"no_picture": n, "letters_coins_signs": n}): captions with
        neither picture, and SVGs in the folders the PNG stamps also leave out.
    """
    from .data import EXCLUDED_PREFIXES

    root = Path(root)
    found, dropped = [], {"no_picture": 0, "letters_coins_signs": 0}
    for txt in sorted(glob.glob(str(root / "**" / "*.txt"), recursive=True)):
        base = txt[:-4]
        if os.path.exists(base + ".png"):
            continue
        svg = base + ".svg"
        if not os.path.exists(svg):
            dropped["no_picture"] += 1
            continue
        rel = os.path.relpath(base, root).replace(os.sep, "/")
        if rel.startswith(EXCLUDED_PREFIXES):
            dropped["letters_coins_signs"] += 1
            continue
        with open(txt, encoding="utf-8", errors="replace") as f:
            found.append(SvgStamp(rel, svg, f.readline().strip()))
    return found, dropped


# CSS pixels per unit. resvg refuses a root <svg> sized in these units ("invalid size"),
# which 16 of the stamps use (Inkscape's "128pt", "21cm", "210mm").
_PX_PER_UNIT = {"pt": 4 / 3, "pc": 16.0, "in": 96.0, "cm": 96 / 2.54, "mm": 96 / 25.4}
_ROOT = re.compile(r"<svg\b[^>]*>")
_SIZE_ATTR = re.compile(r"\b(width|height)=([\"'])\s*([0-9.]+)\s*(pt|pc|in|cm|mm)\s*\2")


def _root_size_in_px(text: str) -> str:
    """The SVG text with the root element's width/height in absolute units turned into px."""
    m = _ROOT.search(text)
    if m is None:
        return text
    root = _SIZE_ATTR.sub(
        lambda g: f'{g[1]}="{float(g[3]) * _PX_PER_UNIT[g[4]]:.4g}"', m.group(0))
    return text[:m.start()] + root + text[m.end():]


def rasterise(svg_path: str | os.PathLike[str], size: int) -> bytes:
    """Renders an SVG file to RGBA PNG bytes whose longer side is ``size`` pixels.

    Relative ``xlink:href`` pictures are resolved next to the SVG; a root size in pt, pc,
    in, cm or mm is converted to px first (resvg refuses those).

    Args:
        svg_path: the SVG file.
        size: the longer side in pixels.

    Raises:
        ValueError: naming the file, when it cannot be parsed or renders empty.
    """
    import numpy as np
    import resvg_py
    from PIL import Image

    svg_path = str(svg_path)
    text = _root_size_in_px(Path(svg_path).read_text(encoding="utf-8", errors="replace"))
    common = {"svg_string": text, "resources_dir": os.path.dirname(svg_path)}
    try:
        png = bytes(resvg_py.svg_to_bytes(**common, width=size))
        with Image.open(io.BytesIO(png)) as im:
            h = im.size[1]
        if h > size:
            png = bytes(resvg_py.svg_to_bytes(**common, height=size))
        with Image.open(io.BytesIO(png)) as im:
            alpha = np.asarray(im.convert("RGBA"))[..., 3]
    except ValueError as exc:
        raise ValueError(f"{svg_path}: resvg cannot render it: {exc}") from exc
    if not alpha.any():
        raise ValueError(f"{svg_path}: renders fully transparent")
    return png


def _cache_folder(root: Path, size: int) -> Path:
    from rnnkit.paths import cache_dir

    # apt_package's marker holds the unpacked package's version, three folders above.
    marker = root.parents[3] / ".rnnkit-complete"
    version = marker.read_text().strip() if marker.exists() else "unknown"
    return cache_dir() / "tuxpaint-svg-stamps" / f"{version}-{size}px"


def svg_stamps(root: str | os.PathLike[str] | None = None, size: int = 256
               ) -> tuple[list, dict[str, int]]:
    """The SVG-only stamps as :class:`apps.captioning.data.Stamp` records with PNG pictures.

    Renders every SVG once (cached); later calls read the cache.

    Args:
        root: the stamps folder; None fetches it (:func:`apps.captioning.data.stamps_root`).
        size: the longer side of the rendered pictures in pixels (the PNG stamps are about
            130 px; compositing scales every stamp to its slot).

    Returns:
        (stamps sorted by id, counts of what was left out: ``no_picture``,
        ``letters_coins_signs``, ``no_caption``, ``long_caption``, ``render_failed``).

    Raises:
        ValueError: for a size below 16.
    """
    from . import data
    from rnnkit.atomic import atomic_directory

    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    root = Path(root) if root is not None else data.stamps_root()
    found, dropped = find_svg_only(root)
    dropped.update(no_caption=0, long_caption=0, render_failed=0)
    folder = _cache_folder(root, size)
    index = folder / "index.json"
    if not index.exists():
        with atomic_directory(folder, overwrite=True) as tmp:
            failed = {}
            for s in found:
                out = tmp / (s.id.replace("/", "__") + ".png")
                try:
                    out.write_bytes(rasterise(s.svg, size))
                except ValueError as exc:
                    failed[s.id] = str(exc)
            (tmp / "index.json").write_text(json.dumps({"failed": failed}, indent=1))
    failed = json.loads(index.read_text())["failed"]
    stamps = []
    for s in found:
        if s.id in failed:
            dropped["render_failed"] += 1
            continue
        phrase = data.caption_phrase(s.first_line)
        head = data.head_noun(phrase)
        if not phrase or head is None:
            dropped["no_caption"] += 1
            continue
        if len(phrase.split()) > data.MAX_CAPTION_WORDS:
            dropped["long_caption"] += 1
            continue
        png = folder / (s.id.replace("/", "__") + ".png")
        stamps.append(data.Stamp(s.id, str(png), phrase, head))
    return stamps, dropped


def training_svg_stamps(svg: Sequence, parts: Mapping[str, Sequence]) -> list:
    """The SVG stamps that may join training without touching the held-out split.

    Args:
        svg: stamps from :func:`svg_stamps`.
        parts: the PNG stamps' split (``data.split_stamps``: train/validation/test).

    Returns:
        The SVG stamps whose caption no validation or test stamp has (a stamp with the
        same caption would be the same thing drawn again, which the split keeps on one
        side).
    """
    held = {s.caption for name in ("validation", "test") for s in parts.get(name, ())}
    return [s for s in svg if s.caption not in held]
