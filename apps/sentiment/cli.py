"""``rnnkit sentiment prepare|train|evaluate|predict|export`` (also ``python -m apps.sentiment``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from rnnkit.app_cli import App, run_app


def _prepare(args: argparse.Namespace) -> int:
    from apps.sentiment import data

    builder = data.prepare(args.data, args.seed, args.limit)
    counts = {name: split.num_examples for name, split in builder.info.splits.items()}
    print(f"sentiment data ready in {builder.data_dir}: {counts}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from apps.sentiment.train import train

    return train(args)


def _evaluate(args: argparse.Namespace) -> int:
    from apps.sentiment.train import evaluate

    return evaluate(args)


def _export(args: argparse.Namespace) -> int:
    from apps.sentiment.export import export

    return export(args)


def _predict(args: argparse.Namespace) -> int:
    from apps.sentiment.export import predict

    return predict(args)


def _add_arguments(verb: str, parser: argparse.ArgumentParser) -> None:
    if verb == "train":
        parser.add_argument("--max-len", dest="max_len", type=int, default=None,
                            help="tokens kept per review [default: 500]")
        parser.add_argument("--units", type=int, default=None,
                            help="hidden units per RNN direction [default: 128]")
        parser.add_argument("--vocab-size", dest="vocab_size", type=int, default=None,
                            help="vocabulary size [default: 30000]")
        parser.add_argument("--learning-rate", dest="learning_rate", type=float, default=None,
                            help="peak AdamW learning rate [default: 2e-3]")


APP = App(
    name="sentiment",
    description=(
        "IMDB review sentiment with a bidirectional Elman RNN (rnnkit.SimpleRecurrentLayer).\n"
        "Typical run: prepare, train, evaluate, export, then predict \"some review\"."
    ),
    prepare=_prepare, train=_train, evaluate=_evaluate, predict=_predict, export=_export,
    defaults={"data": "imdb-csv", "epochs": 4, "batch_size": 64},
    quick={"epochs": 2, "limit": 3000, "max_len": 200, "units": 48, "vocab_size": 10_000},
    data_help="imdb-csv (50k reviews from PyPI), tfds:imdb_reviews or aclimdb:PATH",
    predict_inputs_help="review texts; read from stdin (one per line) when omitted",
    add_arguments=_add_arguments,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sentiment CLI; return the exit code."""
    return run_app(APP, argv)
