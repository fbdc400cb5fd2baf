"""The shared sequence-modelling pieces: vocabulary, Luong attention, masked loss and
accuracy, BLEU/chrF. Each is checked against a plain NumPy / sacrebleu reference."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from rnnkit.modeling import bleu, sequence
from rnnkit.modeling.attention import LuongAttention
from rnnkit.modeling.vocabulary import END, PAD, SPECIALS, START, UNK, Vocabulary

# Real sentences (LibreOffice help, English side) for the corpus-level checks.
SENTENCES = [
    "Choose Format - Cells and click the Numbers tab .",
    "Select the cell range that you want to sort .",
    "Click the cell where you want to insert the function .",
    "Enter the formula in the input line and press Enter .",
    "To select a cell range , drag the mouse over the cells .",
]


# --------------------------------------------------------------------------- vocabulary


def test_vocabulary_ranks_by_count_then_alphabetically_specials_first():
    corpus = [s.split() for s in SENTENCES]
    vocab = Vocabulary.build(corpus, min_count=2)
    assert vocab.itos[:4] == list(SPECIALS)
    assert (PAD, START, END, UNK) == (0, 1, 2, 3)
    counts: dict[str, int] = {}
    for tokens in corpus:
        for t in tokens:
            counts[t] = counts.get(t, 0) + 1
    expected = sorted((w for w, n in counts.items() if n >= 2), key=lambda w: (-counts[w], w))
    assert vocab.words == expected
    assert vocab.words[:2] == ["the", "."]  # 8 and 5 times
    capped = Vocabulary.build(corpus, max_size=7)
    assert len(capped) == 7 and capped.words == Vocabulary.build(corpus).words[:3]


def test_vocabulary_encodes_decodes_and_round_trips():
    vocab = Vocabulary.build([s.split() for s in SENTENCES])
    inputs, targets = vocab.encode("Select the unheard-of cell", max_len=7)
    sel, the, cell = (vocab.stoi[w] for w in ("Select", "the", "cell"))
    assert inputs.tolist() == [START, sel, the, UNK, cell, PAD, PAD]
    assert targets.tolist() == [sel, the, UNK, cell, END, PAD, PAD]
    cut_in, cut_out = vocab.encode("Select the cell range", max_len=3)
    assert cut_in.tolist() == [START, sel, the] and cut_out.tolist() == [sel, the, END]
    assert vocab.decode(targets) == "Select the <unk> cell"
    assert Vocabulary.from_json(vocab.to_json()) == vocab
    assert Vocabulary.from_tokens(vocab.itos) == vocab
    assert json.loads(vocab.to_json())[0] == vocab.itos[4]


def test_vocabulary_lookup_table_matches_ids():
    vocab = Vocabulary.build([s.split() for s in SENTENCES])
    tokens = ["the", "cell", "zebra", "<end>", "."]
    assert vocab.lookup_table().lookup(tf.constant(tokens)).numpy().tolist() == vocab.ids(tokens)
    assert vocab.lookup_table(default=-1).lookup(tf.constant(["zebra"])).numpy().tolist() == [-1]


def test_vocabulary_refuses_bad_input():
    with pytest.raises(ValueError, match="must start with"):
        Vocabulary.from_tokens(["<pad>", "<unk>", "</s>", "a"])
    with pytest.raises(ValueError, match="unique"):
        Vocabulary(["a", "b", "a"])
    with pytest.raises(ValueError, match="max_size"):
        Vocabulary.build([["a"]], max_size=4)
    with pytest.raises(ValueError, match="min_count"):
        Vocabulary.build([["a"]], min_count=0)
    # A special spelling among the words does not get a second id.
    assert Vocabulary(["<end>", "a"]).itos == [*SPECIALS, "a"]


# --------------------------------------------------------------------------- attention


def _np_attention(kernel, query, keys, mask):
    q = query @ kernel
    scores = np.einsum("btd,bsd->bts", q, keys) / np.sqrt(keys.shape[-1])
    if mask is not None:
        scores = np.where(mask[:, None, :], scores, -1e9)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    weights = e / e.sum(-1, keepdims=True)
    return np.einsum("bts,bsd->btd", weights, keys), weights


def test_luong_attention_matches_numpy_with_mask_and_per_step():
    rng = np.random.default_rng(0)
    query = rng.normal(size=(3, 5, 8)).astype(np.float32)
    keys = rng.normal(size=(3, 6, 4)).astype(np.float32)
    mask = np.arange(6)[None, :] < np.array([6, 2, 4])[:, None]
    layer = LuongAttention(4)
    context, weights = layer(query, keys, keys_mask=mask)
    kernel = layer.query_projection.kernel.numpy()
    ref_c, ref_w = _np_attention(kernel, query, keys, mask)
    np.testing.assert_allclose(weights.numpy(), ref_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(context.numpy(), ref_c, rtol=1e-5, atol=1e-5)
    assert np.all(weights.numpy()[1, :, 2:] == 0.0)
    # One decoding step gives the same numbers as the whole sequence at once.
    c_step, w_step = layer(query[:, 2], keys, keys_mask=mask)
    assert c_step.shape == (3, 4) and w_step.shape == (3, 6)
    np.testing.assert_allclose(w_step.numpy(), weights.numpy()[:, 2], rtol=1e-5, atol=1e-6)
    # Unmasked: every key is used.
    _, free = layer(query, keys)
    np.testing.assert_allclose(free.numpy(), _np_attention(kernel, query, keys, None)[1],
                               rtol=1e-5, atol=1e-6)


def test_luong_attention_row_without_keys_is_finite_and_config_round_trips():
    layer = LuongAttention(3, name="att")
    keys = np.ones((1, 4, 3), np.float32)
    _, weights = layer(np.ones((1, 2, 5), np.float32), keys, keys_mask=np.zeros((1, 4), bool))
    assert np.all(np.isfinite(weights.numpy()))
    np.testing.assert_allclose(weights.numpy(), 0.25)
    clone = LuongAttention.from_config(layer.get_config())
    assert clone.key_dim == 3 and clone.name == "att"
    with pytest.raises(ValueError, match="key_dim"):
        LuongAttention(0)


# --------------------------------------------------------------------------- sequence


def _np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_masked_sequence_loss_is_the_mean_over_real_tokens():
    rng = np.random.default_rng(1)
    y = np.array([[5, 4, END, PAD, PAD], [6, END, PAD, PAD, PAD]], np.int32)
    logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
    lp = _np_log_softmax(logits)
    nll = -np.take_along_axis(lp, y[..., None], -1)[..., 0]
    real = y != PAD
    expected = (nll * real).sum() / real.sum()
    assert float(sequence.masked_sequence_loss()(y, logits)) == pytest.approx(expected, rel=1e-5)
    # Padding predictions do not matter.
    noisy = logits.copy()
    noisy[~real] = 100.0 * rng.normal(size=noisy[~real].shape)
    assert float(sequence.masked_sequence_loss()(y, noisy)) == pytest.approx(expected, rel=1e-5)
    # An all-padding batch gives 0, not NaN.
    assert float(sequence.masked_sequence_loss()(np.zeros_like(y), logits)) == 0.0
    smoothing = 0.1
    target = np.eye(7)[y] * (1 - smoothing) + smoothing / 7
    smooth_nll = -(target * lp).sum(-1)
    got = sequence.masked_sequence_loss(7, label_smoothing=smoothing)(y, logits)
    assert float(got) == pytest.approx((smooth_nll * real).sum() / real.sum(), rel=1e-5)
    with pytest.raises(ValueError, match="num_classes"):
        sequence.masked_sequence_loss(label_smoothing=0.1)
    with pytest.raises(ValueError, match="label_smoothing"):
        sequence.masked_sequence_loss(7, label_smoothing=1.0)


def test_masked_accuracy_and_masked_mean():
    y = np.array([[4, 5, END, PAD], [6, PAD, PAD, PAD]], np.int32)
    pred_ids = np.array([[4, 6, END, 4], [5, 0, 0, 0]])
    scores = keras.ops.one_hot(pred_ids, 8)
    # 3 of the 4 real tokens wrong or right: hits at (0,0) and (0,2).
    assert float(sequence.masked_accuracy(y, scores)) == pytest.approx(2 / 4)
    values = np.array([[1.0, 2.0, 3.0, 100.0], [4.0, 100.0, 100.0, 100.0]], np.float32)
    assert float(sequence.masked_mean(y != PAD, values)) == pytest.approx(10.0 / 4)
    assert float(sequence.masked_mean(np.zeros((2, 4)), values)) == 0.0


def test_masked_loss_trains_a_keras_model():
    """compile/fit accept the loss and metric, and padding targets carry no gradient."""
    keras.utils.set_random_seed(0)
    ids = np.array([[4, 5, 6, END], [5, 6, END, PAD]] * 8, np.int32)
    model = keras.Sequential([keras.layers.Embedding(8, 8), keras.layers.Dense(8)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=sequence.masked_sequence_loss(),
                  metrics=[sequence.masked_accuracy])
    history = model.fit(ids, ids, epochs=30, verbose=0)
    assert history.history["loss"][-1] < 0.1 * history.history["loss"][0]
    assert history.history["masked_accuracy"][-1] == 1.0


# --------------------------------------------------------------------------- bleu


def test_bleu_and_chrf_match_sacrebleu():
    import sacrebleu

    hyps = ["Choose Format - Cells and click the Number tab .",
            "Select the range of cells that you want sorted .",
            "click the cell where you want to insert the function .",
            "Type the formula in the input line and press Enter .",
            "To select a cell range drag the mouse over the cells ."]
    refs = SENTENCES
    assert bleu.corpus_bleu(hyps, refs) == round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2)
    assert bleu.corpus_bleu(hyps, refs, lowercase=True) == round(
        sacrebleu.corpus_bleu(hyps, [refs], lowercase=True).score, 2)
    assert bleu.corpus_chrf(hyps, refs) == round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2)
    scores = bleu.translation_scores(hyps, refs)
    assert scores["bleu_lowercased"] > scores["bleu_cased"]
    assert bleu.translation_scores(refs, refs) == {"bleu_cased": 100.0,
                                                    "bleu_lowercased": 100.0, "chrf": 100.0}
    orders = bleu.bleu_by_order(hyps, refs)
    assert list(orders) == ["bleu1", "bleu2", "bleu3", "bleu4"]
    assert orders["bleu1"] > orders["bleu2"] > orders["bleu3"] > orders["bleu4"]
    assert orders["bleu4"] == bleu.corpus_bleu(hyps, refs)


def test_bleu_with_several_references_per_hypothesis():
    import sacrebleu

    hyps = ["a red apple", "a cat next to a dog", "the green tree"]
    refs = [["a red apple", "an apple"], ["a cat next to a dog"],
            ["a tree", "the tree", "a green tree"]]
    streams = bleu.reference_streams(hyps, refs)
    assert streams == [["a red apple", "a cat next to a dog", "a tree"],
                       ["an apple", "a cat next to a dog", "the tree"],
                       ["a red apple", "a cat next to a dog", "a green tree"]]
    assert bleu.corpus_bleu(hyps, refs, max_order=2) == round(
        sacrebleu.BLEU(max_ngram_order=2).corpus_score(hyps, streams).score, 2)
    # Padding a short list with its first reference changes nothing.
    assert bleu.corpus_bleu(hyps[:1], [refs[0]]) == bleu.corpus_bleu(
        hyps[:1], [refs[0] + [refs[0][0]]])
    with pytest.raises(ValueError, match="2 references"):
        bleu.corpus_bleu(hyps, refs[:2])
    with pytest.raises(ValueError, match="no reference"):
        bleu.corpus_bleu(hyps, [["x"], [], ["y"]])
    with pytest.raises(ValueError, match="no hypotheses"):
        bleu.corpus_chrf([], [])
