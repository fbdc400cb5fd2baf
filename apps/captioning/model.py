"""The captioner: frozen CNN features -> an Elman RNN decoder with attention over the 7x7 grid.

Pieces (KerasHub-style split):

* :class:`Vocabulary`: word <-> id (0 pad, 1 start, 2 end, 3 unknown) and caption encoding.
* backbone: the frozen CNN (``rnnkit.backbones``), run once per picture by the data
  pipeline during training and inside the exported graph when serving.
* :class:`Captioner`: the trainable decoder. The pooled 1280-d vector sets the RNN's
  initial state; each step embeds the previous word, advances ``SimpleRecurrentLayer``
  one step, attends over the 49 grid cells with the new state (Luong-style, so training
  runs the whole teacher-forced sequence through the layer at once) and predicts the next
  word from [state, attended context].

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

``Captioner.step`` is the step function for :mod:`rnnkit.samplers` (greedy and beam search).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import keras
import numpy as np

from rnnkit import SimpleRecurrentLayer

PAD, START, END, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<start>", "<end>", "<unk>"]
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
    from apps.captioning.data import tokenize

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


class Vocabulary:
    """Caption words and their ids.

    Args:
        words: the non-special words, in id order (ids start at 4).
    """

    def __init__(self, words: Sequence[str]):
        self.itos = SPECIALS + [w for w in words if w not in SPECIALS]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> Vocabulary:
        """Words seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = Counter(w for c in captions for w in c.split())
        words = sorted((w for w, n in counts.items() if n >= min_count),
                       key=lambda w: (-counts[w], w))
        return cls(words)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, caption: str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """(decoder input, target) int32 arrays of length ``max_len``, pad-filled.

        Input is ``<start> w1 .. wn``, target ``w1 .. wn <end>``; captions longer than
        ``max_len - 1`` words are cut.
        """
        ids = [self.stoi.get(w, UNK) for w in caption.split()][: max_len - 1]
        inp = np.zeros(max_len, np.int32)
        tgt = np.zeros(max_len, np.int32)
        inp[: len(ids) + 1] = [START] + ids
        tgt[: len(ids) + 1] = ids + [END]
        return inp, tgt

    def decode(self, ids: Iterable[int]) -> str:
        """Words of ``ids`` up to the first end/pad token."""
        out = []
        for i in ids:
            if i in (PAD, END):
                break
            out.append(self.itos[i])
        return " ".join(out)

    def to_json(self) -> str:
        return json.dumps(self.itos[len(SPECIALS):])

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        return cls(json.loads(text))


