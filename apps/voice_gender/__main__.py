"""``python -m apps.voice_gender <verb>`` == ``rnnkit voice_gender <verb>``."""

import sys

from apps.voice_gender.cli import main

sys.exit(main())
