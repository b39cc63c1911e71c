"""Each member's LoRA library: saved epochs they can use with /generate, some shared with the server."""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiosqlite


@dataclass(frozen=True)
class LoraRow:
    id: int
    owner_id: int
    name: str
    path: str
    base_model: str
    family: str
    job_id: int | None
    epoch: int | None
    trigger_word: str
    created_at: float
    shared_at: float | None = None  # None: only its owner sees it
    owner_name: str = ""  # the owner's display name when they shared it

    @property
    def shared(self) -> bool:
        return self.shared_at is not None


_COLUMNS = ", ".join(LoraRow.__dataclass_fields__)


async def insert_lora(
    conn: aiosqlite.Connection,
    owner_id: int,
    name: str,
    path: str,
    base_model: str,
    family: str,
    job_id: int | None,
    epoch: int | None,
    trigger_word: str = "",
) -> LoraRow:
    async with conn.execute(
        "INSERT INTO loras (owner_id, name, path, base_model, family, job_id, epoch, trigger_word, created_at)"
        f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
        (owner_id, name, path, base_model, family, job_id, epoch, trigger_word, time.time()),
    ) as cur:
        return LoraRow(*await cur.fetchone())


async def _one(conn: aiosqlite.Connection, sql: str, args: tuple) -> LoraRow | None:
    async with conn.execute(sql, args) as cur:
        row = await cur.fetchone()
    return LoraRow(*row) if row else None


async def get_lora(conn: aiosqlite.Connection, owner_id: int, name: str) -> LoraRow | None:
    return await _one(conn, f"SELECT {_COLUMNS} FROM loras WHERE owner_id = ? AND name = ?", (owner_id, name))


async def list_loras(conn: aiosqlite.Connection, owner_id: int) -> list[LoraRow]:
    async with conn.execute(
        f"SELECT {_COLUMNS} FROM loras WHERE owner_id = ? ORDER BY name", (owner_id,)
    ) as cur:
        return [LoraRow(*row) for row in await cur.fetchall()]


async def shared_loras(
    conn: aiosqlite.Connection, *, name: str | None = None, except_owner: int | None = None
) -> list[LoraRow]:
    """LoRAs shared with the server (named ``name`` when given), not those of ``except_owner``."""
    async with conn.execute(
        f"SELECT {_COLUMNS} FROM loras WHERE shared_at IS NOT NULL AND (? IS NULL OR name = ?)"
        " AND (? IS NULL OR owner_id != ?) ORDER BY name, owner_name, id",
        (name, name, except_owner, except_owner),
    ) as cur:
        return [LoraRow(*row) for row in await cur.fetchall()]


async def set_shared(
    conn: aiosqlite.Connection, lora_id: int, shared_at: float | None, owner_name: str = ""
) -> LoraRow | None:
    """Share (``shared_at`` set, with the owner's display name) or unshare (None) one LoRA."""
    return await _one(
        conn,
        f"UPDATE loras SET shared_at = ?, owner_name = ? WHERE id = ? RETURNING {_COLUMNS}",
        (shared_at, owner_name, lora_id),
    )


async def rename_lora(conn: aiosqlite.Connection, lora_id: int, name: str) -> LoraRow | None:
    return await _one(conn, f"UPDATE loras SET name = ? WHERE id = ? RETURNING {_COLUMNS}", (name, lora_id))


async def delete_lora(conn: aiosqlite.Connection, lora_id: int) -> None:
    await conn.execute("DELETE FROM loras WHERE id = ?", (lora_id,))
