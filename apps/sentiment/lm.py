"""Language-model pretraining of the sentiment encoder, and ULMFiT-style fine-tuning.

``train --pretrain-lm`` first trains two Elman language models on the TRAINING reviews
only (never validation or test text): a forward one that predicts each token from the
ones before it, and a backward one that predicts it from the ones after it. They share
the classifier's vocabulary and embedding width, so their embedding and their two
``SimpleRecurrentLayer`` weight sets are exactly the shapes of the classifier's embedding
and of the forward and backward halves of its ``Bidirectional`` layer, which start from
them (Dai and Le, 2015; the backward model as in ELMo / ULMFiT's bidirectional ensemble).

What keeps it affordable on a CPU:

* The reviews are one token stream (a review-boundary token between reviews, in an extra
  embedding row that the classifier does not take) cut into windows of ``lm_window``
  tokens: no padding, no masks, a new random phase every epoch.
* The output layer is trained with ``tf.nn.sampled_softmax_loss`` (``lm_sampled``
  negatives from the log-uniform sampler, which fits a TextVectorization vocabulary:
  its ids are in frequency order). Held-out figures use the full softmax, so
  ``val_loss`` is the real per-token cross-entropy (its exp is the perplexity).
* The result is cached under ``$RNNKIT_CACHE/sentiment_lm/<key>/``, keyed by the
  vocabulary and every setting that changes the weights: the stage runs once.

Fine-tuning (:class:`DiscriminativeAdamW`, :class:`GradualUnfreezing`) follows ULMFiT
(Howard and Ruder, 2018): the encoder's learning rate is the head's divided by
``lr_decay`` and the embedding's by ``lr_decay**2``; with gradual unfreezing the first
epoch trains the head only, the second adds the recurrent layer, the third the embedding.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from rnnkit import SimpleRecurrentLayer
from rnnkit.atomic import atomic_path, atomic_write_json, atomic_write_text
from rnnkit.errors import DataError
from rnnkit.fetch import cache_lock
from rnnkit.paths import cache_dir

#: Settings of the pretraining stage (``train --lm-*`` flags override them).
LM_HPARAMS: dict[str, Any] = {
    "lm_epochs": 3,
    "lm_window": 80,
    "lm_batch_size": 128,
    "lm_sampled": 256,
    "lm_learning_rate": 2e-3,
    "lm_embed_dropout": 0.1,
    "lm_backward": True,
    "lm_heldout": 0.02,
}
#: The cache format; bump it when the stored files change meaning.
CACHE_VERSION = 1
#: Held-out windows scored with the full softmax each epoch (30k-way: the cost is bounded).
HELDOUT_WINDOWS = 256
GROUPS = ("embedding", "encoder", "head")


@keras.saving.register_keras_serializable(package="rnnkit_sentiment")
class ElmanLanguageModel(keras.Model):
    """Forward (and optionally backward) Elman language models over a shared embedding.

    Input: windows of ``window + 1`` token ids ``(B, window + 1)``. The forward model reads
    ids ``[0, window)`` and predicts ``[1, window]``; the backward one reads the reversed
    window. ``call`` returns the hidden states, ``(B, window, units)`` per direction.

    Args:
        vocab_size: number of token ids, the review-boundary id included.
        embed_dim: embedding width (the classifier's).
        units: hidden units of each recurrent layer (the classifier's, per direction).
        backward: also train the backward model.
        num_sampled: negatives per batch for the sampled softmax used in training.
        embed_dropout: word dropout on the embedded tokens during training.
    """

    def __init__(self, vocab_size: int, embed_dim: int, units: int, backward: bool = True,
                 num_sampled: int = 512, embed_dropout: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.embed_dim = int(embed_dim)
        self.units = int(units)
        self.backward = bool(backward)
        self.num_sampled = int(min(num_sampled, vocab_size - 1))
        self.embed_dropout = float(embed_dropout)
        self.embedding = layers.Embedding(vocab_size, embed_dim, name="embedding")
        self.dropout = layers.Dropout(embed_dropout, noise_shape=(None, None, 1),
                                      name="word_dropout")
        self.forward_rnn = SimpleRecurrentLayer(units, return_sequences=True,
                                                name="forward_rnn")
        self.backward_rnn = (SimpleRecurrentLayer(units, return_sequences=True,
                                                  name="backward_rnn") if backward else None)
        # One softmax for both directions (as ELMo): half the output parameters, and
        # each direction's hidden states are pushed into one shared word space.
        self.out_weights = self.add_weight(shape=(vocab_size, units), name="softmax_weights",
                                           initializer="glorot_uniform")
        self.out_bias = self.add_weight(shape=(vocab_size,), name="softmax_bias",
                                        initializer="zeros")
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, windows: tf.Tensor, training: bool = False) -> list[tf.Tensor]:
        windows = tf.convert_to_tensor(windows)
        outputs = [self.forward_rnn(self.dropout(self.embedding(windows[:, :-1]),
                                                 training=training))]
        if self.backward_rnn is not None:
            reverse = tf.reverse(windows, axis=[1])[:, :-1]
            outputs.append(self.backward_rnn(self.dropout(self.embedding(reverse),
                                                          training=training)))
        return outputs

    def _targets(self, windows: tf.Tensor) -> list[tf.Tensor]:
        targets = [windows[:, 1:]]
        if self.backward_rnn is not None:
            targets.append(tf.reverse(windows, axis=[1])[:, 1:])
        return targets

    def token_losses(self, windows: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Per-token cross-entropy of every direction, ``(directions * B * window,)``:
        sampled softmax in training, the full softmax otherwise."""
        windows = tf.cast(windows, tf.int64)
        losses = []
        weights = tf.convert_to_tensor(self.out_weights)
        bias = tf.convert_to_tensor(self.out_bias)
        for hidden, target in zip(self(windows, training=training), self._targets(windows),
                                  strict=True):
            hidden = tf.reshape(hidden, [-1, self.units])
            target = tf.reshape(target, [-1])
            if training:
                losses.append(tf.nn.sampled_softmax_loss(
                    weights, bias, target[:, None], hidden, self.num_sampled,
                    self.vocab_size, remove_accidental_hits=True))
            else:
                logits = tf.matmul(hidden, weights, transpose_b=True) + bias
                losses.append(tf.nn.sparse_softmax_cross_entropy_with_logits(target, logits))
        return tf.concat(losses, axis=0)

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        windows = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(self.token_losses(windows, training=True))
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=True))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        windows = data[0] if isinstance(data, tuple) else data
        self.loss_tracker.update_state(tf.reduce_mean(self.token_losses(windows)))
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self) -> list:
        return [self.loss_tracker]

    def get_config(self) -> dict:
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "embed_dim": self.embed_dim, "units": self.units, "backward": self.backward,
                "num_sampled": self.num_sampled, "embed_dropout": self.embed_dropout}


