"""Out-of-domain check: short labelled texts that are not IMDB reviews.

Two sources, each fetched from a package registry (nothing is installed), checked against
a published hash and cached under ``$RNNKIT_CACHE/raw``:

* **Kotzias et al.'s "Sentiment Labelled Sentences"** (KDD 2015, UCI Machine Learning
  Repository): 1,000 Amazon phone-accessory and 1,000 Yelp restaurant review sentences,
  500 positive and 500 negative each, labelled by hand. They ship as test fixtures in the
  npm package ``sentiment@5.0.2`` (MIT), fetched with ``npm pack``. The package also
  carries 1,000 IMDB sentences from that set; they are movie reviews (and may come from
  the reviews the model trains on), so they are reported apart as short in-domain text.
* **The VADER ground truth** (Hutto and Gilbert, ICWSM 2014), shipped in the source
  distribution of the PyPI package ``vaderSentiment==3.3.2`` (MIT): sentences rated by at
  least 20 people each on a scale of -4 (extremely negative) to +4 (extremely positive).
  Four sets: tweets, Amazon product review snippets, New York Times editorial snippets,
  and Rotten Tomatoes movie review snippets (movies again, from another site: reported
  apart, as the IMDB sentences are). A text is labelled positive when its mean rating is
  at least +1, negative when at most -1 (one full step from neutral on the raters' scale);
  the texts in between are left out, as polarity is not what their raters agreed on.
  HTML entities in the tweets (``&amp;``) are decoded.

This is a report: nothing here is used to train, tune or select a model.

``python -m apps.sentiment.ood [EXPORT_DIR]`` scores a SavedModel (default: the latest
export under ``saved_models/sentiment``) on every set and prints balanced accuracy.
"""

from __future__ import annotations

import html
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np

from rnnkit.errors import DataError
from rnnkit.fetch import NpmPackage, npm_tarball, pypi_sdist

NPM_PACKAGE = NpmPackage("sentiment", "5.0.2", "sha512-ZeC3y0JsOYTdwujt5uOd7ILJNilbgFzUtg/"
                         "LEG4wUv43LayFNLZ28ec8+Su+h3saHlJmIwYxBzfDHHZuiMA15g==")
#: The PyPI sdist that carries the VADER ground truth: (name, version, sha256).
VADER_SDIST = ("vaderSentiment", "3.3.2",
               "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9")
#: The archive inside that sdist, and the folder inside the archive.
VADER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
VADER_FOLDER = "hutto_ICWSM_2014"
#: A VADER text counts as positive / negative when its mean rating is at least this far
#: from 0 (ratings run from -4 to +4).
VADER_MARGIN = 1.0

#: set name -> (source, member): for "npm" a JSON list of ``{"text", "class"}`` in the npm
#: tarball, for "vader" a ``ID<TAB>MEAN-RATING<TAB>TEXT`` file in the VADER archive.
SETS = {
    "amazon": ("npm", "package/test/fixtures/amazon.json"),
    "yelp": ("npm", "package/test/fixtures/yelp.json"),
    "imdb-sentences": ("npm", "package/test/fixtures/imdb.json"),
    "tweets": ("vader", "tweets_GroundTruth.txt"),
    "amazon-snippets": ("vader", "amazonReviewSnippets_GroundTruth.txt"),
    "nyt-editorials": ("vader", "nytEditorialSnippets_GroundTruth.txt"),
    "movie-snippets": ("vader", "movieReviewSnippets_GroundTruth.txt"),
}
#: The sets whose domain is not movie reviews.
OUT_OF_DOMAIN = ("amazon", "yelp", "tweets", "amazon-snippets", "nyt-editorials")
#: Movie reviews from other sources than the training reviews.
OTHER_MOVIE_TEXTS = ("imdb-sentences", "movie-snippets")
#: The name reports give to the out-of-domain sets taken as one.
POOLED = "out-of-domain, pooled"


def names_from(source: str) -> tuple[str, ...]:
    """The sets of :data:`SETS` that come from ``source`` ("npm" or "vader"), in order."""
    return tuple(name for name, (src, _) in SETS.items() if src == source)


def fetch_tarball() -> Path:
    """``npm pack`` the package once (cached, integrity-checked) and return the .tgz path.

    Raises:
        FetchError: npm is missing or failed, or the hash does not match.
    """
    return npm_tarball(NPM_PACKAGE)


def fetch_vader() -> Path:
    """``pip download`` the VADER sdist once (cached, sha256-checked); return its path.

    Raises:
        FetchError: pip failed or the hash does not match.
    """
    return pypi_sdist(*VADER_SDIST)


