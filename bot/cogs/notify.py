"""/notify on | off: a direct message when a job of yours finishes or fails.

Turning it on keeps the language of the member's Discord (the DMs are written in it) and sends a
first DM at once, so a member whose DMs are closed hears it now, not after a day of training.
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from ..direct import send_direct
from ..i18n import messages
from ..ui.common import answer, defer_thinking, services_of


@app_commands.guild_only()
class NotifyCog(
    commands.GroupCog, group_name="notify", group_description="A direct message when a job of yours ends"
):
    def __init__(self, bot: commands.Bot):
        self.bot = bot

    @app_commands.command(name="on", description="Get a direct message when a job of yours finishes or fails")
    async def turn_on(self, interaction: discord.Interaction) -> None:
        t = messages(interaction.locale)
        await defer_thinking(interaction)  # the first DM is sent before the answer
        await services_of(interaction).notify.enable(interaction.user.id, str(interaction.locale))
        hello = "🔔 " + t(
            "I will write to you here when a job of yours finishes or fails. "
            "To stop, use `/notify off` in the server."
        )
        if await send_direct(interaction.client, interaction.user.id, content=hello) is None:
            await answer(interaction, "🔔 " + t(
                "Direct messages are on, but Discord did not let me send you one: allow direct messages "
                "from this server's members (the server's Privacy Settings), or none will reach you. "
                "`/notify off` turns them off."
            ))  # fmt: skip
            return
        await answer(interaction, "🔔 " + t(
            "Direct messages are on: when a job of yours finishes or fails, I will tell you in a direct "
            "message too (the post in its channel stays). `/notify off` turns them off."
        ))  # fmt: skip

    @app_commands.command(name="off", description="No more direct messages when your jobs end")
    async def turn_off(self, interaction: discord.Interaction) -> None:
        t = messages(interaction.locale)
        if await services_of(interaction).notify.disable(interaction.user.id):
            text = t("Direct messages are off: the end of your jobs is posted in their channel only.")
        else:
            text = t(
                "Direct messages were already off: the end of your jobs is posted in their channel only."
            )
        await answer(interaction, "🔕 " + text)