def token_stream(token_lists: Sequence[np.ndarray], boundary: int) -> np.ndarray:
    """Concatenate reviews' token ids into one stream with ``boundary`` before each review.

    Args:
        token_lists: the reviews' ids (no padding).
        boundary: the review-boundary id.
    """
    if not token_lists:
        raise DataError("no training reviews to pretrain the language model on")
    parts = []
    for ids in token_lists:
        parts.append(np.asarray([boundary], np.int32))
        parts.append(np.asarray(ids, np.int32))
    return np.concatenate(parts)


def window_dataset(stream: np.ndarray, window: int, batch_size: int, seed: int | None,
                   ) -> tf.data.Dataset:
    """Batches of ``(window + 1)``-token windows of ``stream`` (consecutive windows share one
    token: the last input of one is the first of the next).

    Args:
        stream: the token stream (:func:`token_stream`).
        window: tokens each window predicts.
        batch_size: windows per batch (the last, smaller batch is dropped in training).
        seed: shuffle seed, with a new random phase (start offset) every epoch; ``None``:
            phase 0, no shuffling (held-out scoring).
    """
    if len(stream) < window + 1:
        raise DataError(f"the language-model stream has {len(stream)} tokens, fewer than one "
                        f"window of {window + 1}")
    data = tf.constant(stream, tf.int32)

    def frames(offset: tf.Tensor) -> tf.Tensor:
        offset = tf.cast(offset % window, tf.int32)
        return tf.signal.frame(data[offset:], window + 1, window, pad_end=False)

    # Dataset.random draws anew for every iterator (one per epoch); a seeded random op
    # inside map would repeat its first draw every epoch.
    phase = (tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
             if seed is not None else tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)))
    ds = phase.map(frames).unbatch()
    if seed is not None:
        count = (len(stream) - 1) // window
        ds = ds.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size, drop_remainder=seed is not None).prefetch(tf.data.AUTOTUNE)


