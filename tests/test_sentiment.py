"""Sentiment app tests on small subsets of the real IMDB reviews (real fetch path, cached)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT

from apps.sentiment import data

LIMIT = 300


@pytest.fixture(scope="module")
def small_splits():
    """A few hundred real reviews per split, through the real wheel + TFDS path."""
    return {name: data.as_numpy(ds) for name, ds in data.load_splits(None, 1337, LIMIT).items()}


def test_builder_on_real_reviews(small_splits):
    for name in ("train", "validation", "test"):
        texts, labels = small_splits[name]
        assert len(texts) == LIMIT
        assert set(np.unique(labels)) == {0, 1}
        assert 0.35 < labels.mean() < 0.65  # stratified, so roughly balanced
        assert not any("<br" in t.lower() for t in texts)
        assert all(t == t.strip() and t for t in texts)
    train, test = set(small_splits["train"][0]), set(small_splits["test"][0])
    assert not train & test
    builder = data.get_builder(None, 1337, LIMIT)
    assert builder.info.features["label"].names == ["negative", "positive"]
    full = data.get_builder(None, 1337)  # the predefined config (not prepared here)
    assert full.builder_config.name == "seed1337" and full.builder_config.limit == 0
    assert data.get_builder(None, 7).builder_config.name == "seed7"


def test_full_split_is_deduplicated_and_stratified():
    texts, labels = data.read_imdb_csv(data.fetch_imdb_csv())
    assert len(texts) == 50_000 - 418  # the documented duplicate count
    assert len(set(texts)) >= len(texts) - 5  # cleaning <br /> may merge a handful
    train, test = data.stratified_split(labels, 0.5, 1337)
    assert not set(train) & set(test) and len(train) + len(test) == len(texts)
    assert abs(labels[train].mean() - labels[test].mean()) < 1e-3
    again, _ = data.stratified_split(labels, 0.5, 1337)
    assert np.array_equal(train, again)


def test_aclimdb_folder_and_bad_specs(tmp_path, small_splits, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))
    texts, labels = small_splits["test"]
    root = tmp_path / "aclImdb"
    for split, offset in (("train", 0), ("test", 100)):
        for cls, sub in enumerate(("neg", "pos")):
            folder = root / split / sub
            folder.mkdir(parents=True)
            picked = [t for t, y in zip(texts[offset:offset + 100], labels[offset:]) if y == cls]
            for i, text in enumerate(picked):
                (folder / f"{i}_7.txt").write_text(text + "<br /><br />", encoding="utf-8")
    splits = data.load_splits(f"aclimdb:{root}", 1337)
    counts = {k: len(data.as_numpy(v)[0]) for k, v in splits.items()}
    assert counts == {"train": 90, "validation": 10, "test": 100}
    assert not any("<br" in t for t in data.as_numpy(splits["train"])[0])
    from rnnkit.errors import DataError

    with pytest.raises(DataError, match="unknown --data"):
        data.parse_spec("csv:/nowhere")
    with pytest.raises(DataError, match="not a folder"):
        data.parse_spec(f"aclimdb:{tmp_path / 'missing'}")


@pytest.mark.slow
def test_one_epoch_lowers_loss(small_splits):
    import keras
    import tensorflow as tf

    from apps.sentiment.model import build_classifier, make_vectorizer
    from apps.sentiment.train import bucketed, token_dataset

    keras.utils.set_random_seed(3)
    texts, labels = small_splits["train"]
    ds = tf.data.Dataset.from_tensor_slices((texts, labels))
    vectorizer = make_vectorizer(4000)
    vectorizer.adapt(ds.map(lambda t, y: t).batch(128))
    ids = token_dataset(ds, vectorizer, 128)
    # No dropout: the test checks that gradients flow through the whole model, and 300
    # reviews in one epoch leave little signal to spare.
    model = build_classifier(vectorizer.vocabulary_size(), embed_dim=32, units=16,
                             embed_dropout=0.0, head_dropout=0.0)
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.BinaryCrossentropy(from_logits=True))
    eval_ds = bucketed(ids, 64, 128, None)
    before = model.evaluate(eval_ds, verbose=0)
    model.fit(bucketed(ids, 8, 128, 0), epochs=1, verbose=0)
    after = model.evaluate(eval_ds, verbose=0)
    assert after < before - 0.02, (before, after)


def test_weight_drop_reaches_both_directions():
    import numpy as np

    from apps.sentiment.model import build_classifier

    model = build_classifier(50, embed_dim=8, units=6, embed_dropout=0.0, head_dropout=0.0,
                             weight_drop=0.3)
    plain = build_classifier(50, embed_dim=8, units=6, embed_dropout=0.0, head_dropout=0.0)
    birnn = model.get_layer("birnn")
    assert birnn.forward_layer.recurrent_weight_dropout == 0.3
    assert birnn.backward_layer.recurrent_weight_dropout == 0.3
    plain.set_weights(model.get_weights())
    ids = np.random.default_rng(0).integers(1, 50, size=(4, 20))
    np.testing.assert_allclose(model(ids), plain(ids), atol=1e-6)  # inference: W_h itself
    assert not np.allclose(model(ids, training=True), plain(ids), atol=1e-4)


def test_frozen_glove_vocabulary_and_embedding_stay_as_given():
    import keras

    from apps.sentiment import glove
    from apps.sentiment.model import build_classifier, make_vectorizer

    words, matrix = glove.frozen_vocabulary(5000)
    assert len(words) == 5000 and matrix.shape == (5002, 50)
    assert words[:4] == ["the", "of", "to", "and"]  # GloVe's order: most frequent first
    assert "!" in words and "," not in words  # only what the tokenizer can emit
    assert not matrix[:2].any()  # padding and out-of-vocabulary rows
    vectors = glove.load_glove()
    np.testing.assert_array_equal(matrix[2 + words.index("excellent")], vectors["excellent"])
    vectorizer = make_vectorizer(len(words) + 2)
    vectorizer.set_vocabulary(words)
    ids = vectorizer(["An EXCELLENT film, zxqvw!"]).numpy()[0]
    assert ids[1] == 2 + words.index("excellent") and ids[3] == 1  # 1: not in GloVe

    model = build_classifier(len(words) + 2, 50, 8, 0.0, 0.0, embeddings=matrix,
                             trainable_embeddings=False)
    embedding = model.get_layer("embedding")
    assert not embedding.trainable and not embedding.trainable_weights
    assert len(json.dumps(model.get_config())) < 50_000  # the matrix is not in the config
    model.compile(optimizer=keras.optimizers.Adam(0.1),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    model.train_on_batch(ids[None, :4], np.ones((1, 1)))
    np.testing.assert_array_equal(embedding.get_weights()[0], matrix)  # training left it
    with pytest.raises(ValueError, match="needs the embeddings"):
        build_classifier(10, 50, 8, trainable_embeddings=False)
    with pytest.raises(ValueError, match="shape"):
        build_classifier(10, 50, 8, embeddings=matrix)
    with pytest.raises(ValueError, match="at least one word"):
        glove.frozen_vocabulary(0)


def test_bigram_ids_hash_pairs_and_skip_padding():
    import tensorflow as tf

    from apps.sentiment.model import BigramIds

    layer = BigramIds(101)
    ids = tf.constant([[5, 7, 5, 7, 0, 0], [7, 5, 7, 9, 9, 0]], tf.int64)
    out = layer(ids).numpy()
    assert out.shape == (2, 6)
    assert (out[ids.numpy() == 0] == 0).all()
    valid = out[ids.numpy() > 0]
    assert valid.min() >= 1 and valid.max() < 101
    # The same (previous, current) pair gets the same bucket wherever it occurs ...
    assert out[0, 1] == out[0, 3] == out[1, 2]  # (5, 7)
    assert out[0, 2] == out[1, 1]  # (7, 5)
    # ... and the order of the two words matters.
    assert out[0, 1] != out[0, 2]
    assert BigramIds.from_config(layer.get_config()).buckets == 101
    with pytest.raises(ValueError, match="at least 2 buckets"):
        BigramIds(1)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """prepare / train / evaluate / export through the CLI on a small subset."""
    from apps.sentiment.app import main

    work = tmp_path_factory.mktemp("sentiment_cli")
    out, exports = work / "run", work / "saved_models"
    common = ["--limit", str(LIMIT)]
    assert main(["prepare", *common]) == 0
    # A learnt embedding with GloVe initialisation, random crops and bigram embeddings:
    # the non-default training paths run too, and the export below serves a model with
    # bigrams. (The default, frozen GloVe, runs in make all QUICK=1 and its served tests.)
    assert main(["train", *common, "--output", str(out), "--epochs", "2", "--max-len", "96",
                 "--units", "16", "--vocab-size", "4000", "--batch-size", "32", "--glove",
                 "--no-frozen-glove", "--crop-prob", "0.3", "--bigram-buckets", "1009"]) == 0
    assert main(["evaluate", *common, "--output", str(out)]) == 0
    assert main(["export", "--output", str(out), "--export-dir", str(exports)]) == 0
    return out, exports


@pytest.mark.slow
def test_cli_train_evaluate_export(cli_run):
    out, exports = cli_run
    assert (out / "model.keras").is_file() and not (out / "backup").exists()
    history = json.loads((out / "history.json").read_text())
    assert history["epochs_run"] == 2 and len(history["history"]["val_accuracy"]) == 2
    metrics = json.loads((out / "reports" / "metrics.json").read_text())
    assert metrics["test_examples"] == LIMIT
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["baseline"]["name"] == "tfidf-1-2gram-logreg"
    assert 0.6 < metrics["baseline"]["accuracy"] <= 1.0  # TF-IDF learns even from 600
    assert sum(map(sum, metrics["confusion_matrix"])) == LIMIT
    for png in ("training_curves.png", "confusion_matrix.png", "reliability.png"):
        assert (out / "reports" / png).read_bytes()[:4] == b"\x89PNG"
    run = json.loads((out / "run.json").read_text())
    summary = run.get("train", run)
    cal = metrics["calibration"]
    assert cal["temperature"] > 0 and 0.0 <= cal["ece"] <= 1.0
    assert sum(b["count"] for b in cal["bins"]) == LIMIT
    for key in ("rnn", "tfidf-1-2gram-logreg-tuned"):
        report = metrics["probes"][key]
        assert report["pairs"] >= 40 and 0.0 <= report["pair_accuracy"] <= 1.0
    ood_report = metrics["out_of_domain"]
    assert ood_report["amazon"]["examples"] == 1000
    assert 0.6 < ood_report["yelp"]["tfidf-1-2gram-logreg-tuned"]["balanced_accuracy"]
    assert 0.5 <= ood_report["short_max_confidence"] <= 1.0
    gap = ood_report["amazon"]["paired"]["tfidf-1-2gram-logreg-tuned"]
    assert gap["low"] <= gap["difference"] <= gap["high"]
    assert gap["difference"] == pytest.approx(
        ood_report["amazon"]["rnn"]["balanced_accuracy"]
        - ood_report["amazon"]["tfidf-1-2gram-logreg-tuned"]["balanced_accuracy"])
    pooled = ood_report["out-of-domain, pooled"]
    assert pooled["sets"] == ["amazon", "yelp", "tweets", "amazon-snippets", "nyt-editorials"]
    assert pooled["examples"] == sum(ood_report[name]["examples"] for name in pooled["sets"])
    gap = pooled["paired"]["tfidf-1-2gram-logreg-tuned"]
    assert gap["low"] <= gap["difference"] <= gap["high"]
    assert ood_report["skipped_sources"] == {}
    assert "temperature" in json.dumps(summary)
    card = json.loads((exports / "1" / "assets.extra" / "metrics.json").read_text())
    assert card["accuracy"] == metrics["accuracy"]
    assert (exports / "1" / "assets.extra" / "tf_serving_warmup_requests").stat().st_size > 0
    from rnnkit.servable import check_servable

    check_servable(exports / "1")


@pytest.mark.slow
def test_cli_predict_and_versions(cli_run, capsys, monkeypatch):
    from apps.sentiment.app import main

    out, exports = cli_run
    assert main(["export", "--output", str(out), "--export-dir", str(exports)]) == 0
    assert sorted(p.name for p in exports.iterdir()) == ["1", "2"]
    capsys.readouterr()
    assert main(["predict", "--export-dir", str(exports), "Loved it!", "Awful."]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.split()[0] in ("negative", "positive") for line in lines)
    monkeypatch.setattr(sys, "stdin", io.StringIO("first review\nsecond one\n"))
    assert main(["predict", "--model", str(exports / "1")]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert main(["predict", "--export-dir", str(out / "none"), "x"]) == 2
    assert main(["train", "--data", "nope:x", "--output", str(out / "bad")]) == 2


@pytest.mark.slow
def test_export_in_fresh_process_without_rnnkit(cli_run, isolated_python):
    _, exports = cli_run
    proc = isolated_python(f"""
        import json, time, tensorflow as tf
        serve = tf.saved_model.load({str(exports / "1")!r}).signatures["serving_default"]
        texts = ["An absolute delight, I laughed and cried.", "",
                 "Ce film était magnifique ! 素晴らしい映画 😀", "bad " * 25000,
                 "\\xff invalid? no: valid unicode \\u00e9"]
        start = time.time()
        out = serve(text=tf.constant(texts))
        print(json.dumps({{
            "inputs": sorted(serve.structured_input_signature[1]),
            "outputs": sorted(out),
            "label": [x.decode() for x in out["label"].numpy()],
            "probability": out["probability"].numpy().tolist(),
            "scores": out["scores"].numpy().tolist(),
            "seconds": time.time() - start,
        }}))
        bad = serve(text=tf.constant([b"broken \\xff\\xfe bytes"]))
        print(json.dumps({{"bad": bad["label"].numpy()[0].decode()}}))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in proc.stdout.strip().splitlines() if x.startswith("{")]
    result, bad = lines[0], lines[1]
    assert result["inputs"] == ["text"]
    assert result["outputs"] == ["label", "probability", "scores"]
    assert len(result["label"]) == 5 and len(texts_len := result["probability"]) == 5
    for label, p, scores in zip(result["label"], result["probability"], result["scores"]):
        assert 0.0 <= p <= 1.0
        assert label == ("positive" if p >= 0.5 else "negative")
        assert scores[1] == pytest.approx(p, abs=1e-6)
        assert sum(scores) == pytest.approx(1.0, abs=1e-6)
    assert result["seconds"] < 30  # a 100k-character review is truncated, not a hang
    assert bad["bad"] in ("negative", "positive")
    assert texts_len


