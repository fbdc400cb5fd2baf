"""``python -m apps.voice_gender.sources [SOURCE ...]``: fetch, decode, print the provenance."""

from __future__ import annotations

import argparse
import sys
import time

from .. import folds, sources
from ..speakers import EXCLUDED


def main(argv: list[str] | None = None) -> int:
    """Fetch and decode the sources, then print the provenance, summary and folds as Markdown.

    Args:
        argv: source names (all when empty) and ``--folds K``.
    """
    parser = argparse.ArgumentParser(prog="python -m apps.voice_gender.sources",
                                     description=main.__doc__)
    parser.add_argument("sources", nargs="*", help=f"any of {', '.join(sources.READERS)}")
    parser.add_argument("--folds", type=int, default=5, help="k of the folds shown (default 5)")
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args(argv)
    start = time.monotonic()
    clips = sources.real_clips(args.sources or None)
    took = time.monotonic() - start
    rows = sources.provenance_rows(clips)
    print(sources.provenance_markdown(rows))
    print()
    print(sources.summary_markdown(rows))
    print()
    print("Left out:")
    for ex in EXCLUDED:
        print(f"- `{ex.key}` (`{ex.package}`): {ex.reason}")
    print()
    speakers = sources.fold_speakers(clips)
    print(folds.describe(folds.grouped_folds(speakers, args.folds, args.seed), speakers))
    print(f"\n{len(clips)} clips from {len(speakers)} speakers, fetched and decoded in "
          f"{took:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
