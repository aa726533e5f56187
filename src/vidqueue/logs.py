"""Log set-up: one line per event, to stderr."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "info") -> None:
    """Send vidqueue's logs to stderr with the process id, so worker lines can be told apart."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
    root = logging.getLogger("vidqueue")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
