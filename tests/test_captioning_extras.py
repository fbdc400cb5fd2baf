"""Extra training drawings (Tux Paint's SVG stamps, the emoji art sets) through the data
builder: captions, licences, scenes, and the held-out split left alone. Real stamps and
real emoji (the cached fetch path of tests/test_captioning_emoji.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("resvg_py", reason="resvg-py (the SVG renderer) is not installed")

from apps.captioning import data, extra_drawings, formats
from apps.captioning.caption_faults import count_caption_faults
from rnnkit.errors import DataError


@pytest.fixture(scope="module")
def sources():
    return extra_drawings._sources()


def test_parse_extras():
    assert extra_drawings.parse_extras("tuxpaint+emoji+svg") == ("svg", "emoji")
    assert extra_drawings.parse_extras("tuxpaint") == ()
    assert extra_drawings.parse_extras(None) == ()
    assert formats.parse_data_spec("tuxpaint+svg") == ("tuxpaint", None)
    with pytest.raises(DataError, match="extra drawings must be among svg, emoji"):
        formats.parse_data_spec("tuxpaint+apple")


def test_extra_sources_never_touch_the_held_out_stamps(sources):
    held_ids = {s.id for s in sources["held"]}
    held_caps = {s.caption for s in sources["held"]}
    assert len(sources["held"]) == 78  # 24 validation + 54 test stamps, as before
    assert not held_ids & {s.id for s in sources["svg"]}
    assert not held_caps & {s.caption for s in sources["svg"]}
    assert len(sources["svg"]) >= 150
    assert len(sources["emoji"]) >= 3000


@pytest.mark.parametrize("source", ["svg", "emoji"])
def test_extra_examples(sources, source):
    emoji_by_id = {r.to_stamp().id: r for r in sources["emoji"]}
    extra = (sources["svg"][:6] if source == "svg"
             else [r.to_stamp() for r in sources["emoji"][::500]])
    rows = [e for _, e in extra_drawings.extra_examples(
        source, sources["train"], extra, emoji_by_id, singles_per=1, scenes=8)]
    singles = [e for e in rows if e["kind"] == "single"]
    scenes = [e for e in rows if e["kind"] == "scene"]
    assert len(singles) == len(extra) and len(scenes) == 8
    train_ids = {s.id for s in sources["train"]}
    extra_ids = {s.id for s in extra}
    for e in rows:
        assert e["image"].shape == (224, 224, 3)
        assert len(e["source"]) == len(e["licence"]) == len(e["attribution"]) == len(e["stamps"])
        for sid, lic in zip(e["stamps"], e["licence"]):
            assert sid in train_ids or sid in extra_ids, sid
            if sid.startswith("emoji/"):
                assert lic in ("Apache-2.0", "CC-BY-4.0", "CC-BY-SA-4.0", "MIT"), lic
            else:
                assert lic == "GPL-2.0"
    for e in scenes:
        # One extra drawing among Tux Paint training stamps, distinct head nouns, and the
        # caption is the phrases joined in placement order.
        assert sum(s in extra_ids for s in e["stamps"]) == 1
        parts = data.scene_parts(e["caption"])
        assert len(parts) == len(e["stamps"])
        heads = [data.head_noun(p) for p in parts]
        assert len(set(heads)) == len(heads), e["caption"]
    if source == "emoji":
        assert any("Twemoji" in a or "Twitter" in a for e in rows for a in e["attribution"])
    # Captions made as the stamps' are: no article faults, nothing doubled.
    counts = count_caption_faults([e["caption"] for e in rows],
                                  [len(e["stamps"]) for e in rows])
    assert counts["article"] == 0 and counts["doubled_noun"] == 0, counts["examples"]


def test_features_with_extras_append_to_training_only():
    """``--data tuxpaint+svg+emoji`` (the 60-picture test subset): Tux Paint's splits and
    features unchanged, each source's pictures and features appended to training."""
    import numpy as np

    from apps.captioning.features import prepare_features

    plain = prepare_features(None, False, 60, 1337, "efficientnet_lite0")
    more = prepare_features("tuxpaint+svg+emoji", False, 60, 1337, "efficientnet_lite0")
    for split in ("validation", "test"):
        assert more.splits[split].references == plain.splits[split].references
        np.testing.assert_array_equal(more.pooled[split], plain.pooled[split])
    n0 = len(plain.splits["train"])
    train = more.splits["train"]
    assert len(train) == n0 + 120 == len(more.pooled["train"]) == len(more.grid["train"])
    np.testing.assert_array_equal(more.pooled["train"][:n0], plain.pooled["train"])
    extra_ids = [s for ids in train.stamps[n0:] for s in ids]
    assert any(s.startswith("emoji/") for s in extra_ids)
    assert any(not s.startswith("emoji/") and s not in
               {x for ids in plain.splits["train"].stamps for x in ids} for s in extra_ids)
    assert all(h for h, k in zip(train.heads, train.kinds) if k == "single")
