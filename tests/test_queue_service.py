"""The queue service without workers: estimates, submissions, limits, order, cancel and refunds."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bot.datasets.service import ServiceError
from bot.queue.service import QueueError
from bot.queue.settle import settle
from bot.queue.status import queue_status
from bot.services import open_services
from db import jobs as repo
from db import stamina as stamina_repo
from db.database import transaction
from tests.queue_helpers import FAST, make_dataset, queue_settings
from tests.test_dataset_service import picture

MODELS = {"tiny-sd15": Path("/nonexistent/sd15"), "tiny-sdxl": Path("/nonexistent/sdxl")}


def run(tmp_path, body, **overrides):
    settings = queue_settings(tmp_path, MODELS, **overrides)

    async def go():
        async with open_services(settings) as services:
            return await body(services)

    return asyncio.run(go())


def test_the_guides_job_is_700_steps_and_costs_157_and_does_not_fit_150(tmp_path):
    async def body(s):
        await s.datasets.create(1, "teto", "tiny-sdxl", "kasane_teto", crop_mode="center", crop_size="512")
        await s.datasets.add_files(1, "teto", [(f"{i}.png", picture(i, "red")) for i in range(7)])
        est = await s.queue.estimate_training(1, "teto", {"repeats": 10, "epochs": 10})
        assert (est.images, est.steps_per_epoch, est.total_steps, est.resolution, est.family) == (
            7,
            70,
            700,
            512,
            "sdxl",
        )
        assert est.cost == 157 and est.balance == 150 and not est.affordable
        with pytest.raises(QueueError, match="costs 157 stamina and you have 150"):
            await s.queue.submit_training(1, "teto", {"repeats": 10, "epochs": 10})
        assert (await s.stamina.balance(1)).balance == 150
        assert await repo.list_jobs(s.conn) == []
        assert not any((s.settings.jobs_dir()).glob("*/dataset"))  # the snapshot was removed
        # trimmed as in the guide: 9 epochs fits
        job = await s.queue.submit_training(1, "teto", {"repeats": 10, "epochs": 9}, expected_cost=141)
        assert job.cost == 141 and (await s.stamina.balance(1)).balance == 9

    run(tmp_path, body)


def test_submission_snapshots_the_dataset_and_charges_once(tmp_path):
    async def body(s):
        await make_dataset(s, images=3)
        job = await s.queue.submit_training(1, "chara", dict(FAST), channel_id=42)
        snapshot = sorted(p.name for p in (Path(job.folder) / "dataset").iterdir())
        assert snapshot == ["0001.png", "0001.txt", "0002.png", "0002.txt", "0003.png", "0003.txt"]
        assert job.state == "queued" and job.channel_id == 42 and job.total_steps == 6
        assert isinstance(job.spec["options"]["seed"], int)  # fixed at submission: resume reproduces it
        # edits after submission do not change the queued job
        await s.datasets.add_files(1, "chara", [("new.png", picture(77, "blue"))])
        assert len(list((Path(job.folder) / "dataset").glob("*.png"))) == 3
        ledger = await stamina_repo.job_ledger(s.conn, job.id)
        assert [(r.reason, r.delta) for r in ledger] == [("charge", -job.cost)]

    run(tmp_path, body)


def test_bad_options_and_a_changed_cost_are_refused_with_nothing_changed(tmp_path):
    async def body(s):
        await make_dataset(s, images=2)
        cases = [
            ({"epochs": 0}, "epochs"),
            ({"epocs": 3}, "did you mean 'epochs'"),
            ({"output_dir": "/etc"}, "the bot sets output_dir itself"),
            ({"optimizer": "Prodigy", "learning_rate": 1e-4}, "wants learning_rate = 1.0"),
        ]
        for options, message in cases:
            with pytest.raises(QueueError, match=message):
                await s.queue.submit_training(1, "chara", options)
        with pytest.raises(ServiceError, match="no dataset named 'nope'"):
            await s.queue.submit_training(1, "nope", {})
        with pytest.raises(ServiceError, match="no dataset named 'chara'"):
            await s.queue.submit_training(2, "chara", {})  # another member's dataset does not exist for them
        est = await s.queue.estimate_training(1, "chara", dict(FAST))
        await s.datasets.add_files(1, "chara", [(f"x{i}.png", picture(50 + i, "green")) for i in range(20)])
        with pytest.raises(QueueError, match="the cost changed"):
            await s.queue.submit_training(1, "chara", {**FAST, "repeats": 50}, expected_cost=est.cost + 1)
        assert await repo.list_jobs(s.conn) == []
        assert (await s.stamina.balance(1)).balance == 150
        assert [r.reason for r in await s.stamina.history(1)] == ["allowance"]

    run(tmp_path, body)


def test_per_member_limit_priority_order_positions_and_pause(tmp_path):
    tiers = {"pro": {"roles": ["Pro"], "allowance": 300, "priority": 10, "max_queued": 3}}

    async def body(s):
        for owner in (1, 2):
            await make_dataset(s, owner=owner, images=2)
        a = await s.queue.submit_training(1, "chara", dict(FAST))
        b = await s.queue.submit_training(1, "chara", dict(FAST))
        with pytest.raises(QueueError, match="already have 2 of your 2 jobs queued or running"):
            await s.queue.submit_training(1, "chara", dict(FAST))
        pro = await s.queue.submit_training(2, "chara", dict(FAST), roles=["Pro"])
        assert pro.priority == 10
        order = [j.id for j in await repo.queued_in_order(s.conn, "train")]
        assert order == [pro.id, a.id, b.id]  # priority tier first, then first come first served
        status = {st.job.id: st for st in await queue_status(s.queue)}
        assert [status[i].position for i in order] == [1, 2, 3]
        assert status[pro.id].starts_in_s == 0 and status[a.id].starts_in_s == pytest.approx(
            status[pro.id].ends_in_s
        )
        mine = await queue_status(s.queue, owner_id=1)
        assert {st.job.id for st in mine} == {a.id, b.id}
        await s.queue.pause(actor_id=9)
        assert await s.queue.paused()
        assert all(st.paused and st.starts_in_s is None for st in await queue_status(s.queue))
        await s.queue.resume(actor_id=9)
        assert not await s.queue.paused()

    run(tmp_path, body, tiers=tiers)


def test_cancel_before_start_refunds_everything_once_and_only_the_owner_or_an_operator_may(tmp_path):
    async def body(s):
        await make_dataset(s, images=2)
        job = await s.queue.submit_training(1, "chara", {**FAST, "repeats": 20, "resolution": 512})
        assert job.cost > 1
        with pytest.raises(QueueError, match=f"no job #{job.id}"):
            await s.queue.cancel(2, job.id)
        ended = await s.queue.cancel(1, job.id)
        assert ended.state == "cancelled" and ended.refunded == job.cost
        with pytest.raises(QueueError, match="already ended"):
            await s.queue.cancel(1, job.id, operator=True)
        assert await settle(s.conn, job.id, "failed", 0) is None  # a second settlement writes nothing
        rows = await stamina_repo.job_ledger(s.conn, job.id)
        assert [(r.reason, r.delta) for r in rows] == [("charge", -job.cost), ("refund", job.cost)]
        assert (await s.stamina.balance(1)).balance == 150

    run(tmp_path, body)


def test_cancel_or_failure_while_running_refunds_the_untrained_steps(tmp_path):
    async def body(s):
        await make_dataset(s, images=4)
        job = await s.queue.submit_training(
            1, "chara", {**FAST, "repeats": 25, "epochs": 4, "resolution": 512}
        )  # 400 steps
        async with transaction(s.conn):
            claimed = await repo.claim_next(s.conn, "train", "cpu")
        assert claimed.id == job.id and claimed.state == "running" and claimed.attempts == 1
        stopping = await s.queue.cancel(1, job.id, operator=True)
        assert stopping.state == "cancelling"  # the dispatcher stops the trainer, then settles
        ended = await settle(s.conn, job.id, "cancelled", 100)
        assert (job.cost, ended.refunded) == (40, 30)  # a quarter trained: three quarters back
        rows = await stamina_repo.job_ledger(s.conn, job.id)
        assert sum(r.delta for r in rows) == -(job.cost - ended.refunded)

    run(tmp_path, body)


def test_event_payloads_are_json_and_jobs_keep_their_spec(tmp_path):
    async def body(s):
        await make_dataset(s, images=2)
        job = await s.queue.submit_training(1, "chara", dict(FAST))
        stored = await repo.get_job(s.conn, job.id)
        assert stored.spec["options"]["repeats"] == 1 and stored.spec["output_name"] == "chara"
        json.dumps(stored.spec)
        defaults = await s.queue.submit_training(1, "chara", {"resolution": 64})
        assert defaults.spec["epochs"] == 10 and defaults.total_steps == 200  # 2 images x 10 x 10
        async with transaction(s.conn):
            await repo.update_progress(s.conn, defaults.id, step=25, epoch=1, loss=0.1234)
        (status,) = [st for st in await queue_status(s.queue) if st.job.id == defaults.id]
        assert status.progress == "25/200 steps, epoch 1/10"
        ended = await s.queue.cancel(1, job.id)
        everything = await queue_status(s.queue, include_finished=True, limit=0)
        assert [st.job.id for st in everything] == [defaults.id]  # active jobs are never crowded out
        assert ended.id in [st.job.id for st in await queue_status(s.queue, include_finished=True)]

    run(tmp_path, body)


def test_a_job_waiting_to_resume_keeps_its_trained_steps_charged_when_cancelled(tmp_path):
    async def body(s):
        await make_dataset(s, images=4)
        job = await s.queue.submit_training(
            1, "chara", {**FAST, "repeats": 25, "epochs": 4, "resolution": 512}
        )
        async with transaction(s.conn):  # it ran 300 of 400 steps, crashed, and waits to resume
            await repo.claim_next(s.conn, "train", "cpu")
            await repo.update_progress(s.conn, job.id, step=300)
            await repo.transition(s.conn, job.id, ("running",), "queued")
        ended = await s.queue.cancel(1, job.id)
        assert (job.cost, ended.refunded) == (40, 10)

    run(tmp_path, body)


def test_stamina_charged_before_a_reset_is_not_banked_by_cancelling_after_it(tmp_path):
    from tests.test_stamina import Clock, utc

    clock = Clock(utc(2026, 11, 24, 23))
    settings = queue_settings(tmp_path, MODELS)

    async def go():
        async with open_services(settings, clock=clock) as s:
            await make_dataset(s, images=4)
            options = {**FAST, "repeats": 25, "epochs": 4, "resolution": 512}  # cost 40
            same_day = await s.queue.submit_training(1, "chara", options)
            assert (await s.queue.cancel(1, same_day.id)).refunded == 40  # same day: all back
            await s.stamina.revoke(1, 50, actor_id=None)
            job = await s.queue.submit_training(1, "chara", options)
            assert (await s.stamina.balance(1)).balance == 60
            clock.t += 2 * 3600  # past midnight UTC: the daily reset tops up to 150
            ended = await s.queue.cancel(1, job.id)
            assert ended.refunded == 0 and (await s.stamina.balance(1)).balance == 150
            second = await s.queue.submit_training(1, "chara", options)  # 110 left
            clock.t += 86400
            assert (await s.stamina.balance(1)).balance == 150
            assert (await s.queue.cancel(1, second.id)).refunded == 0
            await s.stamina.revoke(1, 130, actor_id=None)  # 20 left
            third = await s.queue.submit_training(1, "chara", {**options, "epochs": 2})  # cost 20: 0 left
            clock.t += 86400  # reset: 150
            await s.stamina.revoke(1, 140, actor_id=None)  # 10 left
            ended = await s.queue.cancel(1, third.id)
            assert (ended.refunded, ended.refund_expired) == (0, 20)  # unspent, it would have expired too
            assert (await s.stamina.balance(1)).balance == 10
            assert "20 expired at a daily reset" in (await s.stamina.history(1))[0].note
            # a grant is not a daily allowance: spending it and cancelling after a reset gives it all back
            await s.stamina.grant(1, 300, actor_id=9)  # 310
            fourth = await s.queue.submit_training(1, "chara", options)  # 270: above the allowance
            clock.t += 86400  # the reset adds nothing
            assert (await s.queue.cancel(1, fourth.id)).refunded == 40
            assert (await s.stamina.balance(1)).balance == 310
            # spending all just before a reset, topping up, spending again, then cancelling the first job
            await s.stamina.revoke(1, 270, actor_id=9)  # 40
            first = await s.queue.submit_training(1, "chara", options)  # 0
            clock.t += 86400  # 150
            await s.queue.submit_training(1, "chara", options)  # 110
            assert (await s.queue.cancel(1, first.id)).refunded == 0
            assert (await s.stamina.balance(1)).balance == 110

    asyncio.run(go())


def test_block_options_are_checked_against_the_datasets_family_before_charging(tmp_path):
    from bot.queue.options import parse_option_lines

    async def body(s):
        await make_dataset(s, name="xl", base="tiny-sdxl")
        await make_dataset(s, name="v15", base="tiny-sd15")
        twelve = ",".join(["1"] * 12)
        with pytest.raises(QueueError, match=r"down_lr_weight has 12 values; SDXL has 9 down blocks"):
            await s.queue.submit_training(1, "xl", {**FAST, "down_lr_weight": twelve})
        with pytest.raises(QueueError, match=r"block_dims .*25"):
            await s.queue.submit_training(1, "xl", {**FAST, "block_dims": [4] * 25})
        assert await repo.list_jobs(s.conn) == []
        assert (await s.stamina.balance(1)).balance == 150
        # What a member types in the Advanced form reaches the contract as lists and presets.
        typed = parse_option_lines(f"down_lr_weight = {twelve}\nup_lr_weight = sine+0.5\nmid_lr_weight = 0.5")
        est = await s.queue.estimate_training(1, "v15", {**FAST, **typed})
        assert est.cost > 0

    run(tmp_path, body)
