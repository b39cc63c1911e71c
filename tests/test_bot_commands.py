"""The bot's slash commands through the loopback Discord with the real discord.py client."""

from __future__ import annotations

import asyncio

from tests.bot_harness import bot_world
from tests.queue_helpers import queue_settings


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_commands_sync_and_dataset_new(tmp_path, tiny_sd15):
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15})

    async def scenario():
        async with bot_world(settings) as w:
            names = sorted(c["name"] for c in w.server.commands[None])
            assert {
                "dataset",
                "upload",
                "tags",
                "train",
                "queue",
                "epochs",
                "generate",
                "stamina",
                "operator",
                "Add to dataset",
            } <= set(names), names
            inter = await w.slash(
                w.alice, "dataset new", {"name": "chara", "base_model": "tiny-sd15", "trigger": "tkchar"}
            )
            reply = await w.reply(inter)
            assert reply.ephemeral and "Created **chara**" in reply.content
            inter = await w.slash(w.alice, "stamina")
            reply = await w.reply(inter)
            assert "150" in reply.embeds[0]["description"]

    run(scenario())
