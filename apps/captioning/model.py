"""The captioner: frozen CNN features -> an Elman RNN decoder with attention over the 7x7 grid.

Pieces (KerasHub-style split):

* vocabulary: :class:`rnnkit.modeling.vocabulary.Vocabulary` (the project's one id layout:
  0 pad, 1 start, 2 end, 3 unknown) encodes the captions.
* backbone: the frozen CNN (``rnnkit.backbones``), run once per picture by the data
  pipeline during training and inside the exported graph when serving.
* :class:`Captioner`: the trainable decoder. The pooled 1280-d vector sets the RNN's
  initial state; each step embeds the previous word, advances ``SimpleRecurrentLayer``
  one step, attends over the grid cells with the new state
  (:class:`rnnkit.modeling.attention.LuongAttention`, so training runs the whole
  teacher-forced sequence through the layer at once) and predicts the next word from
  [state, attended context].

Optional ImageNet word prior (``num_classes > 0``), a copy mechanism in the spirit of
novel-object captioning (Hendricks et al. 2016, DCC; Venugopalan et al. 2017, NOC): the
CNN's own frozen ImageNet classifier is applied to every grid cell (it is linear after
average pooling, so the mean of the cell logits is exactly the CNN's ImageNet prediction),
and class distributions are mapped to words by a fixed class -> head-word matrix
("king penguin" -> penguin, "brown bear" -> bear). Two priors come out of it:

* global: the CNN's ImageNet prediction for the whole picture, mapped to words;
* attended: the cell logits averaged with the step's attention weights (what ImageNet
  sees where the decoder looks), mapped to words.

The next-word distribution is a learnt mixture, as in pointer-generator networks:
``p(w) = pi_0 softmax(logits)(w) + pi_1 q_attended(w) + pi_2 q_global(w)`` with
``pi = softmax(W [z, max class probability of each prior])`` per step. So the decoder can
name an object its few training captions never tied to these pixels whenever ImageNet
recognises it, and still generate every other word itself. ``call`` and ``step`` then
return ``log p`` (already normalised, so the samplers' ``log_softmax`` and the loss
leave it unchanged).

``Captioner.step`` is the step function of :func:`rnnkit.samplers.generate` (greedy or
beam search).
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence

import keras
import numpy as np

from rnnkit import SimpleRecurrentLayer
from rnnkit.modeling.attention import LuongAttention
from rnnkit.modeling.sequence import masked_accuracy, masked_sequence_loss
from rnnkit.modeling.vocabulary import Vocabulary

from .data import tokenize

__all__ = ["Captioner", "caption_accuracy", "caption_features", "caption_loss", "class_head_words",
           "class_word_matrix", "decode"]

# Floor inside log(p) of the mixed distribution: words with no mass stay finite.
_LOG_FLOOR = 1e-8


def class_head_words(names: Sequence[str]) -> list[list[str]]:
    """The head word(s) of each ImageNet class name.

    A class name is an English noun phrase, so its head is its last word ("king penguin"
    -> penguin, "Granny Smith apple" -> apple); parenthesised glosses are dropped
    ("kite (bird of prey)" -> kite) and "/" separates alternatives, each contributing its
    own head ("swim trunks / shorts" -> trunks, shorts).

    Args:
        names: class names in logit order.
    """
    out = []
    for name in names:
        plain = re.sub(r"\([^)]*\)", " ", name)
        heads: list[str] = []
        for alt in plain.split("/"):
            words = [w for w in tokenize(alt) if w != ","]
            if words and words[-1] not in heads:
                heads.append(words[-1])
        out.append(heads)
    return out


def class_word_matrix(heads: Sequence[Sequence[str]], vocab: Vocabulary) -> np.ndarray:
    """(classes, vocab) float32: each class's probability split evenly over its head words.

    Args:
        heads: :func:`class_head_words` output.
        vocab: the vocabulary (every head word should be in it; missing ones are skipped).
    """
    m = np.zeros((len(heads), len(vocab)), np.float32)
    for c, words in enumerate(heads):
        ids = [vocab.stoi[w] for w in words if w in vocab.stoi]
        if ids:
            m[c, ids] = 1.0 / len(ids)
    return m


@keras.saving.register_keras_serializable(package="rnnkit_captioning")
class Captioner(keras.Model):
    """Decoder over frozen CNN features (see the module docstring).

    Args:
        vocab_size: number of token ids (specials included).
        feature_dim: channels of the CNN grid / pooled vector (1280 for EfficientNet-Lite0).
        embed_dim: word embedding size.
        units: RNN state size.
        attention_dim: size of the projected grid cells (the attention's keys).
        dropout: dropout on features and before the output layer (training only).
        num_classes: size of the frozen ImageNet classifier used as a word prior (0: no
            prior; see the module docstring). Its weights and the class -> word matrix are
            set with :meth:`set_class_prior` and saved with the model.
        prior_boost: added, when decoding, to the mixing logit of the global ImageNet prior.
            The mixing weights are learnt on training pictures, whose captions the generator
            has memorised, so they under-trust the prior on new pictures; ``train`` sets this
            by calibration on the validation split (:func:`apps.captioning.train.calibrate_prior`).
        noun_ids: vocabulary ids of words that name an object; decoding never emits one of
            them twice in a caption (:func:`decode`; ``train`` sets them from
            :func:`apps.captioning.grammar.noun_word_ids`). None: no such rule.
    """

    def __init__(self, vocab_size: int, feature_dim: int = 1280, embed_dim: int = 256,
                 units: int = 512, attention_dim: int = 256, dropout: float = 0.3,
                 num_classes: int = 0, prior_boost: float = 0.0,
                 noun_ids: Sequence[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.feature_dim = int(vocab_size), int(feature_dim)
        self.embed_dim, self.units = int(embed_dim), int(units)
        self.attention_dim, self.dropout_rate = int(attention_dim), float(dropout)
        self.num_classes = int(num_classes)
        # A variable, not a Python number: a traced decoder reads its current value, so
        # trying several boosts (calibration, the per-epoch monitor) traces decoding once.
        self._boost = self.add_weight(shape=(), initializer=keras.initializers.Constant(
            float(prior_boost)), trainable=False, name="prior_boost")
        self.noun_ids = None if noun_ids is None else [int(i) for i in noun_ids]
        if self.num_classes:
            # Frozen: these are the CNN's ImageNet head weights, copied in by set_class_prior.
            self.classifier = keras.layers.Dense(self.num_classes, trainable=False,
                                                 name="imagenet_classifier")
            # Mixing weights of (generator, attended prior, global prior).
            self.copy_gate = keras.layers.Dense(3, name="copy_gate")
        self.feature_dropout = keras.layers.Dropout(dropout, name="feature_dropout")
        self.init_state = keras.layers.Dense(units, activation="tanh", name="init_state")
        self.grid_proj = keras.layers.Dense(attention_dim, name="grid_proj")
        self.embedding = keras.layers.Embedding(vocab_size, embed_dim, name="embedding")
        self.rnn = SimpleRecurrentLayer(units, return_sequences=True, name="decoder_rnn")
        self.attention = LuongAttention(attention_dim, name="attention")
        self.combine = keras.layers.Dense(units, activation="tanh", name="combine")
        self.out_dropout = keras.layers.Dropout(dropout, name="out_dropout")
        self.logits = keras.layers.Dense(vocab_size, name="logits")

    @property
    def prior_boost(self) -> float:
        """The boost of the global prior's mixing logit used when decoding."""
        return float(keras.ops.convert_to_numpy(self._boost))

    @prior_boost.setter
    def prior_boost(self, value: float) -> None:
        self._boost.assign(float(value))

    def get_config(self) -> dict:
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "feature_dim": self.feature_dim, "embed_dim": self.embed_dim,
                "units": self.units, "attention_dim": self.attention_dim,
                "dropout": self.dropout_rate, "num_classes": self.num_classes,
                "prior_boost": self.prior_boost, "noun_ids": self.noun_ids}

    def build(self, input_shape=None) -> None:
        # Build every sub-layer from shapes alone, so the model can load weights or be
        # exported before it ever sees data.
        self.init_state.build((None, self.feature_dim))
        self.grid_proj.build((None, None, self.feature_dim))
        self.embedding.build((None, None))
        self.rnn.build((None, None, self.embed_dim))
        self.attention.build((None, None, self.units))
        self.combine.build((None, None, self.units + self.attention_dim))
        self.logits.build((None, None, self.units))
        if self.num_classes:
            self.classifier.build((None, None, self.feature_dim))
            self.copy_gate.build((None, None, self.units + 2))
            self.class_words = self.add_weight(
                shape=(self.num_classes, self.vocab_size), initializer="zeros",
                trainable=False, name="class_words")
        self.built = True

    def set_class_prior(self, kernel: np.ndarray, bias: np.ndarray,
                        class_words: np.ndarray) -> None:
        """Sets the frozen ImageNet classifier and the class -> word matrix.

        Args:
            kernel: (feature_dim, num_classes) classifier kernel; bias: (num_classes,).
            class_words: (num_classes, vocab_size), rows summing to 1 (or 0 for a class
                with no word), e.g. from :func:`class_word_matrix`.

        Raises:
            ValueError: when the model has no prior or a shape does not fit.
        """
        if not self.num_classes:
            raise ValueError("this captioner was built without an ImageNet prior (num_classes=0)")
        want = {"kernel": (self.feature_dim, self.num_classes), "bias": (self.num_classes,),
                "class_words": (self.num_classes, self.vocab_size)}
        got = {"kernel": np.shape(kernel), "bias": np.shape(bias),
               "class_words": np.shape(class_words)}
        for k, shape in want.items():
            if tuple(got[k]) != shape:
                raise ValueError(f"set_class_prior: {k} has shape {got[k]}, expected {shape}")
        self.classifier.set_weights([np.asarray(kernel, np.float32),
                                     np.asarray(bias, np.float32)])
        self.class_words.assign(np.asarray(class_words, np.float32))

    def encode(self, grid, pooled, training: bool = False):
        """Initial state (B, units) and the decoding context.

        The context is the projected grid cells (B, cells, attention_dim), and with the
        ImageNet prior the triple (projected cells, per-cell class logits
        (B, cells, classes), the picture's ImageNet class probabilities (B, classes)).

        Args:
            grid: (B, cells, feature_dim) CNN grid features (any float dtype).
            pooled: (B, feature_dim) pooled features.
            training: enables feature dropout.
        """
        grid = keras.ops.cast(grid, "float32")
        pooled = keras.ops.cast(pooled, "float32")
        # The frozen classifier sees the clean features: it is ImageNet's, not ours to noise.
        cell_logits = self.classifier(grid) if self.num_classes else None
        grid = self.feature_dropout(grid, training=training)
        pooled = self.feature_dropout(pooled, training=training)
        keys = self.grid_proj(grid)
        if cell_logits is None:
            return self.init_state(pooled), keys
        global_probs = keras.ops.softmax(keras.ops.mean(cell_logits, axis=1), axis=-1)
        return self.init_state(pooled), (keys, cell_logits, global_probs)

    def _output(self, z, weights, prior_context, boost=None, gen=None):
        """Next-word scores from the combined state ``z`` (..., units).

        Without the prior (``prior_context`` None): the generator's logits. With it: ``log``
        of the mixture of the generator's distribution and the attended and global ImageNet
        word priors (module docstring); ``prior_context`` is (cell logits, global probs).
        ``boost`` (a scalar tensor or variable, None: no boost) is added to the global
        prior's mixing logit (see ``prior_boost``).
        ``gen``: the generator's logits ``self.logits(z)`` when the caller already has them.
        """
        gen = self.logits(z) if gen is None else gen
        if prior_context is None:
            return gen
        cell_logits, global_probs = prior_context
        class_words = keras.ops.convert_to_tensor(self.class_words)
        # Attention-weighted cell logits -> the class distribution of the attended region.
        if len(weights.shape) == 2:  # one decoding step: (N, cells) -> (N, 1, cells)
            attended = keras.ops.matmul(weights[:, None, :], cell_logits)[:, 0]
        else:
            attended = keras.ops.matmul(weights, cell_logits)
        cls = keras.ops.softmax(attended, axis=-1)
        global_words = keras.ops.matmul(global_probs, class_words)  # (N, vocab)
        global_conf = keras.ops.max(global_probs, axis=-1)  # (N,)
        if len(weights.shape) == 3:  # teacher forcing: the same global prior at every step
            global_words = global_words[:, None, :]
            global_conf = keras.ops.broadcast_to(global_conf[:, None], keras.ops.shape(cls)[:2])
        confidence = keras.ops.stack([keras.ops.max(cls, axis=-1), global_conf], axis=-1)
        mix_logits = self.copy_gate(keras.ops.concatenate([z, confidence], -1))
        if boost is not None:
            mix_logits = mix_logits + keras.ops.convert_to_tensor([0.0, 0.0, 1.0]) * boost
        pi = keras.ops.softmax(mix_logits, -1)
        mixed = (pi[..., 0:1] * keras.ops.softmax(gen, axis=-1)
                 + pi[..., 1:2] * keras.ops.matmul(cls, class_words)
                 + pi[..., 2:3] * global_words)
        return keras.ops.log(mixed + _LOG_FLOOR)

    def call(self, inputs, training: bool = False):
        """Teacher-forced scores for inputs ``(grid, pooled, tokens_in)``.

        Without the prior: logits (B, T, vocab). With it: (B, T, 2 * vocab), the log of the
        mixed distribution followed by the generator's own logits (for its auxiliary loss,
        :func:`caption_loss`); decoding uses :meth:`step`, which returns the mixture only.
        """
        grid, pooled, tokens = inputs
        h0, context = self.encode(grid, pooled, training=training)
        keys, prior = (context[0], context[1:]) if self.num_classes else (context, None)
        x = self.embedding(tokens)
        hs = self.rnn(x, initial_state=h0, training=training)
        attended, weights = self.attention(hs, keys)
        z = self.out_dropout(self.combine(keras.ops.concatenate([hs, attended], axis=-1)),
                             training=training)
        gen = self.logits(z)
        if prior is None:
            return gen
        # With the prior, the generator's own logits ride along (see caption_loss): it
        # also learns on its own, as DCC trains its language model separately.
        return keras.ops.concatenate([self._output(z, weights, prior, gen=gen), gen], -1)

    def step(self, tokens, state, context):
        """One decoding step for :mod:`rnnkit.samplers`: (logits, new state, attention).

        Args:
            tokens: int32 (N,) previous tokens.
            state: (N, units) RNN state.
            context: what :meth:`encode` returned as context.
        """
        keys, prior = (context[0], context[1:]) if self.num_classes else (context, None)
        x = self.embedding(tokens)
        h = self.rnn.step(x, state)
        ctx, weights = self.attention(h, keys)
        z = self.combine(keras.ops.concatenate([h, ctx], axis=-1))
        return self._output(z, weights, prior, self._boost), h, weights


