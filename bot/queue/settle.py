"""Ending a job: its final state and its refund, written together in one transaction.

Both the dispatcher and the queue service (cancel before start) end jobs through
:func:`settle`. The state transition is conditional on the job still being active, and the
ledger allows one refund per job, so a job is never settled (or refunded) twice.
"""

from __future__ import annotations

import time

import aiosqlite

from db import jobs as jobs_repo
from db import stamina as stamina_repo
from db.database import transaction

from .costs import refund_for


async def settle(
    conn: aiosqlite.Connection,
    job_id: int,
    state: str,
    done: int,
    error: str | None = None,
    now: float | None = None,
    from_states: tuple[str, ...] = jobs_repo.ACTIVE,
) -> jobs_repo.JobRow | None:
    """Finish an active job as ``state`` and refund the work not done (``done`` of its total).

    Returns the finished job, or None when it had already ended, or was not in one of
    ``from_states`` (nothing is written then).
    """
    now = time.time() if now is None else now
    async with transaction(conn):
        job = await jobs_repo.get_job(conn, job_id)
        if job is None or job.state not in from_states:
            return None
        refund = 0 if state == "done" else refund_for(job.cost, job.total_steps, done)
        ended = await jobs_repo.transition(
            conn, job_id, from_states, state, finished_at=now, error=error, refunded=refund, pid=None
        )
        if ended is None:
            return None
        if refund > 0:
            what = f"{done}/{job.total_steps} {'steps' if job.kind == 'train' else 'images'} done"
            await stamina_repo.change_balance(
                conn,
                job.owner_id,
                refund,
                "refund",
                job_id=job_id,
                note=f"job #{job_id} {state}: {what}",
                now=now,
            )
        return ended