def cache_key(vocabulary: Sequence[str], embed_dim: int, units: int, seed: int,
              settings: dict[str, Any], n_reviews: int) -> str:
    """A short hash of everything the pretrained weights depend on.

    Args:
        vocabulary: the vectorizer's vocabulary (its order is the id mapping).
        embed_dim: embedding width.
        units: recurrent units.
        seed: the run's seed.
        settings: the ``lm_*`` settings.
        n_reviews: how many training reviews the stream is built from.
    """
    blob = json.dumps({
        "version": CACHE_VERSION,
        "vocabulary": hashlib.sha256("\n".join(vocabulary).encode()).hexdigest(),
        "embed_dim": embed_dim, "units": units, "seed": seed, "reviews": n_reviews,
        "settings": {k: settings[k] for k in sorted(settings)},
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrained_encoder(
    token_lists: Sequence[np.ndarray], vocabulary: Sequence[str], embed_dim: int,
    units: int, settings: dict[str, Any], seed: int, cache_root: Path | None = None,
) -> dict[str, Any]:
    """Return the pretrained embedding and recurrent weights, training them if not cached.

    Args:
        token_lists: the TRAINING reviews' token ids (the vectorizer's output, no padding).
        vocabulary: the vectorizer's vocabulary; the language model adds one id after it
            (the review boundary).
        embed_dim: embedding width (the classifier's).
        units: recurrent units (the classifier's, per direction).
        settings: the :data:`LM_HPARAMS` keys.
        seed: the run's seed (review order, held-out reviews, shuffling, initial weights).
        cache_root: where pretrained encoders are cached (default
            ``$RNNKIT_CACHE/sentiment_lm``).

    Returns:
        ``{"embedding": (len(vocabulary), embed_dim), "forward": [kernel, recurrent_kernel,
        bias], "backward": [...] or None, "summary": {...}}``; the summary says whether the
        cache was used, where it is, the held-out perplexity per epoch and the seconds the
        pretraining took when it ran.
    """
    settings = {k: settings[k] for k in LM_HPARAMS}
    key = cache_key(vocabulary, embed_dim, units, seed, settings, len(token_lists))
    folder = (cache_root or cache_dir() / "sentiment_lm") / key
    weights_file, summary_file = folder / "lm.weights.h5", folder / "summary.json"
    vocab_size = len(vocabulary) + 1
    with cache_lock(f"sentiment-lm-{key}"):
        model = ElmanLanguageModel(vocab_size, embed_dim, units, settings["lm_backward"],
                                   settings["lm_sampled"], settings["lm_embed_dropout"],
                                   name="elman_lm")
        model(tf.zeros((1, 2), tf.int32))
        if weights_file.is_file() and summary_file.is_file():
            model.load_weights(weights_file)
            summary = {**json.loads(summary_file.read_text()), "cached": True}
            print(f"pretrained language model from the cache: {folder} (it took "
                  f"{summary['seconds']:.0f} s to train; held-out perplexity "
                  f"{summary['heldout_perplexity'][-1]:.1f})")
        else:
            summary = _pretrain(model, token_lists, settings, seed, folder)
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(weights_file, suffix=".weights.h5") as tmp:
                model.save_weights(tmp)
            atomic_write_json(summary_file, summary)
            atomic_write_text(folder / "vocabulary.txt", "\n".join(vocabulary) + "\n")
            summary = {**summary, "cached": False}
    summary["cache"] = str(folder)
    return {
        # The boundary row is the last one: the classifier has no such token.
        "embedding": keras.ops.convert_to_numpy(model.embedding.embeddings)[: len(vocabulary)],
        "forward": model.forward_rnn.get_weights(),
        "backward": model.backward_rnn.get_weights() if model.backward_rnn else None,
        "summary": summary,
    }


def _pretrain(model: ElmanLanguageModel, token_lists: Sequence[np.ndarray],
              settings: dict[str, Any], seed: int, folder: Path) -> dict[str, Any]:
    """Train ``model`` on ``token_lists`` (a seeded share held out) and return a summary."""
    from rnnkit.training import fit

    started = time.time()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(token_lists))
    n_held = max(1, round(len(order) * settings["lm_heldout"])) if len(order) > 1 else 0
    held = [token_lists[i] for i in order[:n_held]]
    fit_on = [token_lists[i] for i in order[n_held:]]
    boundary = model.vocab_size - 1
    stream = token_stream(fit_on, boundary)
    window, batch = settings["lm_window"], settings["lm_batch_size"]
    held_stream = token_stream(held, boundary) if held else stream
    held_stream = held_stream[: HELDOUT_WINDOWS * window + 1]
    train_ds = window_dataset(stream, window, batch, seed)
    held_ds = window_dataset(held_stream, window, 256, None)
    steps = max(1, (len(stream) - window) // window // batch)
    epochs = settings["lm_epochs"]
    print(f"pretraining the {'forward and backward' if model.backward else 'forward'} Elman "
          f"language model on {len(fit_on):,} training reviews ({len(stream):,} tokens, "
          f"{steps:,} batches of {batch} x {window} tokens per epoch, {epochs} epochs; "
          f"{n_held:,} reviews held out)")
    total = steps * epochs
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=total, warmup_target=settings["lm_learning_rate"],
        warmup_steps=max(1, total // 50))
    # global_clipnorm: the embedding and softmax gradients are sparse (IndexedSlices), which
    # a per-variable clipnorm would densify one by one; one global norm is also ULMFiT's.
    model.compile(optimizer=keras.optimizers.Adam(schedule, global_clipnorm=1.0))
    before = _heldout_loss(model, held_ds)
    print(f"held-out perplexity before pretraining: {math.exp(before):.1f}")
    result = fit(model, train_ds, held_ds, output_dir=folder / "training", epochs=epochs,
                 monitor="val_loss", mode="min", patience=epochs)
    losses = [before] + list(result["history"]["val_loss"])
    seconds = time.time() - started
    print(f"language-model pretraining took {seconds:.0f} s; held-out perplexity "
          + " -> ".join(f"{math.exp(v):.1f}" for v in losses))
    return {
        "seconds": round(seconds, 1), "settings": settings, "reviews": len(fit_on),
        "heldout_reviews": n_held, "tokens": len(stream), "steps_per_epoch": steps,
        "heldout_loss": losses, "heldout_perplexity": [math.exp(v) for v in losses],
        "train_loss_sampled": list(result["history"]["loss"]),
        "best_epoch": result["best_epoch"] + 1, "embed_dim": model.embed_dim,
        "units": model.units,
    }


def _heldout_loss(model: ElmanLanguageModel, ds: tf.data.Dataset) -> float:
    total, count = 0.0, 0
    for windows in ds:
        losses = model.token_losses(windows).numpy()
        total += float(losses.sum())
        count += losses.size
    return total / max(1, count)


def transfer(classifier: keras.Model, pretrained: dict[str, Any]) -> None:
    """Copy the pretrained embedding and recurrent weights into ``classifier`` (the model of
    :func:`apps.sentiment.model.build_classifier`); the head keeps its initial weights.

    Args:
        classifier: the classifier, built.
        pretrained: the dict :func:`pretrained_encoder` returns.
    """
    embedding = classifier.get_layer("embedding")
    if embedding.embeddings.shape != pretrained["embedding"].shape:
        raise ValueError(f"pretrained embedding {pretrained['embedding'].shape} does not fit "
                         f"the classifier's {tuple(embedding.embeddings.shape)}")
    embedding.embeddings.assign(pretrained["embedding"])
    birnn = classifier.get_layer("birnn")
    birnn.forward_layer.set_weights(pretrained["forward"])
    if pretrained["backward"] is not None:
        birnn.backward_layer.set_weights(pretrained["backward"])


def group_of(path: str) -> int:
    """The ULMFiT layer group of a classifier variable: 0 embedding, 1 encoder, 2 head."""
    if path.startswith("embedding/") or "/embedding/" in path:
        return 0
    if path.startswith("birnn/") or "/birnn/" in path:
        return 1
    return 2


@keras.saving.register_keras_serializable(package="rnnkit_sentiment")
class DiscriminativeAdamW(keras.optimizers.AdamW):
    """AdamW whose step is scaled per layer group (embedding, encoder, head).

    The scales are optimizer variables (so they are checkpointed with its state) that
    :class:`GradualUnfreezing` may change between epochs; a group with scale 0 does not
    move (its decoupled weight decay is scaled too). Adam's moments still see the group's
    gradients while it is frozen, so they are warm when it thaws.

    Args:
        scales: the initial scale of each group (embedding, encoder, head).
        **kwargs: ``keras.optimizers.AdamW`` arguments.
    """

    def __init__(self, scales: Sequence[float] = (1.0, 1.0, 1.0), **kwargs) -> None:
        super().__init__(**kwargs)
        self.initial_scales = [float(s) for s in scales]
        if len(self.initial_scales) != len(GROUPS):
            raise ValueError(f"one scale per group {GROUPS}, got {scales}")

    def build(self, variables: list) -> None:
        if self.built:
            return
        super().build(variables)
        self.group_scales = [
            self.add_variable(shape=(), initializer=keras.initializers.Constant(s),
                              name=f"scale_{g}")
            for g, s in zip(GROUPS, self.initial_scales, strict=True)]
        self._groups = [group_of(v.path) for v in variables]

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        return super().update_step(
            gradient, variable, learning_rate * tf.cast(self._scale_of(variable), variable.dtype))

    def _scale_of(self, variable: Any) -> Any:
        return self.group_scales[self._groups[self._get_variable_index(variable)]]

    def _apply_weight_decay(self, variables: list) -> None:
        if self.weight_decay is None:
            return

        # The TensorFlow backend's own decay, with the group's scale on the rate.
        def decay_all(distribution: Any, variables: list, **_: Any) -> None:
            def decay(variable: Any) -> None:
                if self._use_weight_decay(variable):
                    rate = (tf.cast(self.learning_rate, variable.dtype)
                            * tf.cast(self.weight_decay, variable.dtype)
                            * tf.cast(self._scale_of(variable), variable.dtype))
                    variable.assign_sub(variable * rate)

            for variable in variables:
                if isinstance(variable, keras.Variable):
                    variable = variable.value
                distribution.extended.update(variable, decay, group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(
            decay_all, self._distribution_strategy, variables)

    def set_scales(self, scales: Sequence[float]) -> None:
        """Set the three group scales (embedding, encoder, head)."""
        for var, value in zip(self.group_scales, scales, strict=True):
            var.assign(float(value))

    def get_config(self) -> dict:
        return {**super().get_config(), "scales": self.initial_scales}


class GradualUnfreezing(keras.callbacks.Callback):
    """ULMFiT's schedule on :class:`DiscriminativeAdamW`: at epoch ``e`` (from 0) the last
    ``e + 1`` groups train (head; head + encoder; all), each at its discriminative scale
    (``decay**k`` below the head for the group ``k`` steps below it).

    Args:
        optimizer: the classifier's optimizer.
        decay: learning-rate ratio between neighbouring groups (ULMFiT: 2.6).
        gradual: False trains every group from the first epoch (discriminative rates only).
    """

    def __init__(self, optimizer: DiscriminativeAdamW, decay: float, gradual: bool) -> None:
        super().__init__()
        self.optimizer = optimizer
        self.decay = float(decay)
        self.gradual = bool(gradual)

    def scales(self, epoch: int) -> list[float]:
        """The group scales (embedding, encoder, head) used in ``epoch``."""
        out = []
        for group in range(len(GROUPS)):
            below = len(GROUPS) - 1 - group
            thawed = not self.gradual or epoch >= below
            out.append(self.decay ** -below if thawed else 0.0)
        return out

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        scales = self.scales(epoch)
        self.optimizer.set_scales(scales)
        print("layer-group learning-rate scales (embedding, encoder, head): "
              + ", ".join(f"{s:.3g}" for s in scales))


def load_cached(folder: str | Path) -> tuple[ElmanLanguageModel, list[str]]:
    """Load a cached language model and its vocabulary (a ``sentiment_lm/<key>`` folder).

    Args:
        folder: the folder ``train --pretrain-lm`` printed and stored in ``run.json``.

    Raises:
        DataError: the folder does not hold a finished pretraining.
    """
    folder = Path(folder)
    needed = [folder / n for n in ("lm.weights.h5", "summary.json", "vocabulary.txt")]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise DataError(f"{folder} is not a pretrained language model (missing "
                        f"{', '.join(missing)})")
    summary = json.loads(needed[1].read_text())
    settings, embed_dim, units = summary["settings"], summary["embed_dim"], summary["units"]
    vocabulary = needed[2].read_text(encoding="utf-8").split("\n")[:-1]
    model = ElmanLanguageModel(len(vocabulary) + 1, embed_dim, units, settings["lm_backward"],
                               settings["lm_sampled"], 0.0, name="elman_lm")
    model(tf.zeros((1, 2), tf.int32))
    model.load_weights(needed[0])
    return model, vocabulary


def read_prompt(model: ElmanLanguageModel, vocabulary: Sequence[str], prompt: str
                ) -> tuple[str, list[int], np.ndarray]:
    """Standardise ``prompt`` as the classifier does and run the forward model over it.

    Returns:
        (the standardised text, its ids after a review boundary, the last hidden state).
    """
    from .model import standardize

    index = {w: i for i, w in enumerate(vocabulary)}
    text = standardize(tf.constant([prompt])).numpy()[0].decode().strip()
    ids = [len(vocabulary)] + [index.get(w, 1) for w in text.split()]
    kernel, recurrent, bias = (keras.ops.convert_to_numpy(w)
                               for w in model.forward_rnn.weights[:3])
    table = keras.ops.convert_to_numpy(model.embedding.embeddings)
    state = np.zeros(recurrent.shape[0], np.float32)
    for i in ids:  # the layer's recurrence (tanh Elman), one step at a time
        state = np.tanh(table[i] @ kernel + state @ recurrent + bias)
    return text, ids, state


def generate(model: ElmanLanguageModel, vocabulary: Sequence[str], prompt: str,
             words: int = 30, temperature: float = 0.8, seed: int = 0) -> str:
    """Continue ``prompt`` with the forward language model, sampling one token at a time.

    The prompt goes through the classifier's own standardisation (lower case, no
    punctuation but ``!`` and ``?``); unknown words become ``[UNK]`` and the sampler never
    emits ``[UNK]``, padding or the review boundary.

    Args:
        model: a loaded language model (:func:`load_cached`).
        vocabulary: its vocabulary.
        prompt: the start of a review (may be empty).
        words: how many tokens to add.
        temperature: softmax temperature (lower: safer, more repetitive).
        seed: sampling seed.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    text, _, state = read_prompt(model, vocabulary, prompt)
    kernel, recurrent, bias = (keras.ops.convert_to_numpy(w)
                               for w in model.forward_rnn.weights[:3])
    table = keras.ops.convert_to_numpy(model.embedding.embeddings)
    out_w = keras.ops.convert_to_numpy(model.out_weights)
    out_b = keras.ops.convert_to_numpy(model.out_bias)
    rng = np.random.default_rng(seed)
    banned = [0, 1, len(vocabulary)]
    added = []
    for _ in range(words):
        logits = (out_w @ state + out_b) / temperature
        logits[banned] = -np.inf
        p = np.exp(logits - logits.max())
        token = int(rng.choice(len(p), p=p / p.sum()))
        added.append(vocabulary[token])
        state = np.tanh(table[token] @ kernel + state @ recurrent + bias)
    return " ".join(([text] if text else []) + added)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m apps.sentiment.lm FOLDER "prompt" ...``: continue prompts with a cached
    forward language model."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m apps.sentiment.lm",
        description="Continue review prompts with a language model cached by "
                    "`rnnkit sentiment train --pretrain-lm`.")
    parser.add_argument("folder", help="the cache folder (run.json: train.language_model.cache)")
    parser.add_argument("prompts", nargs="+")
    parser.add_argument("--words", type=int, default=30)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        model, vocabulary = load_cached(args.folder)
    except DataError as exc:
        print(f"error: {exc}")
        return 2
    for prompt in args.prompts:
        print(generate(model, vocabulary, prompt, args.words, args.temperature, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
