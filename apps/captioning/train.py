"""The ``train`` verb: the decoder on cached CNN features, then the prior's calibration.

With the ImageNet word prior, one class per training head noun is first fitted beside
ImageNet's on the frozen features of the training single pictures (:func:`add_noun_classes`,
``--noun-prior``). Then teacher forcing with a masked token loss through ``run.fit``
(early stopping on validation head-noun recall, or next-token accuracy for photo data;
resumable), and one number (``prior_boost``) is chosen on the validation split
(:func:`calibrate_prior`). The
run folder gets ``model.keras`` and ``vocab.json`` (the tokens in id order); the settings
evaluation and export need (backbone, caption length, the calibration) are in
``run.json``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np

from rnnkit.app import GradientProbe, Run
from rnnkit.averaging import RecentWeights, average_checkpoints
from rnnkit.errors import DataError, ModelError
from rnnkit.modeling.vocabulary import Vocabulary

from . import data
from .features import Prepared, prepare_features
from .noun_prior import NOUN_PRIOR_L2, fit_noun_classes, single_stamp_examples, with_noun_classes

__all__ = ["HPARAMS", "PRIOR_BOOSTS", "calibrate_prior", "caption_dataset", "data_options",
           "gradient_probe", "imagenet_prior_weights", "load_trained", "train"]

log = logging.getLogger(__name__)

VOCAB_FILE = "vocab.json"

#: Fixed training settings (the flags ``--units``, ``--dropout``, ``--label-smoothing`` and
#: ``--imagenet-prior`` are the app's options).
HPARAMS: dict[str, Any] = {
    "embed_dim": 256,
    "learning_rate": 2e-3,
    "clipnorm": 5.0,
    "patience": 6,
    # What early stopping watches where the data has head nouns (Tux Paint): the share of
    # validation objects the greedy caption names (:func:`best_eligible_boost`), the best over
    # ``RECALL_BOOSTS``. Next-token accuracy on validation stays flat (0.44-0.47 over ten
    # epochs) while training accuracy climbs from 0.37 to 0.80, so the epoch it picked was
    # chance; the validation loss rises from the first epochs on (over-confidence on new
    # pictures' exact wording). Photo data (no head nouns) falls back to the accuracy.
    "monitor": "val_head_recall",
    "fallback_monitor": "val_masked_accuracy",
    "max_caption_tokens": 32,
}

PRIOR_BOOSTS = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
#: The prior boosts the per-epoch monitor tries (greedy; the final boost is chosen later
#: from ``PRIOR_BOOSTS`` with beam search).
RECALL_BOOSTS = (0.0, 3.0, 6.0)


def data_options(run: Run) -> tuple[str | None, bool, int | None]:
    """``(data, quick, limit)`` for a verb after ``train``: as trained unless ``--data``
    is given (then ``--quick`` and ``--limit`` as given).

    Args:
        run: the verb's run (its folder holds ``run.json``).
    """
    if run.get("data") is not None:
        return run.data, bool(run.quick), run.limit
    options = run.run_config()["options"]
    limit = run.limit if run.limit is not None else options.get("limit")
    return options.get("data"), bool(run.quick or options.get("quick")), limit


def _training_arrays(split, vocab: Vocabulary, max_len: int):
    """Picture rows repeated once per reference caption, with (input, target) tokens."""
    rows, inputs, targets = [], [], []
    for i, refs in enumerate(split.references):
        for ref in refs:
            inp, tgt = vocab.encode(ref, max_len)
            rows.append(i)
            inputs.append(inp)
            targets.append(tgt)
    return np.asarray(rows), np.stack(inputs), np.stack(targets)


def caption_dataset(prep: Prepared, split: str, vocab: Vocabulary, max_len: int,
                    batch_size: int, shuffle: bool, seed: int):
    """``((grid, pooled, tokens_in), tokens_out)`` batches of one split, one per caption.

    Args:
        prep: the prepared features.
        split: the split name.
        vocab: encodes the captions.
        max_len: tokens per (padded) caption, ``<end>`` included.
        batch_size: captions per batch.
        shuffle: reshuffle every epoch.
        seed: the shuffle seed.
    """
    import tensorflow as tf

    rows, inputs, targets = _training_arrays(prep.splits[split], vocab, max_len)
    grid = tf.constant(prep.grid[split])
    pooled = tf.constant(prep.pooled[split])
    ds = tf.data.Dataset.from_tensor_slices((rows, inputs, targets))
    if shuffle:
        ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    # Gather features per batch (they are stored once per picture, not once per caption).
    ds = ds.map(lambda r, i, t: ((tf.gather(grid, r), tf.gather(pooled, r), i), t),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def train(run: Run) -> dict[str, Any]:
    """The ``train`` verb (see the module docstring).

    Returns:
        The summary for ``run.json``: the backbone, caption length, the prior and its
        calibration (what evaluation and export read back), sizes and timings.
    """
    import keras

    from rnnkit.atomic import atomic_write_json
    from rnnkit.backbones import OFFLINE_BACKBONES, canonical_name

    from .grammar import noun_word_ids
    from .model import Captioner, caption_accuracy, caption_loss, class_word_matrix

    hp = HPARAMS
    t0 = time.time()
    run.seed_everything()
    backbone = canonical_name(run.backbone)
    prep = prepare_features(run.data, run.quick, run.limit, run.seed, backbone)
    t_features = time.time() - t0
    train_refs = [r for refs in prep.splits["train"].references for r in refs]
    vocab = Vocabulary.build(r.split() for r in train_refs)
    use_prior = run.imagenet_prior
    if use_prior is None:
        use_prior = backbone in OFFLINE_BACKBONES
    prior, nouns = None, None
    if use_prior:
        prior = imagenet_prior_weights(backbone)
        prior, nouns = add_noun_classes(run, prep, prior)
        # Class head words the captions never use still join the vocabulary: the prior is
        # the only way the decoder can ever say them (novel objects).
        extra = sorted({w for ws in prior[2] for w in ws} - set(vocab.stoi))
        vocab = Vocabulary(vocab.words + extra)
    max_len = min(hp["max_caption_tokens"], max(len(r.split()) for r in train_refs) + 1)
    train_ds = caption_dataset(prep, "train", vocab, max_len, run.batch_size, True, run.seed)
    val_ds = caption_dataset(prep, "validation", vocab, max_len, run.batch_size, False,
                             run.seed)
    feature_dim = int(prep.pooled["train"].shape[-1])
    # Object words decoding names at most once ("a dog next to a dog" for one dog).
    noun_ids = noun_word_ids(vocab, train_refs,
                             [w for ws in prior[2] for w in ws] if prior else ())
    with run.strategy.scope():
        model = Captioner(len(vocab), feature_dim=feature_dim, embed_dim=hp["embed_dim"],
                          units=run.units, dropout=run.dropout,
                          num_classes=len(prior[2]) if prior else 0, noun_ids=noun_ids)
        model.build()
        if prior:
            model.set_class_prior(prior[0], prior[1], class_word_matrix(prior[2], vocab))
        model.compile(optimizer=keras.optimizers.Adam(hp["learning_rate"],
                                                      clipnorm=hp["clipnorm"]),
                      loss=caption_loss(len(vocab), run.label_smoothing,
                                        generator_loss=bool(prior)),
                      metrics=[caption_accuracy(len(vocab))])
    monitor, recall = hp["fallback_monitor"], None
    if has_head_nouns(prep.splits["validation"]):
        monitor = hp["monitor"]
        boosts = RECALL_BOOSTS if prior else (0.0,)

        def recall(m) -> float:
            # The same eligibility rule as the final calibration: a boost that turns
            # captions into bare nouns does not count.
            return best_eligible_boost(m, vocab, prep, "validation", boosts, "greedy")[1]

    count = max(1, int(run.get("average_checkpoints", 1)))
    averaging = count > 1 and recall is not None
    # The best epoch can lie up to `patience` epochs before the last one.
    recent = RecentWeights(count + hp["patience"]) if averaging else None
    result = run.fit(model, train_ds, val_ds, monitor=monitor, patience=hp["patience"],
                     validation_metrics=None if recall is None
                     else (lambda m: {monitor: recall(m)}),
                     extra_callbacks=[recent] if averaging else [])
    averaged = (average_checkpoints(model, recent, result["best_epoch"], count, recall,
                                    name=monitor, mode="max") if averaging else None)
    calibration = None
    if prior:
        calibration = calibrate_prior(model, vocab, prep, "validation")
        model.prior_boost = calibration["prior_boost"]
    run.save_model(model)
    atomic_write_json(run.output / VOCAB_FILE, vocab.itos)
    log.info("trained: best %s %.4f at epoch %d; %d decoder parameters", monitor,
             result["best"] or float("nan"), result["best_epoch"] + 1, model.count_params())
    return {
        "backbone": backbone, "max_len": max_len, "imagenet_prior": bool(prior),
        "noun_prior": None if nouns is None else {
            "nouns": len(nouns.nouns), "l2": NOUN_PRIOR_L2,
            "train_accuracy": round(nouns.train_accuracy, 4),
            "seconds": round(nouns.seconds, 1)},
        "prior_calibration": calibration, "hparams": hp,
        "vocab_size": len(vocab), "decoder_params": int(model.count_params()),
        "noun_words": len(noun_ids), "train_pictures": len(prep.splits["train"]),
        "best_epoch": result["best_epoch"] + 1, "epochs_run": result["epochs_run"],
        "monitor": monitor, "best_monitored": result["best"], "checkpoint_average": averaged,
        "feature_seconds": round(t_features, 1),
        "fit_seconds": round(time.time() - t0 - t_features, 1),
    }


def add_noun_classes(run: Run, prep: Prepared, prior):
    """The ImageNet prior with one class per training head noun appended
    (:mod:`apps.captioning.noun_prior`), when ``--noun-prior`` is on (the default) and the
    training split has single-object pictures with head nouns; else the prior unchanged.

    Returns:
        (kernel, bias, words per class), and the fitted :class:`NounClasses` or None.
    """
    enabled = run.get("noun_prior", None)
    idx, heads = single_stamp_examples(prep.splits["train"])
    if enabled is False or (enabled is None and len(set(heads)) < 2):
        return prior, None
    kernel, bias, words = prior
    log.info("fitting the noun prior: %d training nouns beside ImageNet's classes, on %d "
             "single pictures", len(set(heads)), len(idx))
    nouns = fit_noun_classes(prep.pooled["train"][idx], heads, kernel, bias, seed=run.seed)
    log.info("noun prior: %d nouns, training pictures' top class right %.3f (%.0f s)",
             len(nouns.nouns), nouns.train_accuracy, nouns.seconds)
    return with_noun_classes(kernel, bias, words, nouns), nouns


def calibrate_prior(model, vocab: Vocabulary, prep: Prepared, split: str = "validation",
                    boosts=PRIOR_BOOSTS) -> dict[str, Any]:
    """Chooses ``model.prior_boost`` on a held-out split (never the test split).

    The mixing weights are learnt on training pictures, whose captions the generator has
    memorised, so they trust the ImageNet prior less than new pictures warrant. Each
    boost is tried with beam search on ``split``; the one naming the most objects wins:
    head-noun recall pooled over single pictures and every stamp of every scene (ties: the
    smaller boost). Boosts above 6 are not tried: on validation they made the decoder
    repeat ImageNet words ("tank vehicle tank tank") and BLEU collapsed.

    A boost is only eligible while the captions stay noun phrases a person would write:
    at least as large a share of them must open with a determiner ("a", "an", "the", ...)
    as of the training captions. A large boost lets the prior speak at the first step, and
    the caption becomes a bare noun ("truck", "hare rabbit"): on validation with the noun
    prior, boost 6 named 1.6 points more objects but only 73 % of its captions opened
    with an article, against 100 % at boost 0 (docs/captioning.md). Boost 0, the trained
    mixture unchanged, is always eligible.

    Args:
        model: the trained prior captioner.
        vocab: its vocabulary.
        prep: features of every split.
        split: the held-out split used.
        boosts: the candidates.

    Returns:
        {"prior_boost": chosen, "split": split, "recall": {boost: pooled recall},
        "determiner_share": {boost: share of captions opening with a determiner},
        "min_determiner_share": the training captions' share}.
    """
    best, _, recall, opens, floor = best_eligible_boost(model, vocab, prep, split, boosts,
                                                        "beam")
    log.info("prior calibration on %s: recall %s, opening determiners %s (training "
             "captions %.3f) -> boost %s", split, recall, opens, floor, best)
    model.prior_boost = best
    return {"prior_boost": best, "split": split, "recall": recall,
            "determiner_share": opens, "min_determiner_share": round(floor, 4)}


def best_eligible_boost(model, vocab: Vocabulary, prep: Prepared, split: str, boosts,
                        method: str) -> tuple[float, float, dict, dict, float]:
    """The boost naming the most objects of ``split`` among those whose captions open
    with a determiner at least as often as the training captions do (boost 0 always
    qualifies; see :func:`calibrate_prior`).

    Returns:
        (best boost, its pooled recall, {boost: recall}, {boost: determiner share},
        the training captions' determiner share).
    """
    train_refs = [refs[0] for refs in prep.splits["train"].references]
    floor = float(np.mean([data.starts_with_determiner(r) for r in train_refs]))
    recall: dict[str, float] = {}
    opens: dict[str, float] = {}
    best, best_r = 0.0, -1.0
    for boost in boosts:
        caps = decode_split(model, vocab, prep, split, boost, method)
        r = head_recall_of(prep.splits[split], caps)
        share = float(np.mean([data.starts_with_determiner(c) for c in caps]))
        recall[str(boost)], opens[str(boost)] = round(r, 4), round(share, 4)
        if (boost == 0 or share >= floor) and r > best_r:
            best, best_r = float(boost), r
    return best, best_r, recall, opens, floor


def has_head_nouns(split) -> bool:
    """Whether a split's pictures are Tux Paint singles and scenes (objects with head
    nouns), not photos with free captions."""
    return any(kind in ("single", "scene") for kind in split.kinds)


def decode_split(model, vocab: Vocabulary, prep: Prepared, split: str, boost: float,
                 method: str = "beam") -> list[str]:
    """Captions of a split's pictures at a given ``prior_boost`` (the model's own value is
    restored after)."""
    from .model import caption_features

    kept = model.prior_boost
    model.prior_boost = float(boost)
    try:
        caps, _, _ = caption_features(model, vocab, prep.grid[split], prep.pooled[split],
                                      method, 3)
    finally:
        model.prior_boost = kept
    return caps


def head_recall_of(held, caps: list[str]) -> float:
    """Share of the objects of ``held`` (a split) whose head noun ``caps`` name, pooled
    over single pictures and every stamp of every scene (511 objects in validation)."""
    hits = []
    for i, cap in enumerate(caps):
        if held.kinds[i] == "single":
            hits.append(data.noun_matches(held.heads[i], cap))
        elif held.kinds[i] == "scene":
            hits += [data.noun_matches(data.head_noun(p) or "", cap)
                     for p in data.scene_parts(held.references[i][0])]
    return float(np.mean(hits)) if hits else 0.0


def imagenet_prior_weights(backbone: str):
    """(kernel, bias, head words per class) of the backbone's ImageNet classifier.

    Args:
        backbone: a backbone name; the EfficientNet-Lite ones carry their classifier.

    Raises:
        DataError: for a backbone without a bundled classifier.
    """
    from rnnkit.backbones import OFFLINE_BACKBONES, canonical_name
    from rnnkit.backbones.efficientnet_lite import imagenet_class_names, imagenet_classifier

    from .model import class_head_words

    backbone = canonical_name(backbone)
    if backbone not in OFFLINE_BACKBONES:
        raise DataError(f"the ImageNet word prior needs the classifier of "
                        f"{' or '.join(OFFLINE_BACKBONES)}; backbone {backbone!r} has none "
                        "here (pass --no-imagenet-prior)")
    kernel, bias = imagenet_classifier(backbone)
    return kernel, bias, class_head_words(imagenet_class_names())


def load_trained(run: Run):
    """(model, vocabulary, training summary) of the run folder.

    Raises:
        ModelError: when ``train`` has not finished in this run folder.
    """
    summary = run.run_config()["train"]
    path = run.output / VOCAB_FILE
    if not path.is_file():
        raise ModelError(f"no {VOCAB_FILE} in {run.output}: run `rnnkit captioning train` "
                         "first (or pass --output)")
    vocab = Vocabulary.from_tokens(json.loads(path.read_text(encoding="utf-8")))
    model = run.load_model()
    if getattr(model, "noun_ids", None) is None:
        # Trained before decoding named each object word once: derive the words as train
        # does, from the training captions (and the prior's words), so evaluate and export
        # apply the same rule to an older model.
        from .formats import load_splits
        from .grammar import noun_word_ids

        spec, quick, limit = data_options(run)
        refs = [r for rs in load_splits(spec, quick, limit, run.seed)["train"].references
                for r in rs]
        extra = ([w for ws in imagenet_prior_weights(summary["backbone"])[2] for w in ws]
                 if summary.get("imagenet_prior") else [])
        model.noun_ids = noun_word_ids(vocab, refs, extra)
    return model, vocab, summary


def gradient_probe(run: Run, size: int = 32) -> GradientProbe:
    """The first ``size`` validation pictures (first reference caption each), the trained
    decoder and its training loss."""
    from .model import caption_loss

    model, vocab, summary = load_trained(run)
    spec, quick, limit = data_options(run)
    prep = prepare_features(spec, quick, limit, run.seed, summary["backbone"])
    held = prep.splits["validation"]
    n = min(size, len(held))
    inputs, targets = zip(*(vocab.encode(refs[0], summary["max_len"])
                            for refs in held.references[:n]))
    import tensorflow as tf

    x = (tf.constant(prep.grid["validation"][:n]), tf.constant(prep.pooled["validation"][:n]),
         tf.constant(np.stack(inputs)))
    loss = caption_loss(len(vocab), run.trained_option("label_smoothing", 0.0),
                        generator_loss=bool(summary.get("imagenet_prior")))
    return GradientProbe(model=model, inputs=x, targets=tf.constant(np.stack(targets)),
                         loss=loss)
