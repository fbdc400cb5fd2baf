"""More training drawings: Tux Paint's SVG-only stamps and the licensed emoji art sets.

``--data tuxpaint+svg``, ``tuxpaint+emoji`` or ``tuxpaint+svg+emoji`` trains on the Tux
Paint pictures (:mod:`.tuxpaint`, unchanged) plus the pictures of the TFDS builder
``tux_paint_extra_drawings`` defined here, which has a training split only: the
validation and test splits are Tux Paint's, so every figure compares with the runs
before (the held-out stamps are never drawn into an extra picture either).

Two configs, one per source, joined at load time (:func:`extra_training_split`), so each
is built and its CNN features cached once whatever the combination:

* ``svg``: the SVG-only Tux Paint stamps (:mod:`.svg_stamps`) that may join training
  (none shares a caption with a held-out stamp), four composites each as the PNG training
  stamps get, and 300 scenes of two or three stamps with at least one SVG stamp among
  Tux Paint's training stamps;
* ``emoji``: one composite of every drawing of the four licensed art sets
  (:mod:`.emoji`: Google/Noto, Twitter, OpenMoji, Microsoft Fluent; 3,113 drawings), and
  1,000 scenes that put one emoji beside one or two Tux Paint training stamps.

Captions are made as the stamps' are (a noun phrase: "a red apple", "an owl"; scenes
joined left to right with "next to" / "," / "and"), scenes never hold two things with the
same head noun, and every picture records where its drawings came from and under which
licence (``source``, ``licence`` and ``attribution`` features; GPL-2.0 for the Tux Paint
stamps).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .compositing import compose
from .data import SCENE_MAX_WORDS, Stamp, compose_scene_caption, head_noun
from .splits import Split

__all__ = ["EXTRAS", "TUXPAINT_LICENCE", "extra_builder", "extra_examples",
           "extra_training_split", "parse_extras"]

#: The extra sources ``--data tuxpaint+...`` may name.
EXTRAS = ("svg", "emoji")
TUXPAINT_LICENCE = "GPL-2.0"
TUXPAINT_ATTRIBUTION = ("Tux Paint stamps (tuxpaint-stamps-default, Debian), New Breed "
                        "Software and contributors, GPL-2.0")
# Scene counts: the Tux Paint training split has 3,000 scenes of 496 stamps; these keep
# the extra sources from crowding them out.
SCENES = {"svg": 300, "emoji": 1000}
SINGLES_PER_DRAWING = {"svg": 4, "emoji": 1}
_SEED_CODE = {"svg": 11, "emoji": 12}


def parse_extras(spec: str | None) -> tuple[str, ...]:
    """The extra sources named by a ``--data`` value ("tuxpaint+svg+emoji" -> ("svg",
    "emoji")); () for plain Tux Paint and for user data.

    Raises:
        DataError: an unknown extra name.
    """
    from rnnkit.errors import DataError

    if not spec or not spec.startswith("tuxpaint+"):
        return ()
    names = spec.split("+")[1:]
    bad = [n for n in names if n not in EXTRAS]
    if bad or not names:
        raise DataError(f"--data {spec!r}: extra drawings must be among {', '.join(EXTRAS)} "
                        f"(e.g. tuxpaint+svg+emoji); got {bad or 'none'}")
    return tuple(n for n in EXTRAS if n in names)


@functools.cache
def _sources() -> dict[str, Any]:
    """Training stamps of the split, the usable SVG stamps and the emoji records."""
    from . import data, emoji, svg_stamps

    stamps, _ = data.list_stamps(data.stamps_root())
    parts = data.split_stamps(stamps, 1337)
    svg, _ = svg_stamps.svg_stamps()
    return {"train": parts["train"], "held": parts["validation"] + parts["test"],
            "svg": svg_stamps.training_svg_stamps(svg, parts),
            "emoji": emoji.emoji_records()}


def _meta(stamp: Stamp, emoji_by_id: dict) -> tuple[str, str, str]:
    rec = emoji_by_id.get(stamp.id)
    if rec is not None:
        return rec.source, rec.licence, rec.attribution
    return f"deb:tuxpaint-stamps-default#{stamp.id}", TUXPAINT_LICENCE, TUXPAINT_ATTRIBUTION


def extra_examples(source: str, base: Sequence[Stamp], extra: Sequence[Stamp],
                   emoji_by_id: dict, seed: int = 1337, singles_per: int | None = None,
                   scenes: int | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, example) for the extra pictures of one source: singles, then mixed scenes.

    Args:
        source: "svg" or "emoji".
        base: the Tux Paint training stamps (scene partners).
        extra: the source's drawings as stamps.
        emoji_by_id: emoji records by stamp id (their licence and attribution).
        seed: the dataset seed.
        singles_per: composites per drawing (default :data:`SINGLES_PER_DRAWING`).
        scenes: scene count (default :data:`SCENES`).
    """
    code = _SEED_CODE[source]
    singles_per = SINGLES_PER_DRAWING[source] if singles_per is None else singles_per
    scenes = SCENES[source] if scenes is None else scenes
    cache: dict = {}

    def record(picked: Sequence[Stamp], kind: str, image) -> dict[str, Any]:
        metas = [_meta(s, emoji_by_id) for s in picked]
        return {"image": image, "kind": kind, "stamps": [s.id for s in picked],
                "caption": (picked[0].caption if kind == "single"
                            else compose_scene_caption([s.caption for s in picked])),
                "head": picked[0].head if kind == "single" else "",
                "source": [m[0] for m in metas], "licence": [m[1] for m in metas],
                "attribution": [m[2] for m in metas]}

    for i, s in enumerate(extra):
        for j in range(singles_per):
            rng = np.random.default_rng([seed, code, 0, i, j])
            yield f"single-{i}-{j}", record([s], "single", compose([s], rng, cache))
    short_extra = [s for s in extra if len(s.caption.split()) <= SCENE_MAX_WORDS]
    short_base = [s for s in base if len(s.caption.split()) <= SCENE_MAX_WORDS]
    if not short_extra or len(short_base) < 2:
        return
    for i in range(scenes):
        rng = np.random.default_rng([seed, code, 1, i])
        n = int(rng.integers(2, 4))
        first = short_extra[int(rng.integers(len(short_extra)))]
        picked = [first]
        for idx in rng.permutation(len(short_base)):
            if all(head_noun(short_base[idx].caption) != head_noun(p.caption) for p in picked):
                picked.append(short_base[idx])
            if len(picked) == n:
                break
        order = rng.permutation(len(picked))  # the extra drawing anywhere, left to right
        picked = [picked[k] for k in order]
        yield f"scene-{i}", record(picked, "scene", compose(picked, rng, cache))


