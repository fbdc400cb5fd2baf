"""Translation model: in-graph word tokeniser with copy ids, and an Elman encoder-decoder.

Preprocessor (:class:`TextCodec`, core ``tf.strings`` / ``tf.lookup`` ops only)
    Text is split into words (letters/digits with inner ``.,:/'-``, so ``3.5``,
    ``A1:B2`` and ``e-mail`` stay whole) and single punctuation marks; ``▸`` is a token.
    Case is kept: the model writes properly cased English itself.

    Both vocabularies are :class:`rnnkit.modeling.vocabulary.Vocabulary` (ids 0-3 are
    pad, start, end, unknown; the source side never uses start). Each source ends with
    the end token, so even an empty input has one position to attend to.

    Out-of-vocabulary words do not vanish. Every source position ``j`` has a *copy id*:
    the target-vocabulary id of the source word when English has it (numbers, function
    names, ``LibreOffice``...) and ``V + j`` otherwise. The decoder predicts over
    ``V + S`` ids (a pointer-generator: ``p = p_gen * P_vocab + (1 - p_gen) * attention``
    scattered onto the copy ids), and an id ``V + j`` is written out as source word ``j``.
    A rare ``<unk>`` is replaced by the most-attended source word.

Model (:class:`Translator`)
    Encoder: embedding + bidirectional ``SimpleRecurrentLayer``. Decoder: embedding +
    ``SimpleRecurrentLayer`` (initial state from the encoder's final states) stepping one
    token at a time with Luong "general" attention
    (:class:`rnnkit.modeling.attention.LuongAttention`) over the encoder states; the
    attentional vector ``tanh(W_c [c_t; h_t])`` gives the vocabulary logits and
    ``sigmoid(w [c_t; h_t; y_{t-1}])`` the generate-vs-copy gate. Training uses teacher
    forcing: the decoder RNN runs over the whole shifted target at once (the layer's fused
    fast path) and attention is applied to all steps in parallel, which is the same
    computation as stepping because the attention does not feed back into the RNN.

Decoding (:func:`make_translate_fn`): greedy or beam search through
:func:`rnnkit.samplers.generate`, all inside the graph, so evaluate and the export run
the same function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import tensorflow as tf

from rnnkit import SimpleRecurrentLayer, samplers
from rnnkit.modeling.attention import LuongAttention
from rnnkit.modeling.vocabulary import END, PAD, SPECIALS, START, UNK, Vocabulary

from .repetition import penalised_step

__all__ = [
    "BEAM_WIDTH",
    "END",
    "LENGTH_PENALTY",
    "MAX_OUTPUT_TOKENS",
    "MAX_SOURCE_TOKENS",
    "PAD",
    "REPEAT_PENALTY",
    "SOURCE_END",
    "START",
    "UNK",
    "TextCodec",
    "Translator",
    "build_vocabulary",
    "corpus_tokens",
    "detokenize",
    "make_translate_fn",
    "max_output_length",
    "tokenize",
]

#: Decoding settings of evaluate and export: common GNMT-style values fixed before any
#: evaluation (never tuned on the test split).
BEAM_WIDTH = 4
LENGTH_PENALTY = 0.6
#: Log-probability paid per repeat of a content word (:mod:`apps.translation.repetition`);
#: chosen on the validation split (docs/translation.md: it halves the repeats there at
#: the same BLEU).
REPEAT_PENALTY = 2.0
#: The token closing every source (the vocabulary's end token).
SOURCE_END = SPECIALS[END]

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


def corpus_tokens(texts: Sequence[str], batch_size: int = 4096) -> Iterator[list[str]]:
    """The in-graph tokeniser's tokens of each text, tokenised ``batch_size`` at a time."""
    for start in range(0, len(texts), batch_size):
        batch = tokenize(tf.constant(list(texts[start: start + batch_size])))
        for row in batch.to_list():
            yield [t.decode("utf-8") for t in row]


