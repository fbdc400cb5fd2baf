"""The ``--data`` formats: the Tux Paint default, Flickr8k and COCO captions.

* ``--data tuxpaint`` (default): :mod:`.tuxpaint`'s pictures; ``tuxpaint+svg``,
  ``tuxpaint+emoji``, ``tuxpaint+svg+emoji`` add training drawings (:mod:`.extra_drawings`).
* ``--data flickr8k:PATH``: ``PATH/Flickr8k.token.txt`` (``IMAGE#N<TAB>caption``) and the
  images in ``PATH/Flicker8k_Dataset`` or ``PATH/Images`` (or ``PATH``); the official
  ``Flickr_8k.{train,dev,test}Images.txt`` lists are used when present.
* ``--data coco:PATH``: ``PATH/annotations/captions_{train,val}2014|2017.json`` with the
  images in ``PATH/{train,val}2014|2017``; COCO's val set is split in half into
  validation and test.

Every source gives the same :class:`.splits.Split` records.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import defaultdict
from pathlib import Path

from rnnkit.errors import DataError

from . import tuxpaint
from .data import tokenize
from .splits import Split, limit_split

__all__ = ["coco_splits", "dataset_name", "flickr8k_splits", "load_splits", "parse_data_spec"]


def _split_by_image(items: dict[str, list[str]], seed: int, val: float = 0.1,
                    test: float = 0.1) -> dict[str, list[str]]:
    names = sorted(items)
    random.Random(seed).shuffle(names)
    n_val, n_test = int(len(names) * val), int(len(names) * test)
    return {"validation": names[:n_val], "test": names[n_val:n_val + n_test],
            "train": names[n_val + n_test:]}


def _user_split(paths_by_name: dict[str, str], caps: dict[str, list[str]],
                names: list[str]) -> Split:
    names = [n for n in names if n in caps and n in paths_by_name]
    return Split(images=[paths_by_name[n] for n in names],
                 references=[[" ".join(tokenize(c)) for c in caps[n]] for n in names],
                 kinds=["photo"] * len(names), heads=[""] * len(names),
                 stamps=[[] for _ in names])


def flickr8k_splits(path: str | os.PathLike[str], seed: int = 1337,
                    limit: int | None = None) -> dict[str, Split]:
    """Flickr8k from ``Flickr8k.token.txt`` + its image folder (see the module docstring).

    Raises:
        DataError: naming the missing token file or image folder, or a malformed line.
    """
    root = Path(path)
    token = root / "Flickr8k.token.txt"
    if not token.exists():
        raise DataError(f"flickr8k: {token} not found (expected IMAGE#N<TAB>caption lines)")
    caps: dict[str, list[str]] = defaultdict(list)
    for line in token.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        key, _, cap = line.partition("\t")
        if not cap:
            raise DataError(f"flickr8k: malformed line in {token}: {line[:80]!r}")
        caps[key.split("#")[0]].append(cap.strip())
    img_dir = next((d for d in (root / "Flicker8k_Dataset", root / "Flickr8k_Dataset",
                                root / "Images", root) if d.is_dir()
                    and any(d.glob("*.jpg"))), None)
    if img_dir is None:
        raise DataError(f"flickr8k: no folder of .jpg images under {root}")
    files = {p.name: str(p) for p in img_dir.glob("*.jpg")}
    lists = {s: root / f"Flickr_8k.{f}Images.txt"
             for s, f in (("train", "train"), ("validation", "dev"), ("test", "test"))}
    if all(p.exists() for p in lists.values()):
        names = {s: p.read_text().split() for s, p in lists.items()}
    else:
        names = _split_by_image({n: caps[n] for n in caps if n in files}, seed)
    return {s: limit_split(_user_split(files, caps, names[s]), limit) for s in names}


def coco_splits(path: str | os.PathLike[str], seed: int = 1337,
                limit: int | None = None) -> dict[str, Split]:
    """COCO captions: ``annotations/captions_{train,val}{2014,2017}.json`` + image folders.

    COCO's own val set is halved (by image, seeded) into validation and test.
    """
    root = Path(path)
    found = None
    for year in ("2017", "2014"):
        tr = root / "annotations" / f"captions_train{year}.json"
        va = root / "annotations" / f"captions_val{year}.json"
        if tr.exists() and va.exists():
            found = (year, tr, va)
            break
    if found is None:
        raise DataError(
            f"coco: no annotations/captions_train{{2014,2017}}.json + captions_val*.json under {root}")
    year, tr, va = found

    def load(js: Path, folder: str):
        d = json.loads(js.read_text(encoding="utf-8"))
        id2file = {im["id"]: str(root / folder / im["file_name"]) for im in d["images"]}
        caps: dict[str, list[str]] = defaultdict(list)
        for a in d["annotations"]:
            caps[id2file[a["image_id"]]].append(a["caption"].strip())
        return caps

    train = load(tr, f"train{year}")
    val = load(va, f"val{year}")
    val_names = sorted(val)
    random.Random(seed).shuffle(val_names)
    half = len(val_names) // 2
    allcaps = {**train, **val}
    files = {n: n for n in allcaps}
    return {
        "train": limit_split(_user_split(files, allcaps, sorted(train)), limit),
        "validation": limit_split(_user_split(files, allcaps, val_names[:half]), limit),
        "test": limit_split(_user_split(files, allcaps, val_names[half:]), limit),
    }


def parse_data_spec(spec: str | None) -> tuple[str, str | None]:
    """``None``/"tuxpaint" (or "tuxpaint+svg+emoji": extra training drawings, see
    :mod:`.extra_drawings`) -> ("tuxpaint", None); "flickr8k:PATH" / "coco:PATH" -> (fmt, PATH).

    Raises:
        DataError: for an unknown format or a missing path.
    """
    if spec is None or spec in ("tuxpaint", "default"):
        return "tuxpaint", None
    if spec.startswith("tuxpaint+"):
        # Tux Paint plus extra training drawings (checked here, read by .features).
        from .extra_drawings import parse_extras

        parse_extras(spec)
        return "tuxpaint", None
    fmt, _, path = spec.partition(":")
    if fmt not in ("flickr8k", "coco", "tuxpaint"):
        raise DataError(f"--data {spec!r}: format must be tuxpaint, flickr8k:PATH or coco:PATH")
    if fmt != "tuxpaint" and not path:
        raise DataError(f"--data {spec!r}: {fmt} needs a path, e.g. {fmt}:/data/{fmt}")
    return fmt, path or None


def load_splits(spec: str | None, quick: bool = False, limit: int | None = None,
                seed: int = 1337) -> dict[str, Split]:
    """All three splits for a ``--data`` spec.

    Args:
        spec: the ``--data`` value (None: Tux Paint).
        quick: use the smaller Tux Paint recipe.
        limit: at most this many pictures per split.
        seed: split seed for user data without official lists.
    """
    fmt, path = parse_data_spec(spec)
    if fmt == "tuxpaint":
        config = "tiny" if (limit is not None and limit <= 100) else ("quick" if quick else "full")
        return tuxpaint.tuxpaint_splits(config, limit)
    if fmt == "flickr8k":
        return flickr8k_splits(path, seed, limit)
    return coco_splits(path, seed, limit)


def dataset_name(spec: str | None, quick: bool = False, limit: int | None = None) -> str:
    """A short name for the feature cache key of a ``--data`` spec."""
    fmt, path = parse_data_spec(spec)
    if fmt == "tuxpaint":
        config = "tiny" if (limit is not None and limit <= 100) else ("quick" if quick else "full")
        return f"tuxpaint-{config}-{limit or 'all'}"
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:10]
    return f"{fmt}-{digest}-{limit or 'all'}"
