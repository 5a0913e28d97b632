"""``make dev``: run the local stack in the foreground until Ctrl-C.

Brings up, in order: a real Kafka broker (jars fetched on first use), the provider emulator, and the worker
pointed at both with a ready-made providers file. Logs of each part go to the terminal, prefixed; Ctrl-C (or
SIGTERM) stops everything and leaves no process behind.
"""

from __future__ import annotations

from devstack.stack import main

if __name__ == "__main__":
    raise SystemExit(main())