def read_set(tarball: Path, name: str) -> tuple[list[str], np.ndarray]:
    """Read one of the npm package's sentence sets: (texts, 0/1 labels).

    Args:
        tarball: the path from :func:`fetch_tarball`.
        name: a key of :data:`SETS` from the "npm" source.
    """
    if name not in names_from("npm"):
        raise DataError(f"unknown sentence set {name!r} in {tarball.name}: use one of "
                        f"{sorted(names_from('npm'))}")
    member_name = SETS[name][1]
    with tarfile.open(tarball, "r:gz") as tar:
        member = tar.extractfile(member_name)
        if member is None:
            raise DataError(f"{tarball.name} has no file {member_name}")
        rows = json.load(member)
    # Each file ends with one empty, unlabelled record (a trailing newline in the source
    # text files): it is dropped; any other record without a label is an error.
    rows = [row for row in rows if str(row.get("text", "")).strip() or row.get("class") is not None]
    if any(row.get("class") is None for row in rows):
        raise DataError(f"{name}: a sentence without a label in {member_name}")
    texts = [str(row["text"]).strip() for row in rows]
    labels = np.asarray([int(row["class"]) for row in rows], dtype=np.int64)
    if not set(np.unique(labels)) <= {0, 1}:
        raise DataError(f"{name}: labels other than 0/1 in {member_name}")
    return texts, labels


def parse_vader_ratings(text: str, source: str, margin: float = VADER_MARGIN
                        ) -> tuple[list[str], np.ndarray]:
    """Parse a VADER ground-truth file (``ID<TAB>MEAN-RATING<TAB>TEXT`` lines) into
    (texts, 0/1 labels), keeping the texts whose mean rating is at least ``margin`` from 0.

    Raises:
        DataError: a line without three fields, a rating that is not a number in [-4, 4].
    """
    texts, labels = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise DataError(f"{source}:{number}: expected ID, rating and text separated by "
                            f"tabs, found {len(fields)} field(s)")
        try:
            rating = float(fields[1])
        except ValueError:
            raise DataError(f"{source}:{number}: rating {fields[1]!r} is not a number") from None
        if not -4.0 <= rating <= 4.0:  # also refuses NaN
            raise DataError(f"{source}:{number}: rating {rating} is outside -4 .. 4")
        sentence = html.unescape(fields[2]).strip()
        if abs(rating) >= margin and sentence:
            texts.append(sentence)
            labels.append(int(rating > 0))
    return texts, np.asarray(labels, dtype=np.int64)


def read_vader_set(sdist: Path, name: str) -> tuple[list[str], np.ndarray]:
    """Read one VADER set out of the sdist from :func:`fetch_vader`: (texts, 0/1 labels)."""
    if name not in names_from("vader"):
        raise DataError(f"unknown VADER set {name!r}: use one of "
                        f"{sorted(names_from('vader'))}")
    member_name = f"{VADER_FOLDER}/{SETS[name][1]}"
    with tarfile.open(sdist, "r:gz") as outer:
        archive = outer.extractfile(VADER_ARCHIVE)
        if archive is None:
            raise DataError(f"{sdist.name} has no file {VADER_ARCHIVE}")
        with tarfile.open(fileobj=io.BytesIO(archive.read()), mode="r:gz") as inner:
            member = inner.extractfile(member_name)
            if member is None:
                raise DataError(f"{VADER_ARCHIVE} has no file {member_name}")
            raw = member.read().decode("utf-8", errors="replace")
    return parse_vader_ratings(raw, member_name)


def load_sets(names=tuple(SETS)) -> dict[str, tuple[list[str], np.ndarray]]:
    """Fetch (cached) and return ``{name: (texts, labels)}`` for the given sets.

    Raises:
        DataError: an unknown name; FetchError (a DataError) when a source cannot be had.
    """
    unknown = [name for name in names if name not in SETS]
    if unknown:
        raise DataError(f"unknown sentence set(s) {unknown}: use some of {sorted(SETS)}")
    sources = {SETS[name][0] for name in names}
    tarball = fetch_tarball() if "npm" in sources else None
    sdist = fetch_vader() if "vader" in sources else None
    return {name: read_set(tarball, name) if SETS[name][0] == "npm"
            else read_vader_set(sdist, name) for name in names}


