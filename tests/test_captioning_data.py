"""Captioning data: caption handling, the stamp-disjoint split, the TFDS builder, user formats."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apps.captioning import data as cdata
from apps.captioning import formats, tuxpaint
from apps.captioning.splits import picture
from rnnkit.errors import DataError


def test_caption_phrase_and_head_noun():
    assert cdata.caption_phrase("A toucan.") == "a toucan"
    assert cdata.caption_phrase("Rook. Can only move forward, back, left or right.") == "rook"
    assert cdata.caption_phrase("A ripe, red tomato!") == "a ripe , red tomato"
    assert cdata.caption_phrase("Uranus\u2014one of the \u201cgas giants\u201d.") == "uranus"
    assert cdata.head_noun("a spider dancing with a fly") == "spider"
    assert cdata.head_noun("a brown hen") == "hen"
    assert cdata.head_noun("a plant of common lavender") == "plant"
    # "-ing" words: a modifier after an article, a noun of its own, or a clause after a noun.
    assert cdata.head_noun("a sleeping capybara") == "capybara"
    assert cdata.head_noun("a singing dinosaur") == "dinosaur"
    assert cdata.head_noun("a string of garlic") == "string"
    assert cdata.head_noun("a railroad crossing") == "crossing"
    assert cdata.head_noun("a christmas stocking") == "stocking"
    assert cdata.head_noun("an old chinese sailing ship") == "ship"
    assert cdata.head_noun("a christmas pudding is eaten on christmas day") == "pudding"
    assert cdata.head_noun("an astronaut making a spacewalk") == "astronaut"
    assert cdata.head_noun("a spider playing soccer") == "spider"
    assert cdata.head_noun("the sun behind a cloud") == "sun"
    # The split keeps the rule it was drawn with.
    assert cdata.split_head("a sleeping capybara") == "a"
    assert cdata.noun_matches("apple", "two green apples")
    assert not cdata.noun_matches("apple", "a pear")


def test_no_stamp_head_is_an_article(stamps):
    found, _ = stamps
    assert not [s for s in found if s.head in ("a", "an", "the")]
    changed = {s.caption: s.head for s in found if s.head != cdata.split_head(s.caption)}
    # The stamps the old rule cut at an "-ing" word (and only those) get their noun back.
    assert changed["a sleeping capybara"] == "capybara"
    assert changed["a christmas pudding is eaten on christmas day in england"] == "pudding"
    assert all(any(w.endswith("ing") for w in c.split()) for c in changed), changed


def test_scene_captions_keep_left_to_right_order():
    assert cdata.compose_scene_caption(["a toucan", "a brown hen"]) == "a toucan next to a brown hen"
    assert (cdata.compose_scene_caption(["a pig", "a tent", "a red apple"])
            == "a pig , a tent and a red apple")
    with pytest.raises(ValueError, match="2 or 3"):
        cdata.compose_scene_caption(["a pig"])
    for caption in ("a toucan next to a brown hen", "a pig , a tent and a red apple"):
        assert cdata.compose_scene_caption(cdata.scene_parts(caption)) == caption


@pytest.fixture(scope="module")
def stamps():
    return cdata.list_stamps(cdata.stamps_root())


def test_real_stamps_and_dropped_glyphs(stamps):
    found, dropped = stamps
    assert len(found) == 574
    assert dropped["letters_coins_signs"] == 211
    assert not any(s.id.startswith(cdata.EXCLUDED_PREFIXES) for s in found)
    assert all(s.caption == s.caption.lower() and s.head for s in found)


def test_split_is_stamp_disjoint_and_tests_known_nouns(stamps):
    found, _ = stamps
    parts = cdata.split_stamps(found, seed=1337)
    ids = {k: {s.id for s in v} for k, v in parts.items()}
    assert not ids["train"] & ids["test"] and not ids["train"] & ids["validation"]
    assert not ids["validation"] & ids["test"]
    assert sum(map(len, ids.values())) == len(found)
    train_keys = {cdata.split_head(s.caption) for s in parts["train"]}
    train_caps = {s.caption for s in parts["train"]}
    assert len(parts["test"]) >= 40
    for s in parts["test"]:
        assert cdata.split_head(s.caption) in train_keys, s  # a new picture of a known thing
        assert s.caption not in train_caps, s  # but never the same caption group
    # Under the corrected head-noun rule one test stamp names a noun no training stamp has
    # as its head (the split was drawn with the old rule, which read "christmas" there).
    train_heads = {s.head for s in parts["train"]}
    assert [s.head for s in parts["test"] if s.head not in train_heads] == ["pudding"]


def test_scene_examples_only_use_their_split(stamps):
    found, _ = stamps
    parts = cdata.split_stamps(found, seed=1337)
    test_ids = {s.id for s in parts["test"]}
    recipe = tuxpaint.Recipe({"test": 1}, {"test": 12}, max_stamps=None)
    examples = list(tuxpaint.examples_for_split(parts["test"], "test", recipe, seed=1))
    scenes = [e for _, e in examples if e["kind"] == "scene"]
    assert len(scenes) == 12
    by_id = {s.id: s for s in found}
    for e in scenes:
        assert set(e["stamps"]) <= test_ids
        # The caption names the stamps in placement order (left to right).
        expected = cdata.compose_scene_caption([by_id[i].caption for i in e["stamps"]])
        assert e["caption"] == expected
        assert e["image"].shape == (224, 224, 3) and e["image"].dtype == np.uint8
    # Deterministic: the same seed gives the same pictures.
    again = list(tuxpaint.examples_for_split(parts["test"], "test", recipe, seed=1))
    assert np.array_equal(examples[-1][1]["image"], again[-1][1]["image"])


def test_tfds_builder_on_a_real_subset():
    builder = tuxpaint.prepare_tuxpaint("tiny")
    info = builder.info
    assert set(info.splits.keys()) == {"train", "validation", "test"}
    assert info.splits["train"].num_examples == 40 + 40  # 40 singles + 40 scenes
    splits = tuxpaint.tuxpaint_splits("tiny")
    test = splits["test"]
    assert {"single", "scene"} == set(test.kinds)
    img = picture(test, 0)
    assert img.shape == (224, 224, 3) and img.std() > 5  # a real picture, not a blank
    train_stamps = {s for st in splits["train"].stamps for s in st}
    test_stamps = {s for st in test.stamps for s in st}
    assert not train_stamps & test_stamps


def _write_jpegs(folder, names):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for n in names:
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / n)


def test_flickr8k_format(tmp_path):
    names = [f"{i}_abc.jpg" for i in range(10)]
    _write_jpegs(tmp_path / "Flicker8k_Dataset", names)
    lines = [f"{n}#{k}\tA dog runs on the grass number {k} ." for n in names for k in range(5)]
    (tmp_path / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "Flickr_8k.trainImages.txt").write_text("\n".join(names[:6]))
    (tmp_path / "Flickr_8k.devImages.txt").write_text("\n".join(names[6:8]))
    (tmp_path / "Flickr_8k.testImages.txt").write_text("\n".join(names[8:]))
    splits = formats.load_splits(f"flickr8k:{tmp_path}")
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [6, 2, 2]
    assert len(splits["test"].references[0]) == 5
    assert splits["test"].references[0][0] == "a dog runs on the grass number 0"
    assert picture(splits["train"], 0).shape == (224, 224, 3)
    with pytest.raises(DataError, match="Flickr8k.token.txt"):
        formats.load_splits(f"flickr8k:{tmp_path / 'nope'}")


def test_coco_format(tmp_path):
    for split, n in (("train2017", 4), ("val2017", 4)):
        names = [f"{split}_{i:03d}.jpg" for i in range(n)]
        _write_jpegs(tmp_path / split, names)
        ann = {"images": [{"id": i, "file_name": f} for i, f in enumerate(names)],
               "annotations": [{"image_id": i, "caption": f"A cat number {i}."} for i in range(n)]}
        (tmp_path / "annotations").mkdir(exist_ok=True)
        (tmp_path / "annotations" / f"captions_{split}.json").write_text(json.dumps(ann))
    splits = formats.load_splits(f"coco:{tmp_path}")
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [4, 2, 2]
    assert splits["train"].references[1] == ["a cat number 1"]
    with pytest.raises(ValueError, match="format must be"):
        formats.parse_data_spec("imagenet:/x")
    with pytest.raises(ValueError, match="needs a path"):
        formats.parse_data_spec("coco:")
