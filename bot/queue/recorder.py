"""A job's events into the database, off the path that reads the trainer's output.

The worker hands each event to :meth:`EventRecorder.add`, which never waits and never raises, so
a database that is locked by another process or a disk that is full never stalls or kills a
healthy trainer. One task per job attempt writes the events in order and retries a failed write
with backoff until it lands; meanwhile the pending events are kept in memory, bounded: past
``limit`` pending events the oldest step events give way (later ones carry the same progress),
and every other event is kept. An event the recorder refuses (a path outside the job's folder)
is logged and dropped; the job goes on. Subscribers hear of an event once it is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

import aiosqlite

from db import jobs as repo
from db.database import transaction, until_written

from .bus import EventBus, JobUpdate
from .record import record_event

log = logging.getLogger(__name__)
PENDING_LIMIT = 1000


class EventRecorder:
    def __init__(
        self,
        conn: aiosqlite.Connection,
        job: repo.JobRow,
        bus: EventBus,
        clock: Callable[[], float],
        limit: int = PENDING_LIMIT,
    ):
        self.conn = conn
        self.job = job
        self.bus = bus
        self.clock = clock
        self.limit = limit
        self.dropped_steps = 0
        self.refused = 0
        self._started: dict[str, Any] | None = None  # this attempt's started event (for the speed)
        self._pending: deque[tuple[str, Any, float]] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._run(), name=f"record-{job.id}")

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, event: dict[str, Any]) -> None:
        """Queue one parsed event of the trainer (returns at once)."""
        if event["event"] == "step" and len(self._pending) >= self.limit:
            self._drop_oldest_step()
        self._pending.append(("event", event, self.clock()))
        self._wake.set()

    def started(self, pid: int | None, where: str | None = None) -> None:
        """The process is up: its pid (for recovery and cancels across restarts) and where it runs
        (a cluster node) are stored."""
        self._pending.append(("pid", (pid, where), self.clock()))
        self._wake.set()

    async def close(self) -> None:
        """Wait until everything queued is stored (retrying as long as it takes), then stop."""
        self._closing = True
        self._wake.set()
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            raise

    def _drop_oldest_step(self) -> None:
        for i, (what, item, _) in enumerate(self._pending):
            if what == "event" and item["event"] == "step":
                del self._pending[i]
                self.dropped_steps += 1
                return

    async def _run(self) -> None:
        while True:
            while self._pending:
                what, item, at = self._pending.popleft()
                try:
                    if what == "pid":
                        await until_written(
                            partial(self._store_pid, item, at), f"job #{self.job.id}: its pid"
                        )
                    else:
                        await self._store_event(item, at)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug, not the database: this event is lost, the job goes on
                    log.exception("job #%d: could not record a %s", self.job.id, what)
            if self._closing:
                return
            self._wake.clear()
            await self._wake.wait()

    async def _store_pid(self, started: tuple[int | None, str | None], at: float) -> None:
        pid, where = started
        values = {"device": where} if where else {}
        async with transaction(self.conn):
            await repo.update_progress(self.conn, self.job.id, pid=pid, last_event_at=at, **values)

    async def _store_event(self, event: dict[str, Any], at: float) -> None:
        if event["event"] == "started":
            self._started = event
        try:
            updated = await until_written(
                partial(record_event, self.conn, self.job, event, at, self._started),
                f"job #{self.job.id}: recording its {event['event']} event",
            )
        except ValueError as exc:  # refused: untrusted path, field out of range
            self.refused += 1
            log.warning("job #%d: refused a %s event from its process: %s", self.job.id, event["event"], exc)
            return
        self.bus.publish(JobUpdate(updated, event["event"], event))
