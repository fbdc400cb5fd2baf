"""The captioning decoder: training on real cached features, and in-graph decoding checked
against a plain numpy reference decoder."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from reference_decoders import ref_greedy

from apps.captioning.model import END, PAD, START, Captioner, Vocabulary, decode, masked_loss

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained():
    """A small decoder trained a few epochs on the real 'tiny' Tux Paint subset."""
    import keras

    from apps.captioning.train import _dataset, prepare_features

    keras.utils.set_random_seed(7)
    prep = prepare_features(None, False, 60, 1337, "efficientnet_lite0")
    refs = [r for rs in prep.splits["train"].references for r in rs]
    vocab = Vocabulary.build(refs)
    ds = _dataset(prep, "train", vocab, 16, 16, True, 7)
    model = Captioner(len(vocab), embed_dim=64, units=128, attention_dim=64, dropout=0.1)
    model.build()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=masked_loss)
    hist = model.fit(ds, epochs=8, verbose=0).history["loss"]
    return model, vocab, prep, hist


def test_short_training_loss_falls(trained):
    _, _, _, hist = trained
    assert np.isfinite(hist).all()
    assert hist[-1] < 0.6 * hist[0], hist


def test_vocabulary_round_trip():
    v = Vocabulary.build(["a red apple", "a pig"])
    inp, tgt = v.encode("a red kiwi", 6)
    assert inp[0] == START and tgt[3] == END and inp[4] == PAD
    assert v.decode(tgt) == "a red <unk>"
    assert Vocabulary.from_json(v.to_json()).itos == v.itos


def _numpy_greedy(model: Captioner, grid, pooled, max_len: int):
    """Reference greedy decoder written with numpy only, from the model's weights."""
    w = lambda layer: [np.asarray(x) for x in layer.weights]
    W0, b0 = w(model.init_state)
    Wg, bg = w(model.grid_proj)
    (E,) = w(model.embedding)
    Wx, Wh, bh = w(model.rnn)
    (Wq,) = w(model.query)
    Wc, bc = w(model.combine)
    Wo, bo = w(model.logits)
    out = []
    for g, p in zip(grid.astype(np.float32), pooled):
        keys = g @ Wg + bg

        def step(tok, h, keys=keys):
            h = np.tanh(E[tok] @ Wx + h @ Wh + bh)
            s = (h @ Wq) @ keys.T / np.sqrt(keys.shape[-1])
            a = np.exp(s - s.max())
            a /= a.sum()
            z = np.tanh(np.concatenate([h, a @ keys]) @ Wc + bc)
            logits = z @ Wo + bo
            return logits - logits.max() - np.log(np.exp(logits - logits.max()).sum()), h, a

        out.append(ref_greedy(step, np.tanh(p @ W0 + b0), max_len, START, END))
    return out


def test_greedy_and_beam_agree_with_the_reference_decoder(trained):
    model, vocab, prep, _ = trained
    grid, pooled = prep.grid["test"][:12], prep.pooled["test"][:12]
    ref = _numpy_greedy(model, grid, pooled, max_len=12)
    greedy = decode(model, grid, pooled, "greedy", max_length=12)
    beam1 = decode(model, grid, pooled, "beam", beam_width=1, max_length=12, length_penalty=0.0)
    beam4 = decode(model, grid, pooled, "beam", beam_width=4, max_length=12, length_penalty=0.0)
    for i, (words, logp) in enumerate(ref):
        n = int(greedy.lengths[i])
        assert greedy.tokens[i, :n].numpy().tolist() == words
        assert float(greedy.log_probs[i]) == pytest.approx(logp, abs=1e-3)
        # A one-hypothesis beam is greedy search.
        assert beam1.tokens[i, : int(beam1.lengths[i])].numpy().tolist() == words
        # A wider beam (no length penalty) never finds a less likely caption.
        assert float(beam4.log_probs[i]) >= logp - 1e-4
    # Decoding works inside a tf.function graph too (as in the export).
    fn = tf.function(lambda g, p: decode(model, g, p, "beam", beam_width=3, max_length=12).tokens)
    assert fn(tf.constant(grid), tf.constant(pooled)).shape[0] == 12
    captions = [vocab.decode(t) for t in greedy.tokens.numpy()]
    assert any(captions)
