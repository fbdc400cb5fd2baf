"""Prepare, train and evaluate the captioner (the verbs' work; cli.py only parses flags).

* ``prepare``: fetch the stamps, build the TFDS dataset, compute and cache CNN features.
* ``train``: decoder on cached features with teacher forcing and a masked loss
  (``rnnkit.training.fit``: early stopping on validation loss, resumable), then
  ``<output>/model.keras`` + ``<output>/captioner.json`` (vocabulary and settings).
* ``evaluate``: beam-search captions for the held-out pictures; BLEU-1..4 (sacrebleu) for
  single stamps and scenes separately, against a nearest-neighbour baseline computed in the
  same run; head-noun accuracy on single stamps; a PNG grid of examples; metrics.json.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from apps.captioning import data as cdata

log = logging.getLogger(__name__)

APP = "captioning"
MODEL_FILE = "model.keras"
CONFIG_FILE = "captioner.json"


@dataclasses.dataclass
class Prepared:
    """Splits plus their cached CNN features.

    Attributes:
        splits: split name -> :class:`apps.captioning.data.Split`.
        grid: split name -> float16 (N, cells, C).
        pooled: split name -> float32 (N, C).
        backbone: the backbone's name.
    """

    splits: dict
    grid: dict
    pooled: dict
    backbone: str


def prepare_features(spec: str | None, quick: bool, limit: int | None, seed: int,
                     backbone_name: str) -> Prepared:
    """Loads (building if needed) the data and the cached features of every split.

    Args:
        spec: ``--data`` value.
        quick: the smaller Tux Paint recipe.
        limit: at most this many pictures per split.
        seed: seed for user-data splits.
        backbone_name: ``--backbone``.
    """
    from rnnkit.backbones import get_backbone

    splits = cdata.load_splits(spec, quick=quick, limit=limit, seed=seed)
    name = cdata.dataset_name(spec, quick, limit)
    grid, pooled = {}, {}
    backbone = None
    for split_name, split in splits.items():
        if len(split) == 0:
            raise ValueError(f"the {split_name} split of {spec or 'tuxpaint'} is empty")
        key = f"{name}-{split_name}-{backbone_name}"
        try:
            grid[split_name], pooled[split_name] = cdata.load_cached_features(key, len(split))
        except FileNotFoundError:
            if backbone is None:
                backbone = get_backbone(backbone_name)
            grid[split_name], pooled[split_name] = cdata.cached_features(split, key, backbone)
    return Prepared(splits, grid, pooled, backbone_name)


def _training_arrays(prep: Prepared, split: str, vocab, max_len: int):
    """Features repeated once per reference caption, with encoded (input, target) tokens."""
    rows, inputs, targets = [], [], []
    for i, refs in enumerate(prep.splits[split].references):
        for ref in refs:
            inp, tgt = vocab.encode(ref, max_len)
            rows.append(i)
            inputs.append(inp)
            targets.append(tgt)
    return np.asarray(rows), np.stack(inputs), np.stack(targets)


def _dataset(prep: Prepared, split: str, vocab, max_len: int, batch_size: int,
             shuffle: bool, seed: int):
    import tensorflow as tf

    rows, inputs, targets = _training_arrays(prep, split, vocab, max_len)
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


def train(data: str | None, output: Path, *, epochs: int, batch_size: int, seed: int,
          quick: bool = False, limit: int | None = None, strategy: str = "default",
          backbone: str = "efficientnet_lite0", units: int = 512, embed_dim: int = 256,
          learning_rate: float = 2e-3, patience: int = 6, dropout: float = 0.3,
          label_smoothing: float = 0.1, monitor: str = "val_masked_accuracy",
          imagenet_prior: bool | None = None, word_dropout: float = 0.0) -> dict[str, Any]:
    """Trains the decoder on cached features and saves the model and its vocabulary.

    Args:
        data: ``--data`` spec. output: run folder. epochs: most epochs.
        batch_size: captions per batch. seed: random seed. quick: smaller data.
        limit: at most this many pictures per split. strategy: tf.distribute strategy.
        backbone: ``--backbone``. units: RNN size. embed_dim: word embedding size.
        learning_rate: Adam's. patience: early-stopping patience (epochs).
        dropout: feature and output dropout. label_smoothing: see ``make_masked_loss``.
        monitor: the validation metric for early stopping and the best weights. The
            default is next-token accuracy: validation loss rises from the first epochs on
            (over-confidence on new pictures' exact wording) while accuracy and BLEU still
            improve, so stopping on the loss would stop far too early.
        imagenet_prior: mix the CNN's own ImageNet classifier into the word distribution
            (see :mod:`apps.captioning.model`); the head words of the 1000 class names join
            the vocabulary. None: on for ``efficientnet_lite0`` (whose classifier ships
            with rnnkit), off for other backbones.
        word_dropout: probability of replacing a teacher-forced input word by ``<unk>``.

    Returns:
        The history summary from ``rnnkit.training.fit`` plus timing and sizes.
    """
    import keras

    from apps.captioning.model import (
        SPECIALS,
        Captioner,
        Vocabulary,
        class_word_matrix,
        make_masked_accuracy,
        make_masked_loss,
        save_config,
    )
    from rnnkit import reports, training

    t0 = time.time()
    training.seed_everything(seed)
    prep = prepare_features(data, quick, limit, seed, backbone)
    t_features = time.time() - t0
    train_refs = [r for refs in prep.splits["train"].references for r in refs]
    vocab = Vocabulary.build(train_refs)
    if imagenet_prior is None:
        imagenet_prior = backbone == "efficientnet_lite0"
    prior = None
    if imagenet_prior:
        prior = imagenet_prior_weights(backbone)
        # Class head words the captions never use still join the vocabulary: the prior is
        # the only way the decoder can ever say them (novel objects).
        extra = sorted({w for ws in prior[2] for w in ws} - set(vocab.stoi))
        vocab = Vocabulary(vocab.itos[len(SPECIALS):] + extra)
    max_len = min(32, max(len(r.split()) for r in train_refs) + 1)
    train_ds = _dataset(prep, "train", vocab, max_len, batch_size, True, seed)
    val_ds = _dataset(prep, "validation", vocab, max_len, batch_size, False, seed)
    feature_dim = int(prep.pooled["train"].shape[-1])
    with training.get_strategy(strategy).scope():
        model = Captioner(len(vocab), feature_dim=feature_dim, embed_dim=embed_dim, units=units,
                          dropout=dropout, num_classes=1000 if prior else 0,
                          word_dropout=word_dropout, seed=seed)
        model.build()
        if prior:
            model.set_class_prior(prior[0], prior[1], class_word_matrix(prior[2], vocab))
        model.compile(optimizer=keras.optimizers.Adam(learning_rate, clipnorm=5.0),
                      loss=make_masked_loss(len(vocab), label_smoothing,
                                            generator_loss=bool(prior)),
                      metrics=[make_masked_accuracy(len(vocab))])
    output = Path(output)
    result = training.fit(model, train_ds, val_ds, output_dir=output, epochs=epochs,
                          monitor=monitor, patience=patience)
    calibration = None
    if prior:
        calibration = calibrate_prior(model, vocab, prep, "validation")
        model.prior_boost = calibration["prior_boost"]
    training.save_model(model, output / MODEL_FILE)
    save_config(output / CONFIG_FILE, vocab, {
        "backbone": backbone, "max_len": max_len, "data": data or "tuxpaint",
        "quick": quick, "limit": limit, "seed": seed, "units": units, "embed_dim": embed_dim,
        "dropout": dropout, "label_smoothing": label_smoothing, "monitor": monitor,
        "imagenet_prior": bool(prior), "word_dropout": word_dropout,
        "prior_calibration": calibration})
    reports.plot_history(result["history"], reports_dir(output) / "history.png",
                         title="captioning: decoder training")
    summary = {**result, "feature_seconds": round(t_features, 1),
               "train_seconds": round(time.time() - t0 - t_features, 1),
               "vocab_size": len(vocab), "decoder_params": int(model.count_params()),
               "train_pictures": len(prep.splits["train"])}
    log.info("trained: best %s %.4f at epoch %d; %d decoder parameters", monitor,
             result["best"] or float("nan"), result["best_epoch"] + 1, model.count_params())
    return summary


PRIOR_BOOSTS = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)


def calibrate_prior(model, vocab, prep: Prepared, split: str = "validation",
                    boosts=PRIOR_BOOSTS) -> dict[str, Any]:
    """Chooses ``model.prior_boost`` on a held-out split (never the test split).

    The mixing weights are learnt on training pictures, whose captions the generator has
    memorised, so they trust the ImageNet prior less than new pictures warrant. Each
    boost is tried with beam search on ``split``; the one naming the most objects wins:
    head-noun recall pooled over single pictures and every stamp of every scene (ties: the
    smaller boost). Boosts above 6 are not tried: on validation they made the decoder
    repeat ImageNet words ("tank vehicle tank tank") and BLEU collapsed.

    Args:
        model: the trained prior captioner. vocab: its vocabulary.
        prep: features of every split. split: the held-out split used.
        boosts: the candidates.

    Returns:
        {"prior_boost": chosen, "split": split, "recall": {boost: pooled recall}}.
    """
    held = prep.splits[split]
    recall: dict[str, float] = {}
    best, best_r = 0.0, -1.0
    for boost in boosts:
        model.prior_boost = float(boost)
        caps, _, _ = generate(model, vocab, prep.grid[split], prep.pooled[split], "beam", 3)
        hits = []
        for i, cap in enumerate(caps):
            if held.kinds[i] == "single":
                hits.append(cdata.noun_matches(held.heads[i], cap))
            elif held.kinds[i] == "scene":
                hits += [cdata.noun_matches(cdata.head_noun(p) or "", cap)
                         for p in _scene_parts(held.references[i][0])]
        r = float(np.mean(hits)) if hits else 0.0
        recall[str(boost)] = round(r, 4)
        if r > best_r:
            best, best_r = float(boost), r
    log.info("prior calibration on %s: %s -> boost %s", split, recall, best)
    model.prior_boost = best
    return {"prior_boost": best, "split": split, "recall": recall}


def imagenet_prior_weights(backbone: str):
    """(kernel, bias, head words per class) of the backbone's ImageNet classifier.

    Raises:
        ValueError: for a backbone without a bundled classifier.
    """
    if backbone != "efficientnet_lite0":
        raise ValueError(f"the ImageNet word prior needs efficientnet_lite0's classifier; "
                         f"backbone {backbone!r} has none here (pass imagenet_prior=False)")
    from apps.captioning.model import class_head_words
    from rnnkit.backbones.efficientnet_lite import imagenet_class_names, imagenet_classifier

    kernel, bias = imagenet_classifier()
    return kernel, bias, class_head_words(imagenet_class_names())


def reports_dir(output: Path) -> Path:
    from rnnkit import paths

    return paths.reports_dir(output)


def load_trained(output: Path):
    """(model, vocabulary, settings) saved by :func:`train` in ``output``.

    Raises:
        FileNotFoundError: when ``train`` has not been run for this output folder.
    """
    import keras

    from apps.captioning.model import load_config

    output = Path(output)
    if not (output / MODEL_FILE).exists() or not (output / CONFIG_FILE).exists():
        raise FileNotFoundError(f"no trained captioner in {output}: run `rnnkit captioning train` first")
    model = keras.saving.load_model(output / MODEL_FILE, compile=False)
    vocab, cfg = load_config(output / CONFIG_FILE)
    return model, vocab, cfg


def generate(model, vocab, grid: np.ndarray, pooled: np.ndarray, method: str = "beam",
             beam_width: int = 3, batch_size: int = 128, max_length: int = 24):
    """Captions (list of str), scores and attention (N, T, cells) for feature arrays."""
    import tensorflow as tf

    from apps.captioning.model import decode

    fn = tf.function(lambda g, p: decode(model, g, p, method, beam_width, max_length),
                     reduce_retracing=True)
    caps, scores, atts = [], [], []
    for s in range(0, len(pooled), batch_size):
        out = fn(tf.constant(grid[s:s + batch_size]), tf.constant(pooled[s:s + batch_size]))
        toks = out.tokens.numpy()
        caps += [vocab.decode(t) for t in toks]
        scores += out.scores.numpy().tolist()
        att = out.attention.numpy()
        for a, n in zip(att, out.lengths.numpy()):
            atts.append(a[: max(int(n), 1)])
    return caps, scores, atts


def nearest_neighbour_captions(train_pooled: np.ndarray, train_refs: list[list[str]],
                               query_pooled: np.ndarray) -> list[str]:
    """The baseline: the first reference caption of the training picture with the most
    similar pooled CNN features (cosine similarity)."""
    a = train_pooled / (np.linalg.norm(train_pooled, axis=1, keepdims=True) + 1e-8)
    q = query_pooled / (np.linalg.norm(query_pooled, axis=1, keepdims=True) + 1e-8)
    out = []
    for s in range(0, len(q), 512):
        idx = (q[s:s + 512] @ a.T).argmax(axis=1)
        out += [train_refs[i][0] for i in idx]
    return out


def bleu_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """Corpus BLEU-1..4 (sacrebleu, 13a tokenisation) of hypotheses against 1+ references."""
    from sacrebleu.metrics import BLEU

    n_refs = max(len(r) for r in references)
    # sacrebleu wants one list per reference "stream"; pad short lists with their first item.
    streams = [[r[k] if k < len(r) else r[0] for r in references] for k in range(n_refs)]
    out = {}
    for n in (1, 2, 3, 4):
        bleu = BLEU(max_ngram_order=n, effective_order=False)
        out[f"bleu{n}"] = round(float(bleu.corpus_score(hypotheses, streams).score), 2)
    return out


def evaluate(output: Path, *, data: str | None = None, seed: int = 1337,
             quick: bool = False, limit: int | None = None, beam_width: int = 3,
             grid_examples: int = 16) -> dict[str, Any]:
    """Evaluates the trained captioner on the test split (see the module docstring).

    Args:
        output: run folder holding the trained model. data: ``--data`` (default: as trained).
        seed: random seed. quick/limit: as trained by default.
        beam_width: beam size for the reported captions.
        grid_examples: pictures in the example grid PNG.

    Returns:
        The metrics written to ``<output>/reports/metrics.json``.
    """
    from rnnkit import reports

    model, vocab, cfg = load_trained(output)
    if data is None:
        data = None if cfg.get("data") in (None, "tuxpaint") else cfg["data"]
        quick = quick or bool(cfg.get("quick"))
        limit = limit if limit is not None else cfg.get("limit")
    prep = prepare_features(data, quick, limit, seed, cfg.get("backbone", "efficientnet_lite0"))
    test = prep.splits["test"]
    t0 = time.time()
    beam, _, _ = generate(model, vocab, prep.grid["test"], prep.pooled["test"],
                          "beam", beam_width)
    greedy, _, _ = generate(model, vocab, prep.grid["test"], prep.pooled["test"], "greedy")
    decode_s = time.time() - t0
    nn = nearest_neighbour_captions(prep.pooled["train"], prep.splits["train"].references,
                                    prep.pooled["test"])
    kinds = sorted(set(test.kinds))
    metrics: dict[str, Any] = {
        "data": data or "tuxpaint", "backbone": prep.backbone, "beam_width": beam_width,
        "test_pictures": len(test), "train_pictures": len(prep.splits["train"]),
        "vocab_size": len(vocab), "decoder_params": int(model.count_params()),
        "decode_seconds": round(decode_s, 2),
    }
    for kind in kinds:
        idx = [i for i, k in enumerate(test.kinds) if k == kind]
        refs = [test.references[i] for i in idx]
        entry = {
            "count": len(idx),
            "model_beam": bleu_scores([beam[i] for i in idx], refs),
            "model_greedy": bleu_scores([greedy[i] for i in idx], refs),
            "nearest_neighbour": bleu_scores([nn[i] for i in idx], refs),
            "exact_match_beam": round(float(np.mean([beam[i] in test.references[i] for i in idx])), 4),
            "exact_match_nearest_neighbour": round(
                float(np.mean([nn[i] in test.references[i] for i in idx])), 4),
        }
        if kind == "single":
            heads = [test.heads[i] for i in idx]
            entry["head_noun_accuracy_beam"] = round(float(np.mean(
                [cdata.noun_matches(h, beam[i]) for h, i in zip(heads, idx)])), 4)
            entry["head_noun_accuracy_nearest_neighbour"] = round(float(np.mean(
                [cdata.noun_matches(h, nn[i]) for h, i in zip(heads, idx)])), 4)
            if prep.backbone == "efficientnet_lite0":
                entry["head_noun_recognisers"] = head_noun_recognisers(prep, idx)
        if kind == "scene":
            # Both/all objects named, in the right left-to-right order, anywhere in the caption.
            def objects_in_order(cap: str, stamps_heads: list[str]) -> bool:
                words = cap.split()
                pos = []
                for h in stamps_heads:
                    hits = [j for j, w in enumerate(words) if cdata.noun_matches(h, w)]
                    if not hits:
                        return False
                    pos.append(hits[0])
                return pos == sorted(pos)

            heads_by_scene = [[cdata.head_noun(p) for p in _scene_parts(test.references[i][0])]
                              for i in idx]
            entry["all_objects_in_order_beam"] = round(float(np.mean(
                [objects_in_order(beam[i], h) for h, i in zip(heads_by_scene, idx)])), 4)
            entry["all_objects_in_order_nearest_neighbour"] = round(float(np.mean(
                [objects_in_order(nn[i], h) for h, i in zip(heads_by_scene, idx)])), 4)
        metrics[kind] = entry
    overall_refs = test.references
    metrics["all"] = {"model_beam": bleu_scores(beam, overall_refs),
                      "nearest_neighbour": bleu_scores(nn, overall_refs)}
    rdir = reports_dir(Path(output))
    reports.write_metrics(rdir, metrics)
    from apps.captioning.figures import plot_examples

    order = _example_order(test.kinds, grid_examples)
    plot_examples([cdata.picture(test, i) for i in order],
                  [beam[i] for i in order], [test.references[i][0] for i in order],
                  [nn[i] for i in order], rdir / "examples.png",
                  title=f"held-out pictures: beam-{beam_width} caption / reference / nearest neighbour")
    examples = [{"kind": test.kinds[i], "reference": test.references[i][0], "beam": beam[i],
                 "greedy": greedy[i], "nearest_neighbour": nn[i]} for i in range(len(test))]
    from rnnkit.atomic import atomic_write_json

    atomic_write_json(rdir / "captions.json", examples)
    return metrics


def head_noun_recognisers(prep: Prepared, idx: list[int]) -> dict[str, float]:
    """How often the two recognisers the decoder can draw on name a test single's head noun.

    * ``nearest_training_single``: the caption of the most similar training single stamp
      (cosine on pooled features), i.e. few-shot recognition from the training stamps;
    * ``imagenet_top1``: the head words of the CNN's own top ImageNet class;
    * ``either``: at least one of the two, an upper bound for any rule that picks between
      them (the decoder's two sources of object names).

    Args:
        prep: prepared features (efficientnet_lite0, whose ImageNet head is bundled).
        idx: indices of the test single stamps.
    """
    test, train = prep.splits["test"], prep.splits["train"]
    singles = [i for i, k in enumerate(train.kinds) if k == "single"]
    near = nearest_neighbour_captions(prep.pooled["train"][singles],
                                      [train.references[i] for i in singles],
                                      prep.pooled["test"][idx])
    kernel, bias, heads = imagenet_prior_weights(prep.backbone)
    top = (prep.pooled["test"][idx] @ kernel + bias).argmax(axis=1)
    a = np.array([cdata.noun_matches(test.heads[i], c) for i, c in zip(idx, near)])
    b = np.array([cdata.noun_matches(test.heads[i], " ".join(heads[c])) for i, c in zip(idx, top)])
    return {"nearest_training_single": round(float(a.mean()), 4),
            "imagenet_top1": round(float(b.mean()), 4),
            "either": round(float((a | b).mean()), 4)}


def _scene_parts(caption: str) -> list[str]:
    """Splits a composed scene caption back into its stamp phrases (left to right)."""
    if " next to " in caption:
        return caption.split(" next to ", 1)
    first, _, rest = caption.partition(" , ")
    second, _, third = rest.rpartition(" and ")
    return [first, second, third] if second else [first, rest]


def _example_order(kinds: list[str], n: int) -> list[int]:
    """Evenly spaced indices, half singles and half scenes where both exist."""
    out = []
    for kind in sorted(set(kinds), reverse=True):
        idx = [i for i, k in enumerate(kinds) if k == kind]
        take = max(1, n // len(set(kinds)))
        out += [idx[int(j)] for j in np.linspace(0, len(idx) - 1, min(take, len(idx)))]
    return out[:n]
