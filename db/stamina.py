"""Users and their stamina ledger. Call the writers inside ``db.database.transaction``.

Every balance change goes through :func:`change_balance`, which updates the balance only if
it stays non-negative and writes the ledger row in the same transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiosqlite

REASONS = ("allowance", "daily_reset", "charge", "refund", "grant", "revoke")


class Overdraw(Exception):
    """The change would take the balance below zero; nothing was written."""

    def __init__(self, balance: int):
        self.balance = balance
        super().__init__(f"balance {balance} is too low")


@dataclass(frozen=True)
class UserRow:
    user_id: int
    balance: int
    reset_period: str
    tier: str
    tier_override: str | None


@dataclass(frozen=True)
class LedgerRow:
    id: int
    user_id: int
    delta: int
    balance_after: int
    reason: str
    job_id: int | None
    actor_id: int | None
    note: str
    created_at: float


async def get_user(conn: aiosqlite.Connection, user_id: int) -> UserRow | None:
    async with conn.execute(
        "SELECT user_id, balance, reset_period, tier, tier_override FROM users WHERE user_id = ?", (user_id,)
    ) as cur:
        row = await cur.fetchone()
    return UserRow(*row) if row else None


async def list_users(conn: aiosqlite.Connection) -> list[UserRow]:
    async with conn.execute(
        "SELECT user_id, balance, reset_period, tier, tier_override FROM users ORDER BY user_id"
    ) as cur:
        return [UserRow(*row) for row in await cur.fetchall()]


async def insert_user(
    conn: aiosqlite.Connection, user_id: int, allowance: int, period: str, tier: str, now: float | None = None
) -> UserRow:
    """A new member starts with the day's allowance (one ledger row says so)."""
    await conn.execute(
        "INSERT INTO users (user_id, balance, reset_period, tier) VALUES (?, 0, ?, ?)",
        (user_id, period, tier),
    )
    await change_balance(conn, user_id, allowance, "allowance", now=now)
    user = await get_user(conn, user_id)
    assert user is not None
    return user


async def set_tier(conn: aiosqlite.Connection, user_id: int, tier: str) -> None:
    await conn.execute("UPDATE users SET tier = ? WHERE user_id = ?", (tier, user_id))


async def set_tier_override(conn: aiosqlite.Connection, user_id: int, tier: str | None) -> None:
    await conn.execute("UPDATE users SET tier_override = ? WHERE user_id = ?", (tier, user_id))


async def set_reset_period(conn: aiosqlite.Connection, user_id: int, period: str) -> None:
    await conn.execute("UPDATE users SET reset_period = ? WHERE user_id = ?", (period, user_id))


async def change_balance(
    conn: aiosqlite.Connection,
    user_id: int,
    delta: int,
    reason: str,
    *,
    job_id: int | None = None,
    actor_id: int | None = None,
    note: str = "",
    now: float | None = None,
) -> int:
    """Add ``delta`` (negative for a debit) and write the ledger row; returns the new balance.

    Raises :class:`Overdraw` (writing nothing) when the balance would go below zero. The
    conditional UPDATE is atomic in SQLite, so concurrent debits can never overdraw.
    """
    if reason not in REASONS:
        raise ValueError(f"unknown ledger reason {reason!r}")
    async with conn.execute(
        "UPDATE users SET balance = balance + ? WHERE user_id = ? AND balance + ? >= 0 RETURNING balance",
        (delta, user_id, delta),
    ) as cur:
        row = await cur.fetchone()
    if row is None:
        user = await get_user(conn, user_id)
        if user is None:
            raise LookupError(f"no user {user_id}")
        raise Overdraw(user.balance)
    balance = int(row[0])
    await conn.execute(
        "INSERT INTO stamina_ledger (user_id, delta, balance_after, reason, job_id, actor_id, note, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (user_id, delta, balance, reason, job_id, actor_id, note, time.time() if now is None else now),
    )
    return balance


async def ledger(conn: aiosqlite.Connection, user_id: int, limit: int = 20) -> list[LedgerRow]:
    """The newest ``limit`` rows of a member's ledger (all with -1, as SQLite's LIMIT), newest first."""
    async with conn.execute(
        "SELECT id, user_id, delta, balance_after, reason, job_id, actor_id, note, created_at"
        " FROM stamina_ledger WHERE user_id = ? ORDER BY id DESC LIMIT ?",
        (user_id, limit),
    ) as cur:
        return [LedgerRow(*row) for row in await cur.fetchall()]


async def job_ledger(conn: aiosqlite.Connection, job_id: int) -> list[LedgerRow]:
    async with conn.execute(
        "SELECT id, user_id, delta, balance_after, reason, job_id, actor_id, note, created_at"
        " FROM stamina_ledger WHERE job_id = ? ORDER BY id",
        (job_id,),
    ) as cur:
        return [LedgerRow(*row) for row in await cur.fetchall()]


async def total_since(conn: aiosqlite.Connection, user_id: int, reason: str, since: float) -> int:
    """The sum of a member's ledger deltas for ``reason`` written after ``since``."""
    async with conn.execute(
        "SELECT COALESCE(SUM(delta), 0) FROM stamina_ledger WHERE user_id = ? AND reason = ? AND created_at > ?",
        (user_id, reason, since),
    ) as cur:
        return int((await cur.fetchone())[0])
