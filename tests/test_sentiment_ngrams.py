"""The sentiment model's n-gram branch and its blend with the Elman logit, on real reviews."""

from __future__ import annotations

from itertools import pairwise

import keras
import numpy as np
import pytest
import tensorflow as tf

from apps.sentiment import data, ngrams
from apps.sentiment.model import build_classifier, make_vectorizer

LIMIT = 300
ODD_TEXTS = ["", "   ", "Überraschend gut, aber zu lang", "x" * 100_000,
             "Not bad at all! A film I would watch again."]


@pytest.fixture(scope="module")
def reviews():
    splits = data.load_splits(None, 1337, LIMIT)
    return {name: data.as_numpy(ds) for name, ds in splits.items()}


@pytest.fixture(scope="module")
def fitted(reviews):
    texts, labels = reviews["train"]
    return ngrams.fit_ngram_logreg(texts, labels, seed=0, min_df=1, c=4.0)


def _string_model(layer: keras.layers.Layer) -> keras.Model:
    text = keras.Input(shape=(), dtype="string")
    return keras.Model(text, layer(text))


def test_branch_computes_what_scikit_learn_fitted(reviews, fitted):
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import normalize

    texts, labels = reviews["train"]
    # An independent fit of the same recipe: presence of 1-2 grams, log-count ratio, L2.
    vec = CountVectorizer(analyzer=lambda t: t + [" ".join(p) for p in pairwise(t)],
                          binary=True)
    present = vec.fit_transform(ngrams.tokenize(texts))
    pos = 1 + present[labels == 1].sum(axis=0).A1
    neg = 1 + present[labels == 0].sum(axis=0).A1
    ratio = np.log(pos / pos.sum()) - np.log(neg / neg.sum())
    clf = LogisticRegression(C=4.0, max_iter=2000, random_state=0).fit(
        normalize(present.multiply(ratio).tocsr()), labels)

    queries = reviews["test"][0][:40] + ODD_TEXTS
    want = clf.decision_function(
        normalize(vec.transform(ngrams.tokenize(queries)).multiply(ratio).tocsr()))
    got = _string_model(ngrams.ngram_branch(fitted))(tf.constant(queries)).numpy()[:, 0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # A text with no known n-gram scores the intercept alone.
    assert got[40] == pytest.approx(fitted["intercept"], abs=1e-6)
    test_labels = reviews["test"][1]
    assert ((got[:40] >= 0) == (test_labels[:40] == 1)).mean() > 0.6


def test_branch_rejects_mismatched_shapes(fitted):
    with pytest.raises(ValueError, match="n-grams given"):
        ngrams.NgramLogit(3, ["a", "b"])
    branch = ngrams.NgramLogit(2, ["a", "b"])
    with pytest.raises(ValueError, match="scale has shape"):
        branch.set_linear_model(np.ones(3), np.ones(2), 0.0)
    with pytest.raises(ValueError, match="both classes"):
        ngrams.fit_ngram_logreg(["good", "fine"], np.array([1, 1]), 0, 1, 1.0)


def test_hybrid_blends_saves_and_reloads(reviews, fitted, tmp_path):
    texts, _ = reviews["train"]
    vectorizer = make_vectorizer(2000)
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(texts).batch(64))
    classifier = build_classifier(vectorizer.vocabulary_size(), embed_dim=8, units=4)
    coefficients, bias = [0.5, 1.5, 0.3], -0.3
    model = ngrams.build_hybrid(vectorizer, classifier, 64, ngrams.ngram_branch(fitted),
                                coefficients, bias)
    queries = reviews["test"][0][:8] + ODD_TEXTS
    logit = model(tf.constant(queries)).numpy()[:, 0]
    parts = ngrams.branch_models(model)
    e, n, t = (np.asarray(parts[k](tf.constant(queries))).reshape(len(queries), -1)[:, 0]
               for k in ("elman", "ngram", "tokens"))
    want = ngrams.blend_logits(e, n, t, coefficients, bias)
    np.testing.assert_allclose(logit, want, rtol=1e-4, atol=1e-4)
    assert t[8] == 0 and t[-1] == 11  # token counts: "" and ten words plus "!"
    assert np.all(np.isfinite(logit))

    path = tmp_path / "hybrid.keras"
    model.save(path)
    again = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(again(tf.constant(queries)).numpy()[:, 0], logit, rtol=1e-5,
                               atol=1e-5)
    assert ngrams.branch_models(build_classifier(50, 4, 2)) is None


def test_fit_blend_recovers_a_known_blend():
    rng = np.random.default_rng(0)
    n = 20_000
    e, g = rng.normal(0, 3, n), rng.normal(0, 3, n)
    tokens = rng.integers(5, 600, n)
    true = [0.3, 0.9, 0.4], 0.2
    logit = ngrams.blend_logits(e, g, tokens, *true)
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    coefficients, bias = ngrams.fit_blend(e, g, tokens, labels)
    np.testing.assert_allclose(coefficients, true[0], atol=0.06)
    assert bias == pytest.approx(true[1], abs=0.1)
    with pytest.raises(ValueError, match="both classes"):
        ngrams.fit_blend(e[:5], g[:5], tokens[:5], np.ones(5))


def test_blend_trusts_short_texts_less_and_never_reverses_them():
    # The fitted k > 0: the same branch logits give a smaller logit for a shorter text,
    # with the same sign (a one-word text is scored as a weak, not an opposite, verdict).
    coefficients, bias = [0.2, 0.6, 0.3], 0.0
    tokens = np.array([1, 5, 30, 300])
    logits = ngrams.blend_logits(np.full(4, 8.0), np.full(4, 3.0), tokens, coefficients, bias)
    assert np.all(logits > 0) and np.all(np.diff(logits) > 0)


def test_windows_are_short_pieces_of_each_text(reviews):
    texts = reviews["validation"][0][:50]
    pieces = ngrams.windows(texts, seed=3)
    assert pieces == ngrams.windows(texts, seed=3)
    for text, piece, tokens in zip(texts, pieces, ngrams.tokenize(texts)):
        words = piece.split()
        assert 1 <= len(words) <= 30 and (len(words) >= 5 or len(words) == len(tokens))
        assert piece in " ".join(tokens)
        assert ngrams.tokenize([piece])[0] == words  # a window standardises to itself
