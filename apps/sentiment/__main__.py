"""``python -m apps.sentiment <verb>``."""

import sys

from apps.sentiment.cli import main

sys.exit(main())
