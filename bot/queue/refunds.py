"""What cancelling a job now would give back, before the member confirms.

The arithmetic is :func:`bot.queue.settle.settle`'s, on the same inputs: the part of the cost
for the work not done (:func:`bot.queue.costs.refund_for`), less the part that expired at a
daily reset since the job was charged (``expired_part``). Nothing is written, except a daily
reset that is due for the owner (any balance read applies it), so the expired part is current.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from db import jobs as repo

from .costs import refund_for
from .settle import expired_part
from .stamina import StaminaService


@dataclass(frozen=True)
class RefundPreview:
    job_id: int
    kind: str  # train | generate
    state: str  # the job's state now (queued: cancelling ends it; running: it stops)
    done: int  # steps (training) or images (generation) that are kept and paid for
    total: int
    cost: int
    refund: int  # what comes back now
    expired: int  # what would have come back but expired at a daily reset since the charge

    @property
    def unit(self) -> str:
        return "steps" if self.kind == "train" else "images"


async def preview(conn: aiosqlite.Connection, stamina: StaminaService, job: repo.JobRow) -> RefundPreview:
    """The refund :func:`settle` would give ``job`` if it were cancelled at its current step."""
    done = job.step if job.kind == "train" or job.state != "queued" else 0
    full = refund_for(job.cost, job.total_steps, done)
    await stamina.balance(job.owner_id)  # a due reset first, in its own transaction, as settle does
    expired = await expired_part(conn, job, full)
    return RefundPreview(job.id, job.kind, job.state, done, job.total_steps, job.cost, full - expired, expired)