@keras.saving.register_keras_serializable(package="rnnkit_captioning")
class Captioner(keras.Model):
    """Decoder over frozen CNN features (see the module docstring).

    Args:
        vocab_size: number of token ids (specials included).
        feature_dim: channels of the CNN grid / pooled vector (1280 for EfficientNet-Lite0).
        embed_dim: word embedding size.
        units: RNN state size.
        attention_dim: size of the projected grid cells and the attention query.
        dropout: dropout on features and before the output layer (training only).
        num_classes: size of the frozen ImageNet classifier used as a word prior (0: no
            prior; see the module docstring). Its weights and the class -> word matrix are
            set with :meth:`set_class_prior` and saved with the model.
        word_dropout: in training, each previous-word input (not the start token) is
            replaced by ``<unk>`` with this probability, so the decoder leans on the
            picture rather than on memorised wording.
        seed: seed of the word-dropout draws.
        prior_boost: added, when decoding, to the mixing logit of the global ImageNet prior.
            The mixing weights are learnt on training pictures, whose captions the generator
            has memorised, so they under-trust the prior on new pictures; ``train`` sets this
            by calibration on the validation split (:func:`apps.captioning.train.calibrate_prior`).
    """

    def __init__(self, vocab_size: int, feature_dim: int = 1280, embed_dim: int = 256,
                 units: int = 512, attention_dim: int = 256, dropout: float = 0.3,
                 num_classes: int = 0, word_dropout: float = 0.0, seed: int | None = None,
                 prior_boost: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.feature_dim = int(vocab_size), int(feature_dim)
        self.embed_dim, self.units = int(embed_dim), int(units)
        self.attention_dim, self.dropout_rate = int(attention_dim), float(dropout)
        self.num_classes, self.word_dropout = int(num_classes), float(word_dropout)
        if not 0.0 <= self.word_dropout < 1.0:
            raise ValueError(f"word_dropout must be in [0, 1), got {word_dropout}")
        self.seed = seed
        self.prior_boost = float(prior_boost)
        self.seed_generator = keras.random.SeedGenerator(seed)
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
        self.query = keras.layers.Dense(attention_dim, use_bias=False, name="attention_query")
        self.combine = keras.layers.Dense(units, activation="tanh", name="combine")
        self.out_dropout = keras.layers.Dropout(dropout, name="out_dropout")
        self.logits = keras.layers.Dense(vocab_size, name="logits")

    def get_config(self) -> dict:
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "feature_dim": self.feature_dim, "embed_dim": self.embed_dim,
                "units": self.units, "attention_dim": self.attention_dim,
                "dropout": self.dropout_rate, "num_classes": self.num_classes,
                "word_dropout": self.word_dropout, "seed": self.seed,
                "prior_boost": self.prior_boost}

    def build(self, input_shape=None) -> None:
        # Build every sub-layer from shapes alone, so the model can load weights or be
        # exported before it ever sees data.
        self.init_state.build((None, self.feature_dim))
        self.grid_proj.build((None, None, self.feature_dim))
        self.embedding.build((None, None))
        self.rnn.build((None, None, self.embed_dim))
        self.query.build((None, None, self.units))
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

    def _output(self, z, weights, prior_context, boost: float = 0.0, gen=None):
        """Next-word scores from the combined state ``z`` (..., units).

        Without the prior (``prior_context`` None): the generator's logits. With it: ``log``
        of the mixture of the generator's distribution and the attended and global ImageNet
        word priors (module docstring); ``prior_context`` is (cell logits, global probs).
        ``boost`` is added to the global prior's mixing logit (see ``prior_boost``).
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
        if boost:
            mix_logits = mix_logits + keras.ops.convert_to_tensor([0.0, 0.0, boost])
        pi = keras.ops.softmax(mix_logits, -1)
        mixed = (pi[..., 0:1] * keras.ops.softmax(gen, axis=-1)
                 + pi[..., 1:2] * keras.ops.matmul(cls, class_words)
                 + pi[..., 2:3] * global_words)
        return keras.ops.log(mixed + _LOG_FLOOR)

    def _drop_words(self, tokens):
        """Word dropout on teacher-forced inputs (start and padding tokens are kept)."""
        drop = keras.random.uniform(keras.ops.shape(tokens), seed=self.seed_generator)
        drop = keras.ops.logical_and(drop < self.word_dropout,
                                     keras.ops.greater(tokens, START))
        return keras.ops.where(drop, keras.ops.full_like(tokens, UNK), tokens)

    def attend(self, h, keys):
        """Context vectors and attention weights for queries ``h`` (B, T, units) or (B, units)."""
        single = len(h.shape) == 2
        q = self.query(h[:, None, :] if single else h)  # (B, T, A)
        scores = keras.ops.matmul(q, keras.ops.transpose(keys, (0, 2, 1)))
        weights = keras.ops.softmax(scores / float(np.sqrt(self.attention_dim)), axis=-1)
        context = keras.ops.matmul(weights, keys)  # (B, T, A)
        if single:
            return context[:, 0], weights[:, 0]
        return context, weights

    def call(self, inputs, training: bool = False):
        """Teacher-forced scores for inputs ``(grid, pooled, tokens_in)``.

        Without the prior: logits (B, T, vocab). With it: (B, T, 2 * vocab), the log of the
        mixed distribution followed by the generator's own logits (for its auxiliary loss,
        :func:`make_masked_loss`); decoding uses :meth:`step`, which returns the mixture only.
        """
        grid, pooled, tokens = inputs
        h0, context = self.encode(grid, pooled, training=training)
        keys, prior = (context[0], context[1:]) if self.num_classes else (context, None)
        inputs_seen = self._drop_words(tokens) if training and self.word_dropout > 0 else tokens
        x = self.embedding(inputs_seen)
        hs = self.rnn(x, initial_state=h0, training=training)
        attended, weights = self.attend(hs, keys)
        z = self.out_dropout(self.combine(keras.ops.concatenate([hs, attended], axis=-1)),
                             training=training)
        gen = self.logits(z)
        if prior is None:
            return gen
        # With the prior, the generator's own logits ride along (see make_masked_loss): it
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
        ctx, weights = self.attend(h, keys)
        z = self.combine(keras.ops.concatenate([h, ctx], axis=-1))
        return self._output(z, weights, prior, self.prior_boost), h, weights


def masked_loss(y_true, y_pred):
    """Token cross-entropy averaged over non-pad target positions."""
    loss = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
    mask = keras.ops.cast(keras.ops.not_equal(y_true, PAD), loss.dtype)
    return keras.ops.sum(loss * mask) / keras.ops.maximum(keras.ops.sum(mask), 1.0)


def make_masked_loss(vocab_size: int, label_smoothing: float = 0.0,
                     generator_loss: bool = False):
    """Masked token cross-entropy with optional label smoothing.

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

    def one(y_true, y_pred):
        if label_smoothing <= 0:
            return masked_loss(y_true, y_pred)
        target = keras.ops.one_hot(y_true, vocab_size)
        target = target * (1.0 - label_smoothing) + label_smoothing / vocab_size
        per_token = keras.losses.categorical_crossentropy(target, y_pred, from_logits=True)
        mask = keras.ops.cast(keras.ops.not_equal(y_true, PAD), per_token.dtype)
        return keras.ops.sum(per_token * mask) / keras.ops.maximum(keras.ops.sum(mask), 1.0)

    if not generator_loss:
        return one

    def loss(y_true, y_pred):
        return (one(y_true, y_pred[..., :vocab_size])
                + one(y_true, y_pred[..., vocab_size:]))

    return loss


