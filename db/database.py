"""SQLite through aiosqlite: connection settings and numbered migrations.

Migrations are the files ``db/migrations/NNNN_name.sql``. On start-up every file
numbered above the database's ``PRAGMA user_version`` is applied, each in its own
transaction together with the version bump, so a failed migration leaves the
database at the last good version.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
BUSY_TIMEOUT_MS = 5000  # readers, and connections of the operator's tools
WRITER_BUSY_TIMEOUT_MS = 100  # the writer waits in short steps, so its patience is ours to bound
WRITE_PATIENCE_S = 1.5  # a command's write gives up after this: the member hears back within 3 s
READERS = 2
MIGRATION_PATIENCE_S = 60.0
T = TypeVar("T")
log = logging.getLogger(__name__)


class MigrationError(RuntimeError):
    pass


class DatabaseBusy(RuntimeError):
    """A write could not get SQLite's lock in time (another process holds it): nothing was written.

    Its message is for the member: the command can simply be tried again.
    """

    def __init__(
        self, message: str = "The server is busy right now: nothing was changed. Try again in a moment."
    ):
        super().__init__(message)


class DatabaseFull(DatabaseBusy):
    """The disk under the database is full: nothing was written."""

    def __init__(
        self, message: str = "The server ran out of disk space: nothing was changed. Tell an operator."
    ):
        super().__init__(message)


def migrations(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, Path]]:
    """(version, file) of every migration, in order; numbers must be 1, 2, 3, ... without gaps."""
    found = sorted((int(m.group(1)), p) for p in directory.iterdir() if (m := _MIGRATION_NAME.match(p.name)))
    for expected, (version, path) in enumerate(found, start=1):
        if version != expected:
            raise MigrationError(f"migration {path.name} should be numbered {expected:04d}")
    return found


async def connect(path: str | Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> aiosqlite.Connection:
    """Open the database with WAL, foreign keys and a busy timeout; rows come back as sqlite3.Row."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(str(path), isolation_level=None)  # we manage transactions
    conn.row_factory = aiosqlite.Row
    await conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute("PRAGMA foreign_keys = ON")
    await conn.execute("PRAGMA synchronous = NORMAL")
    return conn


async def schema_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    return int(row[0])


async def migrate(conn: aiosqlite.Connection, directory: Path = MIGRATIONS_DIR) -> int:
    """Apply the pending migrations; returns the schema version afterwards.

    The version is read inside each migration's write transaction, so two processes starting
    on a fresh database cannot both apply the same migration.
    """
    available = migrations(directory)
    while True:
        current = await schema_version(conn)
        rebuilds = current < len(available) and _rebuilds_tables(available[current][1])
        if rebuilds:  # SQLite's table rebuild: foreign keys off (not changeable inside a transaction)
            await conn.execute("PRAGMA foreign_keys = OFF")
        try:
            async with transaction(conn):
                before, current = current, await schema_version(conn)
                if (
                    current != before
                    and current < len(available)
                    and rebuilds != _rebuilds_tables(available[current][1])
                ):
                    continue  # another process migrated meanwhile: decide the foreign keys again
                if current > len(available):
                    raise MigrationError(
                        f"the database is at version {current}, newer than this code ({len(available)})"
                    )
                if current == len(available):
                    return current
                version, path = available[current]
                await _executescript(conn, path.read_text(encoding="utf-8"))
                if rebuilds and await (await conn.execute("PRAGMA foreign_key_check")).fetchall():
                    raise MigrationError(f"migration {path.name} broke a foreign key")
                await conn.execute(f"PRAGMA user_version = {version}")
        finally:
            if rebuilds:
                await conn.execute("PRAGMA foreign_keys = ON")


def _rebuilds_tables(path: Path) -> bool:
    """A migration whose first line says ``-- rebuilds tables`` runs with foreign keys off."""
    return path.read_text(encoding="utf-8").startswith("-- rebuilds tables")


