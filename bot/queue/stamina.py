"""Stamina: the daily allowance, tiers, the ledger, grants and revokes. Plain values in and out.

The daily reset is derived, not scheduled: a member's row stores the reset period (the local
date whose reset hour started it) it was last topped up in, and every read tops up a member
whose period is stale, so a bot that was down at reset time still shows the right balance.
The scheduler job (:func:`bot.queue.schedule.start_reset_scheduler`) only makes it visible on
time. A reset tops the balance up to the allowance; stamina above it (grants) is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import aiosqlite

from db import stamina as repo
from db.database import transaction

from ..errors import MemberError
from ..settings import Settings, Tier

DEFAULT_TIER = "default"


class StaminaError(MemberError):
    """A stamina request that cannot be done; the message is for the person."""


@dataclass(frozen=True)
class Balance:
    user_id: int
    balance: int
    allowance: int
    tier: str
    priority: int
    max_queued: int
    next_reset: datetime


def reset_period(now: datetime, tz: ZoneInfo, hour: int) -> date:
    """The local date whose reset (at ``hour`` in ``tz``) started the period ``now`` is in."""
    local = now.astimezone(tz)
    return local.date() if local.hour >= hour else local.date() - timedelta(days=1)


def next_reset(now: datetime, tz: ZoneInfo, hour: int) -> datetime:
    """The next moment the allowance resets (aware datetime in ``tz``)."""
    period = reset_period(now, tz, hour) + timedelta(days=1)
    return datetime(period.year, period.month, period.day, hour, tzinfo=tz)


class StaminaService:
    def __init__(
        self, conn: aiosqlite.Connection, settings: Settings, clock: Callable[[], float] = time.time
    ):
        self.conn = conn
        self.settings = settings
        self.clock = clock
        self.tz = ZoneInfo(settings.reset_timezone)

    # Tiers -----------------------------------------------------------------------------------------

    def tier_for_roles(self, roles: Iterable[str | int]) -> str:
        """The best tier (largest allowance, then priority) any of the roles (ids or names) grants."""
        names = {str(r).casefold() for r in roles}
        best = DEFAULT_TIER
        for key, tier in self.settings.tiers.items():
            matches = names & {r.casefold() for r in tier.roles}
            if matches and (best == DEFAULT_TIER or self._key(tier) > self._key(self.tier(best))):
                best = key
        return best

    @staticmethod
    def _key(tier: Tier) -> tuple[int, int]:
        return tier.allowance, tier.priority

    def tier(self, name: str) -> Tier:
        tier = self.settings.tiers.get(name)
        if tier is None:
            return Tier(
                allowance=self.settings.daily_stamina, priority=0, max_queued=self.settings.max_queued_jobs
            )
        if tier.max_queued is None:
            return tier.model_copy(update={"max_queued": self.settings.max_queued_jobs})
        return tier

    def effective_tier(self, user: repo.UserRow) -> str:
        if user.tier_override and (
            user.tier_override in self.settings.tiers or user.tier_override == DEFAULT_TIER
        ):
            return user.tier_override
        return user.tier if user.tier in self.settings.tiers else DEFAULT_TIER

    # Reads -----------------------------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=self.tz)

    def period_start(self) -> float:
        """When the current reset period began (a Unix time)."""
        day = reset_period(self.now(), self.tz, self.settings.reset_hour)
        return datetime(day.year, day.month, day.day, self.settings.reset_hour, tzinfo=self.tz).timestamp()

    def period(self) -> str:
        return reset_period(self.now(), self.tz, self.settings.reset_hour).isoformat()

    async def balance(self, user_id: int, roles: Iterable[str | int] | None = None) -> Balance:
        """The member's balance after any due reset; ``roles`` (when known) update their tier.

        A plain read when nothing is due: only a new member, a due reset or a changed tier
        takes the write transaction, so many members reading at once do not queue up.
        """
        user = await repo.get_user(self.conn, user_id)
        stale = user is None or user.reset_period < self.period()
        if stale or (roles is not None and self.tier_for_roles(roles) != user.tier):
            async with transaction(self.conn):
                user = await self.ensure_user(user_id, roles)
        return self._view(user)

    async def history(self, user_id: int, limit: int | None = 20) -> list[repo.LedgerRow]:
        """The newest ``limit`` changes of a member's balance (all of them when None), newest first."""
        return await repo.ledger(self.conn, user_id, -1 if limit is None else limit)

    def _view(self, user: repo.UserRow) -> Balance:
        tier_name = self.effective_tier(user)
        tier = self.tier(tier_name)
        return Balance(
            user.user_id,
            user.balance,
            tier.allowance,
            tier_name,
            tier.priority,
            tier.max_queued,
            next_reset(self.now(), self.tz, self.settings.reset_hour),
        )

    # Writes (call inside a transaction) -------------------------------------------------------------

    async def ensure_user(self, user_id: int, roles: Iterable[str | int] | None = None) -> repo.UserRow:
        """Create the member or apply a due daily reset; inside ``transaction``."""
        period = self.period()
        user = await repo.get_user(self.conn, user_id)
        tier = self.tier_for_roles(roles) if roles is not None else None
        if user is None:
            name = tier or DEFAULT_TIER
            return await repo.insert_user(
                self.conn, user_id, self.tier(name).allowance, period, name, self.clock()
            )
        if tier is not None and tier != user.tier:
            await repo.set_tier(self.conn, user_id, tier)
            user = await repo.get_user(self.conn, user_id)
        if user.reset_period < period:
            allowance = self.tier(self.effective_tier(user)).allowance
            if user.balance < allowance:
                note = f"daily allowance ({allowance})"
                await repo.change_balance(
                    self.conn, user_id, allowance - user.balance, "daily_reset", note=note, now=self.clock()
                )
            await repo.set_reset_period(self.conn, user_id, period)
            user = await repo.get_user(self.conn, user_id)
        assert user is not None
        return user

    async def reset_due(self) -> int:
        """Top up every member whose period is stale (the scheduler's job); returns how many."""
        period = self.period()
        due = [u.user_id for u in await repo.list_users(self.conn) if u.reset_period < period]
        for user_id in due:
            async with transaction(self.conn):
                await self.ensure_user(user_id)
        return len(due)

    # Operators -------------------------------------------------------------------------------------

    async def grant(self, user_id: int, amount: int, actor_id: int | None, note: str = "") -> Balance:
        if amount <= 0:
            raise StaminaError("grant a positive amount")
        async with transaction(self.conn):
            await self.ensure_user(user_id)
            await repo.change_balance(self.conn, user_id, amount, "grant", actor_id=actor_id, note=note)
            user = await repo.get_user(self.conn, user_id)
        return self._view(user)

    async def revoke(self, user_id: int, amount: int, actor_id: int | None, note: str = "") -> Balance:
        if amount <= 0:
            raise StaminaError("revoke a positive amount")
        async with transaction(self.conn):
            user = await self.ensure_user(user_id)
            try:
                await repo.change_balance(self.conn, user_id, -amount, "revoke", actor_id=actor_id, note=note)
            except repo.Overdraw:
                raise StaminaError(
                    "user {user} has only {balance} stamina: revoke at most that",
                    user=user_id,
                    balance=user.balance,
                ) from None
            user = await repo.get_user(self.conn, user_id)
        return self._view(user)

    async def set_tier(self, user_id: int, tier: str | None, actor_id: int | None) -> Balance:
        """Pin a member to a tier (None: back to their roles)."""
        if tier is not None and tier != DEFAULT_TIER and tier not in self.settings.tiers:
            known = ", ".join([DEFAULT_TIER, *self.settings.tiers])
            raise StaminaError("unknown tier '{tier}': choose one of {known}", tier=tier, known=known)
        async with transaction(self.conn):
            await self.ensure_user(user_id)
            await repo.set_tier_override(self.conn, user_id, tier)
            user = await repo.get_user(self.conn, user_id)
        return self._view(user)
