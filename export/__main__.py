"""``python -m export`` = ``emotion-export``."""

from export.cli import main

raise SystemExit(main())
