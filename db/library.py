"""Each member's LoRA library: saved epochs they can use with /generate."""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiosqlite

_COLUMNS = "id, owner_id, name, path, base_model, family, job_id, epoch, trigger_word, created_at"


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


async def get_lora(conn: aiosqlite.Connection, owner_id: int, name: str) -> LoraRow | None:
    async with conn.execute(
        f"SELECT {_COLUMNS} FROM loras WHERE owner_id = ? AND name = ?", (owner_id, name)
    ) as cur:
        row = await cur.fetchone()
    return LoraRow(*row) if row else None


async def list_loras(conn: aiosqlite.Connection, owner_id: int) -> list[LoraRow]:
    async with conn.execute(
        f"SELECT {_COLUMNS} FROM loras WHERE owner_id = ? ORDER BY name", (owner_id,)
    ) as cur:
        return [LoraRow(*row) for row in await cur.fetchall()]


async def delete_lora(conn: aiosqlite.Connection, lora_id: int) -> None:
    await conn.execute("DELETE FROM loras WHERE id = ?", (lora_id,))
