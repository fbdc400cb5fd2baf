"""Language-model pretraining and ULMFiT fine-tuning of the sentiment encoder, on a few
hundred real IMDB training reviews (the real fetch path, cached)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apps.sentiment import data

LIMIT = 300
SMALL_LM = {"lm_epochs": 2, "lm_window": 32, "lm_batch_size": 16, "lm_sampled": 64,
            "lm_learning_rate": 5e-3, "lm_embed_dropout": 0.0, "lm_backward": True,
            "lm_heldout": 0.05}


@pytest.fixture(scope="module")
def tokens():
    """The vocabulary and token ids of 300 real training reviews."""
    from apps.sentiment.model import make_vectorizer
    from apps.sentiment.train import review_tokens

    train = data.load_splits(None, 1337, LIMIT)["train"]
    vectorizer = make_vectorizer(3000)
    vectorizer.adapt(train.map(lambda t, y: t).batch(128))
    return vectorizer.get_vocabulary(), review_tokens(train, vectorizer)


@pytest.fixture(scope="module")
def pretrained(tokens, tmp_path_factory):
    """A tiny forward + backward language model pretrained once, cached in a temp folder."""
    from apps.sentiment import lm

    vocabulary, token_lists = tokens
    cache = tmp_path_factory.mktemp("lm_cache")
    first = lm.pretrained_encoder(token_lists, vocabulary, 24, 16, SMALL_LM, 5, cache)
    return cache, first


def test_token_stream_and_windows(tokens):
    from apps.sentiment import lm

    vocabulary, token_lists = tokens
    assert all(len(ids) and (ids > 0).all() for ids in token_lists)  # unpadded, no id 0
    boundary = len(vocabulary)
    stream = lm.token_stream(token_lists[:3], boundary)
    assert len(stream) == sum(len(t) + 1 for t in token_lists[:3])
    assert stream[0] == boundary and (stream == boundary).sum() == 3
    batches = list(lm.window_dataset(stream, 10, 4, None).as_numpy_iterator())
    windows = np.concatenate(batches)
    assert windows.shape[1] == 11
    # Consecutive windows overlap by one token and together cover the stream in order.
    assert (windows[1:, 0] == windows[:-1, -1]).all()
    assert np.array_equal(windows[:, :-1].ravel(), stream[: windows.shape[0] * 10])
    shuffled = np.concatenate(list(lm.window_dataset(stream, 10, 4, 3).as_numpy_iterator()))
    assert shuffled.shape[1] == 11 and len(shuffled) % 4 == 0  # training drops the remainder
    # Every epoch (a new iterator) cuts the stream at a new phase.
    training = lm.window_dataset(stream, 10, 4, 3)
    all_windows = np.lib.stride_tricks.sliding_window_view(stream, 11)
    phases = set()
    for _ in range(6):
        first = next(iter(training))[0].numpy()
        phases.add(int(np.flatnonzero((all_windows == first).all(axis=1))[0]) % 10)
    assert len(phases) > 1, phases
    from rnnkit.errors import DataError

    with pytest.raises(DataError, match="fewer than one window"):
        lm.window_dataset(stream[:5], 10, 4, None)
    with pytest.raises(DataError, match="no training reviews"):
        lm.token_stream([], boundary)


@pytest.mark.slow
def test_pretraining_lowers_heldout_loss_and_is_cached(tokens, pretrained):
    from apps.sentiment import lm

    vocabulary, token_lists = tokens
    cache, first = pretrained
    summary = first["summary"]
    assert summary["cached"] is False
    losses = summary["heldout_loss"]  # full-softmax cross-entropy on held-out reviews
    assert losses[0] == pytest.approx(np.log(len(vocabulary) + 1), abs=0.3)  # uniform start
    assert losses[-1] < losses[0] - 1.0, losses
    assert summary["heldout_reviews"] == 15 and summary["reviews"] == LIMIT - 15
    assert first["embedding"].shape == (len(vocabulary), 24)  # boundary row not transferred
    assert [w.shape for w in first["forward"]] == [(24, 16), (16, 16), (16,)]
    assert [w.shape for w in first["backward"]] == [(24, 16), (16, 16), (16,)]
    # The forward and backward models learn different weights.
    assert not np.allclose(first["forward"][1], first["backward"][1])

    again = lm.pretrained_encoder(token_lists, vocabulary, 24, 16, SMALL_LM, 5, cache)
    assert again["summary"]["cached"] is True
    assert again["summary"]["cache"] == summary["cache"]
    assert again["summary"]["seconds"] == summary["seconds"]  # the stored run, not a new one
    np.testing.assert_array_equal(again["embedding"], first["embedding"])
    for a, b in zip(again["forward"] + again["backward"], first["forward"] + first["backward"]):
        np.testing.assert_array_equal(a, b)
    # Any setting that changes the weights changes the key (another cache entry).
    keys = {lm.cache_key(vocabulary, 24, 16, 5, {**SMALL_LM, **change}, LIMIT)
            for change in ({}, {"lm_window": 40}, {"lm_backward": False})}
    keys.add(lm.cache_key(vocabulary[:-1] + ["zzz"], 24, 16, 5, SMALL_LM, LIMIT))
    assert len(keys) == 4


@pytest.mark.slow
def test_fine_tuning_starts_from_pretrained_weights_and_unfreezes_gradually(
        tokens, pretrained, tmp_path):
    import keras
    import tensorflow as tf

    from apps.sentiment import lm
    from apps.sentiment.model import build_classifier
    from apps.sentiment.train import bucketed
    from rnnkit.training import fit

    vocabulary, token_lists = tokens
    _, weights = pretrained
    keras.utils.set_random_seed(2)
    classifier = build_classifier(len(vocabulary), 24, 16, embed_dropout=0.0,
                                  head_dropout=0.0)
    lm.transfer(classifier, weights)
    birnn = classifier.get_layer("birnn")
    np.testing.assert_array_equal(classifier.get_layer("embedding").get_weights()[0],
                                  weights["embedding"])
    for got, want in zip(birnn.forward_layer.get_weights() + birnn.backward_layer.get_weights(),
                         weights["forward"] + weights["backward"]):
        np.testing.assert_array_equal(got, want)

    optimizer = lm.DiscriminativeAdamW(learning_rate=3e-3, weight_decay=1e-2)
    unfreeze = lm.GradualUnfreezing(optimizer, 2.6, gradual=True)
    assert unfreeze.scales(0) == [0.0, 0.0, 1.0]
    assert unfreeze.scales(1) == [0.0, pytest.approx(1 / 2.6), 1.0]
    assert unfreeze.scales(2) == [pytest.approx(2.6 ** -2), pytest.approx(1 / 2.6), 1.0]
    assert lm.GradualUnfreezing(optimizer, 2.6, gradual=False).scales(0) == \
        unfreeze.scales(2)
    classifier.compile(optimizer=optimizer,
                       loss=keras.losses.BinaryCrossentropy(from_logits=True),
                       metrics=[keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)])
    labels = data.as_numpy(data.load_splits(None, 1337, LIMIT)["train"])[1]
    ds = tf.data.Dataset.from_generator(
        lambda: ((ids[:96], np.float32(y)) for ids, y in zip(token_lists, labels)),
        output_signature=(tf.TensorSpec([None], tf.int64), tf.TensorSpec([], tf.float32)))
    snapshots = []

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append([w.copy() for w in classifier.get_weights()])

    start = [w.copy() for w in classifier.get_weights()]
    fit(classifier, bucketed(ds, 32, 96, 0), bucketed(ds, 64, 96, None),
        output_dir=tmp_path / "run", epochs=3, monitor="val_accuracy", patience=5,
        extra_callbacks=[unfreeze, Snapshot()], verbose=0)
    groups = [lm.group_of(v.path) for v in classifier.weights]
    assert groups == [0, 1, 1, 1, 1, 1, 1, 2, 2]

    def moved(a, b, group):
        return [not np.array_equal(x, y) for x, y, g in zip(a, b, groups) if g == group]

    # Epoch 1: head only (frozen weights do not even decay); epoch 2: + the RNN;
    # epoch 3: + the embedding.
    assert not any(moved(start, snapshots[0], 0)) and not any(moved(start, snapshots[0], 1))
    assert all(moved(start, snapshots[0], 2))
    assert not any(moved(snapshots[0], snapshots[1], 0)) and all(moved(snapshots[0],
                                                                       snapshots[1], 1))
    assert all(moved(snapshots[1], snapshots[2], 0))


@pytest.mark.slow
def test_cli_pretrain_lm_train_and_export(tmp_path):
    """``train --pretrain-lm`` end to end; the second run reuses the cached language model;
    the export still answers empty, non-ASCII and 100k-character inputs."""
    import tensorflow as tf

    from apps.sentiment.app import main

    out, exports = tmp_path / "run", tmp_path / "saved_models"
    args = ["train", "--limit", str(LIMIT), "--epochs", "1", "--max-len", "96", "--units", "16",
            "--vocab-size", "3000", "--batch-size", "32", "--pretrain-lm", "--lm-epochs", "1",
            "--lm-window", "32", "--lm-sampled", "64", "--gradual-unfreeze"]
    assert main([*args, "--output", str(out)]) == 0
    first = json.loads((out / "run.json").read_text())["train"]["language_model"]
    assert main([*args, "--output", str(tmp_path / "again")]) == 0
    second = json.loads((tmp_path / "again" / "run.json").read_text())["train"]
    assert second["language_model"]["cached"] is True
    assert second["language_model"]["cache"] == first["cache"]
    assert second["hparams"]["pretrain_lm"] and second["hparams"]["gradual_unfreeze"]
    assert main(["train", "--limit", str(LIMIT), "--output", str(tmp_path / "bad"),
                 "--pretrain-lm", "--glove"]) == 2  # both set the embedding: a user error
    from apps.sentiment import shorttext

    short = shorttext.report(out)  # validation and short-text figures, no test split
    assert len(short["language_model"]["heldout_perplexity"]) == 2  # before + 1 epoch
    assert short["options"]["pretrain_lm"] is True
    assert 0 <= short["probes"]["short_over_0_99"] <= short["probes"]["short_items"] > 20
    assert short["out_of_domain"]["amazon"]["short_examples"] == 534
    assert (out / "reports" / "short_texts.json").is_file()
    assert shorttext.main([str(tmp_path / "missing")]) == 2
    assert main(["export", "--output", str(out), "--export-dir", str(exports)]) == 0
    serve = tf.saved_model.load(str(exports / "1")).signatures["serving_default"]
    texts = ["", "Ce film était magnifique ! 素晴らしい映画 😀", "bad " * 25_000,
             "A moving, beautifully shot film."]
    result = serve(text=tf.constant(texts))
    p = result["probability"].numpy()
    assert p.shape == (4,) and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    assert [x.decode() for x in result["label"].numpy()] == [
        "positive" if v >= 0.5 else "negative" for v in p]


@pytest.mark.slow
def test_generation_from_the_cached_language_model(tokens, pretrained, tmp_path):
    import tensorflow as tf

    from apps.sentiment import lm
    from rnnkit.errors import DataError

    vocabulary, _ = tokens
    _, weights = pretrained
    model, vocab = lm.load_cached(weights["summary"]["cache"])
    assert vocab == list(vocabulary)
    text, ids, state = lm.read_prompt(model, vocab, "This MOVIE was, quite simply, great!")
    assert text == "this movie was quite simply great !"
    # The step-by-step recurrence is the layer's own: same last state as the Keras layer.
    hidden = model.forward_rnn(model.embedding(tf.constant([ids])))
    np.testing.assert_allclose(state, hidden[0, -1].numpy(), atol=1e-5)
    out = lm.generate(model, vocab, "This movie was", words=12, seed=4)
    assert out.startswith("this movie was ") and len(out.split()) == 15
    assert all(w in vocab[2:] for w in out.split()[3:])  # no padding, [UNK] or boundary
    assert out == lm.generate(model, vocab, "This movie was", words=12, seed=4)
    assert len(lm.generate(model, vocab, "", words=5).split()) == 5
    with pytest.raises(DataError, match="not a pretrained language model"):
        lm.load_cached(tmp_path)
    assert lm.main([str(tmp_path), "x"]) == 2
