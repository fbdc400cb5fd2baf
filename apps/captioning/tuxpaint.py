"""The default data: Tux Paint stamps composited into captioned pictures (a TFDS dataset).

Two kinds of 224x224 pictures are built from the stamps of :mod:`.data`:

* **single**: one stamp on a generated background, captioned with its own caption's first
  sentence ("a brown hen");
* **scene**: two or three stamps side by side, captioned from their real captions in
  left-to-right order: "a toucan next to a brown hen", "a pig , a tent and a red apple".

The pictures are written by a TFDS ``GeneratorBasedBuilder`` (``tux_paint_captions``)
under ``rnnkit.paths.tfds_dir()``, once per config (``full``, ``quick``, ``tiny``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .compositing import IMAGE_SIZE, compose
from .data import (
    SCENE_MAX_WORDS,
    Stamp,
    compose_scene_caption,
    head_noun,
    list_stamps,
    split_head,
    split_stamps,
    stamps_root,
)
from .splits import Split

__all__ = ["FULL_RECIPE", "QUICK_RECIPE", "Recipe", "examples_for_split", "prepare_tuxpaint",
           "tuxpaint_builder", "tuxpaint_splits"]


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



def picture_features(*text_lists: str) -> Any:
    """The TFDS features of a captioned picture: ``image`` (JPEG), ``caption``, ``kind``
    (single or scene), ``stamps``, ``head``, plus a text list per name in ``text_lists``
    (e.g. the extra drawings' ``source``, ``licence``, ``attribution``)."""
    import tensorflow_datasets as tfds

    return tfds.features.FeaturesDict({
        # JPEG keeps the dataset about 5x smaller than PNG; the CNN cannot tell.
        "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
                                     encoding_format="jpeg"),
        "caption": tfds.features.Text(),
        "kind": tfds.features.ClassLabel(names=["single", "scene"]),
        "stamps": tfds.features.Sequence(tfds.features.Text()),
        "head": tfds.features.Text(),
        **{name: tfds.features.Sequence(tfds.features.Text()) for name in text_lists},
    })

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
        # Distinct head nouns, so "a hen next to a hen" never needs telling apart. Keyed by
        # the split's frozen rule (data.split_head) so that the pictures stay the ones every
        # figure was measured on; under the corrected rule only training and validation
        # scenes differ ("a railroad crossing" beside "school crossing" may occur).
        picked: list[Stamp] = []
        for idx in rng.permutation(len(sceneable)):
            if all(split_head(sceneable[idx].caption) != split_head(p.caption)
                   for p in picked):
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
                features=picture_features(),
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
            # Re-derived from the caption, not the stored field: datasets built before the
            # head-noun rule's "-ing" fix hold the old heads ("christmas" for "a christmas
            # pudding is eaten ...").
            heads=[(head_noun(r["caption"].decode()) or "") if r["kind"] == 0 else ""
                   for r in rows],
            stamps=[[s.decode() for s in r["stamps"]] for r in rows],
        )
    return out
