"""/dataset new | list | info | edit | delete."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from ..datasets.changes import SettingsChange
from ..i18n import Messages, messages
from ..ui.base import OwnerView, ask_first
from ..ui.common import answer, base_model_choices, choices, dataset_choices, quiet, services_of
from ..ui.embeds import table
from ..ui.pages import LIST_PAGE, PagedView

CropMode = Literal["none", "center", "focus"]


@quiet
async def tagger_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """The operator's taggers (members pick from these, never a path of their own)."""
    return choices([(t, t) for t in services_of(interaction).settings.tagger_choices()], current)


@app_commands.guild_only()
class DatasetCog(commands.GroupCog, group_name="dataset", group_description="Your training image sets"):
    def __init__(self, bot: commands.Bot):
        self.bot = bot

    @app_commands.command(name="new", description="Create an empty dataset (then /upload images to it)")
    @app_commands.describe(
        name="A name for it, e.g. 'my-oc'",
        base_model="The model the LoRA is trained for",
        trigger="The word that will call up your character or style, e.g. 'myoc'",
        crop_mode="none: keep the aspect (buckets); center; focus: keep the most detailed part",
        crop_size="WIDTHxHEIGHT for center/focus, e.g. 512x512 (default: the model's size)",
        tagger="The auto-tagger (ask the operator which exist)",
        threshold="Tagger confidence 0-1 (lower: more tags; default 0.35)",
    )
    @app_commands.autocomplete(base_model=base_model_choices, tagger=tagger_choices)
    async def new(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, 40],
        base_model: str,
        trigger: app_commands.Range[str, 1, 64],
        crop_mode: CropMode = "none",
        crop_size: str | None = None,
        tagger: str | None = None,
        threshold: app_commands.Range[float, 0.01, 0.99] | None = None,
    ) -> None:
        services, t = services_of(interaction), messages(interaction.locale)
        row = await services.datasets.create(
            interaction.user.id, name, base_model, trigger, crop_mode=crop_mode, crop_size=crop_size,
            tagger=tagger, general_threshold=threshold,
        )  # fmt: skip
        crop = t("no crop (aspect kept)") if row.crop_mode == "none" else _crop(row, t)
        created = t(
            "Created **{name}** for {model} · trigger `{trigger}` · {crop} · tagger {tagger} at {threshold}.",
            name=row.name, model=row.base_model, trigger=row.trigger_word, crop=crop, tagger=row.tagger,
            threshold=f"{row.general_threshold:g}",
        )  # fmt: skip
        after = t(
            "Next: `/upload dataset:{name}` with your images (or a zip), or long-press a message with "
            "images → Apps → *Add to dataset*.",
            name=row.name,
        )
        await answer(interaction, f"📁 {created}\n{after}")

    @app_commands.command(name="list", description="Your datasets")
    async def list_(self, interaction: discord.Interaction) -> None:
        rows = await services_of(interaction).datasets.list(interaction.user.id)
        t = messages(interaction.locale)
        if not rows:
            await answer(interaction, t("You have no datasets yet: start with `/dataset new`."))
            return
        headers = (t("name"), t("images"), t("model"), t("trigger"))

        def render(page_rows: Sequence, page: int, pages: int) -> discord.Embed:
            lines = [(d.name, str(n), d.base_model, d.trigger_word) for d, n in page_rows]
            return discord.Embed(title=t("Your datasets"), description=table(lines, headers))

        view = PagedView(interaction.user.id, rows, render, t, per_page=LIST_PAGE)
        view.message = await answer(interaction, embed=view.embed(), view=view)

    @app_commands.command(name="info", description="One dataset: images, tags, settings")
    @app_commands.autocomplete(name=dataset_choices)
    async def info(self, interaction: discord.Interaction, name: str) -> None:
        services, t = services_of(interaction), messages(interaction.locale)
        info = await services.datasets.info(interaction.user.id, name)
        top = await services.datasets.tag_table(interaction.user.id, name)
        await answer(interaction, embed=info_embed(info, top, t))

    @app_commands.command(
        name="edit", description="Rename a dataset or change its trigger, threshold, tagger or crop"
    )
    @app_commands.describe(
        name="The dataset to change",
        new_name="A new name for it",
        trigger="A new trigger word: every caption gets it first, and the old one goes",
        threshold="Tagger confidence 0-1 for later uploads and re-tags (lower: more tags)",
        tagger="The auto-tagger for later uploads and re-tags",
        crop_mode="For images uploaded from now on: none (buckets), center or focus",
        crop_size="WIDTHxHEIGHT for images uploaded from now on, e.g. 512x512",
    )
    @app_commands.autocomplete(name=dataset_choices, tagger=tagger_choices)
    async def edit(
        self,
        interaction: discord.Interaction,
        name: str,
        new_name: app_commands.Range[str, 1, 40] | None = None,
        trigger: app_commands.Range[str, 1, 64] | None = None,
        threshold: app_commands.Range[float, 0.01, 0.99] | None = None,
        tagger: str | None = None,
        crop_mode: CropMode | None = None,
        crop_size: str | None = None,
    ) -> None:
        services, t = services_of(interaction), messages(interaction.locale)
        change = await services.datasets.update(
            interaction.user.id, name, new_name=new_name, trigger=trigger, threshold=threshold, tagger=tagger,
            crop_mode=crop_mode, crop_size=crop_size,
        )  # fmt: skip
        retag = bool({"tagger", "general_threshold"} & set(change.changed)) and change.images > 0
        view = RetagNowView(interaction.user.id, change.after.name, change.images, t) if retag else None
        message = await answer(
            interaction, "\n".join(change_lines(change, t)), **({"view": view} if view else {})
        )
        if view is not None:
            view.message = message

    @app_commands.command(name="delete", description="Delete a dataset and its images (asks first)")
    @app_commands.autocomplete(name=dataset_choices)
    async def delete(self, interaction: discord.Interaction, name: str) -> None:
        services, t = services_of(interaction), messages(interaction.locale)
        info = await services.datasets.info(interaction.user.id, name)
        owner, dataset = interaction.user.id, info.dataset.name

        async def confirmed(click: discord.Interaction) -> None:
            await click.response.defer()  # waits for an upload to the dataset to finish
            await services.datasets.delete(owner, dataset)
            await click.edit_original_response(
                content="🗑️ " + t("Deleted **{name}**.", name=dataset), view=None
            )

        question = t(
            "Delete **{name}** and its {n} images? This cannot be undone (jobs already queued keep their own copy).",
            name=dataset, n=info.images,
        )  # fmt: skip
        await ask_first(interaction, question, confirmed, label=t("Delete"))


