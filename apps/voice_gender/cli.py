"""``rnnkit voice_gender prepare | train | evaluate | predict | export``.

Defaults train on the Fish Fillets NG voices (``--data fillets``); ``--data FORMAT:PATH``
takes user data (see ``data.py``). ``--quick`` uses 120 clips per language and a few
epochs: the whole app end to end in a couple of minutes (figures from it mean nothing).
"""

from __future__ import annotations

import argparse

from apps.voice_gender import data as vdata
from rnnkit.app_cli import App, AppError, run_app


def _prepare(args: argparse.Namespace) -> int:
    from apps.voice_gender.train import extra_voices_for

    try:
        b = vdata.prepare(args.data, args.limit, args.seed)
        extra = extra_voices_for(args, b)
    except vdata.DataError as exc:
        raise AppError(str(exc)) from exc
    for split, info in sorted(b.info.splits.items()):
        print(f"{split}: {info.num_examples} clips")
    print(f"classes: {', '.join(vdata.class_names(b))}; data in {b.data_dir}")
    if extra is not None:
        print(f"extra training voices (Festival, never tested on): "
              f"{extra.info.splits[vdata.EXTRA_SPLIT].num_examples} clips in {extra.data_dir}")
    return 0


def _wrap(fn_path: str):
    """Import the verb lazily (TensorFlow-heavy) and turn data errors into one-line errors."""

    def run(args: argparse.Namespace) -> int:
        module_name, fn_name = fn_path.rsplit(".", 1)
        import importlib

        fn = getattr(importlib.import_module(module_name), fn_name)
        try:
            return fn(args)
        except vdata.DataError as exc:
            raise AppError(str(exc)) from exc

    return run


def _add_arguments(verb: str, parser: argparse.ArgumentParser) -> None:
    if verb in ("prepare", "train"):
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--extra-voices", dest="extra_voices", action="store_true",
                           default=None,
                           help="add the Festival voices (5 female, 5 male) as extra TRAINING "
                                "speakers [default: on for the Fillets data, off for --data "
                                "FORMAT:PATH, whose classes must then be female/male]")
        group.add_argument("--no-extra-voices", dest="extra_voices", action="store_false",
                           help="train on the dataset's own speakers only")
    if verb == "train":
        parser.add_argument("--patience", type=int, default=None,
                            help="early-stopping patience in epochs [default: 6]")
        parser.add_argument("--speaker-augment", action="store_true",
                            help="female/male data only: move each training clip's F0 into its "
                                 "class's adult range and draw formants independently (opt-in: "
                                 "it scored worse on the Fillets folds; docs/voice_gender.md)")


APP = App(
    name="voice_gender",
    description=(
        "Speaker gender (or any audio classes) from raw speech with a plain Elman RNN over "
        "log-mel frames computed inside the graph. Default data: Fish Fillets NG voices "
        "(Debian fillets-ng-data-cs/-nl), evaluated speaker-disjoint cs->nl and nl->cs."
    ),
    prepare=_prepare,
    train=_wrap("apps.voice_gender.train.train"),
    evaluate=_wrap("apps.voice_gender.train.evaluate"),
    predict=_wrap("apps.voice_gender.export.predict"),
    export=_wrap("apps.voice_gender.export.export"),
    defaults={"data": vdata.DEFAULT_SPEC, "epochs": 20, "batch_size": 32, "patience": 6},
    quick={"epochs": 3, "limit": 120, "patience": 2},
    data_help=("data: 'fillets' (default) or FORMAT:PATH with FORMAT one of "
               + ", ".join(vdata.USER_FORMATS)),
    predict_inputs_help="audio files (any format librosa reads: wav, flac, ogg, mp3, ...)",
    add_arguments=_add_arguments,
)


def main(argv: list[str] | None = None) -> int:
    """Run the voice_gender command line; return the exit code."""
    return run_app(APP, argv)
