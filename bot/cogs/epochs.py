"""/epochs: every saved epoch of a job with its preview; download, save, train further, compare."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from ..i18n import N_, Messages, messages
from ..queue.trust import trusted_job_file
from ..ui.base import OwnerView
from ..ui.common import answer, job_choices, services_of
from ..ui.modals import CompareModal
from ..ui.persistent import epoch_action_buttons

if TYPE_CHECKING:
    from db.jobs import EpochRow, JobRow

#: A job's states as a member reads them (``t(job.state)``), for the catalogs.
JOB_STATES = (N_("queued"), N_("running"), N_("cancelling"), N_("done"), N_("failed"), N_("cancelled"))


class EpochPager(OwnerView):
    """One saved epoch per page: its preview grid and its buttons."""

    def __init__(self, owner_id: int, job: JobRow, epochs: list[EpochRow], t: Messages):
        super().__init__(owner_id)
        self.job, self.epochs, self.t = job, epochs, t
        self.index = len(epochs) - 1  # the last epoch first: usually the one people want
        self.compare.label = t("Compare…")

    def render(self) -> tuple[discord.Embed, list[discord.File]]:
        self.clear_items()
        t, row, job = self.t, self.epochs[self.index], self.job
        title = t("Job #{job} · {title} · epoch {epoch} ({index}/{count} saved)", job=job.id, title=job.title,
                  epoch=row.epoch, index=self.index + 1, count=len(self.epochs))  # fmt: skip
        embed = discord.Embed(
            title=title[:256],
            description=t("step {step}/{total} · state {state}", step=row.step, total=job.total_steps,
                          state=t(job.state)),
            color=discord.Color.blurple(),
        )  # fmt: skip
        files = []
        preview = trusted_job_file(self.job.folder, row.preview_path, ".png") if row.preview_path else None
        if preview is not None:
            name = f"preview-e{row.epoch}.png"
            embed.set_image(url=f"attachment://{name}")
            files.append(discord.File(preview, filename=name))
        else:
            embed.add_field(name=t("Preview"), value=t("none for this epoch"))
        for item in epoch_action_buttons(self.job.id, row.epoch, t):
            self.add_item(item)
        for button in (self.prev, self.next, self.compare):
            self.add_item(button)
        self.prev.disabled = self.index == 0
        self.next.disabled = self.index >= len(self.epochs) - 1
        embed.set_footer(text=t("Download: the .safetensors · Save: to your library for /generate"))
        return embed, files

    @discord.ui.button(emoji="◀️", style=discord.ButtonStyle.secondary, row=1)
    async def prev(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.index -= 1
        await self._show(interaction)

    @discord.ui.button(emoji="▶️", style=discord.ButtonStyle.secondary, row=1)
    async def next(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.index += 1
        await self._show(interaction)

    @discord.ui.button(label="Compare…", emoji="🔬", style=discord.ButtonStyle.secondary, row=1)
    async def compare(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        saved = [e.epoch for e in self.epochs]
        await interaction.response.send_modal(CompareModal(self.owner_id, self.job.id, saved, self.t))

    async def _show(self, interaction: discord.Interaction) -> None:
        self.index = max(0, min(self.index, len(self.epochs) - 1))
        embed, files = self.render()
        await interaction.response.edit_message(embed=embed, attachments=files, view=self)


class EpochsCog(commands.Cog):
    def __init__(self, bot: commands.Bot):
        self.bot = bot

    @app_commands.command(
        name="epochs", description="The saved epochs of a job: preview, download, save, compare"
    )
    @app_commands.guild_only()
    @app_commands.autocomplete(job=job_choices)
    @app_commands.describe(job="One of your training jobs")
    async def epochs(self, interaction: discord.Interaction, job: str) -> None:
        services, t = services_of(interaction), messages(interaction.locale)
        row = await services.queue.job(interaction.user.id, job)  # parsed there: job_number
        saved = await services.queue.epochs(row.id, on_disk=True)
        if row.kind != "train":
            await answer(interaction, t("Job #{job} is not a training job.", job=row.id))
            return
        if not saved:
            await answer(
                interaction, t("Job #{job} has no saved epoch yet ({state}).", job=row.id, state=t(row.state))
            )
            return
        pager = EpochPager(interaction.user.id, row, saved, t)
        embed, files = pager.render()
        pager.message = await answer(interaction, embed=embed, files=files, view=pager)
