"""Starting the bot: a missing or refused token is one line; buttons survive a restart;
the message command "Add to dataset"."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from bot.app import link_resolver, run_bot, running_bot
from bot.loopback import LoopbackDiscord, Upload, point_discord_at, running_client
from bot.services import open_services
from bot.settings import SettingsError
from bot.web import FileServer
from tests.bot_harness import bot_world, first_id, progress_message, queued_job
from tests.queue_helpers import queue_settings
from tests.test_dataset_service import picture


def test_a_missing_token_is_one_line(tmp_path):
    env = {**os.environ, "LORABOT_DATA_DIR": str(tmp_path / "data"), "LORABOT_DISCORD_TOKEN": ""}
    result = subprocess.run([sys.executable, "-m", "bot", "run"], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=120)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: settings: LORABOT_DISCORD_TOKEN is not set: put the bot's token (Developer Portal > Bot) in .env; "
        "see .env.example (fix it in .env or the environment; 'python -m bot check' checks them all)"
    ]


def test_a_refused_token_is_a_clear_error(tmp_path, tiny_sd15):
    settings = queue_settings(
        tmp_path, {"tiny-sd15": tiny_sd15}, discord_token="wrong.token", http_bind="127.0.0.1:0"
    )

    async def scenario():
        async with LoopbackDiscord(token="right.token") as server:
            with (
                point_discord_at(server),
                pytest.raises(SettingsError, match="Discord refused LORABOT_DISCORD_TOKEN"),
            ):
                await run_bot(settings)

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_cancel_button_works_after_a_restart(tmp_path, tiny_sd15):
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=0)

    async def scenario():
        async with open_services(settings) as services, bot_world(settings, services=services) as w:
            job = await queued_job(w)
            progress = await progress_message(w, job.id)
            listing = await w.reply(await w.slash(w.alice, "queue"))
            await _second_bot(w.server, services, progress, w, job.id, listing)

    asyncio.run(asyncio.wait_for(scenario(), 120))


async def _second_bot(server, services, progress, w, job_id: int, listing) -> None:
    await w.bot.close()  # the first bot process is gone; its views with it
    files = FileServer.from_settings(services.settings, link_resolver(services))
    files.port = 0
    bot_context = running_bot(services, queue=False, file_server=files, guild_ready_timeout=0.05)
    async with bot_context as bot, running_client(server, bot, timeout=30):
        stale = await server.send_component(listing, w.alice, first_id(listing, label="Refresh"))
        await stale.wait_response(timeout=5)  # that menu died with the first bot
        assert "expired" in (await w.reply(stale)).content
        inter = await server.send_component(progress, w.alice, f"lorabot:cancel:{job_id}")
        await inter.wait_response(timeout=10)
        ask = await w.reply(inter)
        assert ask.ephemeral and "you get all its stamina back" in ask.content
        assert (await services.queue.job(w.alice.user_id, job_id)).state == "queued"  # nothing yet
        await w.click(ask, w.alice, first_id(ask, label="Stop it"))
        await server.wait_for_message(lambda m: m is ask and "cancelled before it started" in m.content, 10)
        job = await services.queue.job(w.alice.user_id, job_id)
        assert job.state == "cancelled" and job.refunded == job.cost
        assert (await services.stamina.balance(w.alice.user_id)).balance == 150


def test_add_to_dataset_from_a_message(tmp_path, tiny_sd15):
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=0)

    async def scenario():
        async with bot_world(settings) as w:
            await w.slash(
                w.alice, "dataset new", {"name": "chara", "base_model": "tiny-sd15", "trigger": "tk"}
            )
            posted = await w.server.post_message(
                w.channel,
                w.bob,
                "look",
                [Upload("a.png", picture(1)), Upload("b.jpg", picture(2, fmt="JPEG"))],
            )
            inter = await w.server.send_message_command(w.guild, w.alice, "Add to dataset", posted)
            await inter.wait_response()
            menu = await w.reply(inter)
            select = menu.components[0]["components"][0]
            await w.click(menu, w.alice, select["custom_id"], values=["chara"])
            report = await w.server.wait_for_message(lambda m: m is menu and bool(m.embeds), 30)
            assert report.embeds[0]["title"] == "📥 chara: added 2 image(s)"
            assert len(await w.services.datasets.images(w.alice.user_id, "chara")) == 2

    asyncio.run(asyncio.wait_for(scenario(), 120))
