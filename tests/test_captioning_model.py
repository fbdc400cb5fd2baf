"""The captioning decoder: training on real cached features, and in-graph decoding checked
against a plain numpy reference decoder."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from reference_decoders import ref_beam, ref_greedy

from apps.captioning.model import (
    Captioner,
    caption_loss,
    class_head_words,
    class_word_matrix,
    decode,
)
from rnnkit import samplers
from rnnkit.modeling.vocabulary import END, PAD, START, Vocabulary

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained():
    """A small decoder with the ImageNet word prior, trained a few epochs on the real
    'tiny' Tux Paint subset."""
    import keras

    from apps.captioning.features import prepare_features
    from apps.captioning.train import caption_dataset, imagenet_prior_weights

    keras.utils.set_random_seed(7)
    prep = prepare_features(None, False, 60, 1337, "efficientnet_lite0")
    refs = [r for rs in prep.splits["train"].references for r in rs]
    kernel, bias, heads = imagenet_prior_weights("efficientnet_lite0")
    vocab = Vocabulary.build(r.split() for r in refs)
    vocab = Vocabulary(vocab.words + sorted({w for ws in heads for w in ws} - set(vocab.stoi)))
    ds = caption_dataset(prep, "train", vocab, 16, 16, True, 7)
    model = Captioner(len(vocab), embed_dim=64, units=128, attention_dim=64, dropout=0.1,
                      num_classes=1000)
    model.build()
    model.set_class_prior(kernel, bias, class_word_matrix(heads, vocab))
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=caption_loss(len(vocab), generator_loss=True))
    hist = model.fit(ds, epochs=8, verbose=0).history["loss"]
    return model, vocab, prep, hist


def test_short_training_loss_falls(trained):
    _, _, _, hist = trained
    assert np.isfinite(hist).all()
    assert hist[-1] < 0.6 * hist[0], hist


def test_vocabulary_round_trip():
    v = Vocabulary.build(c.split() for c in ["a red apple", "a pig"])
    inp, tgt = v.encode("a red kiwi", 6)
    assert inp[0] == START and tgt[3] == END and inp[4] == PAD
    assert v.decode(tgt) == "a red <unk>"
    assert Vocabulary.from_json(v.to_json()).itos == v.itos


def _numpy_greedy(model: Captioner, grid, pooled, max_len: int, beam: int = 0):
    """Reference decoder written with numpy only, from the model's weights: greedy, or the
    shared reference beam search (no length penalty) when ``beam`` > 0."""
    w = lambda layer: [np.asarray(x) for x in layer.weights]
    W0, b0 = w(model.init_state)
    Wg, bg = w(model.grid_proj)
    (E,) = w(model.embedding)
    Wx, Wh, bh = w(model.rnn)
    (Wq,) = w(model.attention)
    Wc, bc = w(model.combine)
    Wo, bo = w(model.logits)
    Wk, bk = w(model.classifier)
    Wgate, bgate = w(model.copy_gate)
    M = np.asarray(model.class_words)

    def softmax(x):
        e = np.exp(x - x.max())
        return e / e.sum()

    out = []
    for g, p in zip(grid.astype(np.float32), pooled):
        keys = g @ Wg + bg
        cell_logits = g @ Wk + bk
        whole = softmax(cell_logits.mean(0))  # the CNN's ImageNet prediction

        def step(tok, h, keys=keys, cell_logits=cell_logits, whole=whole):
            h = np.tanh(E[tok] @ Wx + h @ Wh + bh)
            a = softmax((h @ Wq) @ keys.T / np.sqrt(keys.shape[-1]))
            z = np.tanh(np.concatenate([h, a @ keys]) @ Wc + bc)
            cls = softmax(a @ cell_logits)
            pi = softmax(np.concatenate([z, [cls.max(), whole.max()]]) @ Wgate + bgate)
            mixed = pi[0] * softmax(z @ Wo + bo) + pi[1] * (cls @ M) + pi[2] * (whole @ M)
            return np.log(mixed + 1e-8), h, a

        h0 = np.tanh(p @ W0 + b0)
        if beam:
            toks, _, logp = ref_beam(step, h0, max_len, beam, 0.0, START, END,
                                   block_repeats=True)
            out.append((toks, logp))
        else:
            out.append(ref_greedy(step, h0, max_len, START, END, block_repeats=True))
    return out


def test_greedy_and_beam_agree_with_the_reference_decoder(trained):
    model, vocab, prep, _ = trained
    grid, pooled = prep.grid["test"][:12], prep.pooled["test"][:12]
    ref = _numpy_greedy(model, grid, pooled, max_len=12)
    ref_b1 = _numpy_greedy(model, grid, pooled, max_len=12, beam=1)
    greedy = decode(model, grid, pooled, "greedy", max_length=12)
    # generate() treats a width-1 beam as greedy search, so the one-hypothesis beam is
    # run by the sampler itself.
    h0, context = model.encode(grid, pooled)
    beam1 = samplers.beam_search(model.step, h0, context, beam_width=1, max_length=12,
                                 length_penalty=0.0, start_token=START, end_token=END,
                                 pad_token=PAD, block_repeats=True)
    beam4 = decode(model, grid, pooled, "beam", beam_width=4, max_length=12, length_penalty=0.0)
    for i, (words, logp) in enumerate(ref):
        n = int(greedy.lengths[i])
        assert greedy.tokens[i, :n].numpy().tolist() == words
        assert float(greedy.log_probs[i]) == pytest.approx(logp, abs=1e-3)
        # A one-hypothesis beam follows the greedy path but returns the best *finished*
        # hypothesis met on the way (an early "<end>" can beat greedy's final caption): it
        # equals the reference beam search and is never less likely than greedy.
        assert beam1.tokens[i, : int(beam1.lengths[i])].numpy().tolist() == ref_b1[i][0]
        assert float(beam1.log_probs[i]) == pytest.approx(ref_b1[i][1], abs=1e-3)
        assert float(beam1.log_probs[i]) >= logp - 1e-4
        # A wider beam (no length penalty) never finds a less likely caption.
        assert float(beam4.log_probs[i]) >= logp - 1e-4
    # Decoding works inside a tf.function graph too (as in the export).
    fn = tf.function(lambda g, p: decode(model, g, p, "beam", beam_width=3, max_length=12).tokens)
    assert fn(tf.constant(grid), tf.constant(pooled)).shape[0] == 12
    captions = [vocab.decode(t) for t in greedy.tokens.numpy()]
    assert any(captions)


def test_class_head_words_of_real_imagenet_names():
    from rnnkit.backbones.efficientnet_lite import imagenet_class_names

    names = imagenet_class_names()
    heads = dict(zip(names, class_head_words(names)))
    assert heads["king penguin"] == ["penguin"]
    assert heads["Granny Smith apple"] == ["apple"]
    assert heads["kite (bird of prey)"] == ["kite"]
    assert heads["swim trunks / shorts"] == ["trunks", "shorts"]
    assert all(heads[n] for n in names), "every class has a head word"
    m = class_word_matrix(class_head_words(names[:3]), Vocabulary(["goldfish", "tench"]))
    assert m[0].tolist()[4:] == [0.0, 1.0] and m[2].sum() == 0.0  # shark: no word in vocab


def test_prior_with_uniform_attention_is_the_imagenet_prediction():
    """The attended class distribution reduces to the CNN's own classifier when attention is
    uniform, the global one is that classifier, and with all mixing weight on a prior the
    output is that prior: on scikit-image's coffee photo the top word is 'espresso'."""
    from skimage import data

    from rnnkit.backbones import get_backbone
    from rnnkit.backbones.efficientnet_lite import (
        efficientnet_lite0,
        imagenet_class_names,
        imagenet_classifier,
    )

    backbone = get_backbone("efficientnet_lite0")
    img = tf.image.resize(data.coffee()[None].astype("float32"), (224, 224), antialias=True)
    grid, pooled = backbone(img)
    grid = tf.reshape(grid, (1, 49, -1))
    names = imagenet_class_names()
    heads = class_head_words(names)
    vocab = Vocabulary(sorted({w for ws in heads for w in ws}))
    model = Captioner(len(vocab), embed_dim=8, units=16, attention_dim=8, num_classes=1000)
    model.build()
    model.set_class_prior(*imagenet_classifier(), class_word_matrix(heads, vocab))
    with pytest.raises(ValueError, match="class_words has shape"):
        model.set_class_prior(*imagenet_classifier(), np.zeros((1000, 3), np.float32))
    full = efficientnet_lite0("logits")((img - 127.0) / 128.0)
    want = tf.nn.softmax(full)[0].numpy() @ class_word_matrix(heads, vocab)
    _, (_, *prior) = model.encode(grid, pooled)
    uniform = tf.fill((1, 49), 1.0 / 49)
    # Mixing weights all on the attended prior, then all on the global one: both are the
    # ImageNet prediction here.
    for bias in ([-30.0, 30.0, -30.0], [-30.0, -30.0, 30.0]):
        model.copy_gate.set_weights([np.zeros((18, 3), np.float32), np.array(bias, np.float32)])
        log_p = model._output(tf.zeros((1, 16)), uniform, prior)
        np.testing.assert_allclose(np.exp(log_p[0].numpy()), want, atol=1e-4)
        assert vocab.itos[int(np.argmax(log_p[0]))] == "espresso"


def test_prior_boost_is_read_by_a_traced_decoder_and_saved(trained, tmp_path):
    """Changing ``prior_boost`` changes what an already traced decoder says (it is a
    variable, not a constant of the graph), and the value survives ``model.keras``."""
    import keras

    from apps.captioning.model import _DECODERS, caption_features

    model, vocab, prep, _ = trained
    grid, pooled = prep.grid["validation"][:8], prep.pooled["validation"][:8]
    kept = model.prior_boost
    try:
        model.prior_boost = 0.0
        plain, _, _ = caption_features(model, vocab, grid, pooled, "greedy")
        (fn,) = [f for key, f in _DECODERS[model].items() if key[0] == "greedy"]
        traces = fn.experimental_get_tracing_count()
        model.prior_boost = 30.0  # all mixing weight on the global ImageNet prior
        boosted, _, _ = caption_features(model, vocab, grid, pooled, "greedy")
        assert fn.experimental_get_tracing_count() == traces  # no new trace for the boost
        assert boosted != plain
        path = tmp_path / "captioner.keras"
        model.save(path)
        assert keras.saving.load_model(path, compile=False).prior_boost == 30.0
    finally:
        model.prior_boost = kept
