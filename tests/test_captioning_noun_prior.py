"""The training drawings' head nouns as extra prior classes, on real Tux Paint pictures."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from apps.captioning.noun_prior import (
    fit_noun_classes,
    single_stamp_examples,
    with_noun_classes,
)
from rnnkit.errors import DataError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fitted():
    """Noun columns fitted beside ImageNet's on the real 'limit 60' Tux Paint subset."""
    from apps.captioning.features import prepare_features
    from apps.captioning.train import imagenet_prior_weights

    prep = prepare_features(None, False, 60, 1337, "efficientnet_lite0")
    idx, heads = single_stamp_examples(prep.splits["train"])
    kernel, bias, words = imagenet_prior_weights("efficientnet_lite0")
    nouns = fit_noun_classes(prep.pooled["train"][idx], heads, kernel, bias, seed=3)
    return prep, idx, heads, (kernel, bias, words), nouns


def _top_words(pooled, kernel, bias, words):
    logits = pooled @ kernel + bias
    return [words[c] for c in logits.argmax(axis=1)]


def test_the_training_drawings_are_named_by_their_own_nouns(fitted):
    prep, idx, heads, (kernel, bias, words), nouns = fitted
    assert len(idx) >= 8 and len(set(heads)) >= 4
    assert nouns.nouns == sorted(set(heads))
    assert nouns.kernel.shape == (kernel.shape[0], len(nouns.nouns))
    assert nouns.bias.shape == (len(nouns.nouns),)
    # ImageNet alone names few of these drawings; with the noun classes beside it nearly
    # every training drawing's top class is its own noun.
    before = np.mean([h in ws for h, ws in zip(heads, _top_words(
        prep.pooled["train"][idx], kernel, bias, words))])
    k2, b2, w2 = with_noun_classes(kernel, bias, words, nouns)
    after = np.mean([h in ws for h, ws in zip(heads, _top_words(
        prep.pooled["train"][idx], k2, b2, w2))])
    assert nouns.train_accuracy >= 0.9 and after >= 0.9 > before
    assert k2.shape == (kernel.shape[0], 1000 + len(nouns.nouns))
    assert w2[:1000] == [list(w) for w in words] and w2[1000:] == [[n] for n in nouns.nouns]


def test_a_photograph_imagenet_is_sure_of_keeps_its_imagenet_word(fitted):
    """The noun columns learn beside ImageNet's fixed logits, so on scikit-image's coffee
    photo (ImageNet: espresso) the extended prior's top class is still ImageNet's."""
    from skimage import data

    from rnnkit.backbones import get_backbone

    *_, (kernel, bias, words), nouns = fitted
    img = tf.image.resize(data.coffee()[None].astype("float32"), (224, 224), antialias=True)
    _, pooled = get_backbone("efficientnet_lite0")(img)
    k2, b2, w2 = with_noun_classes(kernel, bias, words, nouns)
    assert _top_words(pooled.numpy(), k2, b2, w2) == [["espresso"]]


def test_the_fit_is_repeatable_for_one_seed(fitted):
    prep, idx, heads, (kernel, bias, _), nouns = fitted
    again = fit_noun_classes(prep.pooled["train"][idx], heads, kernel, bias, seed=3)
    np.testing.assert_allclose(again.kernel, nouns.kernel, atol=1e-5)


def test_bad_inputs_name_the_problem():
    kernel, bias = np.zeros((8, 3), np.float32), np.zeros(3, np.float32)
    feats = np.ones((4, 8), np.float32)
    with pytest.raises(DataError, match="one noun each"):
        fit_noun_classes(feats, ["cat", "dog"], kernel, bias)
    with pytest.raises(DataError, match="at least two head nouns"):
        fit_noun_classes(feats, ["cat"] * 4, kernel, bias)
    with pytest.raises(DataError, match="expects 8"):
        fit_noun_classes(np.ones((4, 5), np.float32), ["cat", "dog"] * 2, kernel, bias)
    with pytest.raises(DataError, match="one noun each"):
        fit_noun_classes(np.ones((0, 8), np.float32), [], kernel, bias)


def test_calibration_skips_a_boost_whose_captions_stop_being_noun_phrases(monkeypatch):
    """The boost naming the most objects is refused when its captions no longer open with
    a determiner as often as the training captions do (here: bare nouns)."""
    from types import SimpleNamespace

    from apps.captioning import train
    from apps.captioning.data import starts_with_determiner
    from apps.captioning.splits import Split

    def split(refs, heads):
        n = len(refs)
        return Split([None] * n, [[r] for r in refs], ["single"] * n, heads, [["s"]] * n)

    prep = SimpleNamespace(splits={
        "train": split(["a dog", "an owl", "a red apple", "magic stones"],
                       ["dog", "owl", "apple", "stones"]),
        "validation": split(["a cat", "a truck", "an owl", "a pear"],
                            ["cat", "truck", "owl", "pear"])})
    captions = {0.0: ["a cat", "a dog", "a dog", "a dog"],             # 1 of 4 named
                3.0: ["a cat", "a truck", "a dog", "a dog"],           # 2 of 4, all phrases
                6.0: ["cat", "truck", "owl", "a pear"]}                # 4 of 4, 1 phrase
    monkeypatch.setattr(train, "decode_split",
                        lambda model, vocab, prep, split, boost, method: captions[boost])
    model = SimpleNamespace(prior_boost=0.0)
    out = train.calibrate_prior(model, None, prep, "validation", boosts=(0.0, 3.0, 6.0))
    assert out["min_determiner_share"] == 0.75
    assert out["recall"] == {"0.0": 0.25, "3.0": 0.5, "6.0": 1.0}
    assert out["determiner_share"]["6.0"] == 0.25
    assert out["prior_boost"] == 3.0 and model.prior_boost == 3.0
    assert starts_with_determiner("The treble clef") and not starts_with_determiner("truck")
    assert not starts_with_determiner("")
