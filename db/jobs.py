"""Jobs: the queue's rows, their state machine, events, saved epochs and files.

States: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``, with
``cancelling`` between ``running`` and ``cancelled`` while the trainer stops, and
``running`` -> ``queued`` when a crashed job is put back to resume. Every transition is a
conditional UPDATE on the state it leaves, so two processes can never both make it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

ACTIVE = ("queued", "running", "cancelling")
FINISHED = ("done", "failed", "cancelled")

_COLUMNS = (
    "id, owner_id, kind, state, priority, title, dataset_id, base_model, family, resolution, batch_size,"
    " total_steps, cost, spec, folder, channel_id, message_id, step, epoch, loss, steps_per_s, device, pid,"
    " attempts, error, refunded, refund_expired, created_at, started_at, finished_at, last_event_at"
)


@dataclass(frozen=True)
class JobRow:
    id: int
    owner_id: int
    kind: str
    state: str
    priority: int
    title: str
    dataset_id: int | None
    base_model: str
    family: str
    resolution: int
    batch_size: int
    total_steps: int
    cost: int
    spec: dict[str, Any] = field(repr=False)
    folder: str
    channel_id: int | None
    message_id: int | None
    step: int
    epoch: int
    loss: float | None
    steps_per_s: float | None
    device: str | None
    pid: int | None
    attempts: int
    error: str | None
    refunded: int
    refund_expired: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    last_event_at: float | None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


@dataclass(frozen=True)
class NewJob:
    owner_id: int
    kind: str
    priority: int
    title: str
    dataset_id: int | None
    base_model: str
    family: str
    resolution: int
    batch_size: int
    total_steps: int
    cost: int
    spec: dict[str, Any]
    folder: str
    channel_id: int | None = None


@dataclass(frozen=True)
class EpochRow:
    job_id: int
    epoch: int
    step: int
    path: str
    preview_path: str | None


def _job(row: aiosqlite.Row) -> JobRow:
    values = dict(row)
    values["spec"] = json.loads(values["spec"])
    return JobRow(**values)


async def insert_job(conn: aiosqlite.Connection, job: NewJob, now: float | None = None) -> JobRow:
    async with conn.execute(
        "INSERT INTO jobs (owner_id, kind, state, priority, title, dataset_id, base_model, family, resolution,"
        " batch_size, total_steps, cost, spec, folder, channel_id, created_at)"
        f" VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
        (
            job.owner_id, job.kind, job.priority, job.title, job.dataset_id, job.base_model, job.family,
            job.resolution, job.batch_size, job.total_steps, job.cost, json.dumps(job.spec), job.folder,
            job.channel_id, time.time() if now is None else now,
        ),
    ) as cur:  # fmt: skip
        return _job(await cur.fetchone())


async def get_job(conn: aiosqlite.Connection, job_id: int) -> JobRow | None:
    async with conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)) as cur:
        row = await cur.fetchone()
    return _job(row) if row else None


async def list_jobs(
    conn: aiosqlite.Connection,
    *,
    owner_id: int | None = None,
    states: tuple[str, ...] | None = None,
    kind: str | None = None,
    limit: int = 100,
) -> list[JobRow]:
    """Jobs, newest first, filtered by owner, states and kind; ``limit`` -1: all (SQLite's LIMIT)."""
    where, args = [], []
    if owner_id is not None:
        where.append("owner_id = ?")
        args.append(owner_id)
    if states:
        where.append(f"state IN ({','.join('?' * len(states))})")
        args.extend(states)
    if kind:
        where.append("kind = ?")
        args.append(kind)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    async with conn.execute(
        f"SELECT {_COLUMNS} FROM jobs {clause} ORDER BY id DESC LIMIT ?", (*args, limit)
    ) as cur:
        return [_job(row) for row in await cur.fetchall()]


async def queued_in_order(conn: aiosqlite.Connection, kind: str) -> list[JobRow]:
    """The waiting jobs of one kind in the order they will run: priority first, then FIFO."""
    async with conn.execute(
        f"SELECT {_COLUMNS} FROM jobs WHERE kind = ? AND state = 'queued' ORDER BY priority DESC, id", (kind,)
    ) as cur:
        return [_job(row) for row in await cur.fetchall()]


async def count_active(conn: aiosqlite.Connection, owner_id: int) -> int:
    async with conn.execute(
        "SELECT COUNT(*) FROM jobs WHERE owner_id = ? AND state IN ('queued', 'running', 'cancelling')",
        (owner_id,),
    ) as cur:
        return int((await cur.fetchone())[0])


async def claim_next(
    conn: aiosqlite.Connection,
    kind: str,
    device: str,
    now: float | None = None,
    admits: Callable[[str, str], bool] | None = None,
) -> JobRow | None:
    """Take the first queued job of ``kind`` for ``device`` (queued -> running), or None.

    ``admits(base_model, family)``: only a job it admits is taken (the first of the queue's
    order that it admits; the others stay queued for other devices)."""
    now = now or time.time()
    where = "kind = ? AND state = 'queued'"
    if admits is None:
        pick = f"(SELECT id FROM jobs WHERE {where} ORDER BY priority DESC, id LIMIT 1)"
        args: tuple[Any, ...] = (kind,)
    else:
        async with conn.execute(
            f"SELECT id, base_model, family FROM jobs WHERE {where} ORDER BY priority DESC, id LIMIT 500",
            (kind,),
        ) as cur:
            ids = [job_id for job_id, model, family in await cur.fetchall() if admits(model, family)]
        if not ids:
            return None
        pick, args = "?", (ids[0],)
    async with conn.execute(
        "UPDATE jobs SET state = 'running', device = ?, attempts = attempts + 1, started_at = ?, pid = NULL,"
        f" last_event_at = ? WHERE id = {pick} AND state = 'queued' RETURNING {_COLUMNS}",
        (device, now, now, *args),
    ) as cur:
        row = await cur.fetchone()
    return _job(row) if row else None


async def uncount_attempt(conn: aiosqlite.Connection, job_id: int) -> None:
    """A start that the dispatcher itself interrupted (a clean shutdown) does not count."""
    await conn.execute(
        "UPDATE jobs SET attempts = MAX(0, attempts - 1) WHERE id = ? AND state IN ('running', 'cancelling')",
        (job_id,),
    )


async def transition(
    conn: aiosqlite.Connection, job_id: int, from_states: tuple[str, ...], to_state: str, **values: Any
) -> JobRow | None:
    """Move a job from one of ``from_states`` to ``to_state`` (setting ``values``); None if it was not there."""
    sets = ["state = ?"] + [f"{name} = ?" for name in values]
    async with conn.execute(
        f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? AND state IN ({','.join('?' * len(from_states))})"
        f" RETURNING {_COLUMNS}",
        (to_state, *values.values(), job_id, *from_states),
    ) as cur:
        row = await cur.fetchone()
    return _job(row) if row else None


async def update_progress(conn: aiosqlite.Connection, job_id: int, **values: Any) -> None:
    """Progress columns (step, epoch, loss, steps_per_s, pid, last_event_at, message_id, ...)."""
    if values:
        sets = ", ".join(f"{name} = ?" for name in values)
        await conn.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*values.values(), job_id))


