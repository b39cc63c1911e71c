"""/notify: a direct message when a member's job finishes or fails, through the loopback stand-in
and the real discord.py client, with fast fake trainer jobs (tests/fake_trainer.py).

The DM carries what the channel shows (the last epoch's grid with Download and Save, or the
generated image), in the language the member turned it on from; the channel post stays; a member
who did not ask, or turned it off, gets none; closed DMs are logged and break nothing."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import pytest

from bot.loopback.state import Member, RecordedMessage
from bot.loopback.waiting import wait_for
from bot.queue.generation import GenerateRequest
from bot.services import open_services
from tests.bot_harness import World, bot_world, custom_ids
from tests.fake_trainer import PIXEL_PNG
from tests.queue_helpers import FAST, make_dataset, queue_settings

ROOT = Path(__file__).resolve().parents[1]
FAKE = [sys.executable, str(ROOT / "tests" / "fake_trainer.py")]


@pytest.fixture
def fake_jobs(monkeypatch):
    """Training jobs of 5 steps in 0.2 s with one saved epoch and its preview grid; ``mode`` sets how
    they end ("preview": done, "preview_fail": failed)."""
    monkeypatch.setenv("FAKE_TRAINER_STEPS", "5")
    monkeypatch.setenv("FAKE_TRAINER_SECONDS", "0.2")

    def mode(value: str) -> None:
        monkeypatch.setenv("FAKE_TRAINER_MODE", value)

    mode("preview")
    return mode


def run(scenario) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 120))


async def train(w: World, member: Member) -> int:
    """A training job of ``member``'s from the world's channel; its id once its end is posted there
    and every subscriber (the DM included) has handled it."""
    await make_dataset(w.services, owner=member.user_id, images=3)
    job = await w.services.queue.submit_training(member.user_id, "chara", FAST, channel_id=w.channel.id)
    await w.wait_message(
        lambda m: f"job #{job.id}" in m.content and m.content.startswith(f"<@{member.user_id}>")
    )
    await w.services.bus.drain()
    return job.id


def about(w: World, member: Member, job_id: int) -> list[RecordedMessage]:
    return [m for m in w.server.dm_messages(member) if f"#{job_id}" in m.content]


async def notify(w: World, member: Member, what: str, locale: str = "en-US") -> str:
    return (await w.reply(await w.slash(member, f"notify {what}", locale=locale))).content


def test_an_opted_in_member_gets_the_end_in_a_dm_with_the_grid_and_working_buttons(
    tmp_path, tiny_sd15, fake_jobs
):
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=0)

    async def scenario():
        async with bot_world(settings, queue=True, trainer_command=FAKE) as w:
            assert "Direct messages are on" in await notify(w, w.alice, "on")
            (hello,) = w.server.dm_messages(w.alice)  # sent at once: closed DMs would be said now
            assert "/notify off" in hello.content

            job_id = await train(w, w.alice)
            assert any("is done" in m.content for m in w.channel_messages() if f"job #{job_id}" in m.content)
            (dm,) = about(w, w.alice, job_id)
            assert (
                f"Job #{job_id}" in dm.content
                and "is done" in dm.content
                and f"<#{w.channel.id}>" in dm.content
            )
            assert [f.filename for f in dm.files] == ["preview-e01.png"] and dm.files[0].data == PIXEL_PNG
            assert dm.embeds[0]["image"]["url"] == "attachment://preview-e01.png"
            assert "epoch 1/2" in dm.embeds[0]["title"]
            assert custom_ids(dm) == [f"lorabot:download:{job_id}:1", f"lorabot:save:{job_id}:1"]
            assert "guild_id" not in dm.data  # a direct message, not a channel post

            # the DM's buttons are the channel's persistent ones: Download works from the DM
            download = await w.click(dm, w.alice, f"lorabot:download:{job_id}:1")
            assert download.guild_id is None
            (lora,) = (await w.reply(download)).files
            assert lora.data == b"fake epoch" and lora.filename.endswith("-e01.safetensors")
            save = await w.click(dm, w.alice, f"lorabot:save:{job_id}:1")  # its name form, in the DM
            submit = await w.server.send_modal_submit(save, w.alice, {})
            await submit.wait_response(timeout=30)
            assert "Saved epoch 1" in (await w.reply(submit)).content
            assert [lora.epoch for lora in await w.services.library.list(w.alice.user_id)] == [1]
            with pytest.raises(LookupError):  # nobody else can click in alice's DM
                await w.server.send_component(dm, w.bob, f"lorabot:download:{job_id}:1")

            # a /generate of hers: the image comes in the DM too
            request = GenerateRequest("tkchar", base_model="tiny-sd15", steps=2, size="64")
            gen = await w.services.generation.submit(w.alice.user_id, request, channel_id=w.channel.id)
            (image_dm,) = await wait_for(lambda: about(w, w.alice, gen.id), 60, "the DM of the images")
            assert "are ready" in image_dm.content and [f.data for f in image_dm.files] == [PIXEL_PNG]

            # bob never turned it on: his job ends in the channel only
            bob_job = await train(w, w.bob)
            assert any(f"job #{bob_job}" in m.content for m in w.channel_messages())
            assert w.server.dm_messages(w.bob) == []

    run(scenario)


def test_a_failed_job_is_told_in_japanese_to_a_japanese_member(tmp_path, tiny_sd15, fake_jobs):
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=0)
    fake_jobs("preview_fail")

    async def scenario():
        async with bot_world(settings, queue=True, trainer_command=FAKE) as w:
            assert "DM通知をオンにしました" in await notify(w, w.bob, "on", locale="ja")
            assert "お知らせします" in w.server.dm_messages(w.bob)[0].content
            job_id = await train(w, w.bob)
            assert any("failed" in m.content for m in w.channel_messages() if f"job #{job_id}" in m.content)
            (dm,) = about(w, w.bob, job_id)
            assert (
                f"ジョブ #{job_id}" in dm.content and "失敗しました" in dm.content and "/queue" in dm.content
            )
            assert [f.filename for f in dm.files] == ["preview-e01.png"]  # the epoch it saved before failing
            assert "エポック 1/2" in dm.embeds[0]["title"]
            buttons = [c for row in dm.components for c in row["components"]]
            assert [b["label"] for b in buttons] == ["エポック1をダウンロード", "エポック1を保存"]
            assert custom_ids(dm) == [f"lorabot:download:{job_id}:1", f"lorabot:save:{job_id}:1"]
            assert "Direct messages are off" in await notify(w, w.bob, "off")

    run(scenario)


def test_closed_dms_break_nothing_and_opting_out_stops_the_dms(tmp_path, tiny_sd15, fake_jobs, caplog):
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=0)

    async def scenario():
        async with bot_world(settings, queue=True, trainer_command=FAKE) as w:
            w.alice.dms_closed = True  # Discord: no DMs from this server's members
            answer = await notify(w, w.alice, "on")
            assert "did not let me send you one" in answer and "Privacy Settings" in answer
            job_id = await train(w, w.alice)  # the channel post is made, the job ends as usual
            assert (await w.services.queue.get_job(job_id)).state == "done"
            assert w.server.dm_messages(w.alice) == []
            refused = [r for r in caplog.records if "no direct messages" in r.getMessage()]
            assert [r.levelno for r in refused] == [logging.WARNING] * 2  # /notify on, then the job's end

            assert "Direct messages are on" in await notify(w, w.bob, "on")
            assert "Direct messages are off" in await notify(w, w.bob, "off")
            assert "already off" in await notify(w, w.bob, "off")
            bob_job = await train(w, w.bob)
            assert about(w, w.bob, bob_job) == [] and len(w.server.dm_messages(w.bob)) == 1  # the hello only

    caplog.set_level(logging.WARNING, logger="bot.direct")
    run(scenario)


def test_the_choice_is_kept_with_its_locale(tmp_path):
    async def scenario():
        async with open_services(queue_settings(tmp_path)) as s:
            assert await s.notify.setting(7) is None
            first = await s.notify.enable(7, "en-US")
            again = await s.notify.enable(7, "ja")
            assert (again.locale, again.created_at) == ("ja", first.created_at)
            assert (await s.notify.setting(7)).locale == "ja"
            assert await s.notify.disable(7) and not await s.notify.disable(7)
            assert await s.notify.setting(7) is None

    run(scenario)
