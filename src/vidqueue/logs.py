"""Log set-up: one line per event, to stderr."""

from __future__ import annotations

import logging
import sys
import time


class _Formatter(logging.Formatter):
    """The standard line, with the timestamp's text made once per second instead of once per line."""

    _second = -1
    _text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """``YYYY-mm-dd HH:MM:SS,mmm`` in local time."""
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._text},{int(record.msecs):03d}"


def setup_logging(level: str = "info") -> None:
    """Send vidqueue's logs to stderr with the process id, so worker lines can be told apart."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
    root = logging.getLogger("vidqueue")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # The logging HOWTO's "Optimization" switches: no caller lookup (a stack walk per record) and no thread
    # names, which these lines do not show; a state-change line is written on every submit.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