def caption_loss(vocab_size: int, label_smoothing: float = 0.0,
                 generator_loss: bool = False):
    """The training loss: masked token cross-entropy (``rnnkit.modeling.sequence``).

    Smoothing keeps the decoder from becoming over-confident about object words: held-out
    stamps are new pictures whose exact wording ("a sierra beauty apple") the training
    captions rarely contain.

    Args:
        vocab_size: number of token ids.
        label_smoothing: probability mass spread evenly over the vocabulary (0: none).
        generator_loss: the predictions are a prior captioner's (B, T, 2 * vocab) output
            (:meth:`Captioner.call`); the loss is then the mixture's plus the generator's
            own. Without this term the generator gets almost no gradient on words the
            ImageNet prior already covers and stops learning early.
    """
    one = masked_sequence_loss(vocab_size, label_smoothing)
    if not generator_loss:
        return one

    def loss(y_true, y_pred):
        return (one(y_true, y_pred[..., :vocab_size])
                + one(y_true, y_pred[..., vocab_size:]))

    return loss


def caption_accuracy(vocab_size: int):
    """Next-token accuracy (``rnnkit.modeling.sequence.masked_accuracy``) of the first
    ``vocab_size`` scores: a prior captioner's mixture, see :meth:`Captioner.call`. The
    metric is named ``masked_accuracy`` (``val_masked_accuracy`` is what training watches).

    Args:
        vocab_size: number of token ids.
    """

    def masked_accuracy_(y_true, y_pred):
        return masked_accuracy(y_true, y_pred[..., :vocab_size])

    masked_accuracy_.__name__ = "masked_accuracy"
    return masked_accuracy_


