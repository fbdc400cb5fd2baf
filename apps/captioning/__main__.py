"""``python -m apps.captioning <verb>``."""

import sys

from apps.captioning.cli import main

if __name__ == "__main__":
    sys.exit(main())
