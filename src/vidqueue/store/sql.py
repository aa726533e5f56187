"""The store on SQLAlchemy Core: SQLite (WAL) in the embedded default, PostgreSQL when many machines share it."""

from __future__ import annotations

import builtins
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import DatabaseError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import SQLAlchemyError as _SAError

from vidqueue.errors import LeaseLost, NotFound, ServiceError, StoreDamaged, StoreUnavailable
from vidqueue.store import changes, claims, migrate, postgres
from vidqueue.store.admission import admission_from, admission_lock, admission_statement
from vidqueue.store.base import enqueue_each
from vidqueue.store.deliveries import SqlDeliveries
from vidqueue.store.positions import (
    NEWEST_POSITION_SQL,
    position_params,
    position_sql,
    position_statement,
    row_position_sql,
)
from vidqueue.store.pruning import SqlPruning
from vidqueue.store.records import (
    Admission,
    AdmitRule,
    ApiKey,
    Idempotency,
    NewRequest,
    Page,
    QueueStats,
    Recovered,
    RequestRecord,
    Status,
)
from vidqueue.store.rules import (
    CANCELLED_MESSAGE,
    clean_facts,
    decode_cursor,
    encode_cursor,
    ending,
    log_transition,
    recovery,
    replayed,
)
from vidqueue.store.schema import api_keys, idempotency_keys, request_counts, requests, workers
from vidqueue.store.wakeups import SqliteWatcher, WakeThread

_R = requests.c
_K = idempotency_keys.c
_C = request_counts.c
_KEY = sa.select(_K.fingerprint, _K.created_at, _K.request_id).where(
    _K.org_id == sa.bindparam("org"), _K.key == sa.bindparam("key")
)
# Built once: constructing a statement costs more than running it on SQLite.
_GET = sa.select(requests).where(_R.request_id == sa.bindparam("rid"))
# PostgreSQL: the row and its queue position in one statement (one round trip, as on SQLite).
_POSITION: sa.Label[Any] = sa.literal_column(row_position_sql("requests", "postgresql")).label("queue_position")
_GET_PG = sa.select(requests, _POSITION).where(_R.request_id == sa.bindparam("rid"))
_GET_PG_IN_ORG = _GET_PG.where(_R.org_id == sa.bindparam("org"))
_INSERT = sa.insert(requests).returning(*requests.c)
_FIND_KEY = sa.select(api_keys).where(api_keys.c.key_hash == sa.bindparam("h"), api_keys.c.revoked_at.is_(None))


POOL_SIZE = 20  # PostgreSQL connections a process keeps open once it has needed them (and up to 10 more, briefly)