def decode(model: Captioner, grid, pooled, method: str = "beam", beam_width: int = 3,
           max_length: int = 24, length_penalty: float = 0.6, block_repeats: bool = True,
           nouns_once: bool = True):
    """Decodes captions in the graph with :func:`rnnkit.samplers.generate`.

    Args:
        model: the trained captioner.
        grid: (B, cells, feature_dim) features; pooled: (B, feature_dim).
        method: "greedy" or "beam".
        beam_width: hypotheses kept per picture (beam only; 1 is greedy search).
        max_length: most tokens per caption (end token included).
        length_penalty: GNMT alpha used to rank hypotheses.
        block_repeats: never say a word twice in a row. On by default: no training caption
            does, and the copy priors otherwise produce "a wheel wheel".
        nouns_once: never name the same object word twice in one caption ("a dog next to
            a dog"), for the words in ``model.noun_ids`` (nothing when it is None). Each
            hypothesis carries how often it emitted every id
            (:func:`rnnkit.samplers.penalise_repeats`, infinite penalty), which beam
            search reorders with the hypotheses.

    Returns:
        :class:`rnnkit.samplers.SamplerOutput`.
    """

    from rnnkit import samplers
    from rnnkit.modeling.vocabulary import START

    h0, context = model.encode(grid, pooled, training=False)
    step, state = model.step, h0
    if nouns_once and model.noun_ids:
        from .grammar import noun_mask

        step = samplers.penalise_repeats(model.step, noun_mask(model.noun_ids,
                                                               model.vocab_size),
                                         float("inf"), START)
        state = step.initial_state(h0)
    return samplers.generate(step, state, context, max_length=max_length, method=method,
                             beam_width=beam_width, length_penalty=length_penalty,
                             block_repeats=block_repeats)


