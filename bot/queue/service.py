"""The queue as a member and an operator see it: enqueue and charge, look jobs up, cancel, pause.
Plain values. Training estimates and submissions are :mod:`bot.queue.training`'s; generation's are
:mod:`bot.queue.generation`'s; both end in :meth:`QueueService.enqueue`.

Submitting a job snapshots what it needs into its own folder (``DATA_DIR/jobs/<uuid>``), then
debits the stamina and inserts the job in ONE transaction: the debit is a conditional update,
so concurrent submissions can never overdraw, and a failed insert charges nothing. The cost
charged is computed by the same function, on the same snapshot, as the estimate shown; a
caller that showed an estimate passes it as ``expected_cost`` and the submission is refused if
the job changed since (e.g. images were added).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

import aiosqlite

from db import jobs as repo
from db import stamina as stamina_repo
from db.database import transaction

from ..datasets.service import DatasetService
from ..errors import MemberError
from ..ids import parse_id
from ..registry import ModelRegistry
from ..settings import Settings
from .common import BOT_KEYS, QueueError, job_number, no_epoch, no_job
from .refunds import RefundPreview
from .settle import settle
from .stamina import StaminaService
from .training import TrainingEstimate, TrainingSubmissions, _file_name
from .trust import trusted_job_file

__all__ = [
    "BOT_KEYS", "QueueError", "QueueService", "TrainingEstimate", "_file_name", "job_number", "no_epoch", "no_job",
]  # fmt: skip


class QueueService(TrainingSubmissions):
    def __init__(
        self,
        conn: aiosqlite.Connection,
        settings: Settings,
        registry: ModelRegistry,
        datasets: DatasetService,
        stamina: StaminaService,
        clock: Callable[[], float] = time.time,
        bus=None,
    ):
        self.conn = conn
        self.settings = settings
        self.registry = registry
        self.datasets = datasets
        self.stamina = stamina
        self.clock = clock
        self.on_change: Callable[[], None] | None = None  # the dispatcher's wake-up, when one runs here
        self.cluster_gpus = 0  # GPUs of a Ray cluster that train too (for ETAs), when one is joined
        self.bus = bus

    async def enqueue(self, new: repo.NewJob, roles: Iterable[str] | None, cheaper: str) -> repo.JobRow:
        """Insert a job at its owner's tier priority and charge its cost, in one transaction.

        Refused (nothing written) over the member's job limit or balance; ``cheaper`` says how to
        make the job cost less. Subscribers hear "queued" afterwards.
        """
        async with transaction(self.conn):
            user = await self.stamina.ensure_user(new.owner_id, roles)
            tier = self.stamina.tier(self.stamina.effective_tier(user))
            await self._check_room(new.owner_id, tier.max_queued)
            job = await repo.insert_job(
                self.conn, dataclasses.replace(new, priority=tier.priority), self.clock()
            )
            await self._charge(job, cheaper)
        self._publish(job, "queued")
        return job

    async def _check_room(self, owner_id: int, max_queued: int) -> None:
        active = await repo.count_active(self.conn, owner_id)
        if active >= max_queued:
            raise QueueError(
                "you already have {active} of your {limit} jobs queued or running: wait for one to finish "
                "or cancel one in /queue",
                active=active, limit=max_queued,
            )  # fmt: skip

    async def _charge(self, job: repo.JobRow, cheaper: str) -> None:
        if job.cost == 0:
            return
        try:
            await stamina_repo.change_balance(
                self.conn, job.owner_id, -job.cost, "charge", job_id=job.id, note=f"job #{job.id} {job.title}",
                now=self.clock(),
            )  # fmt: skip
        except stamina_repo.Overdraw as exc:
            reset = self.stamina.now()
            raise QueueError(
                "this job costs {cost} stamina and you have {balance}: {cheaper}, or wait for the daily "
                "reset (in {wait})",
                cost=job.cost, balance=exc.balance, cheaper=MemberError(cheaper),
                wait=_until_reset(self.stamina, reset),
            ) from None  # fmt: skip

    async def epoch_file(self, owner_id: int, job_id: int | str, epoch: int | str) -> str:
        """The saved epoch's file, resolved, checked again to be in the job's output folder (ids as
        Discord sent them, or ints)."""
        job = await self.job(owner_id, job_id)
        number = parse_id(epoch)
        for row in await repo.epochs(self.conn, job.id):
            if row.epoch == number:
                real = await asyncio.to_thread(trusted_job_file, job.folder, row.path, ".safetensors")
                if real is not None:
                    return str(real)
        raise no_epoch(job.id, epoch)

    # Jobs ------------------------------------------------------------------------------------------

    async def job(self, user_id: int, job_id: int | str, operator: bool = False) -> repo.JobRow:
        """One job, if the caller may see it (its owner, or an operator); ``job_id`` may be what
        Discord sent ("#12"): see :func:`job_number`."""
        job = await repo.get_job(self.conn, job_number(job_id))
        if job is None or (job.owner_id != user_id and not operator):
            raise no_job(job_id)
        return job

    async def get_job(self, job_id: int) -> repo.JobRow | None:
        """Any job by id, whoever owns it (the progress notifier's read); None when there is none."""
        number = parse_id(job_id)
        return None if number is None else await repo.get_job(self.conn, number)

    async def list_jobs(
        self, owner_id: int | None, *, active: bool = False, kind: str | None = None, limit: int = 100
    ) -> list[repo.JobRow]:
        """Jobs newest first: one member's (or everyone's with None), only active ones if ``active``."""
        states = repo.ACTIVE if active else None
        return await repo.list_jobs(self.conn, owner_id=owner_id, states=states, kind=kind, limit=limit)

    async def epochs(self, job_id: int, *, on_disk: bool = False) -> list[repo.EpochRow]:
        """A job's saved epochs, oldest first; ``on_disk``: only those whose file is still there (in
        the job's own output folder)."""
        rows = await repo.epochs(self.conn, job_id)
        if not on_disk:
            return rows
        job = await repo.get_job(self.conn, job_id)
        return [e for e in rows if job and trusted_job_file(job.folder, e.path, ".safetensors")]

    async def files(self, job_id: int) -> list[tuple[int, str, bool]]:
        """The images a generation job made: (index, path, is the grid)."""
        return await repo.files(self.conn, job_id)

    async def set_progress_message(self, job_id: int, message_id: int) -> None:
        """Remember the job's progress message, so a restarted bot edits the same one."""
        async with transaction(self.conn):
            await repo.update_progress(self.conn, job_id, message_id=message_id)

    async def claim_announcement(self, job_id: int) -> bool:
        """Mark a finished job's end as posted; True only for the one caller that marked it."""
        return await repo.claim_announcement(self.conn, job_id)

    async def refund_preview(self, user_id: int, job_id: int | str, operator: bool = False) -> RefundPreview:
        """What cancelling the job now would give back, computed as :func:`settle` will (nothing is written
        but a due daily reset of the owner, which any balance read applies)."""
        from .refunds import preview

        job = await self.job(user_id, job_id, operator)
        return await preview(self.conn, self.stamina, job)

    async def cancel(self, user_id: int, job_id: int | str, operator: bool = False) -> repo.JobRow:
        """Cancel a job: a waiting one ends now with a full refund; a running one is told to stop
        (the dispatcher stops its trainer and refunds the steps not trained)."""
        job = await self.job(user_id, job_id, operator)
        if job.finished:
            raise QueueError(
                "job #{job} has already ended ({state})", job=job.id, state=MemberError(job.state)
            )
        if job.state == "queued":
            done = job.step if job.kind == "train" else 0  # a job waiting to resume keeps what it trained
            ended = await settle(
                self.conn,
                job.id,
                "cancelled",
                done,
                now=self.clock(),
                from_states=("queued",),
                stamina=self.stamina,
            )
            if ended is not None:
                self._publish(ended, "finished", {"state": "cancelled", "refunded": ended.refunded})
                return ended
        async with transaction(self.conn):
            moved = await repo.transition(self.conn, job.id, ("running",), "cancelling")
        self._changed()
        return moved or await self.job(user_id, job.id, operator)

    async def pause(self, actor_id: int | None) -> None:
        async with transaction(self.conn):
            await repo.set_flag(self.conn, "paused", "1", actor_id)

    async def resume(self, actor_id: int | None) -> None:
        async with transaction(self.conn):
            await repo.set_flag(self.conn, "paused", "0", actor_id)
        self._changed()

    async def paused(self) -> bool:
        return await repo.get_flag(self.conn, "paused") == "1"

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _publish(self, job: repo.JobRow, kind: str, event: dict[str, Any] | None = None) -> None:
        """Tell the subscribers (the Discord layer) and wake the dispatcher."""
        if self.bus is not None:
            from .bus import JobUpdate

            self.bus.publish(JobUpdate(job, kind, event or {}))
        self._changed()


def _until_reset(stamina: StaminaService, now) -> str:
    from .eta import format_duration
    from .stamina import next_reset

    when = next_reset(now, stamina.tz, stamina.settings.reset_hour)
    return format_duration(when.timestamp() - now.timestamp())  # real seconds, across DST too
