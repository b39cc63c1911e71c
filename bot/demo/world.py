"""The demo's world: the loopback Discord, one guild with a member, the real services and bot."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ..app import link_resolver, running_bot
from ..i18n import messages
from ..loopback import Interaction, LoopbackDiscord, RecordedMessage, running_client
from ..loopback.state import Channel, Guild, Member
from ..services import Services, open_services
from ..settings import Settings
from ..web import FileServer


class DemoError(Exception):
    """An expected failure of the demo: one line for the user, no traceback."""


@dataclass
class World:
    """Drives the bot as the member ``member`` in ``channel``; keeps what the member did, in order."""

    server: LoopbackDiscord
    guild: Guild
    channel: Channel
    member: Member
    services: Services
    locale: str = "en-US"  #: the member's Discord language (and the guild's)
    actions: list[tuple[Interaction, str]] = field(default_factory=list)
    #: interaction id of a click -> (message id, its data and files as the member saw them before it)
    before: dict[int, tuple[int, dict, list]] = field(default_factory=dict)

    async def slash(self, command: str, options: dict[str, Any] | None = None) -> Interaction:
        """Send ``/command`` with ``options`` and wait for the bot's first answer."""
        inter = await self.server.send_interaction(self.guild, self.member, command, options or {},
                                                   channel=self.channel, locale=self.locale)  # fmt: skip
        self.actions.append((inter, f"/{command}"))
        await _answered(inter, f"/{command}")
        return inter

    async def click(
        self, message: RecordedMessage, label: str, values: list[str] | None = None
    ) -> Interaction:
        """Click the component labelled ``label`` (a select when ``values`` is given)."""
        custom_id = find_component(message, label, select=values is not None)
        seen = (message.id, copy.deepcopy(message.data), list(message.files))
        inter = await self.server.send_component(
            message, self.member, custom_id, values=values, locale=self.locale
        )
        self.before[inter.id] = seen
        picked = [o["label"] for r in message.components for c in r.get("components") or []
                  for o in c.get("options") or [] if o.get("value") in (values or [])]  # fmt: skip
        shown = next((c.get("label") for r in seen[1].get("components") or [] for c in r.get("components") or []
                      if c.get("custom_id") == custom_id and c.get("label")), label)  # fmt: skip
        t = messages(self.locale)  # the transcript shows what the member did in the member's language
        did = (
            t("picked “{options}”", options=", ".join(picked))
            if values
            else t("clicked “{label}”", label=shown)
        )
        self.actions.append((inter, did))
        await _answered(inter, label)
        return inter

    async def submit(self, inter: Interaction, values: dict[str, Any] | None = None) -> Interaction:
        """Submit the form the bot opened on ``inter``."""
        sub = await self.server.send_modal_submit(inter, self.member, values or {}, locale=self.locale)
        t = messages(self.locale)
        title = (inter.modal or {}).get("title") or t("the form")
        self.actions.append((sub, t("submitted “{title}”", title=title)))
        await _answered(sub, title)
        return sub

    async def reply(self, inter: Interaction, timeout: float = 60, final: bool = False) -> RecordedMessage:
        """The message answering ``inter`` (after a defer: once filled; ``final``: once it has an embed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if (msg := inter.answer_message(final)) is not None:
                return msg
            await asyncio.sleep(0.05)
        raise DemoError(f"the bot did not answer {inter.data.get('name') or 'a click'} in {timeout:.0f} s")

    async def wait_message(self, predicate: Callable[[RecordedMessage], bool], timeout: float, what: str):
        """The first bot message in the channel (posted or edited) for which ``predicate`` holds."""
        try:
            return await self.server.wait_for_message(
                lambda m: m.channel_id == self.channel.id and m.author_id == self.server.bot_user_id
                and predicate(m), timeout)  # fmt: skip
        except asyncio.TimeoutError:
            raise DemoError(f"no {what} after {timeout:.0f} s") from None


async def _answered(inter: Interaction, what: str) -> None:
    try:
        await inter.wait_response(timeout=30)
    except asyncio.TimeoutError:
        raise DemoError(f"the bot did not answer {what}") from None


def find_component(message: RecordedMessage, label: str, *, select: bool = False) -> str:
    """The custom id of the first button whose label contains ``label`` (or the first select)."""
    for row in message.components:
        for c in row.get("components") or []:
            if select and c.get("type") == 3:
                return c["custom_id"]
            if not select and c.get("custom_id") and label in (c.get("label") or ""):
                return c["custom_id"]
    raise DemoError(f"the bot's message has no “{label}” component")


@contextlib.asynccontextmanager
async def demo_world(settings: Settings, locale: str = "en-US") -> AsyncIterator[World]:
    """The stand-in with guild "Mascot Club" (in ``locale``), member "newcomer" (Discord in ``locale``)
    in #training, and the bot connected."""
    server = LoopbackDiscord(bot_name="LoRA Bot")
    guild = server.add_guild("Mascot Club", channels=("general", "training"))
    guild.locale = locale
    member = server.add_member(guild, "newcomer")
    channel = next(c for c in guild.channels.values() if c.name == "training")
    async with server, contextlib.AsyncExitStack() as stack:
        services = await stack.enter_async_context(open_services(settings))
        files = FileServer.from_settings(services.settings, link_resolver(services))
        files.port = 0
        bot = await stack.enter_async_context(
            running_bot(services, queue=True, file_server=files, guild_ready_timeout=0.05)
        )
        await stack.enter_async_context(running_client(server, bot, timeout=30))
        yield World(server, guild, channel, member, services, locale=locale)
