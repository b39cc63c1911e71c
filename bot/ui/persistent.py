"""Buttons that outlive the bot process: the job and epoch are in the custom id.

They sit on progress messages, preview grids and /epochs pages; after a restart discord.py
rebuilds them from the custom id (``DynamicItem``), so Cancel, Download, Save and Train further
keep working on messages posted long ago. Each checks the clicker owns the job (operators may
cancel any job).
"""

from __future__ import annotations

import re
from pathlib import Path

import discord

from .common import answer, is_operator, run_service, services_of
from .files import send_file

PREFIX = "lorabot"


class CancelJobButton(
    discord.ui.DynamicItem[discord.ui.Button], template=rf"{PREFIX}:cancel:(?P<job>[0-9]+)"
):
    def __init__(self, job_id: int):
        super().__init__(
            discord.ui.Button(
                label="Cancel job",
                style=discord.ButtonStyle.danger,
                custom_id=f"{PREFIX}:cancel:{job_id}",
                emoji="✖️",
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ):
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        services = services_of(interaction)
        job = await run_service(
            interaction,
            services.queue.cancel(interaction.user.id, self.job_id, operator=is_operator(interaction)),
        )
        if job is None:
            return
        if job.state == "cancelled":
            note = f", {job.refunded} stamina refunded" if job.refunded else ""
            await answer(interaction, f"🛑 Job #{job.id} cancelled before it started{note}.")
        else:
            await answer(
                interaction,
                f"🛑 Stopping job #{job.id}: the steps not trained are refunded, saved epochs stay yours.",
            )


class _EpochButton(discord.ui.DynamicItem[discord.ui.Button], template=r"unused"):
    """Base of the buttons about one saved epoch of a job."""

    action = ""
    label = ""
    emoji = ""
    style = discord.ButtonStyle.secondary

    def __init__(self, job_id: int, epoch: int):
        super().__init__(
            discord.ui.Button(
                label=f"{self.label} e{epoch}",
                emoji=self.emoji,
                style=self.style,
                custom_id=f"{PREFIX}:{self.action}:{job_id}:{epoch}",
            )
        )
        self.job_id = job_id
        self.epoch = epoch

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ):
        return cls(int(match["job"]), int(match["epoch"]))


class DownloadEpochButton(_EpochButton, template=rf"{PREFIX}:download:(?P<job>[0-9]+):(?P<epoch>[0-9]+)"):
    action, label, emoji, style = "download", "Download", "⬇️", discord.ButtonStyle.primary

    async def callback(self, interaction: discord.Interaction) -> None:
        services = services_of(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        path = await run_service(
            interaction, services.queue.epoch_file(interaction.user.id, self.job_id, self.epoch)
        )
        if path is None:
            return
        job = await services.queue.job(interaction.user.id, self.job_id)
        filename = f"{job.spec.get('output_name', 'lora')}-e{self.epoch:02d}.safetensors"
        await send_file(interaction, Path(path), filename, kind="epoch", ref=f"{self.job_id}/{self.epoch}")


class SaveEpochButton(_EpochButton, template=rf"{PREFIX}:save:(?P<job>[0-9]+):(?P<epoch>[0-9]+)"):
    action, label, emoji, style = "save", "Save", "💾", discord.ButtonStyle.success

    async def callback(self, interaction: discord.Interaction) -> None:
        services = services_of(interaction)
        job = await run_service(interaction, services.queue.job(interaction.user.id, self.job_id))
        if job is None:
            return
        from .modals import SaveLoraModal

        await interaction.response.send_modal(
            SaveLoraModal(self.job_id, self.epoch, f"{job.title}-e{self.epoch}")
        )


class TrainFurtherButton(_EpochButton, template=rf"{PREFIX}:further:(?P<job>[0-9]+):(?P<epoch>[0-9]+)"):
    action, label, emoji, style = "further", "Train further from", "➕", discord.ButtonStyle.secondary

    async def callback(self, interaction: discord.Interaction) -> None:
        services = services_of(interaction)
        job = await run_service(interaction, services.queue.job(interaction.user.id, self.job_id))
        if job is None:
            return
        from .modals import TrainFurtherModal

        await interaction.response.send_modal(TrainFurtherModal(job, self.epoch))


def epoch_buttons(job_id: int, epoch: int, *, further: bool = True) -> list[discord.ui.Item]:
    items: list[discord.ui.Item] = [DownloadEpochButton(job_id, epoch), SaveEpochButton(job_id, epoch)]
    if further:
        items.append(TrainFurtherButton(job_id, epoch))
    return items


PERSISTENT_ITEMS = (CancelJobButton, DownloadEpochButton, SaveEpochButton, TrainFurtherButton)