#: The most one stored event's JSON takes; a bigger one is stored shortened (see :func:`bounded_payload`).
MAX_EVENT_BYTES = 4096


async def add_event(conn: aiosqlite.Connection, job_id: int, event: dict[str, Any]) -> None:
    """Store one event, its JSON at most :data:`MAX_EVENT_BYTES` (which events to keep: the caller)."""
    await conn.execute(
        "INSERT INTO job_events (job_id, kind, payload, created_at) VALUES (?, ?, ?, ?)",
        (job_id, str(event.get("event", "?"))[:40], bounded_payload(event), time.time()),
    )


async def count_events(conn: aiosqlite.Connection, job_id: int) -> tuple[int, int]:
    """(all events, step events) stored for a job."""
    async with conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(kind = 'step'), 0) FROM job_events WHERE job_id = ?", (job_id,)
    ) as cur:
        total, steps = await cur.fetchone()
    return int(total), int(steps)


def bounded_payload(event: dict[str, Any], limit: int = MAX_EVENT_BYTES) -> str:
    """``event`` as JSON of at most ``limit`` bytes: as it is when it fits; else with lists cut to
    their first 8 items and strings shortened (``"truncated": true``); else its kind alone."""
    text = json.dumps(event, default=str)
    if len(text.encode()) <= limit:
        return text
    slim: dict[str, Any] = {}
    for key, value in list(event.items())[:64]:
        if isinstance(value, list):
            slim[key] = [v[:300] if isinstance(v, str) else v for v in value[:8]]
            slim[f"{key}_count"] = len(value)
        elif isinstance(value, str):
            slim[key] = value[:500]
        else:
            slim[key] = value
    slim["truncated"] = True
    text = json.dumps(slim, default=str)
    if len(text.encode()) <= limit:
        return text
    return json.dumps({"event": str(event.get("event", "?"))[:40], "truncated": True})


async def events(conn: aiosqlite.Connection, job_id: int, kind: str | None = None) -> list[dict[str, Any]]:
    query = (
        "SELECT payload FROM job_events WHERE job_id = ?" + (" AND kind = ?" if kind else "") + " ORDER BY id"
    )
    async with conn.execute(query, (job_id, kind) if kind else (job_id,)) as cur:
        return [json.loads(row[0]) for row in await cur.fetchall()]


async def save_epoch(conn: aiosqlite.Connection, job_id: int, epoch: int, step: int, path: str) -> None:
    await conn.execute(
        "INSERT INTO job_epochs (job_id, epoch, step, path, created_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (job_id, epoch) DO UPDATE SET step = excluded.step, path = excluded.path",
        (job_id, epoch, step, path, time.time()),
    )


