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

``Captioner.step`` is the step function for :mod:`rnnkit.samplers` (greedy and beam search).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import keras
import numpy as np

from rnnkit import SimpleRecurrentLayer

PAD, START, END, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<start>", "<end>", "<unk>"]


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
    """

    def __init__(self, vocab_size: int, feature_dim: int = 1280, embed_dim: int = 256,
                 units: int = 512, attention_dim: int = 256, dropout: float = 0.3, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.feature_dim = int(vocab_size), int(feature_dim)
        self.embed_dim, self.units = int(embed_dim), int(units)
        self.attention_dim, self.dropout_rate = int(attention_dim), float(dropout)
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
                "dropout": self.dropout_rate}

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
        self.built = True

    def encode(self, grid, pooled, training: bool = False):
        """Initial state (B, units) and projected grid cells (B, cells, attention_dim).

        Args:
            grid: (B, cells, feature_dim) CNN grid features (any float dtype).
            pooled: (B, feature_dim) pooled features.
            training: enables feature dropout.
        """
        grid = keras.ops.cast(grid, "float32")
        pooled = keras.ops.cast(pooled, "float32")
        grid = self.feature_dropout(grid, training=training)
        pooled = self.feature_dropout(pooled, training=training)
        return self.init_state(pooled), self.grid_proj(grid)

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
        """Teacher-forced logits (B, T, vocab) for inputs ``(grid, pooled, tokens_in)``."""
        grid, pooled, tokens = inputs
        h0, keys = self.encode(grid, pooled, training=training)
        x = self.embedding(tokens)
        hs = self.rnn(x, initial_state=h0, training=training)
        context, _ = self.attend(hs, keys)
        z = self.combine(keras.ops.concatenate([hs, context], axis=-1))
        return self.logits(self.out_dropout(z, training=training))

    def step(self, tokens, state, context):
        """One decoding step for :mod:`rnnkit.samplers`: (logits, new state, attention).

        Args:
            tokens: int32 (N,) previous tokens.
            state: (N, units) RNN state.
            context: (N, cells, attention_dim) projected grid cells.
        """
        x = self.embedding(tokens)
        h = self.rnn.step(x, state)
        ctx, weights = self.attend(h, context)
        z = self.combine(keras.ops.concatenate([h, ctx], axis=-1))
        return self.logits(z), h, weights


def masked_loss(y_true, y_pred):
    """Token cross-entropy averaged over non-pad target positions."""
    loss = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
    mask = keras.ops.cast(keras.ops.not_equal(y_true, PAD), loss.dtype)
    return keras.ops.sum(loss * mask) / keras.ops.maximum(keras.ops.sum(mask), 1.0)


def make_masked_loss(vocab_size: int, label_smoothing: float = 0.0):
    """Masked token cross-entropy with optional label smoothing.

    Smoothing keeps the decoder from becoming over-confident about object words: held-out
    stamps are new pictures whose exact wording ("a sierra beauty apple") the training
    captions rarely contain.

    Args:
        vocab_size: number of token ids.
        label_smoothing: probability mass spread evenly over the vocabulary (0: none).
    """
    if label_smoothing <= 0:
        return masked_loss

    def loss(y_true, y_pred):
        target = keras.ops.one_hot(y_true, vocab_size)
        target = target * (1.0 - label_smoothing) + label_smoothing / vocab_size
        per_token = keras.losses.categorical_crossentropy(target, y_pred, from_logits=True)
        mask = keras.ops.cast(keras.ops.not_equal(y_true, PAD), per_token.dtype)
        return keras.ops.sum(per_token * mask) / keras.ops.maximum(keras.ops.sum(mask), 1.0)

    return loss


def masked_accuracy(y_true, y_pred):
    """Next-token accuracy over non-pad target positions."""
    pred = keras.ops.cast(keras.ops.argmax(y_pred, axis=-1), y_true.dtype)
    mask = keras.ops.cast(keras.ops.not_equal(y_true, PAD), "float32")
    hit = keras.ops.cast(keras.ops.equal(pred, y_true), "float32") * mask
    return keras.ops.sum(hit) / keras.ops.maximum(keras.ops.sum(mask), 1.0)


def decode(model: Captioner, grid, pooled, method: str = "beam", beam_width: int = 3,
           max_length: int = 24, length_penalty: float = 0.6):
    """Decodes captions in the graph with :mod:`rnnkit.samplers`.

    Args:
        model: the trained captioner.
        grid: (B, cells, feature_dim) features; pooled: (B, feature_dim).
        method: "greedy" or "beam".
        beam_width: hypotheses kept per picture (beam only).
        max_length: most tokens per caption (end token included).
        length_penalty: GNMT alpha used to rank hypotheses.

    Returns:
        :class:`rnnkit.samplers.SamplerOutput`.
    """
    from rnnkit import samplers

    h0, keys = model.encode(grid, pooled, training=False)
    kwargs = dict(start_token=START, end_token=END, max_length=max_length, pad_token=PAD)
    if method == "greedy":
        return samplers.greedy_search(model.step, h0, keys, **kwargs)
    if method == "beam":
        return samplers.beam_search(model.step, h0, keys, beam_width=beam_width,
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
