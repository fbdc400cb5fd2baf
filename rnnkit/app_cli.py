"""The shared command-line front of every app: ``prepare | train | evaluate | predict | export``.

An app describes itself with an :class:`App` (its verb functions and defaults) and its
``apps/<app>/cli.py`` is then just::

    APP = App(name="sentiment", description=..., prepare=..., train=..., evaluate=...,
              predict=..., export=..., defaults=dict(data="...", epochs=8, batch_size=64),
              quick=dict(epochs=1, limit=2000))

    def main(argv=None) -> int:
        return run_app(APP, argv)

Each verb function receives the parsed ``argparse.Namespace`` with every default already
filled in (``args.output``, ``args.export_dir`` are Paths; ``args.epochs`` etc. come from
``App.defaults``, overridden by ``App.quick`` under ``--quick``, overridden by the command
line) and returns an exit code (None means 0).

Common flags: ``--data SPEC``, ``--epochs``, ``--batch-size``, ``--output DIR``,
``--seed`` (1337), ``--quick``, ``--limit N``, ``--strategy default|mirrored``,
``--export-dir``, ``--version``, ``--model``. Errors the user can fix (bad data spec,
missing export, failed download) print one ``error:`` line and exit with code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnkit.paths import default_output_dir, saved_models_dir

__all__ = ["VERBS", "App", "AppError", "build_parser", "read_texts", "run_app"]

VERBS = ("prepare", "train", "evaluate", "predict", "export")

VerbFn = Callable[[argparse.Namespace], "int | None"]

# Which common flags each verb takes. The location and data flags are accepted by every
# verb (ignored where they do not matter) so one set of flags drives a whole pipeline:
# `for v in prepare train evaluate export; do rnnkit app $v --output X --export-dir Y; done`.
_SHARED = ("data", "limit", "quick", "seed", "output", "export_dir")
_VERB_FLAGS: dict[str, tuple[str, ...]] = {
    "prepare": _SHARED,
    "train": (*_SHARED, "epochs", "batch_size", "strategy"),
    "evaluate": (*_SHARED, "batch_size"),
    "export": (*_SHARED, "version"),
    "predict": (*_SHARED, "model"),
}

_VERB_HELP = {
    "prepare": "fetch the raw data (hash-checked) and build the dataset; no-op when done",
    "train": "train the model (resumes after an interruption), save <output>/model.keras",
    "evaluate": "evaluate on held-out data; write metrics.json and PNGs to <output>/reports",
    "export": "export a new SavedModel version (TF Serving layout) with its metrics",
    "predict": "run the latest export (or --model) on inputs from the command line or stdin",
}


class AppError(Exception):
    """An error the user can fix; the CLI prints it as one line and exits with code 2."""


@dataclass
class App:
    """One app's plug-in for the shared CLI.

    Attributes:
        name: the package name (``"sentiment"``): defaults ``runs/<name>`` and
            ``saved_models/<name>`` derive from it.
        description: one paragraph for ``--help``.
        prepare, train, evaluate, predict, export: the verb functions.
        defaults: default values of common flags (``data``, ``epochs``, ``batch_size``,
            ``limit``...) and of app flags.
        quick: the values ``--quick`` uses instead (still overridden by explicit flags).
        data_help: help text for ``--data`` (list the accepted ``FORMAT:PATH`` specs).
        predict_inputs_help: help for ``predict``'s positional inputs.
        add_arguments: optional ``fn(verb, parser)`` adding app-specific flags.
    """

    name: str
    description: str
    prepare: VerbFn
    train: VerbFn
    evaluate: VerbFn
    predict: VerbFn
    export: VerbFn
    defaults: Mapping[str, Any] = field(default_factory=dict)
    quick: Mapping[str, Any] = field(default_factory=dict)
    data_help: str = "data source spec FORMAT:PATH (default: the app's default data)"
    predict_inputs_help: str = "inputs to run; read from stdin (one per line) when omitted"
    add_arguments: Callable[[str, argparse.ArgumentParser], None] | None = None


def _add_common(parser: argparse.ArgumentParser, verb: str, app: App) -> None:
    flags = _VERB_FLAGS[verb]
    d = app.defaults
    if "data" in flags:
        parser.add_argument("--data", default=None, metavar="SPEC",
                            help=f"{app.data_help} [default: {d.get('data', 'app default')}]")
    if "epochs" in flags:
        parser.add_argument("--epochs", type=int, default=None,
                            help=f"maximum epochs [default: {d.get('epochs')}]")
    if "batch_size" in flags:
        parser.add_argument("--batch-size", type=int, default=None,
                            help=f"batch size [default: {d.get('batch_size')}]")
    if "output" in flags:
        parser.add_argument("--output", type=Path, default=None, metavar="DIR",
                            help=f"run folder [default: {default_output_dir(app.name)}]")
    if "seed" in flags:
        parser.add_argument("--seed", type=int, default=None,
                            help=f"random seed [default: {d.get('seed', 1337)}]")
    if "quick" in flags:
        parser.add_argument("--quick", action="store_true",
                            help="small budgets: the whole app end to end in a minute or two")
    if "limit" in flags:
        parser.add_argument("--limit", type=int, default=None, metavar="N",
                            help="use at most N examples per split (tests, smoke runs)")
    if "strategy" in flags:
        parser.add_argument("--strategy", choices=("default", "mirrored"), default=None,
                            help="tf.distribute strategy [default: default]")
    if "export_dir" in flags:
        parser.add_argument("--export-dir", type=Path, default=None, metavar="DIR",
                            help=f"export base folder [default: {saved_models_dir(app.name)}]")
    if "version" in flags:
        parser.add_argument("--version", type=int, default=None,
                            help="export version [default: highest existing + 1]")
    if "model" in flags:
        parser.add_argument("--model", type=Path, default=None, metavar="DIR",
                            help="a SavedModel folder [default: latest under --export-dir]")
    if verb == "predict":
        parser.add_argument("inputs", nargs="*", help=app.predict_inputs_help)


def build_parser(app: App) -> argparse.ArgumentParser:
    """Build the ``argparse`` parser of an app: one subcommand per verb, each with --help.

    Args:
        app: the app description.
    """
    parser = argparse.ArgumentParser(
        prog=f"rnnkit {app.name}", description=app.description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in VERBS:
        verb_parser = sub.add_parser(verb, help=_VERB_HELP[verb], description=_VERB_HELP[verb])
        _add_common(verb_parser, verb, app)
        if app.add_arguments is not None:
            app.add_arguments(verb, verb_parser)
    return parser


def _fill_defaults(app: App, args: argparse.Namespace) -> argparse.Namespace:
    layered: dict[str, Any] = {"seed": 1337, "strategy": "default", "quick": False}
    layered.update(app.defaults)
    if getattr(args, "quick", False):
        layered.update(app.quick)
    for key, value in layered.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if hasattr(args, "output") and args.output is None:
        args.output = default_output_dir(app.name)
    if hasattr(args, "export_dir") and args.export_dir is None:
        args.export_dir = saved_models_dir(app.name)
    for key in ("output", "export_dir", "model"):
        if isinstance(getattr(args, key, None), str):
            setattr(args, key, Path(getattr(args, key)))
    args.app = app.name
    return args


def run_app(app: App, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen verb; return the process exit code.

    Args:
        app: the app description.
        argv: arguments without the program name (default: ``sys.argv[1:]``).
    """
    parser = build_parser(app)
    args = _fill_defaults(app, parser.parse_args(argv))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # TFDS and TensorFlow log every file they open at INFO through absl: too chatty.
        for name in ("absl", "tensorflow"):
            logging.getLogger(name).setLevel(logging.WARNING)
    fn: VerbFn = getattr(app, args.verb)
    try:
        code = fn(args)
    except KeyboardInterrupt:
        hint = " (run `train` again to resume)" if args.verb == "train" else ""
        print(f"\ninterrupted{hint}", file=sys.stderr)
        return 130
    except AppError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from rnnkit.fetch import FetchError  # local: keep this module import-light

        if isinstance(exc, FetchError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
    return 0 if code is None else int(code)


def read_texts(inputs: Sequence[str]) -> list[str]:
    """Return ``inputs``, or the lines of stdin when ``inputs`` is empty (for ``predict``).

    Raises:
        AppError: neither arguments nor stdin gave any input.
    """
    if inputs:
        return list(inputs)
    if sys.stdin is None or sys.stdin.isatty():
        raise AppError("no input: give texts as arguments or pipe them on stdin, one per line")
    texts = [line.rstrip("\n") for line in sys.stdin]
    if not texts:
        raise AppError("no input on stdin")
    return texts
