"""``python -m rnnkit.serving ...`` == ``rnnkit serve ...``."""

from rnnkit.serving import main

raise SystemExit(main())
