"""The progress message: edited in place, at most once per interval, ending on the final state."""

from __future__ import annotations

import asyncio
import time

from bot.queue.bus import JobUpdate
from db import jobs as repo
from db.database import transaction
from tests.bot_harness import bot_world, custom_ids, first_id, progress_message, queued_job
from tests.queue_helpers import make_dataset, queue_settings

INTERVAL = 0.4


def test_progress_edits_are_throttled_and_end_on_the_final_state(tmp_path, tiny_sd15):
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, progress_interval_s=INTERVAL)

    async def scenario():
        async with bot_world(settings) as w:
            s = w.services
            job = await queued_job(w)
            message = await progress_message(w, job.id)
            assert custom_ids(message) == [f"lorabot:cancel:{job.id}"]
            started = time.monotonic()
            for step in range(1, 41):  # 40 updates in ~1.2 s: a fast trainer
                async with transaction(s.conn):
                    await repo.update_progress(s.conn, job.id, step=step, loss=0.1)
                s.bus.publish(JobUpdate(await repo.get_job(s.conn, job.id), "step", {"step": step}))
                await asyncio.sleep(0.03)
            await s.queue.cancel(w.alice.user_id, job.id)
            await w.server.wait_for_message(lambda m: m is message and "✖️" in m.embeds[0]["title"], 10)
            elapsed = time.monotonic() - started
            edits = w.bot.notifier.edits[job.id]
            gaps = [b - a for a, b in zip(edits, edits[1:], strict=False)]
            assert min(gaps) >= INTERVAL - 0.01, gaps
            assert len(edits) <= elapsed / INTERVAL + 2
            assert message.edits == len(edits) - 1  # the first "edit" posted the message
            assert custom_ids(message) == []  # no Cancel on an ended job
            mention = await w.wait_message(lambda m: f"job #{job.id}" in m.content, 10)
            assert mention.content.startswith(f"<@{w.alice.user_id}>") and "cancelled" in mention.content
            assert (
                len(
                    [m for m in w.channel_messages() if m.embeds and f"Job #{job.id}" in m.embeds[0]["title"]]
                )
                == 1
            )

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_public_buttons_outlive_ended_views_and_start_charges_once(tmp_path, tiny_sd15):
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=0)

    async def scenario():
        async with bot_world(settings) as w:
            s = w.services
            await make_dataset(s, owner=w.alice.user_id, images=3)
            estimate = await w.reply(await w.slash(w.alice, "train", {"dataset": "chara", "epochs": 2}))
            start = first_id(estimate, label="Start")
            taps = await asyncio.gather(
                *(w.server.send_component(estimate, w.alice, start) for _ in range(2))
            )
            await asyncio.gather(*(t.wait_response(timeout=10) for t in taps))
            await w.server.wait_for_message(lambda m: m is estimate and "Queued" in m.content, 30)
            assert len(await repo.list_jobs(s.conn)) == 1  # two taps, one job, one charge
            (job,) = await repo.list_jobs(s.conn)
            assert (await s.stamina.balance(w.alice.user_id)).balance == 150 - job.cost
            progress = await progress_message(w, job.id)
            listing = await w.reply(await w.slash(w.alice, "queue"))
            await w.click(listing, w.alice, first_id(listing, label="Refresh"))  # ends that view
            ask = await w.reply(await w.click(progress, w.alice, f"lorabot:cancel:{job.id}"))
            assert "Stop job" in ask.content  # the public button still answers

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_closing_the_bot_still_shows_a_jobs_end(tmp_path, tiny_sd15):
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, progress_interval_s=30)

    async def scenario():
        async with bot_world(settings) as w:
            s = w.services
            job = await queued_job(w)
            message = await progress_message(w, job.id)
            await s.queue.cancel(w.alice.user_id, job.id)  # its edit must wait 30 s...
            await w.bot.close()  # ...but the bot stops now: the end is shown on the way out
            assert "✖️" in message.embeds[0]["title"]
            assert any(
                f"job #{job.id}" in m.content and "cancelled" in m.content for m in w.channel_messages()
            )

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_tap_while_start_works_is_told_so(tmp_path, tiny_sd15):
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=0)

    async def scenario():
        async with bot_world(settings) as w:
            s = w.services
            await make_dataset(s, owner=w.alice.user_id, images=3)
            real = s.queue.submit_training
            copied = asyncio.Event()  # a big dataset being copied, until the test has tapped again

            async def slow(*args, **kwargs):
                await asyncio.wait_for(copied.wait(), 30)
                return await real(*args, **kwargs)

            s.queue.submit_training = slow
            estimate = await w.reply(await w.slash(w.alice, "train", {"dataset": "chara"}))
            start, cancel = first_id(estimate, label="Start"), first_id(estimate, label="Cancel")
            taps = [await w.server.send_component(estimate, w.alice, start)]
            taps.append(
                await w.server.send_component(estimate, w.alice, cancel)
            )  # before the first is answered
            await taps[0].wait_response(timeout=5)
            assert "Already starting" in (await w.reply(taps[1])).content  # not "expired", not cancelled
            buttons = [c for row in estimate.components for c in row["components"]]
            assert all(c.get("disabled") for c in buttons)  # greyed out while it works
            copied.set()
            await w.server.wait_for_message(lambda m: m is estimate and "Queued" in m.content, 30)
            assert len(await repo.list_jobs(s.conn)) == 1

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_japanese_guild_gets_its_progress_and_end_posts_in_japanese(tmp_path, tiny_sd15):
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, progress_interval_s=INTERVAL)

    async def scenario():
        async with bot_world(settings, guild_locale="ja") as w:
            s = w.services
            job = await queued_job(w)
            message = await w.wait_message(
                lambda m: bool(m.embeds) and m.embeds[0]["title"].endswith(f"ジョブ #{job.id} · {job.title}"),
                10,
            )
            assert [f["name"] for f in message.embeds[0]["fields"]][:2] == ["ステップ", "エポック"]
            await s.queue.cancel(w.alice.user_id, job.id)
            mention = await w.wait_message(
                lambda m: f"#{job.id}" in m.content and "キャンセル" in m.content, 10
            )
            assert mention.content.startswith(f"<@{w.alice.user_id}> ✖️ ジョブ #{job.id}")

    asyncio.run(asyncio.wait_for(scenario(), 60))
