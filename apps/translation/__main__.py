"""``python -m apps.translation <verb>`` == ``rnnkit translation <verb>``."""

import sys

from rnnkit.cli import main

sys.exit(main(["translation", *sys.argv[1:]]))