def create_db_engine(url: str) -> Engine:
    """An SQLAlchemy engine tuned for the queue (WAL, busy timeout and IMMEDIATE writes on SQLite)."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control from the driver so writes can BEGIN IMMEDIATE (no upgrade deadlocks).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            options = conn.get_execution_options()
            if options.get("readonly"):
                return  # one statement needs no transaction: the driver runs it in autocommit
            conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("immediate") else "BEGIN")

        return engine
    # Pre-ping: a pooled connection that a database restart broke is replaced before use, not handed out. The pool
    # keeps as many connections as an API process has calls in flight under load (16 in bench/api.py): with 5, each
    # call past the fifth opened and closed a connection of its own (GETs at a third of the speed).
    return sa.create_engine(postgres.driver_url(url), pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=10)


# What a dropped or refused connection raises: the store is unavailable for now, and callers retry.
_DOWN = (OperationalError, InterfaceError)

# SQLite's primary result codes for a damaged file: SQLITE_CORRUPT ("database disk image is malformed") and
# SQLITE_NOTADB ("file is not a database"). Both arrive as a plain sqlite3.DatabaseError, not an OperationalError.
_SQLITE_DAMAGED = frozenset({11, 26})


def is_damaged(exc: BaseException) -> bool:
    """Whether ``exc`` (a DB-API or SQLAlchemy error) says the SQLite file is not a sound database."""
    orig = exc.orig if isinstance(exc, DatabaseError) else exc
    if not isinstance(orig, sqlite3.DatabaseError) or isinstance(orig, sqlite3.IntegrityError):
        return False
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return (int(code) & 0xFF) in _SQLITE_DAMAGED
    text = str(orig).lower()
    return "not a database" in text or "malformed" in text


def damaged_message(path: str, exc: BaseException) -> str:
    """One line naming the damaged file and what to do about it."""
    orig = exc.orig if isinstance(exc, DatabaseError) else exc
    return (
        f"The database file {path} is not a valid SQLite database ({orig}); "
        "restore it from a backup or move it away to start afresh."
    )


def _record(row: Row[Any] | Mapping[str, Any], position: int | None = None) -> RequestRecord:
    return RequestRecord.from_mapping(row._mapping if isinstance(row, Row) else row, position)


def _positioned(row: dict[str, Any]) -> RequestRecord:
    """The record of a row read with its ``queue_position`` in the same statement (PostgreSQL's is a Decimal)."""
    position = row.pop("queue_position")
    return _record(row, None if position is None else int(position))


def _admission_params(org_id: str, admit: AdmitRule) -> dict[str, Any]:
    return {"org": org_id, "recent": admit.recent, "active_cap": admit.active_cap, "queued_cap": admit.queued_cap}


def _key(row: Row[Any]) -> ApiKey:
    m = row._mapping
    return ApiKey(
        key_id=m["key_id"],
        org_id=m["org_id"],
        name=m["name"],
        key_hash=m["key_hash"],
        prefix=m["prefix"],
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
    )


_JSON_COLUMNS = frozenset(c.name for c in requests.c if isinstance(c.type, sa.JSON))


class _FastSqlite:
    """The API's two hottest calls, GET of one request and the submit's INSERT, straight through the driver.

    SQLAlchemy Core costs several times what SQLite itself does for these; the statements are still compiled
    from the one schema, and writes still take the store's write lock.
    """

    def __init__(self, engine: Engine, write_lock: Any) -> None:
        self._path = engine.url.database or ""
        self._write_lock = write_lock
        # The sqlite dialect compiles bind parameters to "?", in the order they appear.
        # One statement answers the row and, when it is queued, its position (see positions.ROW_POSITION_SQL).
        columns = ", ".join(f"r.{c.name}" for c in requests.c)
        get = f"SELECT {columns}, {row_position_sql('r')} AS queue_position FROM requests r WHERE r.request_id = ?"
        self._sql_get = get
        self._sql_get_org = get + " AND r.org_id = ?"
        self._insert_columns = [c.name for c in requests.c if c.name != "seq"]
        self._sql_insert = str(sa.insert(requests).compile(dialect=engine.dialect, column_keys=self._insert_columns))
        self._sql_admission = admission_statement("sqlite").text  # named :params, which sqlite3 binds as they are
        self._local = threading.local()
        self.damaged = False

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # A connection of this thread's own, outside the pool, in autocommit (we BEGIN ourselves).
            conn = sqlite3.connect(self._path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def get(self, request_id: str, org_id: str | None) -> dict[str, Any] | None:
        try:
            cur = self._conn().cursor()
            if org_id is None:
                cur.execute(self._sql_get, (request_id,))
            else:
                cur.execute(self._sql_get_org, (request_id, org_id))
            row = cur.fetchone()
            names = [d[0] for d in cur.description]
            cur.close()
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        if row is None:
            return None
        out = dict(zip(names, row, strict=True))
        for name in _JSON_COLUMNS:
            if out[name] is not None:
                out[name] = orjson.loads(out[name])
        return out

    def query(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of one read statement with named parameters."""
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    def insert_many(
        self, rows: Sequence[tuple[dict[str, Any], AdmitRule | None]], clock: Callable[[], float]
    ) -> list[dict[str, Any] | ServiceError]:
        """Insert queued rows in one transaction, in order; a row its limits refuse gets the error in its place.

        A commit costs about as much as an insert here (the WAL frames of every page touched, and the file locks),
        so submits that arrive together share one (``api.batching``).
        """
        out: list[dict[str, Any] | ServiceError] = []
        try:
            with self._write_lock:
                conn = self._conn()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for values, admit in rows:
                        try:
                            out.append(self._insert(conn, values, admit, clock))
                        except ServiceError as exc:  # refused by its limits before its insert: the others go on
                            out.append(exc)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        return out

    def _insert(
        self, conn: sqlite3.Connection, values: dict[str, Any], admit: AdmitRule | None, clock: Callable[[], float]
    ) -> dict[str, Any]:
        full = {name: values.get(name) for name in self._insert_columns}
        params = [orjson.dumps(v).decode() if k in _JSON_COLUMNS and v is not None else v for k, v in full.items()]
        if admit is not None:
            # The limits are read inside the write (after the rows before it): the next submit's read waits for this.
            cur = conn.execute(self._sql_admission, _admission_params(values["org_id"], admit))
            names = [d[0] for d in cur.description]
            seen = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
            admit.check(admission_from(seen, clock(), admit.active_cap))
        seq = conn.execute(self._sql_insert, params).lastrowid
        # The newest row of its priority: every queued row of this priority or a higher one is ahead of it or is
        # it, which the large buckets count (a few dozen rows at a million).
        (position,) = conn.execute(NEWEST_POSITION_SQL, (values["priority"],)).fetchone()
        return {**full, "seq": seq, "queue_position": int(position)}

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable:
        """The StoreUnavailable for a driver error; after a damage error, this thread's connection is dropped."""
        if not is_damaged(exc):
            return StoreUnavailable(f"The store is unavailable: {exc}")
        self.damaged = True  # the store's /readyz check reads and clears it
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        return StoreDamaged(f"The store is unavailable: {exc}", damaged_message(self._path, exc))


class SqlStore(SqlDeliveries, SqlPruning):
    """The requests table on a SQL database."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock
        # SQLite calls take microseconds: reads in WAL never wait, writes wait only on other short writes.
        self.inline_calls = engine.dialect.name == "sqlite"
        # SQLite has one writer at a time and its busy handler backs off by sleeping (up to 100 ms a try), so
        # threads of one process queue on a lock instead: a hand-off in microseconds.
        self._write_lock = threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        self._fast = _FastSqlite(engine, self._write_lock) if engine.dialect.name == "sqlite" else None
        self._is_pg = engine.dialect.name == "postgresql"
        self._wakers: list[Callable[[str], None]] = []
        self._listener: WakeThread | None = None
        self._changes = changes.ChangeFeed(changes.listener_for(engine))
        # Set when an SQLite call found the file damaged; /readyz then checks the file until it is sound again.
        self._damaged = False

    @classmethod
    def open(cls, url: str, clock: Callable[[], float] = time.time, *, migrate_now: bool = True) -> SqlStore:
        """Connect, applying migrations first unless told not to."""
        engine = create_db_engine(url)
        if migrate_now:
            try:
                migrate.upgrade(engine)
            except _DOWN as exc:
                engine.dispose()
                raise StoreUnavailable(f"Cannot open the store: {exc.orig}") from exc
            except DatabaseError as exc:
                if not is_damaged(exc):
                    raise
                engine.dispose()
                raise StoreDamaged(damaged_message(engine.url.database or url, exc)) from exc
        return cls(engine, clock)

    def _unavailable(self, exc: DBAPIError) -> StoreUnavailable | None:
        """The StoreUnavailable a driver error means, or None when it is no store failure (a constraint, a bug)."""
        if isinstance(exc, _DOWN):
            return StoreUnavailable(f"The store is unavailable: {exc.orig}")
        if not is_damaged(exc):
            return None
        # Remember it for /readyz, and drop pooled connections so no cached page outlives the damage. The file's
        # path is for the operator (the log, the command line), not for answers.
        self._damaged = True
        self._engine.dispose()
        return StoreDamaged(
            f"The store is unavailable: {exc.orig}", damaged_message(self._engine.url.database or "", exc)
        )

    # -- plumbing ----------------------------------------------------------------------------------------
    @contextmanager
    def _read(self, *, single: bool = False) -> Iterator[Connection]:
        """A read transaction; ``single`` for one statement, which needs none (saves BEGIN and COMMIT)."""
        try:
            with self._engine.connect() as conn:
                if single:
                    # One statement needs no transaction: on PostgreSQL, autocommit saves the ROLLBACK round trip.
                    if self._is_pg:
                        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                    yield conn.execution_options(readonly=True)
                    return
                with conn.begin():
                    yield conn
        except DBAPIError as exc:
            if (unavailable := self._unavailable(exc)) is None:
                raise
            raise unavailable from exc

    @contextmanager
    def _write(self, *, single: bool = False) -> Iterator[Connection]:
        """A write transaction; ``single`` for one statement (and a NOTIFY after it), run in autocommit on PostgreSQL.

        A single statement is atomic on its own: autocommit saves the BEGIN and COMMIT round trips, half of the
        hot writes' cost (claim, heartbeat, progress, finish).
        """
        try:
            with self._write_lock, self._engine.connect() as conn:
                if single and self._is_pg:
                    yield conn.execution_options(isolation_level="AUTOCOMMIT")
                    return
                conn = conn.execution_options(immediate=True)
                with conn.begin():
                    yield conn
        except DBAPIError as exc:
            if (unavailable := self._unavailable(exc)) is None:
                raise
            raise unavailable from exc

    def _notify(self, conn: Connection, model: str) -> None:
        """Tell idle workers on other machines that a request for ``model`` is queued (sent at commit, or at once)."""
        if self._is_pg:
            conn.execute(postgres.NOTIFY, {"model": model})

    def _wake_local(self, model: str) -> None:
        for wake in self._wakers:
            wake(model)

    def subscribe(self, wake: Callable[[str], None]) -> None:
        """Call ``wake(model)`` when a request is queued, by any process (LISTEN/NOTIFY, or watching SQLite's file)."""
        self._wakers.append(wake)
        if self._listener is not None:
            return
        if self._is_pg:
            self._listener = postgres.Listener(self._engine.url.render_as_string(hide_password=False), self._wake_local)
        elif self._engine.url.database and self._engine.url.database != ":memory:":
            self._listener = SqliteWatcher(self._engine.url.database, self._wake_local)
        if self._listener is not None:
            self._listener.start()

    def watch_changes(self, changed: Callable[[str], None], watching: Callable[[], Collection[str]]) -> None:
        """Call ``changed(request_id)`` when a request's status or progress changes, by any process (see changes)."""
        self._changes.add(changed, watching)

    def _positions(self, rows: Sequence[Row[Any] | Mapping[str, Any]]) -> dict[str, int]:
        """The queue positions of the queued ones among ``rows``, read from the kept counts (see positions)."""
        maps = [r._mapping if isinstance(r, Row) else r for r in rows]
        queued = [m for m in maps if m["status"] == Status.QUEUED.value]
        if not queued:
            return {}
        params = position_params(self._engine.dialect.name, [(m["priority"], m["seq"]) for m in queued])
        if self._fast is not None:
            found = self._fast.query(position_sql("sqlite", len(queued)), params)
        else:
            with self._read(single=True) as conn:
                found = [
                    tuple(r) for r in conn.execute(position_statement(self._engine.dialect.name, len(queued)), params)
                ]
        return {queued[i]["request_id"]: int(position) for i, position in found}

    # -- the API side ------------------------------------------------------------------------------------
    def enqueue(self, new: NewRequest) -> RequestRecord:
        """Insert a queued request."""
        values = self._values(new)
        row: Row[Any] | dict[str, Any]
        if new.idempotency is not None:
            original, row = self._insert_once(new.org_id, new.idempotency, values, new.admit)
            if original:
                return _record(row, self._positions([row]).get(row.request_id))
        elif self._fast is not None:
            (inserted,) = self._fast.insert_many([(values, new.admit)], self._clock)
            if isinstance(inserted, ServiceError):
                raise inserted
            row = inserted
        else:
            with self._write(single=new.admit is None) as conn:
                self._admit(conn, new.org_id, new.admit)
                row = conn.execute(_INSERT, values).one()
                self._notify(conn, new.model)
        return self._enqueued(new, row)

    def enqueue_many(self, news: Sequence[NewRequest]) -> builtins.list[RequestRecord | Exception]:
        """Insert queued requests, on SQLite in one transaction; each answer (or error) in its request's place."""
        together = [i for i, new in enumerate(news) if new.idempotency is None] if self._fast is not None else []
        out: builtins.list[RequestRecord | Exception | None] = [None] * len(news)
        if len(together) > 1 and self._fast is not None:
            try:
                rows = self._fast.insert_many([(self._values(news[i]), news[i].admit) for i in together], self._clock)
            except Exception:
                # Rolled back, nothing inserted (the store failed, or one row could not be written): each is tried
                # alone below and gets its own answer, so one bad row does not fail the others.
                rows = []
            for i, row in zip(together, rows, strict=False):
                out[i] = row if isinstance(row, ServiceError) else self._enqueued(news[i], row)
        alone = [i for i, answer in enumerate(out) if answer is None]
        for i, answer in zip(alone, enqueue_each(self.enqueue, [news[i] for i in alone]), strict=True):
            out[i] = answer
        return [answer for answer in out if answer is not None]

    def _values(self, new: NewRequest) -> dict[str, Any]:
        now = self._clock()
        return {
            "request_id": new.request_id,
            "org_id": new.org_id,
            "model": new.model,
            "status": Status.QUEUED.value,
            "priority": new.priority,
            "payload": new.payload,
            "created_at": now,
            "updated_at": now,
            "queued_at": now,
            "callback_url": new.callback_url,
            "input_key": new.input_key,
            "progress": 0,
            "attempts": 0,
        }

    def _enqueued(self, new: NewRequest, row: Row[Any] | dict[str, Any]) -> RequestRecord:
        """The record of a request just inserted, once its workers are woken and its line logged."""
        self._wake_local(new.model)
        log_transition(new.request_id, "new", Status.QUEUED, model=new.model, org=new.org_id)
        if isinstance(row, dict) and "queue_position" in row:  # read in the insert's own transaction
            return _positioned(row)
        return _record(row, self._positions([row]).get(new.request_id))

    def _admit(self, conn: Connection, org_id: str, admit: AdmitRule | None) -> None:
        """Check a submit's limits inside its insert's transaction, holding its turn (raises when over)."""
        if admit is None:
            return
        if self._is_pg:
            conn.execute(admission_lock(queue_wide=admit.queued_cap > 0), {"org": org_id})
        rows = conn.execute(admission_statement(self._engine.dialect.name), _admission_params(org_id, admit)).all()
        admit.check(admission_from(rows, self._clock(), admit.active_cap))

    def _insert_once(
        self, org_id: str, idem: Idempotency, values: dict[str, Any], admit: AdmitRule | None
    ) -> tuple[bool, Row[Any]]:
        """Insert the request and its key in one transaction, unless the key names a request already.

        Answers (True, the original row) for a replay, (False, the new row) otherwise; Conflict for a key used
        with another body.
        """
        try:
            return self._insert_with_key(org_id, idem, values, admit)
        except sa.exc.IntegrityError:
            # Two submits raced with one key and met at its primary key: the winner's row is there to read now.
            return self._insert_with_key(org_id, idem, values, admit)

    def _insert_with_key(
        self, org_id: str, idem: Idempotency, values: dict[str, Any], admit: AdmitRule | None
    ) -> tuple[bool, Row[Any]]:
        with self._write() as conn:
            found = conn.execute(_KEY, {"org": org_id, "key": idem.key}).one_or_none()
            if replayed(idem, (found.fingerprint, found.created_at) if found else None, values["created_at"]):
                assert found is not None
                original = conn.execute(_GET, {"rid": found.request_id}).one_or_none()
                if original is not None:
                    return True, original
            if found is not None:  # expired, or its request was pruned: the key is free again
                conn.execute(sa.delete(idempotency_keys).where(_K.org_id == org_id, _K.key == idem.key))
            self._admit(conn, org_id, admit)
            row = conn.execute(_INSERT, values).one()
            self._notify(conn, values["model"])
            conn.execute(
                sa.insert(idempotency_keys).values(
                    org_id=org_id,
                    key=idem.key,
                    fingerprint=idem.fingerprint,
                    request_id=values["request_id"],
                    created_at=values["created_at"],
                )
            )
            return False, row

    def replay(self, org_id: str, idem: Idempotency) -> RequestRecord | None:
        """The request an Idempotency-Key already made with this body (Conflict if with another), or None."""
        with self._read(single=True) as conn:
            found = conn.execute(_KEY, {"org": org_id, "key": idem.key}).one_or_none()
            if not replayed(idem, (found.fingerprint, found.created_at) if found else None, self._clock()):
                return None
            assert found is not None
            row = conn.execute(_GET, {"rid": found.request_id}).one_or_none()
        return None if row is None else _record(row, self._positions([row]).get(row.request_id))

    def get(self, request_id: str, org_id: str | None = None) -> RequestRecord | None:
        """One request (only within ``org_id`` when given), with its queue position (read in the same statement)."""
        if self._fast is not None:
            row = self._fast.get(request_id, org_id)
        else:
            with self._read(single=True) as conn:
                found = conn.execute(_GET_PG if org_id is None else _GET_PG_IN_ORG, {"rid": request_id, "org": org_id})
                first = found.one_or_none()
            row = None if first is None else dict(first._mapping)
        return None if row is None else _positioned(row)

    def list(
        self,
        org_id: str,
        *,
        model: str | None = None,
        status: Status | None = None,
        limit: int = 20,
        cursor: str | None = None,
        oldest_first: bool = False,
    ) -> Page:
        """The organisation's requests, newest first (or oldest first), a page at a time."""
        where = [_R.org_id == org_id]
        if model is not None:
            where.append(_R.model == model)
        if status is not None:
            where.append(_R.status == status.value)
        page_where = list(where)
        if cursor is not None:
            # Bound as a BIGINT: on PostgreSQL `seq` is a 32-bit column, and a cursor past 2**31 (any 64-bit value
            # decode_cursor lets through) must mean "past every row", not an "integer out of range".
            bound = sa.literal(decode_cursor(cursor), sa.BigInteger)
            page_where.append(_R.seq > bound if oldest_first else _R.seq < bound)
        order = _R.seq.asc() if oldest_first else _R.seq.desc()
        counted = [_C.org_id == org_id]
        if model is not None:
            counted.append(_C.model == model)
        if status is not None:
            counted.append(_C.status == status.value)
        with self._read() as conn:
            # The kept counts (migration 0007): a sum over the organisation's few (model, status) rows.
            total = int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(_C.n), 0)).where(*counted)).scalar_one())
            page = sa.select(requests).where(*page_where).order_by(order).limit(limit + 1)
            if self._fast is not None:
                # SQLite: each queued row's position in the same statement (no second read for the page).
                page = page.add_columns(sa.literal_column(row_position_sql("requests")).label("queue_position"))
            rows = conn.execute(page).all()
            more = len(rows) > limit
            rows = rows[:limit]
        if self._fast is not None:
            items = [_record(r, r.queue_position) for r in rows]
        else:
            positions = self._positions(rows)
            items = [_record(r, positions.get(r.request_id)) for r in rows]
        return Page(items=items, total=total, next_cursor=encode_cursor(items[-1].seq) if more else None)

    def cancel(self, request_id: str, org_id: str) -> RequestRecord:
        """Cancel a queued request now, or ask the worker to stop a processing one."""
        now = self._clock()
        with self._write() as conn:
            row = conn.execute(
                sa.select(requests).where(_R.request_id == request_id, _R.org_id == org_id)
            ).one_or_none()
            if row is None:
                raise NotFound(f"Request '{request_id}' does not exist.")
            status = Status(row.status)
            if status is Status.QUEUED:
                conn.execute(
                    sa.update(requests)
                    .where(_R.request_id == request_id)
                    .values(
                        status=Status.CANCELLED.value,
                        cancel_requested_at=now,
                        finished_at=now,
                        updated_at=now,
                        **ending("cancelled", CANCELLED_MESSAGE),
                    )
                )
                log_transition(request_id, status, Status.CANCELLED)
            elif status is Status.PROCESSING and row.cancel_requested_at is None:
                conn.execute(
                    sa.update(requests)
                    .where(_R.request_id == request_id)
                    .values(cancel_requested_at=now, updated_at=now)
                )
            row = conn.execute(sa.select(requests).where(_R.request_id == request_id)).one()
        return _record(row)

    def admission(self, org_id: str, *, recent: int = 0, active_cap: int = 0, queued_cap: int = 0) -> Admission:
        """In one read: the times of the org's ``recent`` newest submits, and its active and the queued counts."""
        params = {"org": org_id, "recent": recent, "active_cap": active_cap, "queued_cap": queued_cap}
        with self._read(single=True) as conn:
            now = self._clock()
            rows = conn.execute(admission_statement(self._engine.dialect.name), params).all()
        return admission_from(rows, now, active_cap)

    # -- the worker side -------------------------------------------------------------------------------
    def claim(
        self, worker_id: str, models: Collection[str], lease_s: float, limit: int | None = None
    ) -> RequestRecord | None:
        """Take the next claimable request: fewest processing in its organisation, then priority, then age.

        With ``limit``, only while fewer than ``limit`` requests for these models are processing. The count is
        exact: SQLite runs one writer at a time, and on PostgreSQL capped claims of the same models take turns on
        an advisory lock (uncapped claims never wait).
        """
        if not models:
            return None
        now = self._clock()
        params = {"models": list(models), "worker": worker_id, "expires": now + lease_s, "now": now, "limit": limit}
        statement = claims.claim_statement(self._engine.dialect.name, capped=limit is not None)
        with self._write(single=limit is None) as conn:
            if limit is not None and self._is_pg:
                # Taken before the claim statement, so its snapshot already sees the previous holder's claim.
                conn.execute(claims.CAP_LOCK, {"lane": "\x1f".join(sorted(models))})
            row = conn.execute(statement, params).one_or_none()
        if row is None:
            return None
        log_transition(row.request_id, Status.QUEUED, Status.PROCESSING, worker=worker_id, attempt=row.attempts)
        return _record(row)

    def _fenced(self, conn: Connection, request_id: str, worker_id: str, **values: Any) -> Row[Any]:
        row = conn.execute(
            sa.update(requests)
            .where(
                _R.request_id == request_id,
                _R.lease_owner == worker_id,
                _R.status == Status.PROCESSING.value,
            )
            .values(**values)
            .returning(*requests.c)
        ).one_or_none()
        if row is None:
            raise LeaseLost(f"Worker {worker_id} no longer holds request {request_id}.")
        return row

    def heartbeat(self, request_id: str, worker_id: str, lease_s: float) -> bool:
        """Extend the lease; answer whether a cancel was requested."""
        now = self._clock()
        with self._write(single=True) as conn:
            row = self._fenced(conn, request_id, worker_id, lease_expires_at=now + lease_s)
        return row.cancel_requested_at is not None

    def set_progress(self, request_id: str, worker_id: str, progress: int, lease_s: float) -> bool:
        """Record progress (0-100) and extend the lease; answer whether a cancel was requested."""
        now = self._clock()
        progress = max(0, min(100, int(progress)))
        with self._write(single=True) as conn:
            row = self._fenced(
                conn,
                request_id,
                worker_id,
                progress=sa.func.max(_R.progress, progress)
                if self._is_sqlite
                else sa.func.greatest(_R.progress, progress),
                lease_expires_at=now + lease_s,
                updated_at=now,
            )
        return row.cancel_requested_at is not None

    @property
    def _is_sqlite(self) -> bool:
        return self._engine.dialect.name == "sqlite"

    def checkpoint(self, request_id: str, worker_id: str, state: dict[str, Any]) -> None:
        """Persist engine state (an upstream task id) for a later attempt."""
        with self._write(single=True) as conn:
            self._fenced(conn, request_id, worker_id, engine_state=state, updated_at=self._clock())

    def _end(self, request_id: str, worker_id: str, status: Status, **values: Any) -> RequestRecord:
        now = self._clock()
        with self._write(single=True) as conn:
            row = self._fenced(
                conn,
                request_id,
                worker_id,
                status=status.value,
                finished_at=now,
                updated_at=now,
                lease_owner=None,
                lease_expires_at=None,
                **values,
            )
        log_transition(request_id, Status.PROCESSING, status, worker=worker_id, code=values.get("error_code"))
        return _record(row)

    def finish(self, request_id: str, worker_id: str, outcome: dict[str, Any]) -> RequestRecord:
        """End a request in success."""
        return self._end(request_id, worker_id, Status.SUCCESS, outcome=outcome, progress=100)

    def fail(self, request_id: str, worker_id: str, code: str, message: str) -> RequestRecord:
        """End a request in failure."""
        return self._end(request_id, worker_id, Status.FAILED, **ending(code, message))

    def finish_cancelled(self, request_id: str, worker_id: str, message: str) -> RequestRecord:
        """End a processing request as cancelled (the worker saw the cancel)."""
        return self._end(request_id, worker_id, Status.CANCELLED, **ending("cancelled", message))

    def release(self, request_id: str, worker_id: str) -> RequestRecord:
        """Give a processing request back to the queue without counting the attempt."""
        now = self._clock()
        with self._write(single=True) as conn:
            row = self._fenced(
                conn,
                request_id,
                worker_id,
                status=Status.QUEUED.value,
                lease_owner=None,
                lease_expires_at=None,
                attempts=_R.attempts - 1,
                progress=0,
                updated_at=now,
            )
            self._notify(conn, row.model)
        log_transition(request_id, Status.PROCESSING, Status.QUEUED, worker=worker_id, reason="released")
        return _record(row)

    # -- recovery ----------------------------------------------------------------------------------------
    def expire_leases(self, worker_id: str) -> int:
        """Expire every lease a (dead) worker holds, so the next sweep recovers its requests at once."""
        now = self._clock()
        with self._write() as conn:
            result = conn.execute(
                sa.update(requests)
                .where(_R.lease_owner == worker_id, _R.status == Status.PROCESSING.value)
                .values(lease_expires_at=now - 1)
            )
        return int(result.rowcount or 0)

    def recover(self, max_attempts: int) -> builtins.list[Recovered]:
        """Requeue expired processing requests; fail those that used up their attempts; end cancelled ones."""
        now = self._clock()
        done: builtins.list[Recovered] = []
        with self._write() as conn:
            rows = conn.execute(
                sa.select(_R.request_id, _R.model, _R.attempts, _R.cancel_requested_at, _R.lease_owner).where(
                    _R.status == Status.PROCESSING.value, _R.lease_expires_at < now
                )
            ).all()
            for r in rows:
                new, values = recovery(r.attempts, r.cancel_requested_at is not None, max_attempts, now)
                updated = conn.execute(
                    sa.update(requests)
                    .where(
                        _R.request_id == r.request_id,
                        _R.status == Status.PROCESSING.value,
                        _R.lease_expires_at < now,
                    )
                    .values(status=new.value, **values)
                )
                if updated.rowcount:
                    done.append(Recovered(r.request_id, new, r.attempts))
                    if new is Status.QUEUED:
                        self._notify(conn, r.model)
        for rec in done:
            log_transition(rec.request_id, Status.PROCESSING, rec.status, reason="lease expired", attempt=rec.attempts)
        return done

    # -- workers -------------------------------------------------------------------------------------------
    def worker_seen(
        self, worker_id: str, models: Collection[str], facts: Mapping[str, Mapping[str, float]] | None = None
    ) -> None:
        """Record that a worker is alive, which models it serves and (unless None) its facts by name and model."""
        now = self._clock()
        values: dict[str, Any] = {"seen_at": now, "models": sorted(models)}
        if facts is not None:
            values["facts"] = clean_facts(facts)
        with self._write() as conn:
            updated = conn.execute(sa.update(workers).where(workers.c.worker_id == worker_id).values(**values))
            if not updated.rowcount:
                conn.execute(sa.insert(workers).values(worker_id=worker_id, started_at=now, **values))

    def worker_gone(self, worker_id: str) -> None:
        """Forget a worker that stopped."""
        with self._write() as conn:
            conn.execute(sa.delete(workers).where(workers.c.worker_id == worker_id))

    def live_workers(self, within_s: float) -> dict[str, builtins.list[str]]:
        """Workers seen within the last ``within_s`` seconds, with their models."""
        since = self._clock() - within_s
        with self._read() as conn:
            rows = conn.execute(sa.select(workers.c.worker_id, workers.c.models).where(workers.c.seen_at >= since))
            return {r.worker_id: list(r.models) for r in rows}

    def worker_facts(self, within_s: float) -> dict[str, dict[str, dict[str, float]]]:
        """Workers seen within the last ``within_s`` seconds, with their facts ({} for one that published none)."""
        since = self._clock() - within_s
        with self._read() as conn:
            rows = conn.execute(sa.select(workers.c.worker_id, workers.c.facts).where(workers.c.seen_at >= since))
            return {r.worker_id: clean_facts(r.facts or {}) for r in rows}

    # -- keys --------------------------------------------------------------------------------------------
    def add_key(self, key: ApiKey) -> None:
        """Store a new API key (hash only)."""
        with self._write() as conn:
            conn.execute(
                sa.insert(api_keys).values(
                    key_id=key.key_id,
                    org_id=key.org_id,
                    name=key.name,
                    key_hash=key.key_hash,
                    prefix=key.prefix,
                    created_at=key.created_at,
                    revoked_at=key.revoked_at,
                )
            )

    def find_key(self, key_hash: str) -> ApiKey | None:
        """The active key with this hash."""
        with self._read(single=True) as conn:
            row = conn.execute(_FIND_KEY, {"h": key_hash}).one_or_none()
        return _key(row) if row is not None else None

    def list_keys(self, org_id: str | None = None) -> builtins.list[ApiKey]:
        """Keys, oldest first."""
        query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
        if org_id is not None:
            query = query.where(api_keys.c.org_id == org_id)
        with self._read() as conn:
            return [_key(r) for r in conn.execute(query)]

    def revoke_key(self, key_id: str) -> bool:
        """Revoke a key; answer whether one was revoked."""
        with self._write() as conn:
            result = conn.execute(
                sa.update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
        return bool(result.rowcount)

    # -- operations --------------------------------------------------------------------------------------
    def stats(self) -> QueueStats:
        """Counts for metrics."""
        out = QueueStats()
        with self._read() as conn:
            for r in conn.execute(sa.select(_R.model, _R.status, sa.func.count()).group_by(_R.model, _R.status)):
                out.by_model_status[(r[0], r[1])] = int(r[2])
            for r in conn.execute(
                sa.select(_R.model, _R.error_code, sa.func.count())
                .where(_R.status == Status.FAILED.value)
                .group_by(_R.model, _R.error_code)
            ):
                out.failures_by_code[(r[0], r[1] or "unknown")] = int(r[2])
            for r in conn.execute(
                sa.select(_R.model, sa.func.sum(_R.finished_at - _R.processing_at), sa.func.count())
                .where(_R.status == Status.SUCCESS.value)
                .group_by(_R.model)
            ):
                out.duration_sum[r[0]] = float(r[1] or 0.0)
                out.duration_count[r[0]] = int(r[2])
        return out

    def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers and its schema is current."""
        try:
            current = migrate.current_revision(self._engine)
            if self._is_sqlite:
                self._probe()
        except DBAPIError as exc:
            unavailable = self._unavailable(exc) or StoreUnavailable(f"The store is unavailable: {exc.orig}")
            raise unavailable from exc
        except _SAError as exc:
            raise StoreUnavailable(f"The store is unavailable: {exc}") from exc
        if current != migrate.head_revision():
            raise StoreUnavailable(f"The store's schema is at {current}, not {migrate.head_revision()}.")

    def _probe(self) -> None:
        """Read past the schema table into the requests table (a `SELECT 1` succeeds on a damaged file).

        Cheap: one descent of the table's b-tree. After a call found the file damaged, the whole file is checked
        (PRAGMA quick_check) until it passes again, e.g. once it was restored.
        """
        with self._engine.connect() as conn:
            conn = conn.execution_options(readonly=True)
            conn.execute(sa.select(_R.seq).order_by(_R.seq.desc()).limit(1)).all()
            if self._fast is not None and self._fast.damaged:
                self._damaged, self._fast.damaged = True, False
            if not self._damaged:
                return
            verdict = conn.exec_driver_sql("PRAGMA quick_check(1)").scalar()
        if verdict != "ok":
            path = self._engine.url.database or ""
            raise StoreDamaged(
                f"The store is unavailable: its database is damaged ({verdict}).",
                damaged_message(path, sqlite3.DatabaseError(f"quick_check: {verdict}")),
            )
        self._damaged = False

    def close(self) -> None:
        """Release connections and stop listening."""
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        self._changes.stop()
        self._engine.dispose()
