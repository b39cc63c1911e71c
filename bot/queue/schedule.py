"""The daily stamina reset on time, with apscheduler.

Balances are right without it (every read applies a due reset, see ``stamina.py``); this
job makes the reset visible at the reset hour, e.g. in a member's ``/stamina`` history.
"""

from __future__ import annotations

import logging

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from .stamina import StaminaService

log = logging.getLogger(__name__)


def start_reset_scheduler(stamina: StaminaService) -> AsyncIOScheduler:
    """Run :meth:`StaminaService.reset_due` at the reset hour every day; call on a running loop."""

    async def reset() -> None:
        count = await stamina.reset_due()
        log.info("daily stamina reset: %d member(s) topped up", count)

    scheduler = AsyncIOScheduler(timezone=stamina.tz)
    trigger = CronTrigger(hour=stamina.settings.reset_hour, minute=0, second=5, timezone=stamina.tz)
    scheduler.add_job(reset, trigger, id="stamina-reset", misfire_grace_time=3600, coalesce=True)
    scheduler.start()
    return scheduler
