"""``python -m emotion_monitor.export`` = ``emotion-export``."""

from emotion_monitor.export.cli import main

raise SystemExit(main())
