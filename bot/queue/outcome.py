"""How a job's process ended, in words a member reads: failure messages and reported steps, checked."""

from __future__ import annotations

from typing import Any

from db import jobs as repo
from db.database import is_disk_full

DISK_FULL = "the server ran out of disk space"


def why(exc: BaseException) -> str:
    """What went wrong, in the member's words where we know them (a full disk)."""
    return DISK_FULL if is_disk_full(exc) else str(exc)


def failure_message(message: str) -> str:
    """A trainer's failure message; a full disk is said plainly first."""
    if "No space left on device" in message or "disk is full" in message:
        message = f"{DISK_FULL} ({message})"
    return message[:500]


def bounded_step(step: Any, job: repo.JobRow) -> int:
    """The step a cancelled trainer reports, held to what the job can have done."""
    return step if isinstance(step, int) and 0 <= step <= job.total_steps else job.step
