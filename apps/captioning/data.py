"""Captioning data: Tux Paint stamps composited into captioned pictures, plus Flickr8k / COCO.

Default data (``--data tuxpaint``)
----------------------------------
Debian's ``tuxpaint-stamps-default`` ships clip-art and photo cut-outs (RGBA PNG) next to a
``NAME.txt`` whose first line is a human-written English caption. We build two kinds of
224x224 pictures from them:

* **single**: one stamp on a generated background, captioned with its own caption's first
  sentence ("a brown hen");
* **scene**: two or three stamps side by side, captioned from their real captions in
  left-to-right order: "a toucan next to a brown hen", "a pig, a tent and a red apple".

Letters, coins and signs are dropped (``symbols/alphabets``: letters and American Sign
Language hand signs; ``symbols/money``: coins and currency signs; ``symbols/math``: digits
and operators). Their captions name *which glyph or denomination* it is ("The letter p.",
"A European coin of 50 cents") -- a reading task that ImageNet features do not encode --
they come in near-identical variants (filled/outlined, upper/lower case, the same coin in
three currencies) that would leak across any split, and at about 210 of 785 images their
templated captions would dominate both training and BLEU.

Split: stamps with identical captions form one group (the white and black chess rook).
Test and validation stamps are drawn only from *head nouns* that at least two groups share
(a new picture of a known thing: "a red apple" in test, "a green apple" in training), so
the head-noun accuracy measures recognition, not guessing a word never seen. No test
stamp appears in any training picture, single or scene; test scenes are built only from
test stamps.

The pictures are written by a TFDS ``GeneratorBasedBuilder`` (``tux_paint_captions``) under
``rnnkit.paths.tfds_dir()``; CNN features (the 7x7x1280 grid as float16 and the pooled
1280-d vector) are computed once per picture and cached as ``.npz`` next to it.

User data
---------
* ``--data flickr8k:PATH``: ``PATH/Flickr8k.token.txt`` (``IMAGE#N<TAB>caption``) and the
  images in ``PATH/Flicker8k_Dataset`` or ``PATH/Images`` (or ``PATH``); the official
  ``Flickr_8k.{train,dev,test}Images.txt`` lists are used when present.
* ``--data coco:PATH``: ``PATH/annotations/captions_{train,val}2014|2017.json`` with the
  images in ``PATH/{train,val}2014|2017``; COCO's val set is split in half into
  validation and test.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import io
import json
import os
import random
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

STAMPS_PACKAGE = "tuxpaint-stamps-default"
STAMPS_SUBDIR = "usr/share/tuxpaint/stamps"
IMAGE_SIZE = 224
# Stamp folders whose pictures are glyphs to read rather than things to name (see module doc).
EXCLUDED_PREFIXES = ("symbols/alphabets/", "symbols/money/", "symbols/math/")
# Scenes use stamps whose caption is a short noun phrase, so composed captions stay readable.
SCENE_MAX_WORDS = 5
MAX_CAPTION_WORDS = 20

# Words that end the head noun phrase of a caption ("a spider dancing with a fly" -> spider).
_HEAD_STOP = {
    "with", "of", "in", "on", "from", "like", "is", "are", "called", "that", "and", "for",
    "at", "to", "who", "which", "by", "or", "has", "have", "carry", "carries", "gets", "can",
    "was", "were", "made", "next", "also", "used", "means", "stands",
}


# ---------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------

def caption_phrase(text: str) -> str:
    """The first sentence of a Tux Paint caption, lower-cased, without final punctuation.

    Args:
        text: the first line of a stamp's ``NAME.txt``.
    """
    t = (text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", "")
         .replace("\u201d", "").replace('"', ""))
    first = re.split(r"(?<=[.!?])\s+|\s*\u2014\s*|\s*:\s+|;\s*", t.strip())[0]
    first = first.strip().rstrip(".!?,").strip().lower()
    return " ".join(tokenize(first))


def tokenize(text: str) -> list[str]:
    """Word tokens of a caption: lower-case words, numbers and commas (kept as a token)."""
    return re.findall(r"[a-z0-9]+(?:['\-][a-z0-9]+)*|,", text.lower())


def head_noun(caption: str) -> str | None:
    """A simple head-noun heuristic: the last word before the first modifier or clause.

    "a spider dancing with a fly" -> "spider"; "a bunch of grapes" -> "bunch";
    "the treble clef" -> "clef". Used for the head-noun accuracy and for the split.

    Args:
        caption: a (single-stamp) caption.
    """
    words = tokenize(caption)
    kept: list[str] = []
    for i, w in enumerate(words):
        if w == "," or (i > 0 and (w in _HEAD_STOP or (w.endswith("ing") and len(w) > 5))):
            break
        kept.append(w)
    return kept[-1] if kept else None


def noun_matches(head: str, caption: str) -> bool:
    """True when ``head`` (or its singular/plural) is a word of ``caption``."""
    words = set(tokenize(caption))
    variants = {head, head + "s", head + "es", head.removesuffix("s")}
    return bool(words & variants)


def compose_scene_caption(phrases: Sequence[str]) -> str:
    """A scene's caption from its stamps' phrases, in left-to-right order.

    Two stamps: "A next to B"; three: "A , B and C" (the comma is a token of its own).

    Args:
        phrases: two or three single-stamp phrases, left to right.
    """
    if len(phrases) == 2:
        return f"{phrases[0]} next to {phrases[1]}"
    if len(phrases) == 3:
        return f"{phrases[0]} , {phrases[1]} and {phrases[2]}"
    raise ValueError(f"scenes have 2 or 3 stamps, got {len(phrases)}")


# ---------------------------------------------------------------------------------------
# Stamps
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Stamp:
    """One captioned Tux Paint stamp.

    Attributes:
        id: path relative to the stamps folder, without extension ("animals/birds/toucan").
        png: absolute path of the RGBA picture.
        caption: the phrase (first sentence, lower-case).
        head: its head noun.
    """

    id: str
    png: str
    caption: str
    head: str


def stamps_root() -> Path:
    """Fetches (once, cached) and returns the folder holding the Tux Paint stamps."""
    from rnnkit import fetch

    root = fetch.apt_package(STAMPS_PACKAGE) / STAMPS_SUBDIR
    if not root.is_dir():
        raise FileNotFoundError(f"{STAMPS_PACKAGE} has no {STAMPS_SUBDIR} folder at {root}")
    return root


def list_stamps(root: str | os.PathLike[str]) -> tuple[list[Stamp], dict[str, int]]:
    """Every usable captioned PNG stamp under ``root``, and counts of what was dropped.

    Args:
        root: the ``usr/share/tuxpaint/stamps`` folder.

    Returns:
        (stamps sorted by id, {"svg_only": n, "letters_coins_signs": n, "long_caption": n}).
    """
    root = Path(root)
    stamps, dropped = [], {"svg_only": 0, "letters_coins_signs": 0, "long_caption": 0,
                           "no_caption": 0}
    for txt in sorted(glob.glob(str(root / "**" / "*.txt"), recursive=True)):
        rel = os.path.relpath(txt, root)[:-4].replace(os.sep, "/")
        png = txt[:-4] + ".png"
        if not os.path.exists(png):
            dropped["svg_only"] += 1
            continue
        if rel.startswith(EXCLUDED_PREFIXES):
            dropped["letters_coins_signs"] += 1
            continue
        with open(txt, encoding="utf-8", errors="replace") as f:
            first = f.readline().strip()
        phrase = caption_phrase(first)
        head = head_noun(phrase)
        if not phrase or head is None:
            dropped["no_caption"] += 1
            continue
        if len(phrase.split()) > MAX_CAPTION_WORDS:
            dropped["long_caption"] += 1
            continue
        stamps.append(Stamp(rel, png, phrase, head))
    return stamps, dropped


def split_stamps(stamps: Sequence[Stamp], seed: int, test_fraction: float = 0.6,
                 val_fraction: float = 0.25) -> dict[str, list[Stamp]]:
    """Stamp-disjoint train/validation/test split (see the module docstring).

    For each head noun shared by at least two caption groups, one group (two when it has
    four or more) goes to test with probability ``test_fraction``, else to validation with
    probability ``val_fraction``; at least two groups of the noun always stay in training
    when it has four, one when it has two or three. Everything else is training.

    Args:
        stamps: the stamps.
        seed: the random seed.
        test_fraction: share of shared head nouns that give one group to test.
        val_fraction: share of shared head nouns that give one group to validation.
    """
    rng = random.Random(seed)
    groups: dict[str, list[Stamp]] = defaultdict(list)
    for s in stamps:
        groups[s.caption].append(s)
    by_head: dict[str, list[str]] = defaultdict(list)
    for cap, members in sorted(groups.items()):
        by_head[members[0].head].append(cap)
    where = {cap: "train" for cap in groups}
    for head in sorted(by_head):
        caps = by_head[head]
        if len(caps) < 2:
            continue
        r = rng.random()
        # Nouns with many groups (flower, truck, apple) can spare two for held-out use.
        picks = rng.sample(caps, 2 if len(caps) >= 4 else 1)
        for pick in picks:
            if r < test_fraction:
                where[pick] = "test"
            elif r < test_fraction + val_fraction:
                where[pick] = "validation"
    out: dict[str, list[Stamp]] = {"train": [], "validation": [], "test": []}
    for cap, members in groups.items():
        out[where[cap]].extend(members)
    for k in out:
        out[k].sort(key=lambda s: s.id)
    return out


# ---------------------------------------------------------------------------------------
# Compositing
# ---------------------------------------------------------------------------------------

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


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How many pictures each split gets.

    Attributes:
        singles_per_stamp: single-stamp pictures per stamp, per split name.
        scenes: number of scene pictures per split name.
        max_stamps: keep only this many stamps per split (None: all), for tests.
    """

    singles_per_stamp: dict
    scenes: dict
    max_stamps: int | None = None


