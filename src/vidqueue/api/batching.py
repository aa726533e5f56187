"""Submits that arrive together are inserted together: on SQLite, one transaction and one commit for all of them.

A commit costs about as much as the insert itself (the WAL frames of every page the row and its indexes touched,
and the file locks), and under load many submits reach the store in the same turn of the event loop. Each one waits
on a future; the first schedules a flush for the loop's next turn, by which time the rest of that turn's submits
have joined it. A lone submit waits one turn of the loop, microseconds. Nothing is answered before its commit.
"""

from __future__ import annotations

import asyncio

from vidqueue.store import NewRequest, RequestRecord, Store

# At most this many rows in one transaction (about 4 ms of the loop); the rest go in the next turn.
MAX_BATCH = 100


class SubmitBatcher:
    """Gathers the submits of one turn of the event loop and inserts them with ``store.enqueue_many``, inline."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: list[tuple[NewRequest, asyncio.Future[RequestRecord]]] = []

    async def enqueue(self, new: NewRequest) -> RequestRecord:
        """Insert ``new`` with the others of this turn; its record, or the error the store gave it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RequestRecord] = loop.create_future()
        self._pending.append((new, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        if self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        try:
            answers = self._store.enqueue_many([new for new, _ in batch])
        except Exception as exc:  # enqueue_many answers errors in place; anything else fails the whole batch
            answers = [exc] * len(batch)
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.cancelled():
                continue  # its caller went away; the row stands, as it would had the insert run inline
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)
