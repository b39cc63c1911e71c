"""/queue (your jobs: position, ETA, live progress, cancel; operators may see everyone's) and
/stamina (balance, next reset, history)."""

from __future__ import annotations

from collections.abc import Sequence

import discord
from discord import app_commands
from discord.ext import commands

from ..i18n import N_, Messages, messages
from ..queue.status import JobStatus, queue_status
from ..ui.common import answer, is_operator, require_operator, roles_of, services_of
from ..ui.embeds import job_line, table
from ..ui.pages import PagedView
from ..ui.persistent import cancel_action_button

MAX_CANCEL_BUTTONS = 5
QUEUE_PAGE = 8  # jobs per /queue page: two lines each, and up to five Cancel buttons below
HISTORY_PAGE = 15  # stamina changes per /stamina page
#: Why a balance changed (the ledger's reasons), for the catalogs.
LEDGER_REASONS = (N_("allowance"), N_("daily_reset"), N_("charge"), N_("refund"), N_("grant"), N_("revoke"))


def queue_embed(
    statuses: Sequence[JobStatus], page: int, pages: int, *, everyone: bool, paused: bool, t: Messages
) -> discord.Embed:
    title = t("The queue") if everyone else t("Your jobs")
    embed = discord.Embed(title=f"📋 {title}", color=discord.Color.blurple())
    if not statuses:
        embed.description = t("Nothing queued or running. Start one with `/train`.")
        return embed
    embed.description = "\n".join(job_line(status, owner=everyone, t=t) for status in statuses)[:4096]
    if paused:
        embed.set_footer(
            text="⏸️ " + t("The queue is paused by an operator: waiting jobs start when it resumes.")
        )
    return embed


def queue_view(owner_id: int, everyone: bool, statuses: list[JobStatus], t: Messages, page: int = 0):
    """Every job (all of a member's, or everyone's active ones) a page at a time, with Refresh
    and a persistent Cancel button per active job of the page (they work after a restart too)."""
    paused = bool(statuses) and statuses[0].paused

    def render(items: Sequence[JobStatus], page: int, pages: int) -> discord.Embed:
        return queue_embed(items, page, pages, everyone=everyone, paused=paused, t=t)

    def cancel_buttons(items: Sequence[JobStatus]) -> list[discord.ui.Item]:
        active = [s for s in items if s.job.state in ("queued", "running")]
        return [cancel_action_button(s.job.id, t) for s in active[:MAX_CANCEL_BUTTONS]]

    return QueueView(owner_id, statuses, render, t, per_page=QUEUE_PAGE, page=page, extra=cancel_buttons,
                     everyone=everyone)  # fmt: skip


class QueueView(PagedView):
    def __init__(
        self, owner_id: int, statuses: list[JobStatus], render, t: Messages, *, everyone: bool, **kw
    ):
        super().__init__(owner_id, statuses, render, t, timeout=180, **kw)  # a list goes stale
        self.everyone = everyone
        self.refresh.label = t("Refresh")

    @discord.ui.button(label="Refresh", emoji="🔄", style=discord.ButtonStyle.secondary, row=0)
    async def refresh(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        t = messages(interaction.locale)
        statuses = await _statuses(interaction, self.everyone)
        view = queue_view(self.owner_id, self.everyone, statuses, t, page=self.page)
        self.stop()
        await interaction.response.edit_message(embed=view.embed(), view=view)
        view.message = self.message


async def _statuses(interaction: discord.Interaction, everyone: bool) -> list[JobStatus]:
    """A member's jobs, active first, then every ended one (newest first); everyone's active jobs."""
    services = services_of(interaction)
    owner = None if everyone else interaction.user.id
    return await queue_status(services.queue, owner, include_finished=not everyone, limit=None)


def stamina_embed(balance, history: Sequence, page: int, pages: int, *, operator: bool, t: Messages):
    reset = int(balance.next_reset.timestamp())
    embed = discord.Embed(title="⚡ " + t("Stamina"), color=discord.Color.gold())
    embed.description = t(
        "**{balance}** / {allowance} · tier **{tier}**\nTops up to {allowance} <t:{reset}:R> (<t:{reset}:t>)",
        balance=balance.balance, allowance=balance.allowance, tier=balance.tier, reset=reset,
    )  # fmt: skip
    if history:
        rows = [(f"{h.delta:+d}", str(h.balance_after), t(h.reason), (h.note or "")[:28]) for h in history]
        headers = (t("change"), t("after"), t("why"), t("note"))
        embed.add_field(name=t("History"), value=table(rows, headers, limit=1024), inline=False)
    if operator:
        embed.set_footer(text=t("Operator: /operator grant | revoke | tier"))
    return embed


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
        view = queue_view(interaction.user.id, everyone, statuses, messages(interaction.locale))
        view.message = await answer(interaction, embed=view.embed(), view=view)

    @app_commands.command(name="stamina", description="Your stamina: balance, next reset, history")
    @app_commands.guild_only()
    async def stamina(self, interaction: discord.Interaction) -> None:
        services, t = services_of(interaction), messages(interaction.locale)
        balance = await services.stamina.balance(interaction.user.id, roles_of(interaction))
        history = await services.stamina.history(interaction.user.id, limit=None)
        operator = is_operator(interaction)

        def render(items: Sequence, page: int, pages: int) -> discord.Embed:
            return stamina_embed(balance, items, page, pages, operator=operator, t=t)

        view = PagedView(interaction.user.id, history, render, t, per_page=HISTORY_PAGE)
        view.message = await answer(interaction, embed=view.embed(), view=view)
