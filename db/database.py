"""SQLite through aiosqlite: connection settings and numbered migrations.

Migrations are the files ``db/migrations/NNNN_name.sql``. On start-up every file
numbered above the database's ``PRAGMA user_version`` is applied, each in its own
transaction together with the version bump, so a failed migration leaves the
database at the last good version.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
BUSY_TIMEOUT_MS = 5000


class MigrationError(RuntimeError):
    pass


class DatabaseBusy(RuntimeError):
    """A write could not get SQLite's lock in time (another process holds it): nothing was written.

    Its message is for the member: the command can simply be tried again.
    """

    def __init__(self, message: str = "The server is busy right now: nothing was changed. Try again in a moment."):
        super().__init__(message)


def migrations(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, Path]]:
    """(version, file) of every migration, in order; numbers must be 1, 2, 3, ... without gaps."""
    found = sorted((int(m.group(1)), p) for p in directory.iterdir() if (m := _MIGRATION_NAME.match(p.name)))
    for expected, (version, path) in enumerate(found, start=1):
        if version != expected:
            raise MigrationError(f"migration {path.name} should be numbered {expected:04d}")
    return found


async def connect(path: str | Path) -> aiosqlite.Connection:
    """Open the database with WAL, foreign keys and a busy timeout; rows come back as sqlite3.Row."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(str(path), isolation_level=None)  # we manage transactions
    conn.row_factory = aiosqlite.Row
    await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
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
        async with transaction(conn):
            current = await schema_version(conn)
            if current > len(available):
                raise MigrationError(
                    f"the database is at version {current}, newer than this code ({len(available)})"
                )
            if current == len(available):
                return current
            version, path = available[current]
            await _executescript(conn, path.read_text(encoding="utf-8"))
            await conn.execute(f"PRAGMA user_version = {version}")


async def _executescript(conn: aiosqlite.Connection, script: str) -> None:
    """Run a script statement by statement inside the open transaction (executescript would commit)."""
    import sqlite3

    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                await conn.execute(buffer)
            buffer = ""
    if buffer.strip():
        await conn.execute(buffer)


def _write_lock(conn: aiosqlite.Connection) -> asyncio.Lock:
    """One lock per connection: tasks sharing it take turns at transactions instead of nesting them."""
    lock = getattr(conn, "_lorabot_write_lock", None)
    if lock is None:
        lock = asyncio.Lock()
        conn._lorabot_write_lock = lock  # type: ignore[attr-defined]
    return lock


@asynccontextmanager
async def transaction(conn: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error: writes that belong together.

    Concurrent tasks on one connection wait for each other here. Read what a write depends on
    inside the block, so no other task's write can slip in between.
    """
    async with _write_lock(conn):
        try:
            await conn.execute("BEGIN IMMEDIATE")
            yield conn
            await conn.execute("COMMIT")
        except BaseException:
            # also after a cancelled BEGIN (it may still have run) or a failed COMMIT (disk full):
            # never leave the shared connection inside a transaction that holds SQLite's write lock
            await asyncio.shield(_rollback(conn))
            raise


async def _rollback(conn: aiosqlite.Connection) -> None:
    import contextlib
    import sqlite3

    with contextlib.suppress(sqlite3.OperationalError):  # no transaction was open
        await conn.execute("ROLLBACK")


@asynccontextmanager
async def open_database(path: str | Path) -> AsyncIterator[aiosqlite.Connection]:
    """Connect and migrate; closes the connection afterwards."""
    conn = await connect(path)
    try:
        await migrate(conn)
        yield conn
    finally:
        await conn.close()