async def _executescript(conn: aiosqlite.Connection, script: str) -> None:
    """Run a script statement by statement inside the open transaction (executescript would commit)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                await conn.execute(buffer)
            buffer = ""
    if buffer.strip():
        await conn.execute(buffer)


def _write_lock(conn: object) -> asyncio.Lock:
    """One lock per connection: tasks sharing it take turns at transactions instead of nesting them."""
    lock = getattr(conn, "_lorabot_write_lock", None)
    if lock is None:
        lock = asyncio.Lock()
        conn._lorabot_write_lock = lock  # type: ignore[attr-defined]
    return lock


# How long a write waits for SQLite's lock before it gives up with DatabaseBusy; None waits as long
# as it takes. Commands keep the default so a member hears back within Discord's 3 s window; the
# dispatcher's tasks wait (its transitions must land, whatever another process is doing).
_patience: ContextVar[float | None] = ContextVar("lorabot_write_patience", default=WRITE_PATIENCE_S)
# The Database whose writer the current task holds inside transaction(): its statements go there.
_holder: ContextVar[Database | None] = ContextVar("lorabot_transaction_holder", default=None)


@contextmanager
def write_patience(seconds: float | None) -> Iterator[None]:
    """Let writes in this block wait ``seconds`` for the lock (None: until they get it)."""
    token = _patience.set(seconds)
    try:
        yield
    finally:
        _patience.reset(token)


def wait_for_writes() -> None:
    """From here on, writes of the current task (and of tasks it starts) wait until they land."""
    _patience.set(None)


def is_disk_full(exc: BaseException) -> bool:
    """SQLite's SQLITE_FULL (or our DatabaseFull), or the OS's ENOSPC or a full quota."""
    if isinstance(exc, DatabaseFull):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return "disk is full" in str(exc) or getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _is_locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, 5, 6)
    )


def _deadline() -> float | None:
    patience = _patience.get()
    return None if patience is None else time.monotonic() + patience


async def _take_turn(lock: asyncio.Lock, deadline: float | None) -> None:
    """This process's turn at the writer; a task that waits forever (the dispatcher's) may hold it
    while the database is locked, so a command gives up here in time too."""
    if deadline is None:
        await lock.acquire()
        return
    try:
        await asyncio.wait_for(lock.acquire(), max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        raise DatabaseBusy() from None


async def _begin(writer: aiosqlite.Connection, deadline: float | None) -> None:
    """BEGIN IMMEDIATE, retried with backoff until it gets the write lock or the deadline passes."""
    delay = 0.02
    while True:
        try:
            await writer.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not _is_locked(exc):
                raise
            if deadline is not None and time.monotonic() + delay > deadline:
                raise DatabaseBusy() from exc
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


@asynccontextmanager
async def transaction(conn: aiosqlite.Connection | Database) -> AsyncIterator[aiosqlite.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error: writes that belong together.

    Concurrent tasks on one connection wait for each other here. Read what a write depends on
    inside the block, so no other task's write can slip in between. On a :class:`Database` every
    statement of the block, reads included, goes to its writer connection. Waiting for the lock
    is bounded by :func:`write_patience` (DatabaseBusy after it); a full disk is DatabaseFull.
    """
    writer = conn.writer if isinstance(conn, Database) else conn
    deadline = _deadline()
    lock = _write_lock(writer)
    await _take_turn(lock, deadline)
    token = _holder.set(conn) if isinstance(conn, Database) else None
    try:
        await _begin(writer, deadline)
        yield conn  # type: ignore[misc]
        await writer.execute("COMMIT")
    except BaseException as exc:
        # also after a cancelled BEGIN (it may still have run) or a failed COMMIT (disk full):
        # never leave the shared connection inside a transaction that holds SQLite's write lock
        await asyncio.shield(_rollback(writer))
        if is_disk_full(exc) and not isinstance(exc, DatabaseFull):
            raise DatabaseFull() from exc
        raise
    finally:
        if token is not None:
            _holder.reset(token)
        lock.release()


async def _rollback(conn: aiosqlite.Connection) -> None:
    with contextlib.suppress(sqlite3.OperationalError):  # no transaction was open
        await conn.execute("ROLLBACK")


async def until_written(write: Callable[[], Awaitable[T]], what: str) -> T:
    """Run ``write`` (its own transactions) until it lands: a locked database, a full disk or an I/O
    error is retried with backoff and logged now and then. For state changes that must happen."""
    delay, failures = 0.1, 0
    while True:
        try:
            with write_patience(None):
                return await write()
        except (sqlite3.OperationalError, DatabaseBusy, OSError) as exc:
            if isinstance(exc, OSError) and not is_disk_full(exc):
                raise
            failures += 1
            if failures in (1, 10) or failures % 100 == 0:
                log.warning("%s: %s; retrying (%d tries so far)", what, exc, failures)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


