"""Direct messages when a job ends: who asked for them, and in which language. Plain values in and out.

A member turns them on with ``/notify on`` (the Discord locale they used is kept, so the message
reads in their language) and off with ``/notify off``. The Discord side (:mod:`bot.direct`) asks
:meth:`NotifyService.setting` when one of the member's jobs finishes or fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import aiosqlite

from db import notify as repo
from db.database import transaction

__all__ = ["MAX_LOCALE", "NotifyService"]

MAX_LOCALE = 16  # Discord's locales are short ("ja", "en-US", "zh-TW"); a longer one is not one


class NotifyService:
    def __init__(self, conn: aiosqlite.Connection, clock: Callable[[], float] = time.time):
        self.conn = conn
        self.clock = clock

    async def enable(self, user_id: int, locale: str) -> repo.NotifyRow:
        """DMs on for ``user_id``, written in ``locale``'s language (turning it on again updates it)."""
        async with transaction(self.conn):
            return await repo.enable(self.conn, user_id, (locale or "")[:MAX_LOCALE], self.clock())

    async def disable(self, user_id: int) -> bool:
        """DMs off; False when they were off already."""
        async with transaction(self.conn):
            return await repo.disable(self.conn, user_id)

    async def setting(self, user_id: int) -> repo.NotifyRow | None:
        """The member's choice: None when they get no DMs."""
        return await repo.get(self.conn, user_id)
