"""Log set-up: one line per event, to stderr, written in batches by a thread of its own.

A state-change line is logged on every submit, on the event loop. Formatting it and writing it to stderr there
(a pipe to journald or docker, which can be slow to drain) cost a sixth of a submit, and the logging cookbook's
QueueHandler, which wakes its listener thread for every record, still cost an eighth in GIL hand-offs. Here the
caller only appends the record to a deque (no lock, no wake-up); a writer thread formats what has gathered every
20 ms and writes it in one call, and everything left is written at exit.
"""

from __future__ import annotations

import atexit
import collections
import logging
import sys
import threading
import time
from typing import TextIO


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


class BatchedHandler(logging.Handler):
    """Gathers records in a deque; a daemon thread formats and writes them every ``interval_s``, one write each."""

    def __init__(self, stream: TextIO, interval_s: float = 0.02) -> None:
        super().__init__()
        self.stream = stream
        self.interval_s = interval_s
        self._records: collections.deque[logging.LogRecord] = collections.deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record for the writer (deque.append is atomic: no lock taken, nobody woken)."""
        self._records.append(record)

    def flush(self) -> None:
        """Format and write every record gathered so far."""
        lines = []
        while self._records:
            record = self._records.popleft()
            try:
                lines.append(self.format(record))
            except Exception:  # a record that cannot be formatted must not take the others with it
                self.handleError(record)
        if lines:
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # a closed or broken stderr: nothing to tell it with
                pass

    def close(self) -> None:
        """Stop the writer and write what is left."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self.flush()
        super().close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()


_handler: BatchedHandler | None = None


def setup_logging(level: str = "info") -> None:
    """Send vidqueue's logs to stderr with the process id, so worker lines can be told apart."""
    global _handler
    flush_logging()
    _handler = BatchedHandler(sys.stderr)
    _handler.setFormatter(_Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
    root = logging.getLogger("vidqueue")
    root.handlers[:] = [_handler]
    root.setLevel(level.upper())
    root.propagate = False
    # The logging HOWTO's "Optimization" switches: no caller lookup (a stack walk per record) and no thread
    # names, which these lines do not show; a state-change line is written on every submit.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False


def write_pending() -> None:
    """Write the records gathered so far now (before a line on stdout that should follow them)."""
    if _handler is not None:
        _handler.flush()


def flush_logging() -> None:
    """Write every record still gathered and stop the writer (at exit, or before logging is set up again)."""
    global _handler
    if _handler is not None:
        _handler.close()
        _handler = None


atexit.register(flush_logging)
