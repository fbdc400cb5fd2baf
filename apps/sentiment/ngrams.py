"""A linear n-gram branch beside the Elman network: NB-weighted unigrams and bigrams +
logistic regression, fitted with scikit-learn and carried inside the Keras model as core
TensorFlow ops.

Why: a bag of n-grams and a recurrence make different mistakes. The n-gram branch weighs
every phrase of a 2,000-word review alike; the Elman network reads order and context ("not
bad at all", an "although" clause) that a bag of bigrams cannot. Their two logits are
blended by weights fitted on the validation split, as in wide-and-deep models and in the
NBSVM + recurrent-LM ensembles of Mesnil et al. (2015).

The branch uses the model's own tokens (:func:`apps.sentiment.model.standardize`, split on
white space), so what scikit-learn fitted is exactly what the graph computes:
``logit = intercept + sum_j coef_j * v_j``, where ``v`` is the L2-normalised vector of
``scale_j`` over the unigrams and bigrams present in the text (:func:`fit_ngram_logreg`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from .model import standardize

#: Settings of the branch: n-grams of at least two training reviews; C chosen by the
#: blend's log-likelihood on the validation reviews and windows of three splits
#: (docs/sentiment.md "The n-gram branch").
NGRAM_HPARAMS: dict[str, Any] = {
    "ngram_min_df": 2,
    "ngram_c": 16.0,
}


def tokenize(texts: Sequence[str], batch_size: int = 1024) -> list[list[str]]:
    """The model's tokens of each text (the graph's :func:`standardize`, white-space split)."""
    out: list[list[str]] = []
    for i in range(0, len(texts), batch_size):
        clean = standardize(tf.constant(list(texts[i:i + batch_size]))).numpy()
        out.extend(t.decode("utf-8").split() for t in clean)
    return out


def _unigrams_and_bigrams(tokens: list[str]) -> list[str]:
    # The order and separator of tf.strings.ngrams(width (1, 2), separator " "), which the
    # graph's TextVectorization(ngrams=2) uses: what is counted here is counted there.
    return tokens + [f"{a} {b}" for a, b in pairwise(tokens)]


def fit_ngram_logreg(texts: Sequence[str], labels: np.ndarray, seed: int,
                     min_df: int, c: float) -> dict[str, Any]:
    """Fit the NB-weighted 1-2-gram logistic regression on the model's tokens.

    Each text is the set of its unigrams and bigrams (presence, not counts), each present
    n-gram weighted by its log-count ratio ``r = log(p / |p|_1) - log(q / |q|_1)`` where
    ``p`` and ``q`` count the positive and negative training texts holding it (plus one),
    the vector L2-normalised, then a logistic regression with inverse regularisation ``c``.
    This is Wang and Manning's NB weighting (2012) with a logistic loss in place of the SVM.

    Returns:
        ``{"vocabulary", "scale", "coef", "intercept", "seconds"}``: what
        :class:`NgramLogit` needs (vocabulary order = the columns of ``scale``/``coef``).
    """
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import normalize

    labels = np.asarray(labels)
    if len(texts) == 0 or len(np.unique(labels)) < 2:
        raise ValueError("the n-gram branch needs training texts of both classes")
    started = time.time()
    vec = CountVectorizer(analyzer=_unigrams_and_bigrams, min_df=min_df, binary=True,
                          dtype=np.float32)
    present = vec.fit_transform(tokenize(texts)).tocsr()
    pos = 1.0 + np.asarray(present[labels == 1].sum(axis=0)).ravel()
    neg = 1.0 + np.asarray(present[labels == 0].sum(axis=0)).ravel()
    ratio = (np.log(pos / pos.sum()) - np.log(neg / neg.sum())).astype(np.float32)
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    clf.fit(normalize(present.multiply(ratio).tocsr()), labels)
    return {"vocabulary": vec.get_feature_names_out().tolist(), "scale": ratio,
            "coef": clf.coef_[0].astype(np.float32), "intercept": float(clf.intercept_[0]),
            "seconds": time.time() - started}


@keras.saving.register_keras_serializable(package="rnnkit_sentiment")
class NgramLogit(layers.Layer):
    """Raw strings ``(B,)`` -> ``(B, 1)`` logit of a linear model on weighted 1-2-grams.

    The vocabulary lives in a ``TextVectorization`` (saved with the model as an asset);
    ``scale`` (each n-gram's weight when present) and ``coef`` are frozen weights, so the
    layer computes what scikit-learn fitted and training the rest of a model never moves
    it. Unknown n-grams count for nothing, as
    in scikit-learn; a text with no known n-gram gets the intercept alone.

    Args:
        num_features: number of n-grams in the vocabulary.
        vocabulary: the n-grams (``num_features`` strings); omitted when loading a saved
            model, whose assets restore it.
    """

    def __init__(self, num_features: int, vocabulary: Sequence[str] | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if int(num_features) < 1:
            raise ValueError(f"NgramLogit needs at least one n-gram, got {num_features}")
        self.num_features = int(num_features)
        self.counter = layers.TextVectorization(
            standardize=standardize, split="whitespace", ngrams=2, output_mode="multi_hot",
            sparse=True, name="ngram_presence")
        if vocabulary is not None:
            if len(vocabulary) != self.num_features:
                raise ValueError(f"NgramLogit: {len(vocabulary)} n-grams given, "
                                 f"num_features is {self.num_features}")
            self.counter.set_vocabulary(list(vocabulary))
        # Column 0 of the counts is TextVectorization's out-of-vocabulary bucket.
        self.scale = self.add_weight(shape=(self.num_features + 1,), initializer="zeros",
                                     trainable=False, name="scale")
        self.coef = self.add_weight(shape=(self.num_features + 1,), initializer="zeros",
                                    trainable=False, name="coef")
        self.intercept = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                         name="intercept")

    def set_linear_model(self, scale: np.ndarray, coef: np.ndarray, intercept: float) -> None:
        """Load the fitted n-gram weights and coefficients (vocabulary order, without the
        out-of-vocabulary column)."""
        for name, vec in (("scale", scale), ("coef", coef)):
            if np.shape(vec) != (self.num_features,):
                raise ValueError(f"NgramLogit: {name} has shape {np.shape(vec)}, expected "
                                 f"({self.num_features},)")
        self.scale.assign(np.concatenate([[0.0], scale]).astype(np.float32))
        self.coef.assign(np.concatenate([[0.0], coef]).astype(np.float32))
        self.intercept.assign(float(intercept))

    def build(self, input_shape) -> None:
        # The weights exist from __init__; the counter needs no shape to build.
        self.built = True

    def call(self, text: tf.Tensor) -> tf.Tensor:
        counts = self.counter(text)  # SparseTensor (B, num_features + 1) of ones
        col = counts.indices[:, 1]
        # Presence, not count: an n-gram said five times weighs what it weighs once.
        weight = tf.gather(tf.convert_to_tensor(self.scale), col)
        rows = tf.cast(counts.indices[:, 0], tf.int32)
        batch = tf.shape(text)[0]
        norm = tf.sqrt(tf.math.unsorted_segment_sum(tf.square(weight), rows, batch))
        dot = tf.math.unsorted_segment_sum(
            weight * tf.gather(tf.convert_to_tensor(self.coef), col), rows, batch)
        return (tf.math.divide_no_nan(dot, norm) + self.intercept)[:, None]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self) -> dict:
        # The vocabulary is not in the config (hundreds of thousands of strings): the
        # TextVectorization inside saves it as an asset.
        return {**super().get_config(), "num_features": self.num_features}


def ngram_branch(fitted: dict[str, Any], name: str = "ngram_logit") -> NgramLogit:
    """A :class:`NgramLogit` holding what :func:`fit_ngram_logreg` returned."""
    branch = NgramLogit(len(fitted["vocabulary"]), fitted["vocabulary"], name=name)
    branch.set_linear_model(fitted["scale"], fitted["coef"], fitted["intercept"])
    return branch


@keras.saving.register_keras_serializable(package="rnnkit_sentiment")
class CountTokens(layers.Layer):
    """Token ids ``(B, T)`` from the vectorizer (0 = padding) -> ``(B,)`` token counts."""

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.cast(ids != 0, tf.float32), axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],)


#: Token count (as ``log(1 + tokens)``) at which the blend's weights are exactly (a, b):
#: about a 150-token text, the middle of what the blend is fitted on.
BLEND_PIVOT = 5.0


@keras.saving.register_keras_serializable(package="rnnkit_sentiment")
class LengthAwareBlend(layers.Layer):
    """Blend the Elman and n-gram logits, with a confidence that grows with the length.

    ``logit = (a * elman + b * ngram + c) * exp(k * (log(1 + tokens) - BLEND_PIVOT))``:
    the share of each branch is the same at every length, and the factor is a temperature
    that follows the length, monotone in it, so a text shorter than any seen in the fit
    gets a smaller, never a reversed, logit. Fitted on held-out reviews and on short
    windows of them (:func:`fit_blend`): the reviews set how far to trust each branch, the
    windows how little a five-word text should be trusted.

    Args:
        coefficients: ``(a, b, k)``.
        bias: ``c``.
    """

    def __init__(self, coefficients: Sequence[float] = (1.0, 0.0, 0.0),
                 bias: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if len(coefficients) != 3:
            raise ValueError(f"LengthAwareBlend needs 3 coefficients, got {coefficients}")
        self.coefficients = [float(c) for c in coefficients]
        self.bias = float(bias)

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        elman, ngram, tokens = inputs
        a, b, k = self.coefficients
        scale = tf.exp(k * (tf.math.log1p(tokens) - BLEND_PIVOT))[:, None]
        return (a * elman + b * ngram + self.bias) * scale

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self) -> dict:
        return {**super().get_config(), "coefficients": self.coefficients, "bias": self.bias}


def blend_logits(elman: np.ndarray, ngram: np.ndarray, tokens: np.ndarray,
                 coefficients: Sequence[float], bias: float) -> np.ndarray:
    """What :class:`LengthAwareBlend` computes, in NumPy."""
    a, b, k = coefficients
    scale = np.exp(k * (np.log1p(np.asarray(tokens, np.float64)) - BLEND_PIVOT))
    return (a * np.asarray(elman, np.float64) + b * np.asarray(ngram, np.float64) + bias
            ) * scale


def fit_blend(elman: np.ndarray, ngram: np.ndarray, tokens: np.ndarray,
              labels: np.ndarray) -> tuple[list[float], float]:
    """Fit :class:`LengthAwareBlend` by maximum likelihood (hence calibrated) on held-out
    logits of both branches.

    Returns:
        (coefficients ``(a, b, k)``, bias ``c``).
    """
    from scipy.optimize import minimize

    labels = np.asarray(labels).astype(np.float64)
    if len(np.unique(labels)) < 2:
        raise ValueError("the blend needs held-out texts of both classes")
    sign = 2.0 * labels - 1.0

    def nll(params: np.ndarray) -> float:
        z = blend_logits(elman, ngram, tokens, params[:3], params[3])
        return float(np.logaddexp(0.0, -sign * z).mean())

    # Start from the Elman logit alone at unit temperature; four parameters, thousands
    # of texts: no regularisation needed.
    best = minimize(nll, np.array([1.0, 0.0, 0.0, 0.0]), method="L-BFGS-B")
    return [float(v) for v in best.x[:3]], float(best.x[3])


def windows(texts: Sequence[str], seed: int, min_len: int = 5, max_len: int = 30
            ) -> list[str]:
    """One seeded random window of ``min_len..max_len`` of each text's tokens, as text
    (the model's tokens joined by spaces, which standardise to themselves)."""
    rng = np.random.default_rng(seed)
    out = []
    for tokens in tokenize(texts):
        span = min(len(tokens), int(rng.integers(min_len, max_len + 1)))
        start = int(rng.integers(0, len(tokens) - span + 1))
        out.append(" ".join(tokens[start:start + span]))
    return out


def build_hybrid(vectorizer: layers.TextVectorization, classifier: keras.Model, max_len: int,
                 branch: NgramLogit, coefficients: Sequence[float] = (1.0, 0.0, 0.0),
                 bias: float = 0.0) -> keras.Model:
    """Return the string -> logit model with both branches and their blend.

    The layers named ``elman_logit`` and ``ngram_logit`` carry each branch's own logit
    (:func:`branch_models` reads them), ``token_count`` the text's length in tokens.

    Args:
        vectorizer: the adapted TextVectorization of the Elman branch.
        classifier: the token-id classifier (or ensemble) from ``train``.
        max_len: maximum number of tokens the Elman branch reads.
        branch: the fitted n-gram branch (:func:`ngram_branch`).
        coefficients, bias: the blend (:func:`fit_blend`); the default passes the Elman
            logit through, scaled by the length.
    """
    from .model import ClipTokens

    text = keras.Input(shape=(), dtype="string", name="text")
    ids = vectorizer(text)
    elman = layers.Identity(name="elman_logit")(
        classifier(ClipTokens(max_len, name="clip_tokens")(ids)))
    tokens = CountTokens(name="token_count")(ids)
    logit = LengthAwareBlend(coefficients, bias, name="blend")([elman, branch(text), tokens])
    return keras.Model(text, logit, name="sentiment")


def branch_models(model: keras.Model) -> dict[str, keras.Model] | None:
    """``{"elman": text -> its logit, "ngram": ..., "tokens": text -> token count}`` for a
    model from :func:`build_hybrid`; None for a model without the n-gram branch."""
    try:
        names = {"elman": "elman_logit", "ngram": "ngram_logit", "tokens": "token_count"}
        return {key: keras.Model(model.inputs, model.get_layer(name).output)
                for key, name in names.items()}
    except ValueError:  # no such layer: an Elman-only model
        return None
