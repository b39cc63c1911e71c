"""The bot end to end: real discord.py client, real services, loopback Discord, temp folders.

``bot_world(settings)`` starts a stand-in with one guild (members alice, bob and the operator
olga), the services on ``settings``, optionally the queue with a trainer command, the file
server on a free port, and the bot; it yields a :class:`World` to drive it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord

from bot.app import link_resolver, running_bot
from bot.client import LoraBot
from bot.loopback import LoopbackDiscord, running_client
from bot.loopback.state import Channel, Guild, Interaction, Member, RecordedMessage
from bot.loopback.waiting import wait_for
from bot.services import Services, open_services
from bot.settings import Settings
from bot.web import FileServer
from db import jobs as repo
from db.database import transaction
from tests.loopback_helpers import fail_on_logged_errors
from tests.queue_helpers import FAST, make_dataset

MANAGE_GUILD = 0x20


@dataclass
class World:
    server: LoopbackDiscord
    guild: Guild
    channel: Channel
    alice: Member
    bob: Member
    olga: Member  # an operator
    services: Services
    bot: LoraBot
    files: FileServer

    async def slash(
        self, member: Member, command: str, options: dict[str, Any] | None = None, **kw
    ) -> Interaction:
        """Run a slash command and wait for the bot's first answer."""
        inter = await self.server.send_interaction(
            self.guild, member, command, options or {}, channel=self.channel, **kw
        )
        await inter.wait_response(timeout=30)
        return inter

    async def click(self, message: RecordedMessage, member: Member, custom_id: str, **kw) -> Interaction:
        inter = await self.server.send_component(message, member, custom_id, **kw)
        await inter.wait_response(timeout=30)
        return inter

    async def reply(self, inter: Interaction, timeout: float = 30) -> RecordedMessage:
        """The message that answers ``inter``: the original (after a defer: once filled) or a followup."""
        name = inter.data.get("name") or inter.data.get("custom_id") or "an interaction"
        return await wait_for(inter.answer_message, timeout, f"the bot's answer to {name}")

    def channel_messages(self) -> list[RecordedMessage]:
        """What the bot posted in the channel outside interaction answers (progress, previews)."""
        return self.server.channel_messages(self.channel)

    async def wait_message(
        self, predicate: Callable[[RecordedMessage], bool], timeout: float = 120
    ) -> RecordedMessage:
        return await self.server.wait_for_message(
            lambda m: m.channel_id == self.channel.id and m in self.channel_messages() and predicate(m),
            timeout,
            "a bot message in the channel that matches",
        )


async def queued_job(w: World) -> repo.JobRow:
    """A training job of alice's on a 3-image dataset, queued from the world's channel."""
    await make_dataset(w.services, owner=w.alice.user_id, images=3)
    return await w.services.queue.submit_training(w.alice.user_id, "chara", FAST, channel_id=w.channel.id)


async def progress_message(w: World, job_id: int) -> RecordedMessage:
    """The job's progress message in the channel, once the bot posted it."""
    return await w.wait_message(lambda m: bool(m.embeds) and f"Job #{job_id}" in m.embeds[0]["title"], 10)


async def job_with_epoch(w: World, size: int = 4096) -> repo.JobRow:
    """A queued training job of alice's with a saved epoch 1 (a file of ``size`` bytes)."""
    job = await queued_job(w)
    path = Path(job.folder) / "output" / "chara-000001.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    async with transaction(w.services.conn):
        await repo.save_epoch(w.services.conn, job.id, 1, 3, str(path))
    return job


def custom_ids(message: RecordedMessage) -> list[str]:
    out = []

    def walk(components: list[dict]) -> None:
        for c in components:
            if c.get("custom_id"):
                out.append(c["custom_id"])
            walk(c.get("components") or [])

    walk(message.components)
    return out


def first_id(message: RecordedMessage, prefix: str = "", label: str | None = None) -> str:
    """The custom id of the first component whose id starts with ``prefix`` (or whose label is ``label``)."""
    found: list[str] = []

    def walk(components: list[dict]) -> None:
        for c in components:
            if (
                c.get("custom_id")
                and c["custom_id"].startswith(prefix)
                and (label is None or label in (c.get("label") or ""))
            ):
                found.append(c["custom_id"])
            walk(c.get("components") or [])

    walk(message.components)
    if not found:
        raise LookupError(f"no component {prefix!r} {label!r} in {custom_ids(message)}")
    return found[0]


@contextlib.asynccontextmanager
async def bot_world(
    settings: Settings,
    *,
    queue: bool = False,
    trainer_command: list[str] | None = None,
    services: Services | None = None,
    guild_locale: str = "en-US",
    **server_kwargs: Any,
) -> AsyncIterator[World]:
    """The bot against a loopback Discord with one guild (in ``guild_locale``: what the bot's
    channel posts use) and members alice, bob and the operator olga."""
    with fail_on_logged_errors("discord", "bot"):
        async with _world(settings, queue, trainer_command, services, server_kwargs, guild_locale) as world:
            yield world


@contextlib.asynccontextmanager
async def _world(
    settings: Settings,
    queue: bool,
    trainer_command: list[str] | None,
    services: Services | None,
    server_kwargs: dict[str, Any],
    guild_locale: str = "en-US",
) -> AsyncIterator[World]:
    server = LoopbackDiscord(**server_kwargs)
    guild = server.add_guild("Loopback guild", channels=("general", "training"))
    guild.locale = guild_locale
    ops = server.add_role(guild, "Ops", permissions=MANAGE_GUILD)
    alice, bob = server.add_member(guild, "alice"), server.add_member(guild, "bob")
    olga = server.add_member(guild, "olga", roles=[ops])
    channel = next(c for c in guild.channels.values() if c.name == "training")
    async with server, contextlib.AsyncExitStack() as stack:
        if services is None:
            services = await stack.enter_async_context(open_services(settings))
        files = FileServer.from_settings(services.settings, link_resolver(services))
        files.port = 0
        bot = await stack.enter_async_context(
            running_bot(services, queue=queue, trainer_command=trainer_command, file_server=files,
                        guild_ready_timeout=0.05)
        )  # fmt: skip
        await stack.enter_async_context(running_client(server, bot, timeout=30))
        yield World(server, guild, channel, alice, bob, olga, services, bot, files)


def discord_file_names(message: RecordedMessage) -> list[str]:
    return [f.filename for f in message.files]


__all__ = ["World", "bot_world", "custom_ids", "discord", "first_id"]
