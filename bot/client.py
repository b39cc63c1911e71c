"""The Discord client: loads the cogs, registers the persistent buttons, syncs the commands.

Everything a command does goes through :class:`~bot.services.Services` (plain values); the
client only owns what is Discord's: the command tree and its error handling, the per-member
cooldowns, the progress notifier (and the direct messages at a job's end) and the file server that
serves download links.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from .cogs import COGS
from .direct import DirectNotifier
from .i18n import messages
from .i18n.commands import CatalogTranslator
from .progress import ProgressNotifier
from .ui.common import report_error
from .ui.persistent import PERSISTENT_ITEMS

if TYPE_CHECKING:
    from .services import Services
    from .web import FileServer

log = logging.getLogger(__name__)
EXPIRED_AFTER_S = 1.5  # a live view claims an interaction within milliseconds; Discord gives up at 3 s


class Cooldowns:
    """One command of a kind per member per ``seconds`` (against spam; autocomplete is free)."""

    def __init__(self, seconds: float, clock=time.monotonic):
        self.seconds = seconds
        self.clock = clock
        self._last: dict[tuple[int, str], float] = {}

    def retry_after(self, user_id: int, command: str) -> float:
        """0 when the member may run ``command`` now (and it is counted), else seconds to wait."""
        if self.seconds <= 0:
            return 0.0
        now = self.clock()
        last = self._last.get((user_id, command))
        if last is not None and now - last < self.seconds:
            return self.seconds - (now - last)
        if len(self._last) > 10_000:  # forget old entries; they cannot matter any more
            self._last = {k: t for k, t in self._last.items() if now - t < self.seconds}
        self._last[(user_id, command)] = now
        return 0.0


class LoraTree(app_commands.CommandTree):
    """The command tree: cooldowns before every command, one short message for every error."""

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        command = interaction.command
        if command is None or interaction.type is not discord.InteractionType.application_command:
            return True
        client: LoraBot = interaction.client  # type: ignore[assignment]
        wait = client.cooldowns.retry_after(interaction.user.id, command.qualified_name)
        if wait > 0:
            cooldown = app_commands.Cooldown(1, client.cooldowns.seconds)
            raise app_commands.CommandOnCooldown(cooldown, wait)
        return True

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        name = interaction.command.qualified_name if interaction.command else "?"
        await report_error(interaction, error, f"command {name}")


class LoraBot(commands.Bot):
    """The bot. ``file_server`` serves files over the upload limit (None: such files are refused)."""

    def __init__(
        self,
        services: Services,
        file_server: FileServer | None = None,
        *,
        guild_ready_timeout: float = 2.0,
    ):
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            intents=discord.Intents.default(),
            tree_cls=LoraTree,
            guild_ready_timeout=guild_ready_timeout,
            allowed_mentions=discord.AllowedMentions.none(),  # each message names whom it may ping
        )
        self.services = services
        self.settings = services.settings
        self.file_server = file_server
        self.cooldowns = Cooldowns(services.settings.command_cooldown_s)
        self.direct = DirectNotifier(self, services)  # the owner's DM at a job's end (/notify on)
        self.notifier = ProgressNotifier(
            self, services, services.settings.progress_interval_s, on_end=self.direct.job_ended
        )
        self._unsubscribe = None

    async def setup_hook(self) -> None:
        await asyncio.to_thread(self.services.registry.detect_families)  # no torch import in a command
        for cog in COGS:
            await self.add_cog(cog(self))
        self.add_dynamic_items(*PERSISTENT_ITEMS)
        self._unsubscribe = self.services.bus.subscribe(self.notifier.on_update)
        await self.tree.set_translator(CatalogTranslator())  # Japanese names and descriptions
        await self.sync_commands()

    async def sync_commands(self) -> None:
        """Guild commands (instant) when guild ids are set, else global ones (up to an hour)."""
        guild_ids = self.settings.guild_ids
        if not guild_ids:
            await self.tree.sync()
            return
        for guild_id in guild_ids:
            guild = discord.Object(guild_id)
            self.tree.copy_global_to(guild=guild)
            try:
                await self.tree.sync(guild=guild)
            except discord.Forbidden:
                from .settings import SettingsError

                raise SettingsError(
                    f"cannot register the commands in guild {guild_id}: invite the bot there with the "
                    "applications.commands scope, or fix LORABOT_GUILD_IDS"
                ) from None
        self.tree.clear_commands(guild=None)
        await self.tree.sync()  # no global copies beside the guild ones

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A button or form nobody answers belongs to a menu that expired (a restart, a timeout):
        say so instead of letting Discord show "This interaction failed"."""
        if interaction.type not in (discord.InteractionType.component, discord.InteractionType.modal_submit):
            return
        await asyncio.sleep(EXPIRED_AFTER_S)
        if not interaction.extras.get("claimed") and not interaction.response.is_done():
            with contextlib.suppress(discord.HTTPException):
                t = messages(interaction.locale)
                await interaction.response.send_message(
                    "⌛ " + t("This menu has expired: run the command again."), ephemeral=True
                )

    async def close(self) -> None:
        if self._unsubscribe is not None:  # deliver what was published (a job's end) before leaving
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.services.bus.drain(), 4)
            self._unsubscribe()
            self._unsubscribe = None
        await self.notifier.close()
        await super().close()