def build_vocabulary(texts: Sequence[str], min_count: int, max_size: int) -> Vocabulary:
    """The vocabulary of ``texts`` under the in-graph tokeniser (deterministic ids).

    Args:
        texts: training sentences.
        min_count: drop rarer tokens (they are copied or become ``<unk>``).
        max_size: the vocabulary size cap, specials included.
    """
    return Vocabulary.build(corpus_tokens(texts), min_count=min_count, max_size=max_size)


class TextCodec(tf.Module):
    """Strings <-> ids, inside the graph (exported with the model).

    Args:
        source_vocab: the Spanish vocabulary.
        target_vocab: the English vocabulary (``V = len(target_vocab)``).
    """

    def __init__(self, source_vocab: Vocabulary, target_vocab: Vocabulary) -> None:
        super().__init__(name="text_codec")
        self.source_vocab = source_vocab
        self.target_vocab = target_vocab
        self.target_size = len(target_vocab)
        self._src = source_vocab.lookup_table(default=UNK)
        # -1 marks a word English does not have (it gets a copy id instead).
        self._tgt = target_vocab.lookup_table(default=-1)
        self._tgt_words = tf.constant(target_vocab.itos)

    def encode_source(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        """Tokenise sources: ``ids``, copy ids ``ext``, ``tokens`` (``[B, S]``), ``length``.

        Each source ends with :data:`SOURCE_END` (so even an empty input has one position) and is
        truncated to :data:`MAX_SOURCE_TOKENS` tokens first. ``length`` counts the words
        (without the end token).
        """
        words = tokenize(texts)[:, :MAX_SOURCE_TOKENS]
        length = tf.cast(words.row_lengths(), tf.int32)
        end = tf.fill([words.nrows(), 1], SOURCE_END)
        toks = tf.concat([words, tf.RaggedTensor.from_tensor(end)], axis=1)
        tokens = toks.to_tensor(default_value="")
        ids = tf.where(tokens == "", PAD, self._src.lookup(tokens))
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
            focus_word = tf.where(focus_word == SOURCE_END, "", focus_word)
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
        label_smoothing: ``eps``; in training the per-token loss is ``(1 - eps) * NLL +
            eps * (cross-entropy of the generator's softmax against the uniform
            distribution)``, which keeps the vocabulary logits from growing without
            bound on a small corpus. Inference and the validation loss are unaffected.
    """

    def __init__(self, source_vocab_size: int, target_vocab_size: int, embedding_dim: int = 256,
                 encoder_units: int = 256, decoder_units: int = 512, dropout: float = 0.2,
                 label_smoothing: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.config = {"source_vocab_size": source_vocab_size,
                       "target_vocab_size": target_vocab_size, "embedding_dim": embedding_dim,
                       "encoder_units": encoder_units, "decoder_units": decoder_units,
                       "dropout": dropout, "label_smoothing": label_smoothing}
        self.label_smoothing = label_smoothing
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
        self.attention = LuongAttention(2 * encoder_units, name="attention")
        self.combine = keras.layers.Dense(decoder_units, activation="tanh", name="combine")
        self.vocab_logits = keras.layers.Dense(target_vocab_size, name="vocab_logits")
        self.copy_gate = keras.layers.Dense(1, name="copy_gate")
        self.dropout = keras.layers.Dropout(dropout)

    def get_config(self) -> dict:
        return {**super().get_config(), **self.config}

    def build(self, input_shape=None) -> None:
        # Every sub-layer is built from the configuration alone, so keras.saving.load_model
        # restores a model whose decoder can step (layer.step) before it sees data.
        cfg = self.config
        emb, memory = cfg["embedding_dim"], 2 * cfg["encoder_units"]
        units = cfg["decoder_units"]
        self.source_embedding.build((None, None))
        self.target_embedding.build((None, None))
        self.encoder.build((None, None, emb))
        self.bridge.build((None, memory))
        self.decoder.build((None, None, emb))
        self.attention.build((None, None, units), (None, None, memory))
        self.combine.build((None, None, memory + units))
        self.vocab_logits.build((None, None, units))
        self.copy_gate.build((None, None, memory + units + emb))
        self.built = True

    # -- pieces shared by training and decoding --------------------------------------
    def encode(self, source_ids: tf.Tensor, training: bool = False):
        """Source ids ``[B, S]`` -> (memory ``[B,S,2E]``, mask ``[B,S]``, decoder h0 ``[B,H]``)."""
        mask = tf.not_equal(source_ids, PAD)
        x = self.dropout(self.source_embedding(source_ids), training=training)
        memory, h_fw, h_bw = self.encoder(x, mask=mask, training=training)
        h0 = self.bridge(tf.concat([h_fw, h_bw], axis=-1))
        return memory, mask, h0

    def attend(self, h, memory, mask, embedded, training: bool = False):
        """Decoder states ``[B,T,H]`` -> (vocab logits, generate gate ``[B,T,1]``, attention)."""
        context, weights = self.attention(h, memory, keys_mask=mask)
        attentional = self.combine(tf.concat([context, h], axis=-1))
        logits = self.vocab_logits(self.dropout(attentional, training=training))
        gate = tf.sigmoid(self.copy_gate(tf.concat([context, h, embedded], axis=-1)))
        return logits, gate, weights

    def call(self, inputs, training: bool = False):
        """Teacher forcing. ``inputs = (source_ids, source_ext, target_in, target_out)``;
        returns the per-token negative log-likelihood ``[B, T]`` (0 on padding), label
        smoothed when ``training``."""
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
        if training and self.label_smoothing > 0.0:
            eps = self.label_smoothing
            nll = (1.0 - eps) * nll - eps * tf.reduce_mean(log_p, axis=-1)
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


def max_output_length(source_length: tf.Tensor) -> tf.Tensor:
    """Output token limit from the source word count: ``2 * n + 10``, at most
    :data:`MAX_OUTPUT_TOKENS`."""
    return tf.minimum(2 * tf.cast(source_length, tf.int32) + 10, MAX_OUTPUT_TOKENS)


def make_translate_fn(model: Translator, codec: TextCodec, beam_width: int = BEAM_WIDTH,
                      length_penalty: float = LENGTH_PENALTY, repeat_penalty: float = 0.0,
                      ) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """A ``tf.function``: strings ``[B]`` -> dict(translation, score, tokens, attention...).

    ``beam_width=1`` runs greedy search (:func:`rnnkit.samplers.generate`). Used by
    evaluate and by the export.

    Args:
        model: the trained translator.
        codec: its codec.
        beam_width: hypotheses kept per sentence (1: greedy).
        length_penalty: GNMT alpha ranking the beam's hypotheses.
        repeat_penalty: log-probability a hypothesis pays per earlier emission of the same
            content word (:mod:`apps.translation.repetition`; 0: off, ``inf``: never).
    """
    if repeat_penalty < 0:
        raise ValueError(f"repeat_penalty must be >= 0, got {repeat_penalty}")

    def translate(texts):
        enc = codec.encode_source(texts)
        h0, context = model.decode_context(enc["ids"], enc["ext"])
        step, state = model.step, h0
        if repeat_penalty > 0:
            step = penalised_step(model.step, codec.target_vocab.itos, repeat_penalty, START)
            state = step.initial_state(h0, tf.shape(enc["ids"])[1])
        out = samplers.generate(step, state, context, beam_width=beam_width,
                                length_penalty=length_penalty,
                                max_length=max_output_length(enc["length"]))
        text = codec.decode(out.tokens, out.lengths, enc["tokens"], out.attention)
        # An input with no words gets an empty translation (not whatever the decoder
        # would say about the end token).
        text = tf.where(enc["length"] > 0, text, "")
        return {"translation": text, "score": out.scores, "token_scores": out.token_log_probs,
                "lengths": out.lengths, "tokens": out.tokens, "attention": out.attention,
                "source_tokens": enc["tokens"]}

    return tf.function(translate, input_signature=[tf.TensorSpec([None], tf.string)])
