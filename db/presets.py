"""Saved training presets: a member's named sets of /train options."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

_COLUMNS = "id, owner_id, name, options, created_at, updated_at"


@dataclass(frozen=True)
class PresetRow:
    id: int
    owner_id: int
    name: str
    options: dict[str, Any] = field(repr=False)
    created_at: float
    updated_at: float


def _preset(row: aiosqlite.Row) -> PresetRow:
    values = dict(row)
    values["options"] = json.loads(values["options"])
    return PresetRow(**values)


async def save_preset(
    conn: aiosqlite.Connection, owner_id: int, name: str, options: dict[str, Any], now: float
) -> PresetRow:
    """Insert a preset, or replace the options of the member's preset of that name (any case).

    A replaced preset keeps its id and created_at and takes the new spelling of its name.
    """
    async with conn.execute(
        "INSERT INTO presets (owner_id, name, options, created_at, updated_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (owner_id, name) DO UPDATE SET"
        " name = excluded.name, options = excluded.options, updated_at = excluded.updated_at"
        f" RETURNING {_COLUMNS}",
        (owner_id, name, json.dumps(options, sort_keys=True), now, now),
    ) as cur:
        return _preset(await cur.fetchone())


async def get_preset(conn: aiosqlite.Connection, owner_id: int, name: str) -> PresetRow | None:
    async with conn.execute(
        f"SELECT {_COLUMNS} FROM presets WHERE owner_id = ? AND name = ?", (owner_id, name)
    ) as cur:
        row = await cur.fetchone()
    return _preset(row) if row else None


async def list_presets(conn: aiosqlite.Connection, owner_id: int) -> list[PresetRow]:
    """The member's presets by name."""
    async with conn.execute(
        f"SELECT {_COLUMNS} FROM presets WHERE owner_id = ? ORDER BY name", (owner_id,)
    ) as cur:
        return [_preset(row) for row in await cur.fetchall()]


async def count_presets(conn: aiosqlite.Connection, owner_id: int) -> int:
    async with conn.execute("SELECT COUNT(*) FROM presets WHERE owner_id = ?", (owner_id,)) as cur:
        row = await cur.fetchone()
    return int(row[0])


async def delete_preset(conn: aiosqlite.Connection, owner_id: int, name: str) -> bool:
    """Delete the member's preset of that name; False when there was none."""
    async with conn.execute("DELETE FROM presets WHERE owner_id = ? AND name = ?", (owner_id, name)) as cur:
        return cur.rowcount > 0
