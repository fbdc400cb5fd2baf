"""``rnnkit translation prepare|train|evaluate|predict|export`` (also ``python -m apps.translation``)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from rnnkit.app import App, Run

from . import data, export
from . import train as training
from .model import BEAM_WIDTH, REPEAT_PENALTY


class TranslationApp(App):
    """Spanish -> English translation with an Elman encoder-decoder."""

    name = "translation"
    description = (
        "Spanish -> English translation with an Elman encoder-decoder, attention and "
        "copying; string in, string out.\n"
        "Typical run: prepare, train, evaluate, export, then predict \"Abre un documento.\""
    )
    defaults = {"data": "help", "epochs": 14, "batch_size": 64, "embedding_dim": 256,
                "encoder_units": 256, "decoder_units": 512, "learning_rate": 2e-3,
                "patience": 3, "label_smoothing": 0.1, "average_checkpoints": 3,
                "extra_data": True, "beam_width": BEAM_WIDTH,
                "repeat_penalty": REPEAT_PENALTY, "split": "test"}
    quick = {"epochs": 2, "limit": 800}
    data_help = ("help (default: LibreOffice help es -> en-US), help:SRC[:TGT] (another help "
                 "language pair, e.g. help:fr), bible (Reina-Valera 1909 -> King James), "
                 "anki:PATH (Tatoeba/Anki English<TAB>Spanish file)")
    inputs_help = "Spanish sentences; read from stdin (one per line) when omitted"
    signature_inputs = ("text",)
    signature_outputs = ("translation", "score")

    def add_arguments(self, verb: str, parser: argparse.ArgumentParser) -> None:
        d = self.defaults
        if verb == "train":
            for flag, kind, what in (("embedding-dim", int, "embedding width"),
                                     ("encoder-units", int, "units per encoder direction"),
                                     ("decoder-units", int, "decoder state width"),
                                     ("learning-rate", float, "Adam's learning rate"),
                                     ("patience", int, "early-stopping patience (epochs)"),
                                     ("label-smoothing", float,
                                      "label smoothing of the generator's softmax in training"),
                                     ("average-checkpoints", int,
                                      "average the weights of the best epoch and the ones "
                                      "before it, up to this many, when that lowers the "
                                      "validation loss (1: off)")):
                key = flag.replace("-", "_")
                parser.add_argument(f"--{flag}", type=kind, default=None,
                                    help=f"{what} [default: {d[key]}]")
            parser.add_argument("--extra-data", action=argparse.BooleanOptionalAction,
                                default=None,
                                help="also train on the one-word and 16-20-word pairs outside "
                                     "the length bounds (split `extra`) [default: on]")
        if verb == "evaluate":
            parser.add_argument("--beam-width", type=int, default=None,
                                help=f"beam width of the beam-search figures "
                                     f"[default: {d['beam_width']}]")
            parser.add_argument("--repeat-penalty", type=float, default=None,
                                help=f"log-probability a hypothesis pays per repeat of a "
                                     f"content word (0: off; `inf`: never repeat) "
                                     f"[default: {d['repeat_penalty']}, the export's]")
            parser.add_argument("--split", choices=("test", "validation"), default=None,
                                help="the held-out split to score; choose decoding settings "
                                     "on validation [default: test]")
        if verb == "predict":
            parser.add_argument("--plot", metavar="PNG", default=None,
                                help="save the attention heatmap of the first input to this PNG")

    def prepare(self, run: Run) -> Mapping[str, Any]:
        # The split is fixed (seed 1337, not --seed) so every run evaluates on the same
        # test pairs.
        _, counts = data.prepare(data.parse_spec(run.data), limit=run.limit)
        return counts

    train = staticmethod(training.train)
    evaluate = staticmethod(training.evaluate)
    gradient_probe = staticmethod(training.gradient_probe)
    servable = staticmethod(export.servable)
    predict = staticmethod(export.predict)


main = TranslationApp.main
