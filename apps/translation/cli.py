"""``rnnkit translation prepare|train|evaluate|predict|export`` (Spanish -> English)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rnnkit.app_cli import App, AppError, read_texts, run_app

DATA_HELP = ("help (default: LibreOffice help es -> en-US), help:SRC[:TGT] (another help "
             "language pair, e.g. help:fr), bible (Reina-Valera 1909 -> King James), "
             "anki:PATH (Tatoeba/Anki English<TAB>Spanish file)")


def _spec(args):
    from apps.translation import data

    try:
        return data.parse_spec(args.data)
    except data.DataError as exc:
        raise AppError(str(exc)) from exc


def prepare(args: argparse.Namespace) -> int:
    from apps.translation import data

    spec = _spec(args)
    t0 = time.time()
    try:
        # The split is fixed (seed 1337) so every run evaluates on the same test pairs.
        _, counts = data.prepare(spec, limit=args.limit)
    except data.DataError as exc:
        raise AppError(str(exc)) from exc
    print(f"translation data {spec.name}: " + json.dumps(counts))
    print(f"prepared in {time.time() - t0:.1f} s")
    return 0


def train(args: argparse.Namespace) -> int:
    from apps.translation import data
    from apps.translation.train import train as run_train

    try:
        overrides = {k: getattr(args, k) for k in ("embedding_dim", "encoder_units",
                                                   "decoder_units", "learning_rate")
                     if getattr(args, k, None) is not None}
        summary = run_train(_spec(args), args.output, epochs=args.epochs,
                            batch_size=args.batch_size, seed=args.seed, limit=args.limit,
                            strategy=args.strategy, overrides=overrides)
    except data.DataError as exc:
        raise AppError(str(exc)) from exc
    print("train summary: " + json.dumps(summary))
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from apps.translation.train import evaluate as run_evaluate
    from rnnkit.reports import format_headline

    m = run_evaluate(_spec(args), args.output, batch_size=args.batch_size, limit=args.limit,
                     beam_width=args.beam_width)
    rows = {}
    for name in ("beam", "greedy", "translation_memory"):
        for key in ("bleu_cased", "bleu_lowercased", "chrf"):
            rows[f"{name} {key}"] = m[name][key]
    rows["test pairs"] = m["test_pairs"]
    rows["parameters"] = m["parameters"]
    print(format_headline(f"translation ({m['data']}) on the held-out test split", rows))
    for ex in m["examples"][:4]:
        print(f"\n  ES   {ex['source']}\n  REF  {ex['reference']}\n  BEAM {ex['beam']}")
    print(f"\nreports: {Path(args.output) / 'reports'}")
    return 0


def export(args: argparse.Namespace) -> int:
    from apps.translation.export import export as run_export

    path = run_export(args.output, args.export_dir, args.version)
    print(f"exported {path}")
    return 0


def predict(args: argparse.Namespace) -> int:
    import numpy as np
    import tensorflow as tf

    from rnnkit.export import latest_export

    texts = read_texts(args.inputs)
    path = args.model or latest_export(args.export_dir)
    loaded = tf.saved_model.load(str(path))
    out = loaded.signatures["serving_default"](text=tf.constant(texts))
    for text, tr, score in zip(texts, out["translation"].numpy(), out["score"].numpy()):
        print(f"{tr.decode('utf-8')}\t(score {score:.3f})")
    if args.plot:
        from apps.translation.train import plot_attention

        att = loaded.signatures["attention"](text=tf.constant(texts[:1]))
        src = [t.decode() for t in att["source_tokens"][0].numpy() if t]
        words = [t.decode() for t in att["output_tokens"][0].numpy() if t]
        weights = np.asarray(att["attention"][0])[: len(words), : len(src)]
        plot_attention(src, words, weights, Path(args.plot),
                       title=att["translation"][0].numpy().decode())
        print(f"attention heatmap: {args.plot}")
    return 0


def _add_arguments(verb: str, parser: argparse.ArgumentParser) -> None:
    if verb == "predict":
        parser.add_argument("--plot", metavar="PNG", default=None,
                            help="save the attention heatmap of the first input to this PNG")
    if verb == "train":
        from apps.translation.train import DEFAULTS

        for flag, typ in (("embedding-dim", int), ("encoder-units", int),
                          ("decoder-units", int), ("learning-rate", float)):
            key = flag.replace("-", "_")
            parser.add_argument(f"--{flag}", type=typ, default=None,
                                help=f"model/optimiser setting [default: {DEFAULTS[key]}]")
    if verb == "evaluate":
        parser.add_argument("--beam-width", type=int, default=4,
                            help="beam width for the beam-search figures [default: 4]")


APP = App(
    name="translation",
    description="Spanish -> English translation with an Elman encoder-decoder, attention and "
                "copying; string in, string out.",
    prepare=prepare, train=train, evaluate=evaluate, predict=predict, export=export,
    defaults=dict(data="help", epochs=12, batch_size=64),
    quick=dict(epochs=2, limit=800),
    data_help=DATA_HELP,
    predict_inputs_help="Spanish sentences; read from stdin (one per line) when omitted",
    add_arguments=_add_arguments,
)


def main(argv=None) -> int:
    """Entry point of ``rnnkit translation`` / ``python -m apps.translation``."""
    return run_app(APP, argv)
