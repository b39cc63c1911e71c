"""/upload (up to 10 attachments: images or zips) and the "Add to dataset" message command."""

from __future__ import annotations

import asyncio

import discord
from discord import app_commands
from discord.ext import commands

from ..datasets.ingest import BatchReport
from ..datasets.phrases import said
from ..i18n import N_, Messages, messages
from ..ui.common import answer, dataset_choices, services_of
from ..ui.pages import PageTurner, page_count, page_items
from ..ui.progress_line import ProgressLine, stopped_line


class UploadCog(commands.Cog):
    def __init__(self, bot: commands.Bot):
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Add to dataset", callback=self.add_to_dataset)
        self.menu.guild_only = True
        bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(
        name="upload", description="Add images (PNG, JPEG, WEBP, BMP, GIF) or a zip to a dataset"
    )
    @app_commands.guild_only()
    @app_commands.describe(
        dataset="The dataset to add to", file1="An image, or a zip of images and .txt captions"
    )
    @app_commands.autocomplete(dataset=dataset_choices)
    async def upload(
        self,
        interaction: discord.Interaction,
        dataset: str,
        file1: discord.Attachment,
        file2: discord.Attachment | None = None,
        file3: discord.Attachment | None = None,
        file4: discord.Attachment | None = None,
        file5: discord.Attachment | None = None,
        file6: discord.Attachment | None = None,
        file7: discord.Attachment | None = None,
        file8: discord.Attachment | None = None,
        file9: discord.Attachment | None = None,
        file10: discord.Attachment | None = None,
    ) -> None:
        files = [f for f in (file1, file2, file3, file4, file5, file6, file7, file8, file9, file10) if f]
        await services_of(interaction).datasets.get(interaction.user.id, dataset)  # fails fast on a bad name
        await interaction.response.defer(ephemeral=True, thinking=True)
        await ingest_attachments(interaction, dataset, files)

    async def add_to_dataset(self, interaction: discord.Interaction, message: discord.Message) -> None:
        files, t = list(message.attachments), messages(interaction.locale)
        if not files:
            await answer(
                interaction,
                "❌ " + t("That message has no attachments: pick a message with images or a zip."),
            )
            return
        rows = await services_of(interaction).datasets.list(interaction.user.id)
        if not rows:
            await answer(interaction, t("You have no datasets yet: create one with `/dataset new` first."))
            return
        view = PickDatasetView(interaction.user.id, [d.name for d, _ in rows], files, t)
        view.message = await answer(interaction, view.question(), view=view)


class PickDatasetView(PageTurner):
    """A menu of the member's datasets, 25 at a time (Discord's most), ◀ ▶ for the others."""

    PER_PAGE = 25

    def __init__(self, owner_id: int, names: list[str], files: list[discord.Attachment], t: Messages):
        super().__init__(owner_id, page_count(len(names), self.PER_PAGE), t)
        self.names, self.files = names, files
        self.pick.placeholder = t("Choose a dataset")
        self.show_page()

    def question(self) -> str:
        text = self.t("Add the {n} attachment(s) of that message to which dataset?", n=len(self.files))
        if self.pages > 1:
            text += " " + self.t(
                "(page {page}/{pages} of your datasets)", page=self.page + 1, pages=self.pages
            )
        return text

    def show_page(self) -> None:
        super().show_page()
        names = page_items(self.names, self.page, self.PER_PAGE)
        self.pick.options = [discord.SelectOption(label=n[:100], value=n[:100]) for n in names]

    async def send_page(self, interaction: discord.Interaction) -> None:
        await interaction.response.edit_message(content=self.question(), view=self)

    @discord.ui.select(placeholder="Choose a dataset", min_values=1, max_values=1, row=0)
    async def pick(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
        self.stop()
        content = self.t("Adding to **{dataset}**…", dataset=select.values[0])
        await interaction.response.edit_message(content=content, view=None)
        await ingest_attachments(interaction, select.values[0], self.files)


async def ingest_attachments(
    interaction: discord.Interaction, dataset: str, files: list[discord.Attachment]
) -> None:
    """Download, check, crop and tag the attachments, showing progress on the (deferred) answer."""
    services, t = services_of(interaction), messages(interaction.locale)
    limit = services.settings.max_file_mb
    too_big = [f for f in files if f.size > limit * 2**20]
    wanted = [f for f in files if f not in too_big]
    progress = ProgressLine(interaction)
    progress.show(t("Downloading {n} file(s)…", n=len(wanted)))
    payload = list(
        zip([f.filename for f in wanted], await asyncio.gather(*(f.read() for f in wanted)), strict=True)
    )
    report = BatchReport()
    if payload:
        try:
            report = await services.datasets.add_files(interaction.user.id, dataset, payload, progress)
        except Exception as exc:  # the progress line ends with what happened, whatever it was
            await progress.finish()
            await interaction.edit_original_response(
                content=stopped_line(exc, N_("Upload"), N_("nothing was added"), t), embed=None
            )
            return
    await progress.finish()
    info = await services.datasets.info(interaction.user.id, dataset)
    embed = report_embed(dataset, report, too_big, limit, info, t)
    await interaction.edit_original_response(content=None, embed=embed)


def report_embed(
    dataset: str, report: BatchReport, too_big: list[discord.Attachment], limit: float, info, t: Messages
) -> discord.Embed:
    """What an upload added and skipped (with why), in the member's language."""
    skipped = [
        t("{file}: {size} MB is over the {limit} MB limit per file",
          file=f.filename, size=f"{f.size / 2**20:.1f}", limit=f"{limit:g}")
        for f in too_big
    ]  # fmt: skip
    skipped += [f"{s.name}: {said(s.reason, t)}" for s in report.skipped]
    embed = discord.Embed(
        title="📥 " + t("{dataset}: added {n} image(s)", dataset=dataset, n=len(report.added)),
        color=discord.Color.green() if report.added else discord.Color.orange(),
        description=t(
            "The dataset now has **{images}** images and {tags} distinct tags.",
            images=info.images,
            tags=info.tags,
        ),
    )
    if skipped:
        embed.add_field(name=t("Skipped {n}", n=len(skipped)), value="\n".join(skipped)[:1024], inline=False)
    if report.warnings:
        warnings = "\n".join(said(w, t) for w in report.warnings)
        embed.add_field(name=t("Warnings"), value=warnings[:1024], inline=False)
    embed.set_footer(text=t("Next: /tags view to check the tags, then /train"))
    return embed