FULL_RECIPE = Recipe({"train": 4, "validation": 1, "test": 2},
                     {"train": 3000, "validation": 200, "test": 400})
QUICK_RECIPE = Recipe({"train": 1, "validation": 1, "test": 1},
                      {"train": 500, "validation": 50, "test": 100})


def examples_for_split(stamps: Sequence[Stamp], split: str, recipe: Recipe,
                       seed: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields (key, example) for one split: singles first, then scenes.

    Every picture's randomness comes from (seed, split, index), so the output does not
    depend on the order in which the examples are consumed.

    Args:
        stamps: the split's stamps.
        split: "train", "validation" or "test".
        recipe: the counts.
        seed: the dataset seed.
    """
    if recipe.max_stamps is not None:
        stamps = list(stamps)[: recipe.max_stamps]
    cache: dict = {}
    split_code = {"train": 0, "validation": 1, "test": 2}[split]
    k = recipe.singles_per_stamp[split]
    for i, s in enumerate(stamps):
        for j in range(k):
            rng = np.random.default_rng([seed, split_code, 0, i, j])
            yield f"single-{i}-{j}", {
                "image": compose([s], rng, cache), "caption": s.caption, "kind": "single",
                "stamps": [s.id], "head": s.head}
    sceneable = [s for s in stamps if len(s.caption.split()) <= SCENE_MAX_WORDS]
    if len(sceneable) < 3:
        return
    for i in range(recipe.scenes[split]):
        rng = np.random.default_rng([seed, split_code, 1, i])
        n = int(rng.integers(2, 4))
        # Distinct head nouns, so "a hen next to a hen" never needs telling apart.
        picked: list[Stamp] = []
        for idx in rng.permutation(len(sceneable)):
            if all(sceneable[idx].head != p.head for p in picked):
                picked.append(sceneable[idx])
            if len(picked) == n:
                break
        if len(picked) < 2:
            continue
        yield f"scene-{i}", {
            "image": compose(picked, rng, cache),
            "caption": compose_scene_caption([p.caption for p in picked]),
            "kind": "scene", "stamps": [p.id for p in picked], "head": ""}


# ---------------------------------------------------------------------------------------
# TFDS builder
# ---------------------------------------------------------------------------------------

def _tfds():
    import tensorflow_datasets as tfds

    return tfds


@functools.cache
def make_builder_class():
    """Defines the TFDS builder lazily (importing tensorflow_datasets is slow), once:
    TFDS registers builder classes by name and refuses a second definition."""
    tfds = _tfds()

    class TuxPaintCaptionsConfig(tfds.core.BuilderConfig):
        """A recipe (counts per split) and a seed."""

        def __init__(self, *, recipe: Recipe, seed: int = 1337, **kwargs):
            super().__init__(**kwargs)
            self.recipe = recipe
            self.seed = seed

    class TuxPaintCaptions(tfds.core.GeneratorBasedBuilder):
        """Tux Paint stamps as captioned 224x224 pictures: single stamps and 2-3 stamp scenes."""

        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "Singles and left-to-right scenes, stamp-disjoint split."}
        BUILDER_CONFIGS = [
            TuxPaintCaptionsConfig(name="full", recipe=FULL_RECIPE,
                                   description="4 composites per training stamp, 3000 scenes"),
            TuxPaintCaptionsConfig(name="quick", recipe=QUICK_RECIPE,
                                   description="a smaller set for --quick runs"),
            TuxPaintCaptionsConfig(name="tiny", recipe=Recipe(
                {"train": 1, "validation": 1, "test": 1},
                {"train": 40, "validation": 8, "test": 8}, max_stamps=40),
                description="a real subset for tests"),
        ]

        def _info(self):
            return self.dataset_info_from_configs(
                features=tfds.features.FeaturesDict({
                    # JPEG keeps the dataset about 5x smaller than PNG; the CNN cannot tell.
                    "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
                                                 encoding_format="jpeg"),
                    "caption": tfds.features.Text(),
                    "kind": tfds.features.ClassLabel(names=["single", "scene"]),
                    "stamps": tfds.features.Sequence(tfds.features.Text()),
                    "head": tfds.features.Text(),
                }),
                supervised_keys=("image", "caption"),
                homepage="https://tuxpaint.org/",
                citation="Tux Paint stamps (GPL-2), Debian package tuxpaint-stamps-default.",
            )

        def _split_generators(self, dl_manager):
            stamps, _ = list_stamps(stamps_root())
            parts = split_stamps(stamps, self.builder_config.seed)
            return {name: self._generate_examples(parts[name], name) for name in parts}

        def _generate_examples(self, stamps, split):
            yield from examples_for_split(stamps, split, self.builder_config.recipe,
                                          self.builder_config.seed)

    return TuxPaintCaptions


def tuxpaint_builder(config: str = "full"):
    """The TFDS builder for ``config`` ("full", "quick" or "tiny") under rnnkit's tfds dir."""
    from rnnkit import paths

    cls = make_builder_class()
    return cls(config=config, data_dir=str(paths.tfds_dir()))


def prepare_tuxpaint(config: str = "full"):
    """Builds (once) the TFDS dataset and returns its builder."""
    builder = tuxpaint_builder(config)
    builder.download_and_prepare()
    return builder


# ---------------------------------------------------------------------------------------
# Examples as plain records, for every data source
# ---------------------------------------------------------------------------------------

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


def tuxpaint_splits(config: str = "full", limit: int | None = None) -> dict[str, Split]:
    """Reads the prepared TFDS dataset into :class:`Split` records (building it if needed).

    Args:
        config: the builder config.
        limit: at most this many pictures per split (singles and scenes mixed by stride).
    """
    builder = prepare_tuxpaint(config)
    out = {}
    for name in ("train", "validation", "test"):
        # Keep pictures encoded (decoded lazily): features are cached, so most runs never
        # look at the pixels again.
        ds = builder.as_dataset(split=name, shuffle_files=False,
                                decoders={"image": _tfds().decode.SkipDecoding()})
        rows = list(_tfds().as_numpy(ds))
        if limit is not None and len(rows) > limit:
            idx = np.linspace(0, len(rows) - 1, limit).round().astype(int)
            rows = [rows[i] for i in idx]
        out[name] = Split(
            images=[r["image"] for r in rows],
            references=[[r["caption"].decode()] for r in rows],
            kinds=["single" if r["kind"] == 0 else "scene" for r in rows],
            heads=[r["head"].decode() for r in rows],
            stamps=[[s.decode() for s in r["stamps"]] for r in rows],
        )
    return out


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
        FileNotFoundError: naming the missing token file or image folder.
    """
    root = Path(path)
    token = root / "Flickr8k.token.txt"
    if not token.exists():
        raise FileNotFoundError(f"flickr8k: {token} not found (expected IMAGE#N<TAB>caption lines)")
    caps: dict[str, list[str]] = defaultdict(list)
    for line in token.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        key, _, cap = line.partition("\t")
        if not cap:
            raise ValueError(f"flickr8k: malformed line in {token}: {line[:80]!r}")
        caps[key.split("#")[0]].append(cap.strip())
    img_dir = next((d for d in (root / "Flicker8k_Dataset", root / "Flickr8k_Dataset",
                                root / "Images", root) if d.is_dir()
                    and any(d.glob("*.jpg"))), None)
    if img_dir is None:
        raise FileNotFoundError(f"flickr8k: no folder of .jpg images under {root}")
    files = {p.name: str(p) for p in img_dir.glob("*.jpg")}
    lists = {s: root / f"Flickr_8k.{f}Images.txt"
             for s, f in (("train", "train"), ("validation", "dev"), ("test", "test"))}
    if all(p.exists() for p in lists.values()):
        names = {s: p.read_text().split() for s, p in lists.items()}
    else:
        names = _split_by_image({n: caps[n] for n in caps if n in files}, seed)
    return {s: _limit(_user_split(files, caps, names[s]), limit) for s in names}


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
        raise FileNotFoundError(
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
        "train": _limit(_user_split(files, allcaps, sorted(train)), limit),
        "validation": _limit(_user_split(files, allcaps, val_names[:half]), limit),
        "test": _limit(_user_split(files, allcaps, val_names[half:]), limit),
    }


def _limit(split: Split, limit: int | None) -> Split:
    if limit is None or len(split) <= limit:
        return split
    return Split(*(getattr(split, f.name)[:limit] for f in dataclasses.fields(Split)))


def parse_data_spec(spec: str | None) -> tuple[str, str | None]:
    """``None``/"tuxpaint" -> ("tuxpaint", None); "flickr8k:PATH" / "coco:PATH" -> (fmt, PATH).

    Raises:
        ValueError: for an unknown format or a missing path.
    """
    if spec is None or spec in ("tuxpaint", "default"):
        return "tuxpaint", None
    fmt, _, path = spec.partition(":")
    if fmt not in ("flickr8k", "coco", "tuxpaint"):
        raise ValueError(f"--data {spec!r}: format must be tuxpaint, flickr8k:PATH or coco:PATH")
    if fmt != "tuxpaint" and not path:
        raise ValueError(f"--data {spec!r}: {fmt} needs a path, e.g. {fmt}:/data/{fmt}")
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
        return tuxpaint_splits(config, limit)
    if fmt == "flickr8k":
        return flickr8k_splits(path, seed, limit)
    return coco_splits(path, seed, limit)


def dataset_name(spec: str | None, quick: bool = False, limit: int | None = None) -> str:
    """A short name for the feature cache key of a ``--data`` spec."""
    fmt, path = parse_data_spec(spec)
    if fmt == "tuxpaint":
        config = "tiny" if (limit is not None and limit <= 100) else ("quick" if quick else "full")
        return f"tuxpaint-{config}-{limit or 'all'}"
    import hashlib

    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:10]
    return f"{fmt}-{digest}-{limit or 'all'}"


# ---------------------------------------------------------------------------------------
# Feature cache
# ---------------------------------------------------------------------------------------

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
        raise ValueError(f"{desc}: the split is empty")
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
