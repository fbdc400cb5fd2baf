"""Captions a person would write: the in-graph article fix and the one-mention-per-noun
decoding rule, each on planted cases, plus the article rule over every real word the
decoder can say."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from apps.captioning import data
from apps.captioning.caption_faults import count_caption_faults, needs_an
from apps.captioning.grammar import fix_articles, noun_mask, noun_word_ids
from apps.captioning.model import Captioner, caption_features, decode
from rnnkit.modeling.vocabulary import Vocabulary


def _fix(*captions: str) -> list[str]:
    return [c.decode() for c in fix_articles(tf.constant(list(captions))).numpy()]


def test_articles_fixed_on_planted_faults():
    planted = ["a apple next to an dog", "an unicorn , a hour and a egg", "a owl",
               "a eagle oak", "an one-way sign", "a tent", "an", "", "the apple"]
    fixed = _fix(*planted)
    assert fixed == ["an apple next to a dog", "a unicorn , an hour and an egg", "an owl",
                     "an eagle oak", "a one-way sign", "a tent", "an", "", "the apple"]
    before = count_caption_faults(planted)["article"]
    assert before == 8 and count_caption_faults(fixed)["article"] == 0
    # Words that merely contain an article are left alone ("banana", "a" inside words).
    assert _fix("a banana and a pan") == ["a banana and a pan"]


def test_articles_fixed_in_a_saved_graph(tmp_path):
    """The fix is core string ops: it survives tf.saved_model and runs without Python."""

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def fix(self, x):
            return fix_articles(x)

    tf.saved_model.save(M(), str(tmp_path))
    loaded = tf.saved_model.load(str(tmp_path))
    assert loaded.fix(tf.constant(["a apple"])).numpy().tolist() == [b"an apple"]


def test_article_rule_agrees_with_the_fault_counter_on_every_real_word():
    """Every word the decoder can say after an article (the stamps' caption words and the
    ImageNet prior's head words) gets the article the fault counter expects."""
    from apps.captioning.model import class_head_words
    from rnnkit.backbones.efficientnet_lite import imagenet_class_names

    stamps, _ = data.list_stamps(data.stamps_root())
    words = {w for s in stamps for w in data.tokenize(s.caption)}
    words |= {w for ws in class_head_words(imagenet_class_names()) for w in ws}
    words = sorted(w for w in words if w != "," and needs_an(w) is not None)
    assert len(words) > 1000
    fixed = _fix(*(f"a {w}" for w in words))
    wrong = [f for f in fixed if count_caption_faults([f])["article"]]
    assert not wrong, wrong


def test_noun_word_ids():
    refs = ["a red apple next to a dog", "a pig , a tent and a red apple",
            "a christmas pudding is eaten on christmas day", "a sheep next to a baby sheep a lamb"]
    vocab = Vocabulary.build(r.split() for r in refs)
    nouns = {vocab.itos[i] for i in noun_word_ids(vocab, refs, ["penguin", "not-in-vocab"])}
    # Head nouns of every phrase; "christmas" is said twice by one phrase of a training
    # caption and is therefore never restricted; "sheep", said once in each of two phrases
    # of a scene, is; words outside the vocabulary are skipped.
    assert "sheep" in nouns and "christmas" not in nouns
    assert nouns - {"sheep", "lamb"} == {"apple", "dog", "pig", "tent", "pudding"}
    mask = noun_mask(noun_word_ids(vocab, refs), len(vocab))
    assert mask.shape == (len(vocab),) and mask.sum() == len(nouns)


def _planted_captioner():
    """A decoder (no prior) whose output layer always prefers "dog", then "next", then
    "to", then "a": without a rule it says "dog next dog next ..."."""
    vocab = Vocabulary(["a", "dog", "next", "to", "cat"])
    model = Captioner(len(vocab), feature_dim=8, embed_dim=4, units=8, attention_dim=4,
                      dropout=0.0, noun_ids=[vocab.stoi["dog"], vocab.stoi["cat"]])
    model.build()
    kernel, bias = model.logits.get_weights()
    bias = np.full_like(bias, -5.0)
    for word, b in (("dog", 20.0), ("next", 12.0), ("to", 8.0), ("a", 4.0), ("cat", 2.0)):
        bias[vocab.stoi[word]] = b
    bias[2] = -20.0  # <end> never wins before max_length: the planted fault must show
    model.logits.set_weights([np.zeros_like(kernel), bias])
    return model, vocab


@pytest.mark.parametrize("method,width", [("greedy", 1), ("beam", 3)])
def test_no_noun_named_twice_on_a_planted_decoder(method, width):
    model, vocab = _planted_captioner()
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(2, 4, 8)).astype(np.float32)
    pooled = grid.mean(axis=1)
    dog, cat = vocab.stoi["dog"], vocab.stoi["cat"]
    off = decode(model, grid, pooled, method, width, max_length=8, nouns_once=False)
    on = decode(model, grid, pooled, method, width, max_length=8)
    off_t, on_t = off.tokens.numpy(), on.tokens.numpy()
    assert all((row == dog).sum() >= 2 for row in off_t), off_t  # the planted fault
    for row in on_t:
        assert (row == dog).sum() == 1 and (row == cat).sum() <= 1, on_t
    # Decoding as evaluate and the export do: the counter finds no doubled noun.
    caps, _, _ = caption_features(model, vocab, grid, pooled, method, width, max_length=8)
    assert count_caption_faults(caps, 1)["doubled_noun"] == 0, caps
    raw, _, _ = caption_features(model, vocab, grid, pooled, method, width, max_length=8,
                                 fixes=False)
    assert all(c.split().count("dog") >= 2 for c in raw), raw
