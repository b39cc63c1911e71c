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


async def _expired_part(
    conn: aiosqlite.Connection, job: jobs_repo.JobRow, refund: int, stamina: StaminaService | None
) -> tuple[int, str]:
    """Stamina charged before the last daily reset would have expired at it: its refund can lift the
    balance to the allowance, not above (else spending all just before the reset and cancelling after
    it would bank stamina day after day). Applies any due reset first."""
    if stamina is None or refund <= 0:
        return refund, ""
    user = await stamina.ensure_user(job.owner_id)
    charges = [r for r in await stamina_repo.job_ledger(conn, job.id) if r.reason == "charge"]
    if not charges or charges[0].created_at >= stamina.period_start():
        return refund, ""
    allowance = stamina.tier(stamina.effective_tier(user)).allowance
    capped = max(0, min(refund, allowance - user.balance))
    return capped, (f" ({refund - capped} expired at the daily reset)" if capped < refund else "")


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
        refund = 0 if state == "done" else refund_for(job.cost, job.total_steps, done)
        refund, expired = await _expired_part(conn, job, refund, stamina)
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
                note=f"job #{job_id} {state}: {what}{expired}",
                now=now,
            )
        return ended
