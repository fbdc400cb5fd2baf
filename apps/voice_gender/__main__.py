"""``python -m apps.voice_gender <verb>`` == ``rnnkit voice_gender <verb>``."""

import sys

from rnnkit.cli import main

sys.exit(main(["voice_gender", *sys.argv[1:]]))
