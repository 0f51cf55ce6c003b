"""``python -m export`` = ``emotion-export``."""

from emotion_monitor.export.cli import main

raise SystemExit(main())
