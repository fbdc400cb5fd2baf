"""Train and evaluate the translator (verbs ``train`` and ``evaluate``).

``train`` builds both vocabularies from the training split (``<output>/vocab.json``),
trains with teacher forcing on length-bucketed batches (early stopping and learning-rate
halving on validation loss) and saves ``<output>/model.keras``.

``evaluate`` translates the test split with greedy and beam search (the exported graph's
own decoding function), scores them with corpus BLEU (cased, lowercased) and chrF beside a
translation-memory baseline computed in the same run, and writes ``attention.png`` (one
test sentence) and ``examples.txt`` to ``<output>/reports``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from rnnkit.app import Evaluation, GradientProbe, Run
from rnnkit.atomic import atomic_write_json, atomic_write_text
from rnnkit.averaging import RecentWeights, average_checkpoints
from rnnkit.errors import DataError, ModelError
from rnnkit.inference import map_by_length
from rnnkit.modeling.bleu import translation_scores
from rnnkit.modeling.sequence import masked_mean
from rnnkit.modeling.vocabulary import PAD, Vocabulary

from . import data
from .figures import output_words, plot_attention
from .model import LENGTH_PENALTY, TextCodec, Translator, build_vocabulary, make_translate_fn
from .repetition import repetition_report

__all__ = ["evaluate", "gradient_probe", "load_trained",
           "make_dataset", "train", "translate_all", "translation_memory", "validation_loss"]

#: Fixed parts of the recipe (the model size and learning rate are flags, see app.py).
DROPOUT = 0.25
CLIPNORM = 1.0
MIN_COUNT = 2
MAX_VOCAB = 30_000
VOCAB_FILE = "vocab.json"
#: Bucket boundaries (target tokens) of the training batches.
BUCKETS = (8, 11, 14, 18, 24, 32)


def make_dataset(pairs: list[tuple[str, str]], codec: TextCodec, batch_size: int,
                 shuffle: bool, seed: int) -> tf.data.Dataset:
    """``((source_ids, source_ext, target_in, target_out), target_mask)`` batches.

    Examples are encoded once (cached) and batched by similar target length, which cuts
    the padding the recurrent loops would otherwise run over.

    Raises:
        DataError: ``pairs`` is empty.
    """
    if not pairs:
        raise DataError("no sentence pairs to build a dataset from")
    src = tf.constant([p[0] for p in pairs])
    tgt = tf.constant([p[1] for p in pairs])

    def encode(s, t):
        enc = codec.encode_source(s[None])
        dec = codec.encode_target(t[None], enc["tokens"])
        return enc["ids"][0], enc["ext"][0], dec["inputs"][0], dec["outputs"][0]

    ds = tf.data.Dataset.from_tensor_slices((src, tgt)).map(encode).cache()
    if shuffle:
        ds = ds.shuffle(len(pairs), seed=seed, reshuffle_each_iteration=True)
    ds = ds.bucket_by_sequence_length(
        lambda a, b, c, d: tf.shape(d)[0], bucket_boundaries=list(BUCKETS),
        bucket_batch_sizes=[batch_size] * (len(BUCKETS) + 1), drop_remainder=False)
    ds = ds.map(lambda a, b, c, d: ((a, b, c, d), tf.cast(d != PAD, tf.float32)))
    return ds.prefetch(tf.data.AUTOTUNE)


def batch_inputs(codec: TextCodec, pairs: list[tuple[str, str]]) -> tuple[tuple, tf.Tensor]:
    """One padded batch ``(source_ids, source_ext, target_in, target_out), target_mask``."""
    enc = codec.encode_source(tf.constant([p[0] for p in pairs]))
    dec = codec.encode_target(tf.constant([p[1] for p in pairs]), enc["tokens"])
    inputs = (enc["ids"], enc["ext"], dec["inputs"], dec["outputs"])
    return inputs, tf.cast(dec["outputs"] != PAD, tf.float32)


def load_codec(run: Run) -> TextCodec:
    """The codec of the run's vocabularies (``<output>/vocab.json``).

    Raises:
        ModelError: ``train`` has not written them.
    """
    path = run.output / VOCAB_FILE
    if not path.is_file():
        raise ModelError(f"no {VOCAB_FILE} in {run.output}: run `rnnkit translation train` "
                         "first (or pass --output)")
    vocab = json.loads(path.read_text(encoding="utf-8"))
    return TextCodec(Vocabulary.from_tokens(vocab["source"]),
                     Vocabulary.from_tokens(vocab["target"]))


def load_trained(run: Run) -> tuple[Translator, TextCodec]:
    """The trained model and its codec from the run folder."""
    codec = load_codec(run)
    return run.load_model(), codec


def train(run: Run) -> dict[str, Any]:
    """Build the vocabularies, train with teacher forcing, save the model.

    Returns:
        A summary for ``run.json`` (pairs, vocabulary sizes, parameters, epochs, best
        validation loss).
    """
    run.seed_everything()
    spec = data.parse_spec(run.data)
    splits, _ = data.load_splits(spec, limit=run.limit)
    train_pairs, val_pairs = splits["train"], splits["validation"]
    extra = splits.get("extra", []) if run.extra_data else []
    train_pairs = train_pairs + extra
    source = build_vocabulary([p[0] for p in train_pairs], MIN_COUNT, MAX_VOCAB)
    target = build_vocabulary([p[1] for p in train_pairs], MIN_COUNT, MAX_VOCAB)
    run.output.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run.output / VOCAB_FILE, {"source": source.itos, "target": target.itos})
    codec = TextCodec(source, target)
    train_ds = make_dataset(train_pairs, codec, run.batch_size, True, run.seed)
    val_ds = make_dataset(val_pairs, codec, run.batch_size, False, run.seed)
    with run.strategy.scope():
        model = Translator(len(source), len(target), embedding_dim=run.embedding_dim,
                           encoder_units=run.encoder_units, decoder_units=run.decoder_units,
                           dropout=DROPOUT, label_smoothing=run.label_smoothing)
        model.build()
        model.compile(
            optimizer=keras.optimizers.Adam(run.learning_rate, global_clipnorm=CLIPNORM),
            loss=masked_mean)
    print(f"translation: {len(train_pairs):,} train ({len(extra):,} of them outside the length "
          f"bounds) / {len(val_pairs):,} validation pairs, "
          f"vocab {len(source):,} es / {len(target):,} en, "
          f"{model.count_params():,} parameters", flush=True)
    lr_drop = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1,
                                                min_lr=1e-4, verbose=1)
    count = max(1, run.average_checkpoints)
    # The best epoch can lie up to `patience` epochs before the last one.
    recent = RecentWeights(count + run.patience)
    result = run.fit(model, train_ds, val_ds, monitor="val_loss", patience=run.patience,
                     extra_callbacks=[lr_drop, recent])
    averaged = average_checkpoints(model, recent, result["best_epoch"], count,
                                   lambda m: validation_loss(m, val_ds))
    run.save_model(model)
    return {"train_pairs": len(train_pairs), "extra_pairs": len(extra),
            "validation_pairs": len(val_pairs),
            "source_vocab": len(source), "target_vocab": len(target),
            "parameters": model.count_params(), "epochs_run": result["epochs_run"],
            "best_epoch": result["best_epoch"] + 1, "best_val_loss": result["best"],
            "checkpoint_average": averaged}


def validation_loss(model: keras.Model, val_ds: tf.data.Dataset) -> float:
    """Mean per-token NLL over the validation set (no dropout, no smoothing)."""
    total = count = 0.0
    for inputs, mask in val_ds:
        nll = model(inputs, training=False)
        total += float(tf.reduce_sum(nll * mask))
        count += float(tf.reduce_sum(mask))
    return total / max(count, 1.0)


def translation_memory(train_pairs: list[tuple[str, str]], sources: list[str]) -> list[str]:
    """Baseline: the target of the training pair whose source is closest by character
    3-gram cosine similarity."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer="char", ngram_range=(3, 3), lowercase=False, use_idf=False,
                          sublinear_tf=False, norm="l2")
    train_m = vec.fit_transform([p[0] for p in train_pairs])
    test_m = vec.transform(sources)
    best = []
    for start in range(0, test_m.shape[0], 512):
        sims = (test_m[start: start + 512] @ train_m.T).toarray()
        best.extend(np.argmax(sims, axis=1).tolist())
    return [train_pairs[i][1] for i in best]


