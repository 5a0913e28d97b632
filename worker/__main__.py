"""``python -m worker`` is the ``batch-cancel-worker`` console script."""

from worker.cli import main

raise SystemExit(main())
