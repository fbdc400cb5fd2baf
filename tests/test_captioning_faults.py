"""The caption-fault counter: planted faults are caught, clean captions pass."""

from __future__ import annotations

import pytest

from apps.captioning.caption_faults import (
    count_caption_faults,
    fix_article,
    needs_an,
    phrases,
    tidy_caption,
)

CLEAN_SINGLES = [
    "a red apple", "an apple", "a dog", "a bicycle", "an hourglass", "a unicorn",
    "a european coin", "an x-ray", "a bunch of grapes", "a spider dancing with a fly",
    "an old key", "a one-way sign", "a uk post box", "an f-22 raptor", "a nest with eggs",
    "cherries", "a pair of scissors", "an umbrella on the ground", "a herb", "an herb",
]
CLEAN_SCENES = [
    ("a toucan next to a brown hen", 2),
    ("a pig , a tent and a red apple", 3),
    ("an owl next to a bunch of grapes", 2),
    ("a red apple , a red car and an egg", 3),  # the adjective repeats, the nouns do not
]


def test_clean_captions_have_no_faults():
    r = count_caption_faults(CLEAN_SINGLES, n_objects=1)
    assert r["faults"] == 0, r["examples"]
    assert r["with_fault"] == 0
    assert r["captions"] == len(CLEAN_SINGLES)
    caps, counts = zip(*CLEAN_SCENES)
    r = count_caption_faults(caps, n_objects=list(counts))
    assert r["faults"] == 0, r["examples"]
    assert r["extra_object"] == 0


@pytest.mark.parametrize("caption, kind, fragment", [
    ("a apple", "article", "a apple"),
    ("an dog", "article", "an dog"),
    ("a owl next to a hen", "article", "a owl"),
    ("a hen next to an unicorn", "article", "an unicorn"),
    ("a hour glass", "article", "a hour"),
    ("a wheel wheel", "doubled_noun", "wheel wheel"),
    ("a dog with a dog", "doubled_noun", "dog"),
    ("a red apple and a green apple", "doubled_noun", "apple"),
    ("a dog next to", "trailing", "next to"),
    ("a cat and", "trailing", "and"),
    ("a bunch of", "trailing", "of"),
    ("a pig ,", "trailing", ","),
    ("a pig <end> a pig", "trailing", "<end> a pig"),
])
def test_each_planted_fault_is_caught(caption, kind, fragment):
    r = count_caption_faults([caption], n_objects=1)
    assert r[kind] >= 1, r
    assert (caption, fragment) in r["examples"][kind]
    assert r["with_fault"] == 1


def test_planted_faults_are_counted_among_clean_ones():
    caps = CLEAN_SINGLES + ["a apple", "an dog", "a kite kite", "a boat next to"]
    r = count_caption_faults(caps, n_objects=1)
    assert (r["article"], r["doubled_noun"], r["trailing"]) == (2, 1, 1)
    assert r["faults"] == 4
    assert r["with_fault"] == 4


def test_scene_object_counts_decide_doubled_nouns():
    cap = "a dog next to a dog"
    # Whatever the picture holds, one phrase said twice is a fault.
    assert count_caption_faults([cap])["doubled_noun"] == 1
    assert count_caption_faults([cap], n_objects=2)["doubled_noun"] == 1
    # Different phrases with one head noun: a fault only when the object count is known.
    cap = "a red apple next to a green apple"
    assert count_caption_faults([cap])["doubled_noun"] == 0
    assert count_caption_faults([cap], n_objects=2)["doubled_noun"] == 1
    # More phrases than objects.
    r = count_caption_faults(["a dog next to a cat"], n_objects=1)
    assert r["extra_object"] == 1 and r["faults"] == 0


def test_n_objects_is_checked():
    with pytest.raises(ValueError, match="2 entries for 3 captions"):
        count_caption_faults(["a", "b", "c"], n_objects=[1, 2])
    with pytest.raises(ValueError, match=">= 1"):
        count_caption_faults(["a dog"], n_objects=0)


def test_articles():
    assert needs_an("apple") and needs_an("hour") and needs_an("x-ray")
    assert not needs_an("unicorn") and not needs_an("dog") and not needs_an("euro")
    assert needs_an("herb") is None and needs_an("8-ball") is None
    assert fix_article("a apple next to an dog") == "an apple next to a dog"
    assert fix_article("A owl") == "An owl"
    assert fix_article("a red apple") == "a red apple"


def test_tidy_caption_removes_each_fault():
    assert tidy_caption("a apple apple next to <end> a") == "an apple"
    assert tidy_caption("a dog next to") == "a dog"
    assert tidy_caption("a pig , a hen and") == "a pig , a hen"
    messy = ["a apple", "an dog and", "a kite kite", "a boat next to <end> boat"]
    assert count_caption_faults([tidy_caption(c) for c in messy], n_objects=1)["faults"] == 0


def test_phrases_follow_the_scene_connectors():
    assert phrases("a pig , a tent and a red apple") == [
        ["a", "pig"], ["a", "tent"], ["a", "red", "apple"]]
    assert phrases("a toucan next to a brown hen") == [["a", "toucan"], ["a", "brown", "hen"]]
