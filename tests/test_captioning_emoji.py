"""More drawings for the captioner: emoji art sets from npm and Tux Paint's SVG-only stamps.

Everything here goes through the real fetch path (``npm pack``, ``apt-get download``) and
the shared cache, so the first run downloads about 160 MB of npm tarballs and renders
about 3,100 emoji (a minute on two cores); later runs read the cache.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

pytest.importorskip("resvg_py", reason="resvg-py (the SVG renderer) is not installed")

from apps.captioning import data, emoji, svg_stamps
from apps.captioning.caption_faults import count_caption_faults
from rnnkit import fetch

ALL_SETS = tuple(emoji.ART_SETS)


@pytest.fixture(scope="module")
def records() -> list[emoji.EmojiRecord]:
    return emoji.emoji_records(sets=ALL_SETS)


def _find(records, key: str, name: str) -> emoji.EmojiRecord:
    art = emoji.ART_SETS[key]
    hits = [r for r in records if r.name == name and r.source.startswith(
        f"npm:{art.package.spec}#")]
    assert len(hits) == 1, (key, name, len(hits))
    return hits[0]


def test_tarballs_match_their_registry_hashes():
    for art in [emoji.METADATA_PACKAGE, *(a.package for a in emoji.ART_SETS.values())]:
        path = fetch.npm_tarball(art)
        assert path.name == art.filename
        assert fetch.sri_sha512(path) == art.integrity
        mtime = path.stat().st_mtime_ns
        assert fetch.npm_tarball(art) == path  # cached: not fetched again
        assert path.stat().st_mtime_ns == mtime


def test_a_wrong_hash_is_refused_and_a_damaged_cache_refetched(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path))
    good = emoji.ART_SETS["openmoji"].package  # the smallest package (1.3 MB)
    bad = dataclasses.replace(good, integrity="sha512-" + "A" * 86 + "==")
    with pytest.raises(fetch.FetchError, match="integrity"):
        fetch.npm_tarball(bad)
    assert not (tmp_path / "raw" / "npm" / good.filename).exists()
    path = fetch.npm_tarball(good)
    assert path == tmp_path / "raw" / "npm" / good.filename
    path.write_bytes(b"damaged")
    assert fetch.sri_sha512(fetch.npm_tarball(good)) == good.integrity


@pytest.mark.parametrize("key", ALL_SETS)
def test_real_drawings_of_each_set(records, key):
    art = emoji.ART_SETS[key]
    apple = _find(records, key, "red-apple")
    assert (apple.caption, apple.head_noun) == ("a red apple", "apple")
    assert apple.art_set == art.art_set
    assert apple.licence == art.licence
    assert art.author in apple.attribution and art.package.spec in apple.attribution
    assert art.licence in apple.attribution
    rgba = apple.rgba()
    side = 224 if art.kind == "iconify" else 64
    assert rgba.shape == (side, side, 4) and rgba.dtype == np.uint8
    # A drawing on a transparent canvas: clear corners, an opaque middle.
    assert rgba[0, 0, 3] == 0 and rgba[-1, -1, 3] == 0
    assert rgba[side // 2, side // 2, 3] == 255
    opaque = rgba[rgba[..., 3] > 200][:, :3].astype(float)
    r, g, b = opaque.mean(axis=0)
    assert r > g + 40 and r > b + 40, (key, r, g, b)  # it is red
    for name, caption in [("dog", "a dog"), ("bicycle", "a bicycle"), ("owl", "an owl")]:
        rec = _find(records, key, name)
        assert rec.caption == caption
        assert rec.rgba()[..., 3].mean() > 10  # drawn, not blank
    # Two artists' apples differ.
    other = "openmoji" if art.art_set != "openmoji" else "fluent"
    assert not np.array_equal(
        _find(records, other, "red-apple").rgba()[..., :3].mean(axis=(0, 1)),
        rgba[..., :3].mean(axis=(0, 1)))


def test_only_concrete_things_and_clean_captions(records):
    cats = {r.category.split("/")[0] for r in records}
    assert cats <= {"Animals & Nature", "Food & Drink", "Travel & Places", "Activities",
                    "Objects", "People & Body"}
    assert {r.category for r in records if r.category.startswith("People")} == {
        "People & Body/body-parts"}
    names = {r.name for r in records}
    assert not names & {"grinning-face", "flag-japan", "keycap-1", "three-oclock",
                        "muted-speaker", "sun-with-face", "chart-increasing"}
    assert {"red-apple", "dog", "bicycle", "elephant", "pizza", "sailboat"} <= names
    captions = sorted({r.caption for r in records})
    assert len(captions) > 500
    faults = count_caption_faults(captions, n_objects=None)
    assert faults["faults"] == 0, faults["examples"]
    for r in records:
        assert r.head_noun not in ("a", "an", "the"), r
        assert r.head_noun in data.tokenize(r.caption), r
        assert os.path.exists(r.png)
    by_set = {}
    for r in records:
        by_set.setdefault(r.art_set, set()).add(r.name)
    assert set(by_set) == {"noto", "twemoji", "openmoji", "fluent"}
    # Every set has drawn nearly every kept emoji: the same things, several artists.
    assert min(len(v) for v in by_set.values()) > 0.95 * max(len(v) for v in by_set.values())


@pytest.mark.parametrize("name, sub, uname, caption", [
    ("dog-face", "animal-mammal", "DOG FACE", "a dog"),
    ("owl", "animal-bird", "OWL", "an owl"),
    ("cherries", "food-fruit", "CHERRIES", "cherries"),
    ("hourglass-not-done", "time", "HOURGLASS WITH FLOWING SAND", "an hourglass"),
    ("jack-o-lantern", "event", "JACK-O-LANTERN", "a jack-o-lantern"),
    ("honeybee", "animal-bug", "HONEYBEE", "a bee"),
    ("umbrella", "sky & weather", "UMBRELLA", "an umbrella"),
    ("three-oclock", "time", "CLOCK FACE THREE OCLOCK", None),
    ("flag-japan", "country-flag", "JAPAN FLAG", None),
    ("grinning-face", "face-smiling", "GRINNING FACE", None),
    ("keycap-1", "keycap", "KEYCAP 1", None),
    ("full-moon-face", "sky & weather", "FULL MOON WITH FACE", None),
])
def test_captions_from_names(name, sub, uname, caption):
    assert emoji.caption_for(name, sub, uname) == caption


def test_head_nouns():
    assert emoji.head_noun("a boxing glove") == "glove"
    assert emoji.head_noun("a chick hatching from an egg") == "chick"
    assert emoji.head_noun("a hot spring") == "spring"
    assert emoji.head_noun("the sun behind a cloud") == "sun"
    assert emoji.head_noun("a bunch of grapes") == data.head_noun("a bunch of grapes")


def test_records_composite_like_stamps(records):
    rec = _find(records, "fluent", "bicycle")
    stamp = rec.to_stamp()
    assert stamp.id == "emoji/fluent/bicycle" and stamp.head == "bicycle"
    img = data.compose([stamp], np.random.default_rng(0))
    assert img.shape == (data.IMAGE_SIZE, data.IMAGE_SIZE, 3)
    scene = data.compose([stamp, _find(records, "noto", "owl").to_stamp()],
                         np.random.default_rng(1))
    assert scene.shape == img.shape and scene.std() > 10


def test_held_out_art_set(records):
    train, test = emoji.art_set_split(records, "openmoji")
    assert {r.art_set for r in train} == {"noto", "twemoji", "fluent"}
    assert {r.art_set for r in test} == {"openmoji"}
    assert {r.caption for r in test} <= {r.caption for r in train}
    assert len(test) > 700
    with pytest.raises(ValueError, match="apple"):
        emoji.art_set_split(records, "apple")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="apple-emoji"):
        emoji.emoji_records(sets=("noto", "apple-emoji"))
    with pytest.raises(ValueError, match="at least 16"):
        emoji.emoji_records(size=8)


# ---------------------------------------------------------------------------------------
# Tux Paint's SVG-only stamps
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def svg_only():
    return svg_stamps.svg_stamps()


def test_svg_only_stamps_rasterise(svg_only):
    stamps, dropped = svg_only
    # 167 captions without a PNG: 165 SVGs and 2 captions with no picture at all.
    assert len(stamps) + sum(dropped.values()) == 167
    assert dropped["no_picture"] == 2 and dropped["render_failed"] == 0
    assert len(stamps) == 165
    from PIL import Image

    for s in stamps:
        with Image.open(s.png) as im:
            assert im.mode == "RGBA" and max(im.size) == 256, (s.id, im.size)
            alpha = np.asarray(im)[..., 3]
        assert 0.02 < (alpha > 0).mean() < 0.999, s.id  # a cut-out, not blank or a box
    by_id = {s.id: s for s in stamps}
    bull = by_id["vehicles/construction/cartoon/bulldozer"]
    assert (bull.caption, bull.head) == ("a bulldozer", "bulldozer")
    assert not set(by_id) & {s.id for s in data.list_stamps(data.stamps_root())[0]}
    img = data.compose([bull], np.random.default_rng(0))
    assert img.shape == (data.IMAGE_SIZE, data.IMAGE_SIZE, 3)


def test_absolute_units_become_pixels():
    text = '<?xml version="1.0"?>\n<svg id="a" width="128pt" height="21cm"><g width="5pt"/></svg>'
    out = svg_stamps._root_size_in_px(text)
    assert 'width="170.7"' in out and 'height="793.7"' in out
    assert '<g width="5pt"/>' in out  # only the root element changes


def test_training_svg_stamps_keep_the_held_out_split(svg_only):
    stamps, _ = svg_only
    victim = stamps[0]
    parts = {"train": [], "validation": [],
             "test": [data.Stamp("x/y", "y.png", victim.caption, victim.head)]}
    kept = svg_stamps.training_svg_stamps(stamps, parts)
    assert victim not in kept
    assert all(s.caption != victim.caption for s in kept)
    assert len(kept) >= len(stamps) - 5
