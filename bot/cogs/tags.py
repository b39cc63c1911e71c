"""/tags view | remove | add | replace | caption | retag | undo."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from ..datasets.captions import split_tags
from ..datasets.retag import parse_image_ids
from ..datasets.service import ServiceError
from ..ui.base import ask_first
from ..ui.common import answer, dataset_choices, listed, services_of, tag_choices
from ..ui.retag import ask_retag
from ..ui.tags import TagBrowser, open_caption_form, open_remover
from .datasets import tagger_choices

IMAGE_HELP = "Only this image (its id is on its page in /tags view); default: every image"


@app_commands.guild_only()
class TagsCog(commands.GroupCog, group_name="tags", group_description="See and prune your dataset's tags"):
    def __init__(self, bot: commands.Bot):
        self.bot = bot

    @app_commands.command(name="view", description="Tag frequency, then each image with its caption")
    @app_commands.autocomplete(dataset=dataset_choices)
    async def view(self, interaction: discord.Interaction, dataset: str) -> None:
        row = await services_of(interaction).datasets.get(interaction.user.id, dataset)
        browser = TagBrowser(interaction.user.id, row.name)
        embed, files = await browser.render(interaction)
        browser.message = await answer(interaction, embed=embed, files=files, view=browser)

    @app_commands.command(
        name="remove", description="Remove tags from every caption (or one image); asks first"
    )
    @app_commands.describe(tags="Comma-separated; leave empty to pick from a menu", image=IMAGE_HELP)
    @app_commands.autocomplete(dataset=dataset_choices, tags=tag_choices)
    async def remove(
        self,
        interaction: discord.Interaction,
        dataset: str,
        tags: str | None = None,
        image: int | None = None,
    ) -> None:
        services = services_of(interaction)
        row = await services.datasets.get(interaction.user.id, dataset)
        if not tags:
            await open_remover(interaction, row.name, image)
            return
        wanted = [t.strip() for t in tags.split(",") if t.strip()]
        owner = interaction.user.id
        if image is None:
            known = {t.tag for t in await services.datasets.tag_table(owner, row.name)}
        else:  # the tags of that one image
            images = await services.datasets.images(owner, row.name)
            known = {t for i in images if i.id == image for t in split_tags(i.caption)}
        unknown = [t for t in wanted if t not in known]
        if unknown or not wanted:  # say so now, not after the confirmation
            raise ServiceError(
                f"no such tag in {row.name}: {', '.join(unknown) or '(none given)'} (see /tags view)"
            )

        async def confirmed(click: discord.Interaction) -> None:
            result = await services.datasets.remove_tags(owner, row.name, wanted, image)
            await click.response.edit_message(
                content=f"✂️ Removed {listed(wanted)} from {result.changed} caption(s). "
                f"Undo with `/tags undo dataset:{row.name}`.",
                view=None,
            )

        where = f"image {image}" if image is not None else "every image"
        await ask_first(
            interaction, f"Remove {listed(wanted)} from {where} of **{row.name}**?", confirmed, label="Remove"
        )

    @app_commands.command(name="add", description="Add tags to every caption (or one image)")
    @app_commands.describe(tags="Comma-separated tags", image=IMAGE_HELP)
    @app_commands.autocomplete(dataset=dataset_choices)
    async def add(
        self, interaction: discord.Interaction, dataset: str, tags: str, image: int | None = None
    ) -> None:
        result = await services_of(interaction).datasets.add_tags(interaction.user.id, dataset, [tags], image)
        await answer(interaction, f"🏷️ {result.description}: {result.changed} caption(s) changed.")

    @app_commands.command(
        name="replace", description="Replace one tag with another everywhere (or in one image)"
    )
    @app_commands.describe(old="The tag to replace", new="What to put instead", image=IMAGE_HELP)
    @app_commands.autocomplete(dataset=dataset_choices, old=tag_choices)
    async def replace(
        self, interaction: discord.Interaction, dataset: str, old: str, new: str, image: int | None = None
    ) -> None:
        result = await services_of(interaction).datasets.replace_tag(
            interaction.user.id, dataset, old, new, image
        )
        await answer(interaction, f"🏷️ {result.description}: {result.changed} caption(s) changed.")

    @app_commands.command(name="caption", description="Edit one image's caption as text (a form)")
    @app_commands.describe(image="The image's id (on its page in /tags view)")
    @app_commands.autocomplete(dataset=dataset_choices)
    async def caption(self, interaction: discord.Interaction, dataset: str, image: int) -> None:
        row = await services_of(interaction).datasets.get(interaction.user.id, dataset)
        await open_caption_form(interaction, row.name, image)

    @app_commands.command(
        name="retag", description="Tag the images again, e.g. at another threshold (asks first)"
    )
    @app_commands.describe(
        images="Image ids, e.g. '3, 5, 8' (on their pages in /tags view); default: every image",
        threshold="Tagger confidence 0-1 (lower: more tags); default: the dataset's",
        tagger="The auto-tagger; default: the dataset's",
    )
    @app_commands.autocomplete(dataset=dataset_choices, tagger=tagger_choices)
    async def retag(
        self,
        interaction: discord.Interaction,
        dataset: str,
        images: str | None = None,
        threshold: app_commands.Range[float, 0.01, 0.99] | None = None,
        tagger: str | None = None,
    ) -> None:
        await ask_retag(interaction, dataset, parse_image_ids(images), tagger, threshold)

    @app_commands.command(name="undo", description="Undo the last tag edit of a dataset")
    @app_commands.autocomplete(dataset=dataset_choices)
    async def undo(self, interaction: discord.Interaction, dataset: str) -> None:
        result = await services_of(interaction).datasets.undo(interaction.user.id, dataset)
        await answer(interaction, f"↩️ {result.description} ({result.changed} caption(s)).")
