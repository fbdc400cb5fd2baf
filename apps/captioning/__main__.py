"""``python -m apps.captioning <verb>``."""

import sys

from rnnkit.cli import main

sys.exit(main(["captioning", *sys.argv[1:]]))
