"""``rnnkit``: the one command line of the project.

``rnnkit <app> <verb> [flags]`` runs ``apps.<app>.cli.main`` (``prepare | train | evaluate |
predict | export``); ``rnnkit serve [flags]`` runs ``rnnkit.serving.main``. Apps are imported
lazily, so one app's missing dependency never breaks another's command.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

__all__ = ["APPS", "main"]

# command name -> (module with main(argv) -> int, one-line description)
APPS: dict[str, tuple[str, str]] = {
    "sentiment": ("apps.sentiment.cli", "IMDB review sentiment (positive / negative)"),
    "voice_gender": ("apps.voice_gender.cli", "speaker gender from speech audio"),
    "translation": ("apps.translation.cli", "Spanish -> English translation"),
    "captioning": ("apps.captioning.cli", "image captioning"),
    "serve": ("rnnkit.serving", "TF-Serving-compatible REST + gRPC server for saved_models/"),
}
_ALIASES = {"voice-gender": "voice_gender"}


def _usage() -> str:
    lines = ["usage: rnnkit <command> [args...]   (rnnkit <command> --help for details)", "",
             "commands:"]
    for name, (_, text) in APPS.items():
        lines.append(f"  {name:<14} {text}")
    lines += ["", "app verbs: prepare | train | evaluate | predict | export"]
    return "\n".join(lines)


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
    module_name = APPS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only a missing module of our own is "not available"; a missing third-party
        # dependency inside it is a real error worth its own message.
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            print(f"rnnkit: `{name}` is not available in this installation "
                  f"({module_name} is missing)", file=sys.stderr)
            return 2
        raise
    entry = getattr(module, "main", None)
    if entry is None:
        print(f"rnnkit: {module_name} has no main(argv)", file=sys.stderr)
        return 2
    result = entry(args[1:])
    return 0 if result is None else int(result)


if __name__ == "__main__":
    sys.exit(main())