def translate_all(fn, texts: list[str], batch_size: int, desc: str) -> list[str]:
    """Translate ``texts`` with ``fn`` (:func:`make_translate_fn`) in length-sorted batches."""

    def batch(chunk: list[str]) -> list[str]:
        return [t.decode("utf-8") for t in fn(tf.constant(chunk))["translation"].numpy()]

    return map_by_length(batch, texts, batch_size=batch_size, desc=desc)


#: Held-out pairs of at most this many source words form the short-segment report.
SHORT_SOURCE_WORDS = 4


def segment_scores(outputs: list[str], refs: list[str]) -> dict[str, Any]:
    """BLEU (cased, lowercased), chrF and exact match (cased, lowercased) of ``outputs``."""
    if not outputs:
        return {"pairs": 0}
    exact = sum(o.strip() == r.strip() for o, r in zip(outputs, refs)) / len(outputs)
    exact_lc = sum(o.strip().lower() == r.strip().lower()
                   for o, r in zip(outputs, refs)) / len(outputs)
    return {"pairs": len(outputs), **translation_scores(outputs, refs),
            "exact_match": round(exact, 4), "exact_match_lowercased": round(exact_lc, 4)}


def evaluate(run: Run) -> Evaluation:
    """BLEU/chrF of greedy and beam decoding and of the translation memory on the held-out
    split, the short-segment report, and the repeated-word check."""
    model, codec = load_trained(run)
    spec = data.parse_spec(run.data)
    splits, counts = data.load_splits(spec, limit=run.limit)
    split = run.split
    test = splits[split]
    if not test:
        raise DataError(f"the {split} split of {spec.name} is empty")
    beam_width = run.beam_width
    repeat_penalty = run.repeat_penalty
    sources = [p[0] for p in test]
    refs = [p[1] for p in test]
    t0 = time.time()
    greedy_fn = make_translate_fn(model, codec, beam_width=1, repeat_penalty=repeat_penalty)
    beam_fn = make_translate_fn(model, codec, beam_width=beam_width,
                                repeat_penalty=repeat_penalty)
    greedy = translate_all(greedy_fn, sources, run.batch_size, "greedy")
    t1 = time.time()
    beam = translate_all(beam_fn, sources, run.batch_size, f"beam {beam_width}")
    t2 = time.time()
    memory = translation_memory(splits["train"], sources)
    short = [i for i, s in enumerate(sources) if len(s.split()) <= SHORT_SOURCE_WORDS]
    # The one-word interface strings held out with the test sources (split test_short).
    strings = splits.get("test_short", []) if split == "test" else []
    string_beam = translate_all(beam_fn, [p[0] for p in strings], run.batch_size,
                                "one-word strings") if strings else []
    metrics: dict[str, Any] = {
        "data": spec.name, "split": split, "test_pairs": len(test), "counts": counts,
        "greedy": {**translation_scores(greedy, refs), "seconds": round(t1 - t0, 1)},
        "beam": {**translation_scores(beam, refs), "seconds": round(t2 - t1, 1),
                 "beam_width": beam_width, "length_penalty": LENGTH_PENALTY,
                 "repeat_penalty": repeat_penalty},
        "translation_memory": translation_scores(memory, refs),
        "short_segments": {
            "source_words": f"1-{SHORT_SOURCE_WORDS}",
            "beam": segment_scores([beam[i] for i in short], [refs[i] for i in short]),
            "translation_memory": segment_scores([memory[i] for i in short],
                                                 [refs[i] for i in short])},
        "one_word_strings": segment_scores(string_beam, [p[1] for p in strings]),
        "repetition": {"beam": repetition_report(beam, sources),
                       "greedy": repetition_report(greedy, sources),
                       "references": repetition_report(refs, sources)},
        "parameters": model.count_params(),
        "examples": [
            {"source": s, "reference": r, "greedy": g, "beam": b, "memory": m}
            for s, r, g, b, m in list(zip(sources, refs, greedy, beam, memory))
            [:: max(1, len(test) // 12)][:12]],
    }
    if split != "test":
        # A sweep on validation (choosing decoding settings) leaves the test reports alone.
        return Evaluation(metrics, _headline(metrics, split), title=(
            f"translation ({spec.name}) on the {split} split, repeat penalty {repeat_penalty}"),
            metrics_file=f"metrics_{split}_repeat{repeat_penalty:g}.json")
    _attention_figure(beam_fn, codec, sources, run)
    lines = []
    for i in range(min(len(test), 40)):
        lines += [f"ES   {sources[i]}", f"REF  {refs[i]}", f"BEAM {beam[i]}",
                  f"GRDY {greedy[i]}", f"TM   {memory[i]}", ""]
    for (s, r), b in list(zip(strings, string_beam))[:40]:
        lines += [f"ES   {s}", f"REF  {r}", f"BEAM {b}", ""]
    atomic_write_text(run.reports / "examples.txt", "\n".join(lines))
    headline = _headline(metrics, split)
    notes = [f"\n  ES   {ex['source']}\n  REF  {ex['reference']}\n  BEAM {ex['beam']}"
             for ex in metrics["examples"][:4]]
    notes += [f"\n  repeat: {ex['source']}  ->  {ex['output']}"
              for ex in metrics["repetition"]["beam"]["examples"][:3]]
    return Evaluation(metrics, headline, notes=notes,
                      title=f"translation ({spec.name}) on the held-out {split} split")


def _headline(metrics: dict[str, Any], split: str) -> dict[str, Any]:
    headline: dict[str, Any] = {}
    for name in ("beam", "greedy", "translation_memory"):
        for key in ("bleu_cased", "bleu_lowercased", "chrf"):
            headline[f"{name} {key}"] = metrics[name][key]
    seg = metrics["short_segments"]["beam"]
    if seg["pairs"]:
        headline[f"short (1-{SHORT_SOURCE_WORDS} words) pairs"] = seg["pairs"]
        for key in ("bleu_cased", "bleu_lowercased", "chrf", "exact_match"):
            headline[f"short beam {key}"] = seg[key]
    one = metrics["one_word_strings"]
    if one["pairs"]:
        headline["one-word strings"] = one["pairs"]
        for key in ("chrf", "exact_match", "exact_match_lowercased"):
            headline[f"one-word beam {key}"] = one[key]
    rep = metrics["repetition"]
    for name in ("beam", "greedy", "references"):
        headline[f"repeats a word ({name})"] = rep[name]["with_repeats"]
    headline[f"{split} pairs"] = metrics["test_pairs"]
    headline["parameters"] = metrics["parameters"]
    return headline


def _attention_figure(beam_fn, codec: TextCodec, sources: list[str], run: Run) -> None:
    """``attention.png`` of a mid-length test sentence (a deterministic choice)."""
    pick = min(range(len(sources)), key=lambda i: (abs(len(sources[i].split()) - 10), i))
    res = beam_fn(tf.constant([sources[pick]]))
    n = int(res["lengths"][0])
    src_tokens = [t.decode() for t in res["source_tokens"][0].numpy() if t]
    attention = res["attention"][0, :n, : len(src_tokens)].numpy()
    words = output_words(codec, res["tokens"][0, :n].numpy(), src_tokens, attention)
    plot_attention(src_tokens, words, attention, run.reports / "attention.png",
                   title=res["translation"][0].numpy().decode())


def gradient_probe(run: Run, size: int = 32) -> GradientProbe:
    """The first ``size`` validation pairs with the trained network and its training loss."""
    model, codec = load_trained(run)
    splits, _ = data.load_splits(data.parse_spec(run.data), limit=run.limit)
    pairs = splits["validation"][:size]
    if not pairs:
        raise DataError("the validation split is empty")
    inputs, mask = batch_inputs(codec, pairs)
    return GradientProbe(model=model, inputs=inputs, targets=mask, loss=masked_mean)