def make_masked_accuracy(vocab_size: int):
    """:func:`masked_accuracy` of the first ``vocab_size`` scores (a prior captioner's
    mixture, see :meth:`Captioner.call`); the metric keeps the name ``masked_accuracy``."""

    def masked_accuracy_(y_true, y_pred):
        return masked_accuracy(y_true, y_pred[..., :vocab_size])

    masked_accuracy_.__name__ = "masked_accuracy"
    return masked_accuracy_


def masked_accuracy(y_true, y_pred):
    """Next-token accuracy over non-pad target positions."""
    pred = keras.ops.cast(keras.ops.argmax(y_pred, axis=-1), y_true.dtype)
    mask = keras.ops.cast(keras.ops.not_equal(y_true, PAD), "float32")
    hit = keras.ops.cast(keras.ops.equal(pred, y_true), "float32") * mask
    return keras.ops.sum(hit) / keras.ops.maximum(keras.ops.sum(mask), 1.0)


def decode(model: Captioner, grid, pooled, method: str = "beam", beam_width: int = 3,
           max_length: int = 24, length_penalty: float = 0.6, block_repeats: bool = True):
    """Decodes captions in the graph with :mod:`rnnkit.samplers`.

    Args:
        model: the trained captioner.
        grid: (B, cells, feature_dim) features; pooled: (B, feature_dim).
        method: "greedy" or "beam".
        beam_width: hypotheses kept per picture (beam only).
        max_length: most tokens per caption (end token included).
        length_penalty: GNMT alpha used to rank hypotheses.
        block_repeats: never say a word twice in a row. On by default: no training caption
            does, and the copy priors otherwise produce "a wheel wheel".

    Returns:
        :class:`rnnkit.samplers.SamplerOutput`.
    """
    from rnnkit import samplers

    h0, context = model.encode(grid, pooled, training=False)
    kwargs = dict(start_token=START, end_token=END, max_length=max_length, pad_token=PAD,
                  block_repeats=block_repeats)
    if method == "greedy":
        return samplers.greedy_search(model.step, h0, context, **kwargs)
    if method == "beam":
        return samplers.beam_search(model.step, h0, context, beam_width=beam_width,
                                    length_penalty=length_penalty, **kwargs)
    raise ValueError(f"decoding method must be greedy or beam, got {method!r}")


def save_config(path: Path, vocab: Vocabulary, config: dict) -> None:
    """Writes the vocabulary and run settings next to the model (atomically)."""
    from rnnkit.atomic import atomic_write_json

    atomic_write_json(path, {**config, "vocab": json.loads(vocab.to_json())})


def load_config(path: Path) -> tuple[Vocabulary, dict]:
    """Reads what :func:`save_config` wrote: (vocabulary, settings)."""
    cfg = json.loads(Path(path).read_text())
    return Vocabulary(cfg.pop("vocab")), cfg