_READ_VERBS = ("SELECT", "WITH", "EXPLAIN")


def _is_read(sql: str) -> bool:
    head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    if head == "PRAGMA":
        return "=" not in sql
    return head in _READ_VERBS


class _Statement:
    """What ``Database.execute`` returns: awaitable (the cursor) and an async context manager, like
    aiosqlite's own result."""

    def __init__(self, run: Callable[[], Awaitable[Any]]):
        self._run = run
        self._cursor: Any = None

    def __await__(self):
        return self._run().__await__()

    async def __aenter__(self) -> Any:
        self._cursor = await self._run()
        return self._cursor

    async def __aexit__(self, *exc: object) -> None:
        if self._cursor is not None:
            await self._cursor.close()


class Database:
    """The one owner of the bot's SQLite connections: a writer and a few readers (WAL lets reads run
    while another process holds the write lock, so a command's reads never wait behind a writer).

    It has the connection methods the repositories use (``execute``, ``executemany``,
    ``execute_fetchall``). Inside :func:`transaction` on it, the task's statements go to the
    writer; elsewhere reads go to a reader and a lone write runs in a transaction of its own.
    The writer never holds a read open between transactions, so BEGIN IMMEDIATE really waits.
    """

    def __init__(self, writer: aiosqlite.Connection, readers: list[aiosqlite.Connection]):
        self.writer = writer
        self.readers = readers
        self._next = 0

    @classmethod
    async def open(cls, path: str | Path, readers: int = READERS) -> Database:
        writer = await connect(path, busy_timeout_ms=WRITER_BUSY_TIMEOUT_MS)
        if str(path) == ":memory:":  # each connection would be a database of its own
            return cls(writer, [])
        try:
            return cls(writer, [await connect(path) for _ in range(readers)])
        except BaseException:
            await writer.close()
            raise

    async def close(self) -> None:
        for conn in (*self.readers, self.writer):
            await conn.close()

    def _reader(self) -> aiosqlite.Connection:
        if not self.readers:
            return self.writer
        self._next = (self._next + 1) % len(self.readers)
        return self.readers[self._next]

    def _in_transaction(self) -> bool:
        return _holder.get() is self

    def execute(self, sql: str, parameters: Iterable[Any] = ()) -> _Statement:
        if self._in_transaction():
            return _Statement(lambda: self.writer.execute(sql, parameters))
        if _is_read(sql):
            return _Statement(lambda: self._reader().execute(sql, parameters))
        return _Statement(lambda: self._write_alone(lambda: self.writer.execute(sql, parameters)))

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> Any:
        if self._in_transaction():
            return await self.writer.executemany(sql, parameters)
        return await self._write_alone(lambda: self.writer.executemany(sql, parameters))

    async def execute_fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> Iterable[sqlite3.Row]:
        async with self.execute(sql, parameters) as cur:
            return await cur.fetchall()

    async def _write_alone(self, run: Callable[[], Awaitable[aiosqlite.Cursor]]) -> _Done:
        async with transaction(self):
            cursor = await run()
            done = _Done(list(await cursor.fetchall()), cursor.rowcount, cursor.lastrowid)
            await cursor.close()  # COMMIT needs the statement finished (RETURNING rows are read)
        return done


class _Done:
    """The cursor of a lone write that has committed: its rows (RETURNING), rowcount, lastrowid."""

    def __init__(self, rows: list[sqlite3.Row], rowcount: int, lastrowid: int | None):
        self._rows = rows
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    async def fetchone(self) -> sqlite3.Row | None:
        return self._rows.pop(0) if self._rows else None

    async def fetchall(self) -> list[sqlite3.Row]:
        rows, self._rows = self._rows, []
        return rows

    async def close(self) -> None:
        self._rows = []

    def __aiter__(self) -> AsyncIterator[sqlite3.Row]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[sqlite3.Row]:
        while self._rows:
            yield self._rows.pop(0)


@asynccontextmanager
async def open_database(path: str | Path) -> AsyncIterator[Database]:
    """Connect (a writer and its readers) and migrate; closes the connections afterwards."""
    db = await Database.open(path)
    try:
        with write_patience(MIGRATION_PATIENCE_S):  # another process may be migrating or writing
            await migrate(db.writer)
        yield db
    finally:
        await db.close()
