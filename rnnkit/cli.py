"""``rnnkit``: the one command line of the project.

``rnnkit <app> <verb> [flags]`` runs that app's lifecycle (``prepare | train | evaluate |
predict | export``); ``rnnkit serve [flags]`` runs ``rnnkit.serving.main``. Apps are
imported lazily, so one app's missing dependency never breaks another's command
(TensorFlow's start-up logs are hidden by ``import rnnkit``, see :mod:`rnnkit.logs`).

The apps are installed as the package ``rnnkit_apps`` (from the repository's ``apps/``
folder); in a source tree without an install they are found as ``apps``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

__all__ = ["APPS", "main"]

# command name -> one-line description; every app but serve lives in <apps>.<name>.app
APPS: dict[str, str] = {
    "sentiment": "IMDB review sentiment (positive / negative)",
    "voice_gender": "speaker gender from speech audio",
    "translation": "Spanish -> English translation",
    "captioning": "image captioning",
    "serve": "TF-Serving-compatible REST + gRPC server for saved_models/",
}
_ALIASES = {"voice-gender": "voice_gender"}
_APP_PACKAGES = ("rnnkit_apps", "apps")


def _usage() -> str:
    lines = ["usage: rnnkit <command> [args...]   (rnnkit <command> --help for details)", "",
             "commands:"]
    for name, text in APPS.items():
        lines.append(f"  {name:<14} {text}")
    lines += ["", "app verbs: prepare | train | evaluate | predict | export"]
    return "\n".join(lines)


def app_module(name: str):
    """Import and return ``<apps package>.<name>.app`` (the app's :class:`rnnkit.app.App`).

    A package already imported wins (tests import ``apps``), then the installed
    ``rnnkit_apps``, then ``apps`` from a source tree.
    """
    packages = sorted(_APP_PACKAGES, key=lambda p: p not in sys.modules)
    last: ModuleNotFoundError | None = None
    for package in packages:
        try:
            return importlib.import_module(f"{package}.{name}.app")
        except ModuleNotFoundError as exc:
            # Only a missing package of our own means "try the next one"; a missing
            # third-party dependency inside the app is a real error.
            if exc.name not in (package, f"{package}.{name}", f"{package}.{name}.app"):
                raise
            last = exc
    raise ModuleNotFoundError(f"no app package for {name!r}") from last


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``rnnkit <command> ...``; return the exit code.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        from rnnkit import __version__

        print(f"rnnkit {__version__}")
        return 0
    name = _ALIASES.get(args[0], args[0])
    if name not in APPS:
        print(f"rnnkit: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if name == "serve":
        from rnnkit.logs import configure_logging
        from rnnkit.serving import main as serve_main

        # An app's main configures logging itself (App.main); the server needs it here.
        configure_logging(verbose=any(a in ("-v", "--verbose") for a in args[1:]))

        return int(serve_main(args[1:]) or 0)
    try:
        module = app_module(name)
    except ModuleNotFoundError:
        print(f"rnnkit: `{name}` is not available in this installation", file=sys.stderr)
        return 2
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
