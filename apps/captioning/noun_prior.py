"""The training drawings' own head nouns as extra classes of the word prior.

The decoder's copy prior (:mod:`apps.captioning.model`) maps a frozen classifier's class
probabilities to words. ImageNet's 1,000 classes know photographs, not clip-art: on the
held-out single stamps its top class names the thing 19 % of the time. The training
stamps say what their drawings are, so a softmax regression on the same frozen pooled
features adds one class per training head noun ("apple", "owl"), fitted *beside* the
ImageNet classes: their logits stay fixed and only the new columns learn, so one softmax
covers both and a photograph that ImageNet is sure of keeps its ImageNet word.

The head is linear, like ImageNet's, so applied to each grid cell it gives cell logits
whose mean is the picture's logits: the attended prior and the global prior of the
decoder both see the new classes and the export is unchanged (core ops only).

Why this helps: the decoder memorises its 496 training stamps' wording and names a new
drawing of a known thing less often than a nearest-neighbour lookup does; a classifier
fitted to every composite of every training stamp generalises better than the generator's
memory (measured in docs/captioning.md, "The training drawings' nouns as prior classes").
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np

from rnnkit.errors import DataError

__all__ = ["NOUN_PRIOR_L2", "NounClasses", "fit_noun_classes", "single_stamp_examples",
           "with_noun_classes"]

#: L2 weight of the new columns, chosen by grouped 4-fold cross-validation over the
#: training stamps (a held-out stamp's pictures named by a head fitted on the other
#: stamps), never on validation or test: 0.498 at 1e-4 against 0.486 / 0.473 / 0.439 /
#: 0.370 at 3e-4 / 1e-3 / 3e-3 / 1e-2 (docs/captioning.md).
NOUN_PRIOR_L2 = 1e-4


@dataclasses.dataclass
class NounClasses:
    """The fitted noun columns.

    Attributes:
        kernel: (feature_dim, nouns) float32.
        bias: (nouns,) float32.
        nouns: the head noun of each column.
        train_accuracy: share of the training pictures whose top class (ImageNet's and
            the nouns' together) is their own noun.
        seconds: fitting time.
    """

    kernel: np.ndarray
    bias: np.ndarray
    nouns: list[str]
    train_accuracy: float
    seconds: float


def single_stamp_examples(split) -> tuple[list[int], list[str]]:
    """Indices and head nouns of a split's single-stamp pictures (the ones with one
    object, hence one noun to learn from)."""
    idx = [i for i, k in enumerate(split.kinds) if k == "single" and split.heads[i]]
    return idx, [split.heads[i] for i in idx]


def fit_noun_classes(pooled: np.ndarray, heads: Sequence[str], kernel: np.ndarray,
                     bias: np.ndarray, l2: float = NOUN_PRIOR_L2, epochs: int = 60,
                     batch_size: int = 64, seed: int = 1337) -> NounClasses:
    """Fit one class per head noun beside a fixed classifier (softmax over both).

    Args:
        pooled: (N, feature_dim) frozen pooled features of single-object pictures.
        heads: the head noun of each picture.
        kernel: (feature_dim, C) the fixed classifier's kernel (ImageNet's).
        bias: (C,) its bias.
        l2: L2 weight on the new kernel.
        epochs: passes of Adam over the pictures.
        batch_size: pictures per step.
        seed: the shuffling seed.

    Raises:
        DataError: no pictures, a shape mismatch, or fewer than two nouns.
    """
    import keras
    import tensorflow as tf

    pooled = np.asarray(pooled, np.float32)
    if pooled.ndim != 2 or len(pooled) != len(heads) or len(pooled) == 0:
        raise DataError(f"the noun prior needs (N, features) pictures with one noun each; "
                        f"got features {pooled.shape} and {len(heads)} nouns")
    if pooled.shape[1] != np.shape(kernel)[0]:
        raise DataError(f"features have {pooled.shape[1]} channels, the fixed classifier "
                        f"expects {np.shape(kernel)[0]}")
    nouns = sorted(set(heads))
    if len(nouns) < 2:
        raise DataError(f"the noun prior needs at least two head nouns, got {nouns}")
    started = time.time()
    fixed_classes = int(np.shape(kernel)[1])
    column = {h: j for j, h in enumerate(nouns)}
    labels = np.array([fixed_classes + column[h] for h in heads], np.int64)
    inputs = keras.Input((pooled.shape[1],))
    fixed = keras.layers.Dense(fixed_classes, trainable=False, name="fixed")
    # Zero start: every noun begins at logit 0, below what ImageNet is sure of; no
    # random initialisation, so the fit depends only on the shuffling seed.
    new = keras.layers.Dense(len(nouns), kernel_initializer="zeros",
                             kernel_regularizer=keras.regularizers.L2(l2), name="nouns")
    model = keras.Model(inputs, keras.layers.Concatenate()([fixed(inputs), new(inputs)]))
    fixed.set_weights([np.asarray(kernel, np.float32), np.asarray(bias, np.float32)])
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ds = (tf.data.Dataset.from_tensor_slices((pooled, labels))
          .shuffle(len(labels), seed=seed, reshuffle_each_iteration=True).batch(batch_size))
    model.fit(ds, epochs=epochs, verbose=0, shuffle=False)
    new_kernel, new_bias = new.get_weights()
    logits = model.predict(pooled, batch_size=512, verbose=0)
    return NounClasses(new_kernel.astype(np.float32), new_bias.astype(np.float32), nouns,
                       float((logits.argmax(1) == labels).mean()), time.time() - started)


def with_noun_classes(kernel: np.ndarray, bias: np.ndarray, class_words: Sequence[Sequence[str]],
                      nouns: NounClasses) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
    """The fixed classifier and its class -> words list with the noun columns appended
    (each noun class says its own noun)."""
    return (np.concatenate([np.asarray(kernel, np.float32), nouns.kernel], axis=1),
            np.concatenate([np.asarray(bias, np.float32), nouns.bias]),
            [list(ws) for ws in class_words] + [[n] for n in nouns.nouns])
