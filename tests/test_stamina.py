"""Stamina: the daily reset (missed days, time zones), tiers, grants, costs and concurrent debits."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from bot.queue import costs
from bot.queue.generation import GenerateRequest
from bot.queue.stamina import StaminaError, next_reset, reset_period
from bot.services import open_services
from db import stamina as repo
from tests.queue_helpers import queue_settings

TOKYO = ZoneInfo("Asia/Tokyo")


def utc(*args) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_reset_period_follows_the_local_reset_hour():
    # 04:00 in Tokyo is 19:00 UTC the day before
    assert reset_period(datetime(2026, 11, 24, 18, 59, tzinfo=timezone.utc), TOKYO, 4) == date(2026, 11, 24)
    assert reset_period(datetime(2026, 11, 24, 19, 0, tzinfo=timezone.utc), TOKYO, 4) == date(2026, 11, 25)
    nxt = next_reset(datetime(2026, 11, 24, 18, 59, tzinfo=timezone.utc), TOKYO, 4)
    assert nxt == datetime(2026, 11, 25, 4, tzinfo=TOKYO)
    assert nxt.astimezone(timezone.utc) == datetime(2026, 11, 24, 19, 0, tzinfo=timezone.utc)


def run(tmp_path, body, clock=None, **overrides):
    settings = queue_settings(tmp_path, **overrides)

    async def go():
        async with open_services(settings, clock=clock or Clock(utc(2026, 11, 24, 12))) as services:
            return await body(services)

    return asyncio.run(go())


def test_reset_across_a_missed_day_and_a_time_zone_boundary(tmp_path):
    clock = Clock(utc(2026, 11, 24, 18, 0))  # 03:00 in Tokyo on the 25th: still the 24th's period

    async def body(s):
        st = s.stamina
        assert (await st.balance(7)).balance == 150
        await st.revoke(7, 120, actor_id=1)
        clock.t = utc(2026, 11, 24, 18, 59, 59)  # 03:59:59 JST: no reset yet
        assert (await st.balance(7)).balance == 30
        clock.t = utc(2026, 11, 24, 19, 0, 0)  # 04:00 JST: reset
        assert (await st.balance(7)).balance == 150
        await st.revoke(7, 100, actor_id=1)
        clock.t = utc(2026, 11, 28, 3)  # the bot was down for three resets: one top-up, to the allowance
        view = await st.balance(7)
        assert view.balance == 150
        assert view.next_reset == datetime(2026, 11, 29, 4, tzinfo=TOKYO)
        rows = await st.history(7, 50)
        assert [r.reason for r in rows].count("daily_reset") == 2
        assert rows[0].reason == "daily_reset" and rows[0].delta == 100 and rows[0].balance_after == 150
        # the ledger explains the balance
        assert sum(r.delta for r in rows) == 150

    run(tmp_path, body, clock, reset_hour=4, reset_timezone="Asia/Tokyo")


def test_grants_above_the_allowance_survive_the_reset_and_revoke_never_overdraws(tmp_path):
    clock = Clock(utc(2026, 11, 24, 12))

    async def body(s):
        st = s.stamina
        assert (await st.grant(3, 200, actor_id=99, note="event prize")).balance == 350
        clock.t += 86400
        assert (await st.balance(3)).balance == 350
        with pytest.raises(StaminaError, match="only 350"):
            await st.revoke(3, 351, actor_id=99)
        assert (await st.balance(3)).balance == 350
        with pytest.raises(StaminaError):
            await st.grant(3, 0, actor_id=99)
        rows = await st.history(3)
        assert rows[0].reason == "grant" and rows[0].actor_id == 99 and rows[0].note == "event prize"

    run(tmp_path, body, clock)


TIERS = {"pro": {"roles": ["Pro", "555"], "allowance": 300, "priority": 10, "max_queued": 5},
         "vip": {"roles": ["VIP"], "allowance": 500, "priority": 20, "max_queued": 8}}  # fmt: skip


def test_tiers_come_from_role_ids_or_names_and_operators_can_pin_one(tmp_path):
    clock = Clock(utc(2026, 11, 24, 12))

    async def body(s):
        st = s.stamina
        assert (await st.balance(1, roles=["555"])).tier == "pro"
        assert (await st.balance(1)).allowance == 300  # remembered without roles (CLI)
        assert (await st.balance(1)).balance == 300  # a new member starts with their tier's allowance
        both = await st.balance(2, roles=["pro", "vip", "other"])
        assert (both.tier, both.allowance, both.priority, both.max_queued) == ("vip", 500, 20, 8)
        plain = await st.balance(4, roles=["Member"])
        assert (plain.tier, plain.allowance, plain.max_queued) == ("default", 150, 2)
        pinned = await st.set_tier(4, "pro", actor_id=9)
        assert pinned.tier == "pro"
        assert (await st.balance(4, roles=["Member"])).tier == "pro"  # the override wins over roles
        clock.t += 86400
        assert (await st.balance(4)).balance == 300
        with pytest.raises(StaminaError, match="unknown tier 'gold'"):
            await st.set_tier(4, "gold", actor_id=9)
        assert (await st.set_tier(4, None, actor_id=9)).tier == "default"

    run(tmp_path, body, clock, tiers=TIERS)


def test_the_guides_job_costs_157_and_sd15_costs_less():
    rates = {"sd15": 0.1, "sdxl": 0.2243}
    assert costs.training_cost(700, 1, 512, "sdxl", rates) == 157
    assert costs.training_cost(700, 1, 512, "sd15", rates) == 70
    assert costs.training_cost(350, 2, 512, "sdxl", rates) == 157  # same images seen, same cost
    assert costs.training_cost(700, 1, 1024, "sdxl", rates) == 628  # 4x the pixels
    assert costs.training_cost(1, 1, 64, "sd15", rates) == 1  # never free
    assert costs.generation_cost(3, 1024, 1024, "sdxl", {"sd15": 1, "sdxl": 2}) == 6


@pytest.mark.parametrize("cost,total,done,refund", [(157, 700, 0, 157), (157, 700, 700, 0), (157, 700, 350, 78),
                                                    (157, 700, 1, 156), (10, 3, 2, 3), (1, 8, 7, 0)])  # fmt: skip
def test_refund_is_the_untrained_part_rounded_for_the_member(cost, total, done, refund):
    assert costs.refund_for(cost, total, done) == refund


def test_100_concurrent_debits_from_4_connections_accept_exactly_what_150_affords(tmp_path):
    """Each request costs 7: 150 affords 21. Four connections (as four processes would) race."""
    settings = queue_settings(
        tmp_path, {"tiny-sd15": tmp_path / "no-model-needed"}, image_costs={"sd15": 7}, max_queued_jobs=100
    )

    async def go():
        async with open_services(settings) as first:
            await first.stamina.balance(1)
            others = [open_services(settings) for _ in range(3)]
            opened = [first] + [await ctx.__aenter__() for ctx in others]
            try:
                results = await asyncio.gather(
                    *[
                        opened[i % 4].generation.submit(
                            1, GenerateRequest(f"picture {i}", base_model="tiny-sd15")
                        )
                        for i in range(100)
                    ],
                    return_exceptions=True,
                )
            finally:
                for ctx in others:
                    await ctx.__aexit__(None, None, None)
            accepted = [r for r in results if not isinstance(r, BaseException)]
            refused = [r for r in results if isinstance(r, BaseException)]
            assert len(accepted) == 21
            assert all("costs 7 stamina and you have" in str(e) for e in refused), refused[:3]
            user = await repo.get_user(first.conn, 1)
            assert user.balance == 150 - 21 * 7
            rows = await repo.ledger(first.conn, 1, 1000)
            assert sum(r.delta for r in rows) == user.balance
            assert sorted(r.job_id for r in rows if r.reason == "charge") == sorted(j.id for j in accepted)

    asyncio.run(go())


def test_the_scheduled_reset_tops_up_stale_members_at_the_local_reset_hour(tmp_path):
    from datetime import timedelta

    from bot.queue.schedule import start_reset_scheduler

    clock = Clock(utc(2026, 11, 24, 12))

    async def body(s):
        st = s.stamina
        for user in (1, 2, 3):
            await st.revoke(user, 100, actor_id=None)
        await st.grant(3, 500, actor_id=None)
        clock.t += 86400
        assert await st.reset_due() == 3
        assert await st.reset_due() == 0  # once per period
        assert [(await repo.get_user(s.conn, u)).balance for u in (1, 2, 3)] == [150, 150, 550]
        before = datetime.now(TOKYO)
        scheduler = start_reset_scheduler(st)
        try:
            run_at = scheduler.get_job("stamina-reset").next_run_time
            reset = next_reset(before, TOKYO, 4)  # 04:00 Tokyo; the job runs 5 s after it
            assert run_at - timedelta(seconds=5) in (reset, reset - timedelta(days=1)) and run_at > before
        finally:
            scheduler.shutdown(wait=False)

    run(tmp_path, body, clock, reset_hour=4, reset_timezone="Asia/Tokyo")