def test_module_entry_point_help():
    proc = subprocess.run(
        [sys.executable, "-m", "apps.sentiment", "train", "--help"], cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for flag in ("--data", "--epochs", "--batch-size", "--output", "--seed", "--quick",
                 "--limit", "--strategy", "--max-len"):
        assert flag in proc.stdout


def test_preprocessing_layers():
    import tensorflow as tf

    from apps.sentiment.model import ClipTokens, standardize
    from rnnkit.modeling.pooling import MaskedPooling

    clip = ClipTokens(100)
    assert clip(tf.zeros((2, 0), tf.int64)).shape == (2, 32)  # empty texts still get steps
    assert clip(tf.ones((1, 33), tf.int64)).shape == (1, 64)
    assert clip(tf.ones((1, 5000), tf.int64)).shape == (1, 100)
    x = tf.constant([[[1.0], [5.0], [9.0]], [[2.0], [3.0], [4.0]]])
    mask = tf.constant([[True, True, False], [False, False, False]])
    pooled = MaskedPooling(("max", "mean"))(x, mask=mask).numpy()
    assert pooled.tolist() == [[5.0, 3.0], [0.0, 0.0]]  # padding ignored; empty row -> 0
    out = standardize(tf.constant(["Don't MISS it!<br /><br />Été, 2019?", b"bad \xff byte"]))
    words = [s.decode().split() for s in out.numpy()]
    assert words[0] == ["dont", "miss", "it", "!", "été", "2019", "?"]
    assert words[1][0] == "bad" and words[1][-1] == "byte"