@functools.cache
def _builder_class():
    import tensorflow_datasets as tfds

    class ExtraConfig(tfds.core.BuilderConfig):
        """One extra source."""

    class TuxPaintExtraDrawings(tfds.core.GeneratorBasedBuilder):
        """Training-only pictures from Tux Paint's SVG stamps or the emoji art sets."""

        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "SVG stamps and four emoji art sets, with licences."}
        BUILDER_CONFIGS = [ExtraConfig(name=n, description=f"extra drawings: {n}")
                           for n in EXTRAS]

        def _info(self):
            from .tuxpaint import picture_features

            return self.dataset_info_from_configs(
                features=picture_features("source", "licence", "attribution"),
                supervised_keys=("image", "caption"),
                citation="Tux Paint stamps (GPL-2.0); Noto Emoji (Apache-2.0), Twemoji "
                         "(CC-BY-4.0), OpenMoji (CC-BY-SA-4.0), Fluent Emoji (MIT).",
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(self.builder_config.name)}

        def _generate_examples(self, name):
            src = _sources()
            emoji_by_id = {r.to_stamp().id: r for r in src["emoji"]}
            extra = (src["svg"] if name == "svg"
                     else [r.to_stamp() for r in src["emoji"]])
            yield from extra_examples(name, src["train"], extra, emoji_by_id)

    return TuxPaintExtraDrawings


def extra_builder(source: str):
    """The TFDS builder of one extra source under rnnkit's tfds folder."""
    from rnnkit import paths

    return _builder_class()(config=source, data_dir=str(paths.tfds_dir()))


def extra_training_split(source: str) -> Split:
    """The extra training pictures of ``source`` (built once), as a :class:`Split`."""
    import tensorflow_datasets as tfds

    builder = extra_builder(source)
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train", shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding()})
    rows = list(tfds.as_numpy(ds))
    return Split(images=[r["image"] for r in rows],
                 references=[[r["caption"].decode()] for r in rows],
                 kinds=["single" if r["kind"] == 0 else "scene" for r in rows],
                 heads=[(head_noun(r["caption"].decode()) or "") if r["kind"] == 0 else ""
                        for r in rows],
                 stamps=[[s.decode() for s in r["stamps"]] for r in rows])