def info_embed(info, top: list, t: Messages) -> discord.Embed:
    """One dataset: its counts, settings and most common tags."""
    d = info.dataset
    embed = discord.Embed(title=f"📁 {d.name}", color=discord.Color.blurple())
    embed.add_field(name=t("Images"), value=str(info.images))
    embed.add_field(name=t("Distinct tags"), value=str(info.tags))
    embed.add_field(name=t("Base model"), value=d.base_model)
    embed.add_field(name=t("Trigger"), value=f"`{d.trigger_word}`")
    embed.add_field(name=t("Crop"), value=_crop(d, t))
    embed.add_field(name=t("Tagger"), value=f"{d.tagger} @ {d.general_threshold:g}")
    if top:
        common = discord.utils.escape_markdown(", ".join(f"{tag.tag} ({tag.count})" for tag in top[:15]))
        embed.add_field(name=t("Most common tags"), value=common[:1024], inline=False)
    own = t("{hand} edited by hand, {zip} from a zip", hand=info.hand, zip=info.zip)
    embed.add_field(name=t("Your own captions"), value=own)
    embed.set_footer(text=t("{n} tag edit(s) can be undone · /tags view to prune tags", n=info.undo_steps))
    return embed


def change_lines(change: SettingsChange, t: Messages) -> list[str]:
    """What changed, and what it means for the images already in the dataset."""
    before, after = change.before, change.after
    lines = ["✏️ " + t("Changed **{name}**:", name=after.name)]
    if "name" in change.changed:
        lines.append("• " + t("renamed from **{name}**", name=before.name))
    if "trigger_word" in change.changed:
        lines.append("• " + t(
            "trigger `{old}` → `{new}`: {n} caption(s) rewritten, `{new}` first and `{old}` gone",
            old=before.trigger_word, new=after.trigger_word, n=change.rewritten,
        ))  # fmt: skip
    if {"tagger", "general_threshold"} & set(change.changed):
        lines.append("• " + t(
            "tagger {old} → {new} for later uploads; re-tag to apply it to the images already in",
            old=f"{before.tagger} @ {before.general_threshold:g}", new=f"{after.tagger} @ {after.general_threshold:g}",
        ))  # fmt: skip
    if {"crop_mode", "crop_width", "crop_height"} & set(change.changed):
        lines.append("• " + t(
            "crop {old} → {new} for images uploaded from now on; the {n} image(s) already in keep theirs",
            old=_crop(before, t), new=_crop(after, t), n=change.images,
        ))  # fmt: skip
    return lines


def _crop(d, t: Messages) -> str:
    return t("none (buckets)") if d.crop_mode == "none" else f"{d.crop_mode} {d.crop_width}x{d.crop_height}"


class RetagNowView(OwnerView):
    """After a new tagger or threshold: one tap to re-tag the images already in (it asks first)."""

    def __init__(self, owner_id: int, dataset: str, images: int, t: Messages):
        super().__init__(owner_id)
        self.dataset = dataset
        self.now.label = t("Re-tag the {n} image(s) now…", n=images)

    @discord.ui.button(label="Re-tag now…", emoji="🔁", style=discord.ButtonStyle.primary)
    async def now(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        from ..ui.retag import ask_retag

        await ask_retag(interaction, self.dataset)
