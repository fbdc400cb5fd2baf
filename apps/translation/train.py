"""Train and evaluate the translation model (uses rnnkit.training and rnnkit.reports).

Run folder (``--output``, default ``runs/translation``): ``vocab.json`` (both
vocabularies + model config), ``model.keras`` (the trained network), ``history.json``,
``backup/`` (resume), ``tensorboard/``; ``reports/`` written by :func:`evaluate`:
``metrics.json``, ``curves.png``, ``attention.png``, ``examples.txt``.

Gradient clipping: plain Elman recurrences multiply the gradient by ``W_h^T diag(f')``
at every step, so occasional batches produce exploding gradients; Adam alone does not
stop a single huge step. We clip the GLOBAL norm of all gradients at 1.0 (it keeps
the direction, unlike per-value clipping, and 1.0 sits just above the typical norm of
this model late in training, so it only bites on spikes).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from apps.translation import data as tdata
from apps.translation.model import (
    END,
    PAD,
    SOURCE_SPECIALS,
    START,
    TARGET_SPECIALS,
    TextCodec,
    Translator,
    build_vocab,
    count_params,
    masked_mean_loss,
)
from rnnkit import samplers
from rnnkit.atomic import atomic_write_json, atomic_write_text
from rnnkit.paths import reports_dir
from rnnkit.training import fit, get_strategy, save_model, seed_everything

#: Model size and training budget of the default run (see docs/translation.md).
DEFAULTS = dict(embedding_dim=256, encoder_units=256, decoder_units=512, dropout=0.25,
                learning_rate=2e-3, clipnorm=1.0, min_count=2)
#: Decoding settings used by evaluate and export: common GNMT-style values fixed before
#: any evaluation (never tuned on the test split).
BEAM_WIDTH = 4
LENGTH_PENALTY = 0.6


def max_output_length(source_length: tf.Tensor) -> tf.Tensor:
    """Output token limit from the source word count: ``2 * n + 10``, capped at 300."""
    from apps.translation.model import MAX_OUTPUT_TOKENS

    return tf.minimum(2 * tf.cast(source_length, tf.int32) + 10, MAX_OUTPUT_TOKENS)


def make_dataset(pairs: list[tuple[str, str]], codec: TextCodec, batch_size: int,
                 shuffle: bool, seed: int) -> tf.data.Dataset:
    """``((source_ids, source_ext, target_in, target_out), target_mask)`` batches.

    Examples are encoded once (cached) and batched by similar target length, which cuts
    the padding the recurrent loops would otherwise run over.
    """
    if not pairs:
        raise ValueError("no sentence pairs to build a dataset from")
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
        lambda a, b, c, d: tf.shape(d)[0], bucket_boundaries=[8, 11, 14, 18, 24, 32],
        bucket_batch_sizes=[batch_size] * 7, drop_remainder=False)
    ds = ds.map(lambda a, b, c, d: ((a, b, c, d), tf.cast(d != PAD, tf.float32)))
    return ds.prefetch(tf.data.AUTOTUNE)


def load_vocab(output: Path) -> dict[str, Any]:
    """``vocab.json`` of a run (vocabularies and model config)."""
    path = Path(output) / "vocab.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `rnnkit translation train` first")
    return json.loads(path.read_text(encoding="utf-8"))


def load_trained(output: Path) -> tuple[Translator, TextCodec, dict]:
    """The trained model and its codec from a run folder."""
    vocab = load_vocab(output)
    model_path = Path(output) / "model.keras"
    if not model_path.exists():
        raise FileNotFoundError(f"{model_path} not found: run `rnnkit translation train` first")
    # Rebuild from the config and load the weights stored in model.keras: a subclassed
    # model loaded with load_model leaves the decoder layer unbuilt for layer.step().
    model = build_model(vocab)
    model.load_weights(model_path)
    return model, TextCodec(vocab["source_vocab"], vocab["target_vocab"]), vocab


def build_model(vocab: dict) -> Translator:
    cfg = vocab["model"]
    model = Translator(len(vocab["source_vocab"]), len(vocab["target_vocab"]),
                       embedding_dim=cfg["embedding_dim"], encoder_units=cfg["encoder_units"],
                       decoder_units=cfg["decoder_units"], dropout=cfg["dropout"])
    dummy = (tf.ones([1, 3], tf.int32), tf.ones([1, 3], tf.int32),
             tf.ones([1, 2], tf.int32), tf.ones([1, 2], tf.int32))
    model(dummy)
    return model


def train(spec: tdata.DataSpec, output: Path, *, epochs: int, batch_size: int, seed: int,
          limit: int | None = None, strategy: str = "default", patience: int = 3,
          overrides: dict | None = None) -> dict[str, Any]:
    """Build vocabularies from the train split, train with teacher forcing, save the model.

    Args:
        spec: the data source.
        output: the run folder.
        epochs: maximum epochs (early stopping on validation loss, patience ``patience``).
        batch_size: sentences per batch.
        seed: seeds Python/NumPy/TF and the shuffle.
        limit: at most this many pairs per split (tests, smoke runs).
        strategy: ``default`` or ``mirrored``.
        overrides: replace entries of :data:`DEFAULTS` (model size, learning rate...).

    Returns:
        A summary dict (epochs, best validation loss, parameters, seconds).
    """
    seed_everything(seed)
    cfg = {**DEFAULTS, **(overrides or {})}
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    splits, counts = tdata.load_splits(spec, limit=limit)
    train_pairs, val_pairs = splits["train"], splits["validation"]
    vocab = {
        "source_vocab": build_vocab([p[0] for p in train_pairs], cfg["min_count"], 30000,
                                    SOURCE_SPECIALS),
        "target_vocab": build_vocab([p[1] for p in train_pairs], cfg["min_count"], 30000,
                                    TARGET_SPECIALS),
        "model": {k: cfg[k] for k in ("embedding_dim", "encoder_units", "decoder_units", "dropout")},
        "data": spec.name,
        "counts": counts,
    }
    atomic_write_json(output / "vocab.json", vocab)
    codec = TextCodec(vocab["source_vocab"], vocab["target_vocab"])
    train_ds = make_dataset(train_pairs, codec, batch_size, True, seed)
    val_ds = make_dataset(val_pairs, codec, batch_size, False, seed)
    with get_strategy(strategy).scope():
        model = build_model(vocab)
        model.compile(
            optimizer=keras.optimizers.Adam(cfg["learning_rate"], global_clipnorm=cfg["clipnorm"]),
            loss=masked_mean_loss)
    print(f"translation: {len(train_pairs):,} train / {len(val_pairs):,} validation pairs, "
          f"vocab {len(vocab['source_vocab']):,} es / {len(vocab['target_vocab']):,} en, "
          f"{count_params(model):,} parameters", flush=True)
    lr_drop = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1,
                                                min_lr=1e-4, verbose=1)
    t0 = time.time()
    result = fit(model, train_ds, val_ds, output_dir=output, epochs=epochs, monitor="val_loss",
                 patience=patience, extra_callbacks=[lr_drop])
    seconds = time.time() - t0
    save_model(model, output / "model.keras")
    summary = {"train_seconds": round(seconds, 1), "parameters": count_params(model),
               "epochs_run": result["epochs_run"], "best_epoch": result["best_epoch"] + 1,
               "best_val_loss": result["best"]}
    atomic_write_json(output / "train_summary.json", summary)
    return summary


# --------------------------------------------------------------------------- decoding


def make_translate_fn(model: Translator, codec: TextCodec, beam_width: int = BEAM_WIDTH,
                      length_penalty: float = LENGTH_PENALTY):
    """A ``tf.function``: strings ``[B]`` -> dict(translation, scores, tokens, attention...).

    ``beam_width=1`` runs greedy search. Used by evaluate and by the export.
    """

    def translate(texts):
        enc = codec.encode_source(texts)
        h0, context = model.decode_context(enc["ids"], enc["ext"])
        kwargs = dict(start_token=START, end_token=END, pad_token=PAD,
                      max_length=max_output_length(enc["length"]))
        if beam_width == 1:
            out = samplers.greedy_search(model.step, h0, context, **kwargs)
        else:
            out = samplers.beam_search(model.step, h0, context, beam_width=beam_width,
                                       length_penalty=length_penalty, **kwargs)
        text = codec.decode(out.tokens, out.lengths, enc["tokens"], out.attention)
        # An input with no words gets an empty translation (not whatever the decoder
        # would say about "</s>").
        text = tf.where(enc["length"] > 0, text, "")
        return {"translation": text, "score": out.scores, "token_scores": out.token_log_probs,
                "lengths": out.lengths, "tokens": out.tokens, "attention": out.attention,
                "source_tokens": enc["tokens"]}

    return tf.function(translate, input_signature=[tf.TensorSpec([None], tf.string)])


def translate_all(fn, texts: list[str], batch_size: int = 64, desc: str = "") -> list[str]:
    """Translate ``texts`` in batches with ``fn`` (from :func:`make_translate_fn`)."""
    from tqdm import tqdm

    # Sorting by length keeps batches uniform (faster); results go back in input order.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    result: dict[int, str] = {}
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch"):
        idx = order[start: start + batch_size]
        res = fn(tf.constant([texts[i] for i in idx]))
        for i, t in zip(idx, res["translation"].numpy()):
            result[i] = t.decode("utf-8")
    return [result[i] for i in range(len(texts))]


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


def bleu_chrf(hyps: list[str], refs: list[str]) -> dict[str, float]:
    import sacrebleu

    return {
        "bleu_cased": round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2),
        "bleu_lowercased": round(sacrebleu.corpus_bleu(hyps, [refs], lowercase=True).score, 2),
        "chrf": round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2),
    }


def plot_attention(source_tokens: list[str], target_tokens: list[str], weights: np.ndarray,
                   path: Path, title: str = "") -> Path:
    """Heatmap of attention weights (rows: output words, columns: source tokens)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rnnkit.atomic import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(source_tokens) + 2),
                                    max(3, 0.4 * len(target_tokens) + 1.5)))
    ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(source_tokens)), source_tokens, rotation=60, ha="right")
    ax.set_yticks(range(len(target_tokens)), target_tokens)
    ax.set_xlabel("Spanish (source)")
    ax.set_ylabel("English (output)")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def evaluate(spec: tdata.DataSpec, output: Path, *, batch_size: int = 64,
             limit: int | None = None, beam_width: int = BEAM_WIDTH) -> dict[str, Any]:
    """Corpus BLEU (cased, lowercased) and chrF on the test split for greedy and beam
    decoding and the translation-memory baseline; writes ``<output>/reports``."""
    from rnnkit.reports import plot_history, write_metrics

    output = Path(output)
    model, codec, vocab = load_trained(output)
    splits, counts = tdata.load_splits(spec, limit=limit)
    test = splits["test"]
    if not test:
        raise ValueError("the test split is empty")
    sources = [p[0] for p in test]
    refs = [p[1] for p in test]
    metrics: dict[str, Any] = {"data": spec.name, "test_pairs": len(test), "counts": counts}
    t0 = time.time()
    greedy_fn = make_translate_fn(model, codec, beam_width=1)
    beam_fn = make_translate_fn(model, codec, beam_width=beam_width)
    greedy = translate_all(greedy_fn, sources, batch_size, "greedy")
    t1 = time.time()
    beam = translate_all(beam_fn, sources, batch_size, f"beam {beam_width}")
    t2 = time.time()
    tm = translation_memory(splits["train"], sources)
    metrics["greedy"] = {**bleu_chrf(greedy, refs), "seconds": round(t1 - t0, 1)}
    metrics["beam"] = {**bleu_chrf(beam, refs), "seconds": round(t2 - t1, 1),
                       "beam_width": beam_width, "length_penalty": LENGTH_PENALTY}
    metrics["translation_memory"] = bleu_chrf(tm, refs)
    metrics["parameters"] = count_params(model)
    summary_path = output / "train_summary.json"
    if summary_path.exists():
        metrics["train"] = json.loads(summary_path.read_text())
    metrics["examples"] = [
        {"source": s, "reference": r, "greedy": g, "beam": b, "memory": m}
        for s, r, g, b, m in list(zip(sources, refs, greedy, beam, tm))[:: max(1, len(test) // 12)][:12]
    ]
    rdir = reports_dir(output)
    hist = output / "history.json"
    if hist.exists():
        plot_history(json.loads(hist.read_text()), rdir / "curves.png",
                     title="translation: masked NLL per token")
    # Attention heatmap of a mid-length test sentence (deterministic choice).
    pick = sorted(range(len(test)), key=lambda i: (abs(len(sources[i].split()) - 10), i))[0]
    res = beam_fn(tf.constant([sources[pick]]))
    n = int(res["lengths"][0])
    src_toks = [t.decode() for t in res["source_tokens"][0].numpy() if t]
    out_words = _output_words(codec, res["tokens"][0, :n].numpy(), src_toks,
                              res["attention"][0, :n].numpy())
    plot_attention(src_toks, out_words, res["attention"][0, :n, : len(src_toks)].numpy(),
                   rdir / "attention.png", title=res["translation"][0].numpy().decode())
    write_metrics(rdir, metrics)
    lines = []
    for i in range(min(len(test), 40)):
        lines += [f"ES   {sources[i]}", f"REF  {refs[i]}", f"BEAM {beam[i]}",
                  f"GRDY {greedy[i]}", f"TM   {tm[i]}", ""]
    atomic_write_text(rdir / "examples.txt", "\n".join(lines))
    return metrics


def _output_words(codec: TextCodec, ids: np.ndarray, src_tokens: list[str],
                  attention: np.ndarray) -> list[str]:
    """Readable words for extended ids (for plot labels)."""
    words = []
    V = codec.target_size
    for t, i in enumerate(ids):
        if i >= V:
            j = int(i - V)
            words.append(src_tokens[j] if j < len(src_tokens) else "?")
        elif i == 3 and len(src_tokens):
            words.append(src_tokens[int(np.argmax(attention[t, : len(src_tokens)]))])
        else:
            words.append(codec.target_vocab[int(i)])
    return words
