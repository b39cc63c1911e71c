"""/tags view | remove | add | replace | caption | retag | undo."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from ..datasets.captions import split_tags
from ..datasets.phrases import said
from ..datasets.retag import parse_image_ids
from ..datasets.service import ServiceError
from ..i18n import messages
from ..ui.base import ask_first
from ..ui.common import answer, dataset_choices, services_of, tag_choices
from ..ui.retag import ask_retag
from ..ui.tags import TagBrowser, open_caption_form, open_remover, remove_question, removed_line
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
        browser = TagBrowser(interaction.user.id, row.name, messages(interaction.locale))
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
        services, t = services_of(interaction), messages(interaction.locale)
        row = await services.datasets.get(interaction.user.id, dataset)
        if not tags:
            await open_remover(interaction, row.name, image, t)
            return
        wanted = [t.strip() for t in tags.split(",") if t.strip()]
        owner = interaction.user.id
        if image is None:
            known = {t.tag for t in await services.datasets.tag_table(owner, row.name)}
        else:  # the tags of that one image
            images = await services.datasets.images(owner, row.name)
            known = {t for i in images if i.id == image for t in split_tags(i.caption)}
        if not wanted:
            raise ServiceError("name at least one tag")
        unknown = [tag for tag in wanted if tag not in known]
        if unknown:  # say so now, not after the confirmation
            raise ServiceError(
                "no such tag in {dataset}: {tags} (see /tags view)", dataset=row.name, tags=", ".join(unknown)
            )

        async def confirmed(click: discord.Interaction) -> None:
            result = await services.datasets.remove_tags(owner, row.name, wanted, image)
            await click.response.edit_message(
                content=removed_line(wanted, result.changed, row.name, t), view=None
            )

        question = remove_question(wanted, image, row.name, t)
        await ask_first(interaction, question, confirmed, label=t("Remove"))

    @app_commands.command(name="add", description="Add tags to every caption (or one image)")
    @app_commands.describe(tags="Comma-separated tags", image=IMAGE_HELP)
    @app_commands.autocomplete(dataset=dataset_choices)
    async def add(
        self, interaction: discord.Interaction, dataset: str, tags: str, image: int | None = None
    ) -> None:
        result = await services_of(interaction).datasets.add_tags(interaction.user.id, dataset, [tags], image)
        await answer(interaction, changed_line(result, messages(interaction.locale)))

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
        await answer(interaction, changed_line(result, messages(interaction.locale)))

    @app_commands.command(name="caption", description="Edit one image's caption as text (a form)")
    @app_commands.describe(image="The image's id (on its page in /tags view)")
    @app_commands.autocomplete(dataset=dataset_choices)
    async def caption(self, interaction: discord.Interaction, dataset: str, image: int) -> None:
        row = await services_of(interaction).datasets.get(interaction.user.id, dataset)
        await open_caption_form(interaction, row.name, image, t=messages(interaction.locale))

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
        t = messages(interaction.locale)
        await answer(
            interaction,
            "↩️ " + t("{edit} ({n} caption(s)).", edit=said(result.description, t), n=result.changed),
        )


def changed_line(result, t) -> str:
    """An edit (a Phrase: "add a, b") and how many captions it changed."""
    return "🏷️ " + t("{edit}: {n} caption(s) changed.", edit=said(result.description, t), n=result.changed)