# Traced decoders of :func:`caption_features`, per model (dropped with the model).
_DECODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def caption_features(model, vocab: Vocabulary, grid: np.ndarray, pooled: np.ndarray,
                     method: str = "beam", beam_width: int = 3, batch_size: int = 128,
                     max_length: int = 24, fixes: bool = True
                     ) -> tuple[list[str], list[float], list[np.ndarray]]:
    """Captions, scores and attention maps ``(words, cells)`` for cached feature arrays.

    Args:
        model: the trained captioner.
        vocab: its vocabulary.
        grid: (N, cells, C) features; pooled: (N, C).
        method: "greedy" or "beam".
        beam_width: hypotheses kept per picture.
        batch_size: pictures per decoding call.
        max_length: most tokens per caption.
        fixes: decode as the export does: each object word at most once
            (``decode(nouns_once=True)``) and the articles fixed
            (:func:`apps.captioning.grammar.fix_articles`). False shows the decoder's own
            faults.
    """
    import tensorflow as tf

    from .grammar import fix_articles

    key = (method, beam_width, max_length, fixes)
    traced = _DECODERS.setdefault(model, {})
    if key not in traced:
        # Kept per model: the per-epoch monitor decodes the same splits every epoch.
        traced[key] = tf.function(lambda g, p: decode(model, g, p, method, beam_width,
                                                      max_length, nouns_once=fixes),
                                  reduce_retracing=True)
    fn = traced[key]
    caps, scores, atts = [], [], []
    for s in range(0, len(pooled), batch_size):
        out = fn(tf.constant(grid[s:s + batch_size]), tf.constant(pooled[s:s + batch_size]))
        caps += [vocab.decode(t) for t in out.tokens.numpy()]
        scores += out.scores.numpy().tolist()
        for a, n in zip(out.attention.numpy(), out.lengths.numpy()):
            atts.append(a[: max(int(n), 1)])
    if fixes and caps:
        caps = [c.decode() for c in fix_articles(tf.constant(caps)).numpy()]
    return caps, scores, atts
