"""Who gets a direct message when a job of theirs ends, and in which Discord locale."""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite


@dataclass(frozen=True)
class NotifyRow:
    user_id: int
    locale: str  # the Discord locale the member turned it on from ("ja", "en-US"; "" unknown)
    created_at: float
    updated_at: float


_COLUMNS = ", ".join(NotifyRow.__dataclass_fields__)


async def enable(conn: aiosqlite.Connection, user_id: int, locale: str, now: float) -> NotifyRow:
    """Turn DMs on for the member (again: the locale is updated, created_at kept)."""
    async with conn.execute(
        "INSERT INTO dm_notifications (user_id, locale, created_at, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (user_id) DO UPDATE SET locale = excluded.locale, updated_at = excluded.updated_at"
        f" RETURNING {_COLUMNS}",
        (user_id, locale, now, now),
    ) as cur:
        return NotifyRow(**dict(await cur.fetchone()))


async def disable(conn: aiosqlite.Connection, user_id: int) -> bool:
    """Turn DMs off; False when they were not on."""
    async with conn.execute("DELETE FROM dm_notifications WHERE user_id = ?", (user_id,)) as cur:
        return cur.rowcount > 0


async def get(conn: aiosqlite.Connection, user_id: int) -> NotifyRow | None:
    async with conn.execute(f"SELECT {_COLUMNS} FROM dm_notifications WHERE user_id = ?", (user_id,)) as cur:
        row = await cur.fetchone()
    return NotifyRow(**dict(row)) if row else None
