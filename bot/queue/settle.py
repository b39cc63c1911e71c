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
from .stamina import StaminaService


async def expired_part(conn: aiosqlite.Connection, job: jobs_repo.JobRow, refund: int) -> int:
    """The part of a refund that expired: stamina charged before a daily reset that then topped the
    balance up would have been lost at that reset had it not been spent, so it does not come back
    (else spending everything just before the reset and cancelling after it would bank stamina).
    That part is at most the top-ups since the charge, less what other refunds already lost to them.
    It only reads: apply a due daily reset first (settle does, inside its transaction)."""
    if refund <= 0:
        return 0
    charges = [r for r in await stamina_repo.job_ledger(conn, job.id) if r.reason == "charge"]
    if not charges:
        return 0
    charged_at = charges[0].created_at
    topped_up = await stamina_repo.total_since(conn, job.owner_id, "daily_reset", charged_at)
    already = await jobs_repo.expired_since(conn, job.owner_id, charged_at)
    return max(0, min(refund, topped_up - already))


async def settle(
    conn: aiosqlite.Connection,
    job_id: int,
    state: str,
    done: int,
    error: str | None = None,
    now: float | None = None,
    from_states: tuple[str, ...] = jobs_repo.ACTIVE,
    stamina: StaminaService | None = None,
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
        # a done job refunds too when it delivered less than it was paid for (a generation's images)
        refund = refund_for(job.cost, job.total_steps, min(done, job.total_steps))
        expired = 0
        if stamina is not None and refund > 0:
            await stamina.ensure_user(job.owner_id)  # a due reset first: its top-up may expire part
            expired = await expired_part(conn, job, refund)
        refund -= expired
        ended = await jobs_repo.transition(
            conn, job_id, from_states, state, finished_at=now, error=error, refunded=refund, pid=None,
            refund_expired=expired,
        )  # fmt: skip
        if ended is None:
            return None
        if refund > 0 or expired > 0:  # an expired refund is a (zero) ledger row too: the member sees why
            what = f"{done}/{job.total_steps} {'steps' if job.kind == 'train' else 'images'} done"
            await stamina_repo.change_balance(
                conn,
                job.owner_id,
                refund,
                "refund",
                job_id=job_id,
                note=f"job #{job_id} {state}: {what}"
                + (f" ({expired} expired at a daily reset)" if expired else ""),
                now=now,
            )
        return ended
