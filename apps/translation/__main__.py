"""``python -m apps.translation <verb>`` == ``rnnkit translation <verb>``."""

import sys

from apps.translation.cli import main

sys.exit(main())
