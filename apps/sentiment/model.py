"""Sentiment model: text preprocessing inside the model, an Elman RNN backbone, a head.

KerasHub-style split:

* :func:`standardize` + :func:`make_vectorizer` + :class:`ClipTokens`: the preprocessor
  (raw UTF-8 string -> token ids), pure core TensorFlow ops so it exports to TF Serving;
* :func:`build_classifier`: token ids -> positive-class logit (embedding with masking,
  bidirectional ``SimpleRecurrentLayer``, max+mean pooling over time, dense head);
* :func:`build_end_to_end`: string -> logit, the model saved as ``model.keras``.

Why max+mean pooling: a review's verdict can sit anywhere in 400 tokens; pooling every
step's hidden state lets the gradient reach each position directly instead of through
hundreds of tanh steps, which is what a plain Elman RNN struggles with.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from rnnkit import SimpleRecurrentLayer
from rnnkit.modeling.pooling import MaskedPooling

MAX_CHARS = 20_000  # longer reviews are cut here before tokenising (bounds the work)


@keras.saving.register_keras_serializable(package="rnnkit_sentiment")
def standardize(text: tf.Tensor) -> tf.Tensor:
    """Normalise raw review strings: valid UTF-8, length-bounded, lower case, no markup.

    ``!`` and ``?`` become tokens of their own (they carry sentiment), apostrophes are
    dropped (``don't`` -> ``dont``), every other non letter/digit becomes a space.

    Args:
        text: a string tensor of any shape.
    """
    # Invalid UTF-8 from a client must not fail the request: replace bad bytes.
    text = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace")
    text = tf.strings.substr(text, 0, MAX_CHARS, unit="UTF8_CHAR")
    text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, r"<br\s*/?>", " ")
    text = tf.strings.regex_replace(text, r"['\x{2019}]", "")
    text = tf.strings.regex_replace(text, r"([!?])", " \\1 ")
    return tf.strings.regex_replace(text, r"[^\pL\pN!?]+", " ")


def make_vectorizer(vocab_size: int) -> layers.TextVectorization:
    """Return an un-adapted TextVectorization (unigrams, id 0 = padding, 1 = unknown).

    Args:
        vocab_size: the vocabulary size including padding and the OOV token.
    """
    return layers.TextVectorization(
        max_tokens=vocab_size, standardize=standardize, split="whitespace",
        output_mode="int", name="vectorizer",
    )


@keras.saving.register_keras_serializable(package="rnnkit_sentiment")
class ClipTokens(layers.Layer):
    """Keep the first ``max_len`` token ids, then pad the length up to a multiple of
    ``pad_to`` (at least one multiple, so a batch of empty texts still has steps).

    Rounding the length keeps the number of distinct sequence shapes small, so the RNN's
    compiled loop is not recompiled for every review length.
    """

    def __init__(self, max_len: int, pad_to: int = 32, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_len = int(max_len)
        self.pad_to = int(pad_to)

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        ids = ids[:, : self.max_len]
        length = tf.shape(ids)[1]
        target = tf.maximum((length + self.pad_to - 1) // self.pad_to, 1) * self.pad_to
        target = tf.minimum(target, tf.maximum(self.max_len, 1))
        target = tf.maximum(target, length)
        return tf.pad(ids, [[0, 0], [0, target - length]])

    def get_config(self) -> dict:
        return {**super().get_config(), "max_len": self.max_len, "pad_to": self.pad_to}


@keras.saving.register_keras_serializable(package="rnnkit_sentiment")
class BigramIds(layers.Layer):
    """Token ids ``(B, T)`` -> hashed id of the bigram ending at each step, in
    ``[1, buckets)`` (0 where the token is padding).

    The first token pairs with the padding id 0, so a review's opening word also gets a
    bigram of its own. Hashing (as fastText's bigram buckets) needs no bigram vocabulary,
    so nothing but this layer's two integers is stored, and every bigram gets a row.

    Args:
        buckets: number of hash buckets, bucket 0 included (at least 2).
    """

    _MULTIPLIER = 1_000_003  # odd and larger than any vocabulary: (prev, id) pairs spread

    def __init__(self, buckets: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if int(buckets) < 2:
            raise ValueError(f"BigramIds needs at least 2 buckets, got {buckets}")
        self.buckets = int(buckets)

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        ids = tf.cast(ids, tf.int64)
        prev = tf.pad(ids[:, :-1], [[0, 0], [1, 0]])
        hashed = tf.math.floormod(prev * self._MULTIPLIER + ids, self.buckets - 1) + 1
        return tf.where(ids > 0, hashed, tf.zeros_like(hashed))

    def get_config(self) -> dict:
        return {**super().get_config(), "buckets": self.buckets}


@keras.saving.register_keras_serializable(package="rnnkit_sentiment")
class ScaleLogit(layers.Layer):
    """Multiply the logit by a constant (``1 / temperature``): temperature scaling folded
    into the saved model, so the export serves calibrated probabilities."""

    def __init__(self, scale: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, logit: tf.Tensor) -> tf.Tensor:
        return logit * self.scale

    def get_config(self) -> dict:
        return {**super().get_config(), "scale": self.scale}


def build_classifier(
    vocab_size: int,
    embed_dim: int = 128,
    units: int = 96,
    embed_dropout: float = 0.25,
    head_dropout: float = 0.4,
    embeddings: np.ndarray | None = None,
    bigram_buckets: int = 0,
    weight_drop: float = 0.0,
    trainable_embeddings: bool = True,
    name: str = "sentiment_classifier",
) -> keras.Model:
    """Return the classifier on token ids: ``(B, T) int -> (B, 1)`` positive-class logit.

    Args:
        vocab_size: size of the vectorizer's vocabulary.
        embed_dim: embedding width.
        units: hidden units of each direction of the Elman RNN.
        embed_dropout: dropout on the embedded tokens (whole embedding vectors are dropped,
            i.e. word dropout, which regularises better than per-unit dropout here).
        head_dropout: dropout before the output layer.
        embeddings: optional initial embedding matrix ``(vocab_size, embed_dim)`` (e.g.
            GloVe rows for the words it knows, see :mod:`apps.sentiment.glove`).
        bigram_buckets: when > 0, each step's input also adds an embedding of the hashed
            bigram ending there (:class:`BigramIds`), so a phrase such as "not good" has
            a vector of its own before the recurrence reads it.
        weight_drop: DropConnect rate on each direction's recurrent weights ``W_h`` while
            training (``SimpleRecurrentLayer(recurrent_weight_dropout=...)``).
        trainable_embeddings: False keeps ``embeddings`` as given (frozen pretrained
            vectors, see :func:`apps.sentiment.glove.frozen_vocabulary`).
        name: the model's name (ensemble members need distinct ones).
    """
    if not trainable_embeddings and embeddings is None:
        raise ValueError("trainable_embeddings=False needs the embeddings to keep")
    if embeddings is not None and embeddings.shape != (vocab_size, embed_dim):
        raise ValueError(f"embeddings of shape {embeddings.shape} for a vocabulary of "
                         f"{vocab_size} and a width of {embed_dim}")
    ids = keras.Input(shape=(None,), dtype="int64", name="token_ids")
    # The given vectors are set as weights below, not passed as a Constant initializer,
    # which would copy the whole matrix into the saved model's JSON config.
    embedding = layers.Embedding(vocab_size, embed_dim, mask_zero=True,
                                 trainable=trainable_embeddings, name="embedding")
    x = embedding(ids)
    if bigram_buckets:
        pairs = BigramIds(bigram_buckets, name="bigram_ids")(ids)
        x = layers.Add(name="add_bigrams")(
            [x, layers.Embedding(bigram_buckets, embed_dim, name="bigram_embedding")(pairs)])
    x = layers.Dropout(embed_dropout, noise_shape=(None, None, 1), name="word_dropout")(x)
    x = layers.Bidirectional(
        SimpleRecurrentLayer(units, return_sequences=True,
                             recurrent_weight_dropout=weight_drop), name="birnn"
    )(x)
    x = MaskedPooling(("max", "mean"), name="max_mean_pool")(x)
    x = layers.Dropout(head_dropout, name="head_dropout")(x)
    logit = layers.Dense(1, name="logit")(x)
    model = keras.Model(ids, logit, name=name)
    if embeddings is not None:
        embedding.set_weights([np.asarray(embeddings, dtype="float32")])
    return model


def build_end_to_end(
    vectorizer: layers.TextVectorization, classifier: keras.Model, max_len: int,
    temperature: float = 1.0,
) -> keras.Model:
    """Return the string -> logit model (vectorizer, clipping, classifier, temperature).

    Args:
        vectorizer: an adapted TextVectorization.
        classifier: the model from :func:`build_classifier`.
        max_len: maximum number of tokens kept per review.
        temperature: the logit is divided by it (fitted on validation by ``train``).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    text = keras.Input(shape=(), dtype="string", name="text")
    ids = ClipTokens(max_len, name="clip_tokens")(vectorizer(text))
    logit = ScaleLogit(1.0 / temperature, name="temperature")(classifier(ids))
    return keras.Model(text, logit, name="sentiment")
