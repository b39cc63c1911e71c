"""How the dispatcher ends a job, or puts it back: by how its process ended, once, whatever the
database does meanwhile (every write waits until it lands, see ``db.database.until_written``).

Charges happen once at submission; refunds once at the end (the ledger allows no second one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import aiosqlite

from db import jobs as repo
from db.database import transaction, until_written

from ..registry import ModelRegistry
from ..settings import Settings
from .bus import EventBus, JobUpdate
from .outcome import bounded_step, failure_message
from .runner import Outcome
from .settle import settle
from .stamina import StaminaService

log = logging.getLogger(__name__)


class JobEnder:
    def __init__(
        self,
        conn: aiosqlite.Connection,
        settings: Settings,
        registry: ModelRegistry,
        bus: EventBus,
        clock: Callable[[], float],
        stamina: StaminaService | None,
        wake: Callable[[], None],
    ):
        self.conn = conn
        self.settings = settings
        self.registry = registry
        self.bus = bus
        self.clock = clock
        self.stamina = stamina
        self.wake = wake

    async def end(self, job: repo.JobRow, state: str, done: int, error: str | None = None) -> None:
        """Settle the job (state and refund) however long the database takes to take it."""
        ended = await until_written(
            lambda: settle(self.conn, job.id, state, done, error, now=self.clock(), stamina=self.stamina),
            f"job #{job.id}: ending it as {state}",
        )
        if ended is not None:
            self.bus.publish(JobUpdate(ended, "finished", {"state": state, "refunded": ended.refunded}))

    async def retry_or_fail(self, job: repo.JobRow, why: str) -> None:
        """Resume the job from its last saved state, or fail it with the refund after ``max_attempts``."""
        if job.attempts >= self.settings.max_attempts:
            await self.end(job, "failed", job.step, f"{why}, {job.attempts} times: the job was stopped")
            return
        log.warning("job #%d: %s; it resumes (start %d of %d)", job.id, why, job.attempts + 1,
                    self.settings.max_attempts)  # fmt: skip
        await self.requeue(job, {"reason": why}, error=f"restarted: {why}",
                           **({"step": 0} if job.kind == "generate" else {}))  # fmt: skip

    async def requeue(self, job: repo.JobRow, event: dict[str, Any], **values: Any) -> None:
        """Put a running job back in the queue; one cancelled meanwhile ends as cancelled instead."""

        async def requeue() -> repo.JobRow | None:
            async with transaction(self.conn):
                return await repo.transition(self.conn, job.id, ("running",), "queued", pid=None, **values)

        back = await until_written(requeue, f"job #{job.id}: putting it back in the queue")
        if back is not None:
            self.bus.publish(JobUpdate(back, "requeued", event))
            self.wake()
            return
        current = await repo.get_job(self.conn, job.id)
        if current is not None and current.state == "cancelling":
            await self.end(current, "cancelled", current.step)

    async def infrastructure_fault(self, job: repo.JobRow, what: str) -> None:
        """The trainer cannot even start (bad command, missing interpreter): every job would fail the
        same way, so put this one back without using up a start and pause the queue for an operator."""
        log.error("%s: the queue is paused until an operator fixes it ('python -m bot queue resume')", what)

        async def pause() -> None:
            async with transaction(self.conn):
                await repo.set_flag(self.conn, "paused", "1", None)

        await until_written(pause, "pausing the queue")
        await self.requeue(
            job, {"reason": what, "paused": True}, error=what, attempts=max(0, job.attempts - 1)
        )

    async def finish(self, job: repo.JobRow, outcome: Outcome) -> None:
        """End the job by how its process ended: done, cancelled, failed, or crashed or lost (retry)."""
        current = await repo.get_job(self.conn, job.id)
        if current is None or current.finished:
            return
        terminal = outcome.terminal or {}
        kind = terminal.get("event")
        if kind == "done":
            await self._done(current)
        elif kind == "failed":
            await self.end(
                current, "failed", current.step, failure_message(str(terminal.get("message", "failed")))
            )
        elif current.state == "cancelling":
            done = bounded_step(terminal.get("step"), current) if current.kind == "train" else current.step
            await self.end(current, "cancelled", done)
        elif outcome.lost:
            await self.retry_or_fail(current, outcome.lost)
        elif outcome.hung:
            await self.retry_or_fail(
                current, f"its process sent nothing for {self.settings.hang_timeout_s:g} s"
            )
        else:
            code = outcome.exit_code
            await self.retry_or_fail(current, f"its process stopped unexpectedly (exit code {code})")

    async def _done(self, job: repo.JobRow) -> None:
        """A training job is done whole; a generation is paid for the images it delivered only."""
        if job.kind == "train":
            await until_written(lambda: self.record_rate(job), f"job #{job.id}: its speed")
            await self.end(job, "done", job.total_steps)
            return
        delivered = sum(1 for _, _, grid in await repo.files(self.conn, job.id) if not grid)
        delivered = min(delivered, job.total_steps)
        missing = job.total_steps - delivered
        note = f"{missing} of {job.total_steps} images could not be made" if missing else None
        await self.end(job, "done", delivered, note)

    async def record_rate(self, job: repo.JobRow) -> None:
        entry = self.registry.entries.get(job.base_model)
        if entry is not None and entry.tiny:  # a tiny model's speed would make real ETAs say "0s"
            return
        if job.steps_per_s:
            async with transaction(self.conn):
                await repo.record_step_rate(
                    self.conn, job.family, job.resolution, job.batch_size, job.steps_per_s
                )
