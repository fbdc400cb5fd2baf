"""Translation model: in-graph word tokeniser with copy ids, and an Elman encoder-decoder.

Preprocessor (:class:`TextCodec`, core ``tf.strings`` / ``tf.lookup`` ops only)
    Text is split into words (letters/digits with inner ``.,:/'-``, so ``3.5``,
    ``A1:B2`` and ``e-mail`` stay whole) and single punctuation marks; ``▸`` is a token.
    Case is kept: the model writes properly cased English itself.

    Out-of-vocabulary words do not vanish. Every source position ``j`` has a *copy id*:
    the target-vocabulary id of the source word when English has it (numbers, function
    names, ``LibreOffice``...) and ``V + j`` otherwise. The decoder predicts over
    ``V + S`` ids (a pointer-generator: ``p = p_gen * P_vocab + (1 - p_gen) * attention``
    scattered onto the copy ids), and an id ``V + j`` is written out as source word ``j``.
    A rare ``<unk>`` is replaced by the most-attended source word.

Model (:class:`Translator`)
    Encoder: embedding + bidirectional ``SimpleRecurrentLayer``. Decoder: embedding +
    ``SimpleRecurrentLayer`` (initial state from the encoder's final states) stepping one
    token at a time with Luong "general" attention over the encoder states; the
    attentional vector ``tanh(W_c [c_t; h_t])`` gives the vocabulary logits and
    ``sigmoid(w [c_t; h_t; y_{t-1}])`` the generate-vs-copy gate. Training uses teacher
    forcing: the decoder RNN runs over the whole shifted target at once (the layer's fused
    fast path) and attention is applied to all steps in parallel, which is the same
    computation as stepping because the attention does not feed back into the RNN.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from rnnkit import SimpleRecurrentLayer

# Target ids.
PAD, START, END, UNK = 0, 1, 2, 3
TARGET_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
# Source ids.
SRC_PAD, SRC_UNK, SRC_END = 0, 1, 2
SOURCE_SPECIALS = ["<pad>", "<unk>", "</s>"]

#: Longer inputs are truncated to this many tokens (a defined answer for huge inputs).
MAX_SOURCE_TOKENS = 200
#: Output length limit per sentence: 2 * source tokens + 10, at most this.
MAX_OUTPUT_TOKENS = 300

# A word: letters/digits/underscore with inner . , : / ' ’ - joining more of them; else
# one non-space character (punctuation, symbols, ▸).
TOKEN_PATTERN = r"([\pL\pN_]+(?:[.,:/'’\-][\pL\pN_]+)*|[^\pL\pN_\s])"


def tokenize(texts: tf.Tensor) -> tf.RaggedTensor:
    """Split a batch of strings into tokens (RaggedTensor ``[B, None]`` of strings).

    Args:
        texts: string tensor ``[B]``; invalid UTF-8 is replaced (U+FFFD) instead of failing.
    """
    texts = tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="replace")
    spaced = tf.strings.regex_replace(texts, TOKEN_PATTERN, r" \1 ")
    return tf.strings.split(spaced)


def detokenize(tokens: tf.Tensor) -> tf.Tensor:
    """Join token strings ``[B, T]`` (empty strings ignored) into sentences ``[B]``."""
    text = tf.strings.reduce_join(tokens, axis=1, separator=" ")
    text = tf.strings.regex_replace(text, r"\s+", " ")
    text = tf.strings.regex_replace(text, r" ([.,;:!?)\]}%])", r"\1")
    text = tf.strings.regex_replace(text, r"([(\[{]) ", r"\1")
    return tf.strings.strip(text)


def build_vocab(texts: list[str], min_count: int, max_size: int, specials: list[str]) -> list[str]:
    """Most frequent tokens (in-graph tokeniser) with count >= ``min_count``, specials first.

    Ties are broken alphabetically so the vocabulary is deterministic.

    Args:
        texts: training sentences.
        min_count: drop rarer tokens (they are copied or become ``<unk>``).
        max_size: the vocabulary size cap, specials included.
        specials: reserved tokens, in id order.
    """
    from collections import Counter

    counts: Counter[str] = Counter()
    for start in range(0, len(texts), 4096):
        batch = tokenize(tf.constant(texts[start: start + 4096]))
        counts.update(t.decode("utf-8") for t in batch.flat_values.numpy())
    ranked = sorted((c, w) for w, c in counts.items() if c >= min_count and w not in specials)
    ranked = sorted(ranked, key=lambda cw: (-cw[0], cw[1]))
    return list(specials) + [w for _, w in ranked[: max_size - len(specials)]]


class TextCodec(tf.Module):
    """Strings <-> ids, inside the graph (exported with the model).

    Args:
        source_vocab: source tokens, :data:`SOURCE_SPECIALS` first.
        target_vocab: target tokens, :data:`TARGET_SPECIALS` first.
    """

    def __init__(self, source_vocab: list[str], target_vocab: list[str]) -> None:
        super().__init__(name="text_codec")
        if source_vocab[:3] != SOURCE_SPECIALS or target_vocab[:4] != TARGET_SPECIALS:
            raise ValueError("vocabularies must start with their special tokens")
        self.source_vocab = list(source_vocab)
        self.target_vocab = list(target_vocab)
        self.target_size = len(target_vocab)
        self._src = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(source_vocab), tf.range(len(source_vocab), dtype=tf.int32)),
            default_value=SRC_UNK)
        self._tgt = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(target_vocab), tf.range(len(target_vocab), dtype=tf.int32)),
            default_value=-1)
        self._tgt_words = tf.constant(target_vocab)

    def encode_source(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        """Tokenise sources: ``ids``, copy ids ``ext``, ``tokens`` (``[B, S]``), ``length``.

        Each source ends with ``</s>`` (so even an empty input has one position) and is
        truncated to :data:`MAX_SOURCE_TOKENS` tokens first. ``length`` counts the words
        (without ``</s>``).
        """
        words = tokenize(texts)[:, :MAX_SOURCE_TOKENS]
        length = tf.cast(words.row_lengths(), tf.int32)
        end = tf.fill([words.nrows(), 1], "</s>")
        toks = tf.concat([words, tf.RaggedTensor.from_tensor(end)], axis=1)
        tokens = toks.to_tensor(default_value="")
        ids = tf.where(tokens == "", SRC_PAD, self._src.lookup(tokens))
        tgt_ids = self._tgt.lookup(tokens)
        positions = tf.range(tf.shape(tokens)[1], dtype=tf.int32)[None, :]
        ext = tf.where(tgt_ids >= 0, tgt_ids, self.target_size + positions)
        return {"ids": ids, "ext": ext, "tokens": tokens, "length": length}

    def encode_target(self, texts: tf.Tensor, source_tokens: tf.Tensor) -> dict[str, tf.Tensor]:
        """Teacher-forcing pairs: ``inputs`` (``<s> w1..wn``, OOV as ``<unk>``) and ``outputs``
        (``w1..wn </s>`` as extended ids: OOV words found in the source get ``V + j`` of
        their first occurrence, others ``<unk>``). Both ``[B, T]`` padded with 0."""
        words = tokenize(texts)
        dense = words.to_tensor(default_value="")
        ids = self._tgt.lookup(dense)
        # First source position holding the same string, for OOV target words.
        same = tf.equal(dense[:, :, None], source_tokens[:, None, :])
        has = tf.reduce_any(same, axis=-1)
        first = tf.argmax(tf.cast(same, tf.int32), axis=-1, output_type=tf.int32)
        copy = tf.where(has, self.target_size + first, UNK)
        out_ids = tf.where(ids >= 0, ids, copy)
        in_ids = tf.where(ids >= 0, ids, UNK)
        present = dense != ""
        out_ids = tf.where(present, out_ids, PAD)
        in_ids = tf.where(present, in_ids, PAD)
        lengths = tf.reduce_sum(tf.cast(present, tf.int32), axis=1)
        batch = tf.shape(dense)[0]
        inputs = tf.concat([tf.fill([batch, 1], START), in_ids], axis=1)
        end_col = tf.one_hot(lengths, tf.shape(dense)[1] + 1, on_value=END, off_value=0,
                             dtype=tf.int32)
        outputs = tf.concat([out_ids, tf.zeros([batch, 1], tf.int32)], axis=1) + end_col
        return {"inputs": inputs, "outputs": outputs}

    def decode(self, ids: tf.Tensor, lengths: tf.Tensor, source_tokens: tf.Tensor,
               attention: tf.Tensor | None) -> tf.Tensor:
        """Extended ids ``[B, T]`` -> sentences ``[B]`` (see :meth:`words`)."""
        return detokenize(self.words(ids, lengths, source_tokens, attention))

    def words(self, ids: tf.Tensor, lengths: tf.Tensor, source_tokens: tf.Tensor,
              attention: tf.Tensor | None) -> tf.Tensor:
        """Extended ids ``[B, T]`` -> word strings ``[B, T]`` ("" after ``lengths``):
        vocabulary words, copied source words, ``<unk>`` replaced by the most attended
        source word."""
        ids = tf.cast(ids, tf.int32)
        vsize = self.target_size
        s_len = tf.shape(source_tokens)[1]
        vocab_word = tf.gather(self._tgt_words, tf.clip_by_value(ids, 0, vsize - 1))
        copy_pos = tf.clip_by_value(ids - vsize, 0, tf.maximum(s_len - 1, 0))
        copied = tf.gather(source_tokens, copy_pos, batch_dims=1)
        words = tf.where(ids >= vsize, copied, vocab_word)
        if attention is not None:
            focus = tf.argmax(attention, axis=-1, output_type=tf.int32)
            focus_word = tf.gather(source_tokens, tf.clip_by_value(focus, 0, tf.maximum(s_len - 1, 0)),
                                   batch_dims=1)
            focus_word = tf.where(focus_word == "</s>", "", focus_word)
            words = tf.where(ids == UNK, focus_word, words)
        valid = tf.range(tf.shape(ids)[1])[None, :] < lengths[:, None]
        return tf.where(valid, words, "")


@keras.saving.register_keras_serializable(package="rnnkit_translation")
class Translator(keras.Model):
    """Bidirectional Elman encoder, Elman decoder with Luong attention and copying.

    Args:
        source_vocab_size: source ids (specials included).
        target_vocab_size: ``V``, target vocabulary ids (specials included).
        embedding_dim: both embeddings' width.
        encoder_units: units per direction (the memory is ``2 * encoder_units`` wide).
        decoder_units: decoder state width.
        dropout: on embeddings and the attentional vector, training only.
    """

    def __init__(self, source_vocab_size: int, target_vocab_size: int, embedding_dim: int = 256,
                 encoder_units: int = 256, decoder_units: int = 512, dropout: float = 0.2,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = dict(source_vocab_size=source_vocab_size,
                           target_vocab_size=target_vocab_size, embedding_dim=embedding_dim,
                           encoder_units=encoder_units, decoder_units=decoder_units,
                           dropout=dropout)
        self.vocab_size = target_vocab_size
        self.source_embedding = keras.layers.Embedding(source_vocab_size, embedding_dim,
                                                       name="source_embedding")
        self.target_embedding = keras.layers.Embedding(target_vocab_size, embedding_dim,
                                                       name="target_embedding")
        self.encoder = keras.layers.Bidirectional(
            SimpleRecurrentLayer(encoder_units, return_sequences=True, return_state=True),
            name="encoder")
        self.bridge = keras.layers.Dense(decoder_units, activation="tanh", name="bridge")
        self.decoder = SimpleRecurrentLayer(decoder_units, return_sequences=True, name="decoder")
        self.attention_query = keras.layers.Dense(2 * encoder_units, use_bias=False,
                                                  name="attention_query")
        self.combine = keras.layers.Dense(decoder_units, activation="tanh", name="combine")
        self.vocab_logits = keras.layers.Dense(target_vocab_size, name="vocab_logits")
        self.copy_gate = keras.layers.Dense(1, name="copy_gate")
        self.dropout = keras.layers.Dropout(dropout)

    def get_config(self) -> dict:
        return {**super().get_config(), **self.config}

    # -- pieces shared by training and decoding --------------------------------------
    def encode(self, source_ids: tf.Tensor, training: bool = False):
        """Source ids ``[B, S]`` -> (memory ``[B,S,2E]``, mask ``[B,S]``, decoder h0 ``[B,H]``)."""
        mask = tf.not_equal(source_ids, SRC_PAD)
        x = self.dropout(self.source_embedding(source_ids), training=training)
        memory, h_fw, h_bw = self.encoder(x, mask=mask, training=training)
        h0 = self.bridge(tf.concat([h_fw, h_bw], axis=-1))
        return memory, mask, h0

    def attend(self, h, memory, mask, embedded, training: bool = False):
        """Decoder states ``[B,T,H]`` -> (vocab logits, generate gate ``[B,T,1]``, attention)."""
        # Scaled like dot-product attention: unscaled scores over 2E dimensions start out
        # so large that the softmax is saturated (near one-hot) and learns slowly.
        query = self.attention_query(h) * (float(memory.shape[-1]) ** -0.5)
        scores = tf.einsum("btm,bsm->bts", query, memory)
        scores = tf.where(mask[:, None, :], scores, -1e9)
        weights = tf.nn.softmax(scores, axis=-1)
        context = tf.einsum("bts,bsm->btm", weights, memory)
        attentional = self.combine(tf.concat([context, h], axis=-1))
        logits = self.vocab_logits(self.dropout(attentional, training=training))
        gate = tf.sigmoid(self.copy_gate(tf.concat([context, h, embedded], axis=-1)))
        return logits, gate, weights

    def call(self, inputs, training: bool = False):
        """Teacher forcing. ``inputs = (source_ids, source_ext, target_in, target_out)``;
        returns the per-token negative log-likelihood ``[B, T]`` (0 on padding)."""
        # Cast: Keras traces a default serving function with float inputs when the model
        # is saved inside a tf.Module.
        source_ids, source_ext, target_in, target_out = (tf.cast(x, tf.int32) for x in inputs)
        memory, mask, h0 = self.encode(source_ids, training)
        safe_in = tf.where(target_in >= self.vocab_size, UNK, target_in)
        embedded = self.dropout(self.target_embedding(safe_in), training=training)
        h = self.decoder(embedded, initial_state=h0, training=training)
        logits, gate, weights = self.attend(h, memory, mask, embedded, training)
        log_p = tf.nn.log_softmax(logits, axis=-1)
        in_vocab = target_out < self.vocab_size
        lp_vocab = tf.gather(log_p, tf.where(in_vocab, target_out, 0), batch_dims=2)
        p_vocab = tf.where(in_vocab, tf.exp(lp_vocab), 0.0)
        hits = tf.cast(tf.equal(source_ext[:, None, :], target_out[:, :, None]), weights.dtype)
        p_copy = tf.reduce_sum(weights * hits, axis=-1)
        gate = gate[..., 0]
        prob = gate * p_vocab + (1.0 - gate) * p_copy
        nll = -tf.math.log(prob + 1e-9)
        return nll * tf.cast(target_out != PAD, nll.dtype)

    # -- decoding ----------------------------------------------------------------------
    def decode_context(self, source_ids: tf.Tensor, source_ext: tf.Tensor):
        """(initial state, context) for :mod:`rnnkit.samplers`."""
        memory, mask, h0 = self.encode(source_ids, training=False)
        return h0, (memory, mask, source_ext)

    def step(self, tokens: tf.Tensor, h: tf.Tensor, context) -> tuple:
        """The samplers' step function: extended ids ``[N]`` -> (log-probs over ``V + S``,
        new h, attention ``[N, S]``)."""
        memory, mask, source_ext = context
        safe = tf.where(tokens >= self.vocab_size, UNK, tokens)
        embedded = self.target_embedding(safe)
        h = self.decoder.step(embedded, h)
        logits, gate, weights = self.attend(h[:, None, :], memory, mask, embedded[:, None, :])
        logits, gate, weights = logits[:, 0], gate[:, 0], weights[:, 0]
        n = tf.shape(tokens)[0]
        s = tf.shape(memory)[1]
        width = self.vocab_size + s
        p_vocab = gate * tf.nn.softmax(logits, axis=-1)
        p_vocab = tf.concat([p_vocab, tf.zeros([n, s], p_vocab.dtype)], axis=1)
        flat = tf.reshape(source_ext + tf.range(n)[:, None] * width, [-1])
        p_copy = tf.math.unsorted_segment_sum(tf.reshape((1.0 - gate) * weights, [-1]), flat,
                                              n * width)
        prob = p_vocab + tf.reshape(p_copy, [n, width])
        return tf.math.log(prob + 1e-12), h, weights


def masked_mean_loss(mask: tf.Tensor, nll: tf.Tensor) -> tf.Tensor:
    """Mean negative log-likelihood per real target token (``y_true`` is the token mask)."""
    mask = tf.cast(mask, nll.dtype)
    return tf.reduce_sum(nll * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def count_params(model: keras.Model) -> int:
    """Number of trainable parameters."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))
