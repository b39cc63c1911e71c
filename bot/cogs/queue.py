"""/queue (your jobs: position, ETA, live progress, cancel; operators may see everyone's) and
/stamina (balance, next reset, history)."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from ..queue.status import JobStatus, queue_status
from ..ui.base import OwnerView
from ..ui.common import answer, is_operator, require_operator, roles_of, services_of
from ..ui.embeds import job_line, table
from ..ui.persistent import cancel_action_button

MAX_CANCEL_BUTTONS = 5


def queue_embed(statuses: list[JobStatus], *, everyone: bool) -> discord.Embed:
    title = "The queue" if everyone else "Your jobs"
    embed = discord.Embed(title=f"📋 {title}", color=discord.Color.blurple())
    if not statuses:
        embed.description = "Nothing queued or running. Start one with `/train`."
        return embed
    lines, size = [], 0
    for status in statuses:
        line = job_line(status, owner=everyone)
        if size + len(line) > 3900:
            lines.append(f"… and {len(statuses) - len(lines)} more")
            break
        lines.append(line)
        size += len(line) + 1
    embed.description = "\n".join(lines)
    if statuses[0].paused:
        embed.set_footer(text="⏸️ The queue is paused by an operator: waiting jobs start when it resumes.")
    return embed


class QueueView(OwnerView):
    """Refresh plus one persistent Cancel button per active job (they work after a restart too)."""

    def __init__(self, owner_id: int, everyone: bool, statuses: list[JobStatus]):
        super().__init__(owner_id, timeout=180)  # a list goes stale; short-lived views cost less memory
        self.everyone = everyone
        for status in [s for s in statuses if s.job.state in ("queued", "running")][:MAX_CANCEL_BUTTONS]:
            self.add_item(cancel_action_button(status.job.id))

    @discord.ui.button(label="Refresh", emoji="🔄", style=discord.ButtonStyle.secondary, row=0)
    async def refresh(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        statuses = await _statuses(interaction, self.everyone)
        view = QueueView(self.owner_id, self.everyone, statuses)
        self.stop()
        await interaction.response.edit_message(
            embed=queue_embed(statuses, everyone=self.everyone), view=view
        )
        view.message = self.message


async def _statuses(interaction: discord.Interaction, everyone: bool) -> list[JobStatus]:
    services = services_of(interaction)
    owner = None if everyone else interaction.user.id
    return await queue_status(services.queue, owner, include_finished=not everyone, limit=5)


class QueueCog(commands.Cog):
    def __init__(self, bot: commands.Bot):
        self.bot = bot

    @app_commands.command(name="queue", description="Your jobs: place in line, ETA, progress; cancel")
    @app_commands.guild_only()
    @app_commands.describe(everyone="Operators: show every member's jobs")
    async def queue(self, interaction: discord.Interaction, everyone: bool = False) -> None:
        if everyone:
            require_operator(interaction)
        statuses = await _statuses(interaction, everyone)
        view = QueueView(interaction.user.id, everyone, statuses)
        view.message = await answer(interaction, embed=queue_embed(statuses, everyone=everyone), view=view)

    @app_commands.command(name="stamina", description="Your stamina: balance, next reset, history")
    @app_commands.guild_only()
    async def stamina(self, interaction: discord.Interaction) -> None:
        services = services_of(interaction)
        balance = await services.stamina.balance(interaction.user.id, roles_of(interaction))
        history = await services.stamina.history(interaction.user.id, limit=10)
        reset = int(balance.next_reset.timestamp())
        embed = discord.Embed(title="⚡ Stamina", color=discord.Color.gold())
        embed.description = (
            f"**{balance.balance}** / {balance.allowance} · tier **{balance.tier}**\n"
            f"Tops up to {balance.allowance} <t:{reset}:R> (<t:{reset}:t>)"
        )
        if history:
            rows = [(f"{h.delta:+d}", str(h.balance_after), h.reason, (h.note or "")[:28]) for h in history]
            embed.add_field(
                name="Recent", value=table(rows, ("change", "after", "why", "note"), limit=1024), inline=False
            )
        if is_operator(interaction):
            embed.set_footer(text="Operator: /operator grant | revoke | tier")
        await answer(interaction, embed=embed)