def load_available_sets() -> tuple[dict[str, tuple[list[str], np.ndarray]], dict[str, str]]:
    """Every set whose source can be fetched, and why each other source was skipped.

    Returns:
        (``{name: (texts, labels)}``, ``{source: reason}``): a report goes on with what it
        has when npm, say, is missing.
    """
    sets: dict[str, tuple[list[str], np.ndarray]] = {}
    skipped: dict[str, str] = {}
    for source in dict.fromkeys(src for src, _ in SETS.values()):
        try:
            sets.update(load_sets(names_from(source)))
        except DataError as exc:
            skipped[source] = str(exc)
    return sets, skipped


def pooled(sets: dict[str, tuple[list[str], np.ndarray]], names: tuple[str, ...]
           ) -> tuple[list[str], np.ndarray]:
    """The texts and labels of ``names`` (those present in ``sets``) as one set."""
    texts = [t for name in names if name in sets for t in sets[name][0]]
    labels = [sets[name][1] for name in names if name in sets]
    return texts, (np.concatenate(labels) if labels else np.zeros(0, np.int64))


def balanced_accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    """Mean of the per-class recalls (0.5 = chance on two classes)."""
    labels = np.asarray(labels)
    preds = np.asarray(preds)
    recalls = [float((preds[labels == c] == c).mean()) for c in np.unique(labels)]
    return float(np.mean(recalls)) if recalls else float("nan")


def paired_difference(labels: np.ndarray, preds_a: np.ndarray, preds_b: np.ndarray,
                      rounds: int = 2000, seed: int = 0) -> dict[str, float | int]:
    """Balanced accuracy of ``a`` minus that of ``b`` on the same texts, with a 95 %
    paired bootstrap interval.

    Both predictors are scored on the same resampled texts (each class resampled on its
    own, so every round keeps the class balance): on 1,000 sentences a gap of one or two
    points can be sampling noise, and the interval says whether it is.

    Returns:
        ``{"difference", "low", "high", "only_a_right", "only_b_right"}``; the last two
        count the texts one predictor gets right and the other wrong.
    """
    labels = np.asarray(labels)
    preds_a = np.asarray(preds_a)
    preds_b = np.asarray(preds_b)
    if not (labels.shape == preds_a.shape == preds_b.shape) or labels.ndim != 1:
        raise ValueError(f"paired_difference: labels {labels.shape}, predictions "
                         f"{preds_a.shape} and {preds_b.shape} must be equal 1-D shapes")
    if len(np.unique(labels)) < 2:
        raise ValueError("paired_difference needs texts of both classes")
    right_a = preds_a == labels
    right_b = preds_b == labels
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    rng = np.random.default_rng(seed)
    diffs = np.empty(rounds)
    for r in range(rounds):
        # Balanced accuracy = mean over classes of the class's recall.
        draws = [rng.choice(idx, len(idx)) for idx in by_class]
        diffs[r] = np.mean([right_a[d].mean() - right_b[d].mean() for d in draws])
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"difference": balanced_accuracy(labels, preds_a) - balanced_accuracy(labels, preds_b),
            "low": float(low), "high": float(high),
            "only_a_right": int((right_a & ~right_b).sum()),
            "only_b_right": int((right_b & ~right_a).sum())}


def main(argv: list[str] | None = None) -> int:
    """Score an exported SavedModel on the sentence sets (see the module docstring)."""
    import tensorflow as tf

    args = sys.argv[1:] if argv is None else argv
    if args:
        path = Path(args[0])
    else:
        base = Path("saved_models/sentiment")
        versions = sorted((p for p in base.glob("*") if p.name.isdigit()),
                          key=lambda p: int(p.name))
        if not versions:
            print(f"error: no export under {base}; run `rnnkit sentiment export`",
                  file=sys.stderr)
            return 2
        path = versions[-1]
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    print(f"export {path}")
    sets, skipped = load_available_sets()
    for source, reason in skipped.items():
        print(f"{source} sets skipped: {reason}")
    if any(name in sets for name in OUT_OF_DOMAIN):
        sets = {**sets, POOLED: pooled(sets, OUT_OF_DOMAIN)}
    for name, (texts, labels) in sets.items():
        probs = np.concatenate([
            serve(text=tf.constant(texts[i:i + 256]))["probability"].numpy()
            for i in range(0, len(texts), 256)])
        preds = (probs >= 0.5).astype(np.int64)
        print(f"{name:21s} n={len(texts):5d}  balanced accuracy "
              f"{balanced_accuracy(labels, preds):.4f}  max probability "
              f"{float(np.max(np.maximum(probs, 1 - probs))):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
