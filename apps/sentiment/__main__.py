"""``python -m apps.sentiment <verb>``."""

import sys

from rnnkit.cli import main

sys.exit(main(["sentiment", *sys.argv[1:]]))