async def set_preview(conn: aiosqlite.Connection, job_id: int, epoch: int, path: str) -> None:
    await conn.execute(
        "UPDATE job_epochs SET preview_path = ? WHERE job_id = ? AND epoch = ?", (path, job_id, epoch)
    )


async def epochs(conn: aiosqlite.Connection, job_id: int) -> list[EpochRow]:
    async with conn.execute(
        "SELECT job_id, epoch, step, path, preview_path FROM job_epochs WHERE job_id = ? ORDER BY epoch",
        (job_id,),
    ) as cur:
        return [EpochRow(*row) for row in await cur.fetchall()]


async def add_file(conn: aiosqlite.Connection, job_id: int, index: int, path: str, is_grid: bool) -> None:
    await conn.execute(
        "INSERT OR REPLACE INTO job_files (job_id, idx, path, is_grid, created_at) VALUES (?, ?, ?, ?, ?)",
        (job_id, index, path, int(is_grid), time.time()),
    )


async def files(conn: aiosqlite.Connection, job_id: int) -> list[tuple[int, str, bool]]:
    async with conn.execute(
        "SELECT idx, path, is_grid FROM job_files WHERE job_id = ? ORDER BY idx", (job_id,)
    ) as cur:
        return [(int(i), p, bool(g)) for i, p, g in await cur.fetchall()]


async def expired_since(conn: aiosqlite.Connection, owner_id: int, since: float) -> int:
    """Refunds withheld (expired stamina) from a member's jobs that ended after ``since``."""
    async with conn.execute(
        "SELECT COALESCE(SUM(refund_expired), 0) FROM jobs WHERE owner_id = ? AND finished_at > ?",
        (owner_id, since),
    ) as cur:
        return int((await cur.fetchone())[0])


async def get_flag(conn: aiosqlite.Connection, key: str) -> str | None:
    async with conn.execute("SELECT value FROM queue_flags WHERE key = ?", (key,)) as cur:
        row = await cur.fetchone()
    return row[0] if row else None


async def set_flag(conn: aiosqlite.Connection, key: str, value: str, changed_by: int | None) -> None:
    await conn.execute(
        "INSERT INTO queue_flags (key, value, changed_by, changed_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value, changed_by = excluded.changed_by,"
        " changed_at = excluded.changed_at",
        (key, value, changed_by, time.time()),
    )


async def step_rate(
    conn: aiosqlite.Connection, family: str, resolution: int, batch_size: int
) -> float | None:
    async with conn.execute(
        "SELECT steps_per_s FROM step_rates WHERE family = ? AND resolution = ? AND batch_size = ?",
        (family, resolution, batch_size),
    ) as cur:
        row = await cur.fetchone()
    return float(row[0]) if row else None


async def step_rates(conn: aiosqlite.Connection, family: str) -> list[tuple[int, int, float]]:
    """(resolution, batch_size, steps/s) measured for a family."""
    async with conn.execute(
        "SELECT resolution, batch_size, steps_per_s FROM step_rates WHERE family = ?", (family,)
    ) as cur:
        return [(int(r), int(b), float(s)) for r, b, s in await cur.fetchall()]


async def record_step_rate(
    conn: aiosqlite.Connection, family: str, resolution: int, batch_size: int, steps_per_s: float
) -> None:
    """Fold one finished job's speed into the running average (the last 10 jobs weigh most)."""
    await conn.execute(
        "INSERT INTO step_rates (family, resolution, batch_size, steps_per_s, samples) VALUES (?, ?, ?, ?, 1)"
        " ON CONFLICT (family, resolution, batch_size) DO UPDATE SET"
        " steps_per_s = (steps_per_s * MIN(samples, 9) + excluded.steps_per_s) / (MIN(samples, 9) + 1),"
        " samples = samples + 1",
        (family, resolution, batch_size, steps_per_s),
    )


async def has_queued(conn: aiosqlite.Connection, kind: str) -> bool:
    """Is a job of ``kind`` waiting? A cheap read, so an idle dispatcher never takes the write lock."""
    async with conn.execute("SELECT 1 FROM jobs WHERE kind = ? AND state = 'queued' LIMIT 1", (kind,)) as cur:
        return await cur.fetchone() is not None


async def unannounced(conn: aiosqlite.Connection, limit: int = 100) -> list[JobRow]:
    """Finished jobs whose end has not been posted yet, oldest first."""
    async with conn.execute(
        f"SELECT {_COLUMNS} FROM jobs WHERE announced = 0 AND state IN ('done', 'failed', 'cancelled')"
        " ORDER BY id LIMIT ?",
        (limit,),
    ) as cur:
        return [_job(row) for row in await cur.fetchall()]


async def claim_announcement(conn: aiosqlite.Connection, job_id: int) -> bool:
    """Mark a finished job's end as posted; True for the one caller that marked it (it posts)."""
    async with conn.execute(
        "UPDATE jobs SET announced = 1 WHERE id = ? AND announced = 0 AND state IN ('done', 'failed', 'cancelled')",
        (job_id,),
    ) as cur:
        return cur.rowcount == 1
