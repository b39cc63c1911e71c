"""What the bot says comes back: the cancel prompt states the refund settle will give (nothing,
and why, after a daily reset topped the balance up), and a generation that made fewer images
than it charged for says how many are missing and what was refunded."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from bot.queue.bus import JobUpdate
from bot.queue.costs import refund_for
from bot.queue.generation import GenerateRequest
from bot.services import open_services
from db import jobs as repo
from db.database import transaction
from tests.bot_harness import bot_world, first_id, progress_message
from tests.queue_helpers import FAST, make_dataset, queue_settings
from tests.test_dataset_service import picture

DAY = 24 * 3600


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 150))


@pytest.fixture
def settings(tmp_path, tiny_sd15):
    return queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=0, image_costs={"sd15": 3}, step_costs={"sd15": 5})


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def world_with_clock(settings, clock: Clock):
    async with open_services(settings, clock=clock) as services, bot_world(settings, services=services) as w:
        yield w


async def costly_job(w) -> repo.JobRow:
    """A queued training job of alice's that costs enough for partial refunds to show."""
    await make_dataset(w.services, owner=w.alice.user_id, images=3)
    options = {**FAST, "repeats": 4, "resolution": 512}
    job = await w.services.queue.submit_training(w.alice.user_id, "chara", options, channel_id=w.channel.id)
    assert job.cost > job.total_steps > 2, job  # partial refunds are whole numbers above 0
    return job


def test_the_cancel_prompt_says_what_comes_back_after_a_daily_reset(settings):
    async def scenario():
        clock = Clock()
        async with world_with_clock(settings, clock) as w:
            job = await costly_job(w)
            progress = await progress_message(w, job.id)
            prompt = await w.reply(await w.click(progress, w.alice, f"lorabot:cancel:{job.id}"))
            assert prompt.content.endswith(f"It has not started: you get all its stamina back ({job.cost}).")
            await w.click(prompt, w.alice, first_id(prompt, label="Keep it"))

            clock.now += DAY  # the daily reset tops alice back up to 150: the charge expired
            prompt = await w.reply(await w.click(progress, w.alice, f"lorabot:cancel:{job.id}"))
            assert f"It has not started: nothing comes back ({job.cost} stamina expired" in prompt.content
            assert "daily reset" in prompt.content and "all its" not in prompt.content
            stop = await w.click(prompt, w.alice, first_id(prompt, label="Stop it"))
            assert stop.response_type == 7
            done = await w.server.wait_for_message(lambda m: m is prompt and "cancelled" in m.content, 10)
            assert f"0 stamina refunded, {job.cost} expired at a daily reset" in done.content, done.content
            ended = await w.services.queue.job(w.alice.user_id, job.id)
            assert ended.state == "cancelled" and ended.refunded == 0 and ended.refund_expired == job.cost
            assert (await w.services.stamina.balance(w.alice.user_id)).balance == 150

    run(scenario())


def test_the_cancel_prompt_of_a_running_job_names_the_refund_now(settings):
    async def scenario():
        clock = Clock()
        async with world_with_clock(settings, clock) as w:
            job = await costly_job(w)
            async with transaction(w.services.conn):
                await repo.transition(w.services.conn, job.id, ("queued",), "running", started_at=clock.now)
                await repo.update_progress(w.services.conn, job.id, step=1)
            preview = await w.services.queue.refund_preview(w.alice.user_id, job.id)
            assert preview.refund == refund_for(job.cost, job.total_steps, 1) and preview.expired == 0
            progress = await progress_message(w, job.id)
            prompt = await w.reply(await w.click(progress, w.alice, f"lorabot:cancel:{job.id}"))
            assert f"It is at 1/{job.total_steps} steps" in prompt.content
            assert f"about {preview.refund} stamina now" in prompt.content
            clock.now += DAY
            prompt = await w.reply(await w.click(progress, w.alice, f"lorabot:cancel:{job.id}"))
            assert "nothing comes back" in prompt.content and "expired" in prompt.content, prompt.content

    run(scenario())


async def _ended_generation(w, delivered: int, refunded: int):
    """A 2-image generation of alice's that the dispatcher ended 'done' with ``delivered`` images."""
    request = GenerateRequest(prompt="a cat", base_model="tiny-sd15", size="512", count=2)
    job = await w.services.generation.submit(w.alice.user_id, request, channel_id=w.channel.id)
    async with transaction(w.services.conn):
        for index in range(delivered):
            path = Path(job.folder) / "output" / f"gen-{job.id}-{index}.png"  # where the bot takes images from
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(picture(index))
            await repo.add_file(w.services.conn, job.id, index, str(path), False)
        await repo.update_progress(w.services.conn, job.id, step=delivered)
        ended = await repo.transition(
            w.services.conn, job.id, ("queued",), "done", finished_at=time.time(), refunded=refunded,
            error="1 image failed" if delivered else None,
        )  # fmt: skip
    w.services.bus.publish(JobUpdate(ended, "finished", {"state": "done", "refunded": refunded}))
    return ended


def test_a_generation_short_of_images_says_so_and_what_was_refunded(settings):
    async def scenario():
        async with bot_world(settings) as w:
            none = await _ended_generation(w, 0, 6)
            assert none.cost == 6
            posted = await w.wait_message(lambda m: f"#{none.id} ·" in m.content, 10)
            assert "2 of 2 images could not be made: 6 stamina refunded." in posted.content
            assert not posted.files and f"<@{w.alice.user_id}>" in posted.content
            half = await _ended_generation(w, 1, refund_for(6, 2, 1))
            posted = await w.wait_message(lambda m: f"#{half.id} ·" in m.content, 10)
            assert "1 of 2 images could not be made (why: /queue): 3 stamina refunded." in posted.content
            assert [f.filename for f in posted.files] == [f"gen-{half.id}-0.png"]
            full = await _ended_generation(w, 2, 0)
            posted = await w.wait_message(lambda m: f"#{full.id} ·" in m.content, 10)
            assert "could not be made" not in posted.content and len(posted.files) == 2

    run(scenario())
