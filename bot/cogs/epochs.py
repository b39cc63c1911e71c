"""/epochs: every saved epoch of a job with its preview; download, save, train further, compare."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from ..queue.trust import trusted_job_file
from ..ui.base import OwnerView
from ..ui.common import answer, job_choices, services_of
from ..ui.modals import CompareModal
from ..ui.persistent import epoch_action_buttons

if TYPE_CHECKING:
    from db.jobs import EpochRow, JobRow


class EpochPager(OwnerView):
    """One saved epoch per page: its preview grid and its buttons."""

    def __init__(self, owner_id: int, job: JobRow, epochs: list[EpochRow]):
        super().__init__(owner_id)
        self.job, self.epochs = job, epochs
        self.index = len(epochs) - 1  # the last epoch first: usually the one people want

    def render(self) -> tuple[discord.Embed, list[discord.File]]:
        self.clear_items()
        row = self.epochs[self.index]
        embed = discord.Embed(
            title=f"Job #{self.job.id} · {self.job.title} · epoch {row.epoch} "
            f"({self.index + 1}/{len(self.epochs)} saved)"[:256],
            description=f"step {row.step}/{self.job.total_steps} · state {self.job.state}",
            color=discord.Color.blurple(),
        )
        files = []
        preview = trusted_job_file(self.job.folder, row.preview_path, ".png") if row.preview_path else None
        if preview is not None:
            name = f"preview-e{row.epoch}.png"
            embed.set_image(url=f"attachment://{name}")
            files.append(discord.File(preview, filename=name))
        else:
            embed.add_field(name="Preview", value="none for this epoch")
        for item in epoch_action_buttons(self.job.id, row.epoch):
            self.add_item(item)
        for button in (self.prev, self.next, self.compare):
            self.add_item(button)
        self.prev.disabled = self.index == 0
        self.next.disabled = self.index >= len(self.epochs) - 1
        embed.set_footer(text="Download: the .safetensors · Save: to your library for /generate")
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
        await interaction.response.send_modal(CompareModal(self.owner_id, self.job.id, [e.epoch for e in self.epochs]))

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
        services = services_of(interaction)
        row = await services.queue.job(interaction.user.id, job)  # parsed there: job_number
        saved = await services.queue.epochs(row.id, on_disk=True)
        if row.kind != "train" or not saved:
            what = "is not a training job" if row.kind != "train" else f"has no saved epoch yet ({row.state})"
            await answer(interaction, f"Job #{row.id} {what}.")
            return
        pager = EpochPager(interaction.user.id, row, saved)
        embed, files = pager.render()
        pager.message = await answer(interaction, embed=embed, files=files, view=pager)
