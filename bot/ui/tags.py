"""Tag pruning without typing: a paged browser (tag frequency, then one image per page with its
thumbnail and caption; there an image's caption can be edited as text or the image re-tagged)
and a select menu to pick tags to remove, with a confirmation."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import discord

from ..datasets.captions import MAX_CAPTION_CHARS, TagCount, split_tags
from ..i18n import N_, Messages, messages
from .base import OwnerView
from .common import answer, listed, run_service, services_of

THUMB = 256
PAGE_TAGS = 25
#: Where a caption came from (db.datasets.CAPTION_SOURCES).
SOURCES = {"tagger": N_("by the tagger"), "zip": N_("from your zip"), "hand": N_("edited by hand")}


def frequency_embed(dataset: str, table: list[TagCount], images: int, t: Messages) -> discord.Embed:
    """The merged tag frequency as a bar table (the guide's lower panel)."""
    width = max((len(t.tag) for t in table[:40]), default=3)
    lines = [
        f"{t.tag[:28].ljust(min(width, 28))} {'█' * max(1, round(t.share * 10)):<10} {t.count}"
        for t in table[:40]
    ]
    more = "\n" + t("… and {n} more", n=len(table) - 40) if len(table) > 40 else ""
    embed = discord.Embed(
        title="🏷️ "
        + t("{dataset}: {tags} tags on {images} images", dataset=dataset, tags=len(table), images=images),
        description=("```\n" + "\n".join(lines) + "\n```" + more)[:4096] if lines else t("No tags yet."),
        color=discord.Color.blurple(),
    )
    embed.set_footer(
        text=t("▶ to see each image · Remove tags… to prune · Re-tag… to tag again (undo: /tags undo)")
    )
    return embed


def thumbnail(path: Path) -> bytes:
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((THUMB, THUMB))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        return out.getvalue()


class TagBrowser(OwnerView):
    """Page 0: tag frequency; page n: image n with its caption and a thumbnail."""

    def __init__(self, owner_id: int, dataset: str, t: Messages):
        super().__init__(owner_id)
        self.dataset, self.t = dataset, t
        self.page = 0
        self.image_id: int | None = None
        self.overview.label, self.remove.label = t("Tags"), t("Remove tags…")
        self.delete.label, self.caption.label = t("Delete image"), t("Edit caption")
        self.jump.placeholder = t("Go to…")

    async def render(self, interaction: discord.Interaction) -> tuple[discord.Embed, list[discord.File]]:
        services, t = services_of(interaction), self.t
        images = await services.datasets.images(self.owner_id, self.dataset)
        self.page = max(0, min(self.page, len(images)))
        self.prev.disabled = self.page == 0
        self.next.disabled = self.page >= len(images)
        self.delete.disabled = self.caption.disabled = self.page == 0
        self.retag.label = t("Re-tag image…") if self.page else t("Re-tag all…")
        self._fill_jump(len(images))
        if self.page == 0:
            self.image_id = None
            table = await services.datasets.tag_table(self.owner_id, self.dataset)
            return frequency_embed(self.dataset, table, len(images), t), []
        image = images[self.page - 1]
        self.image_id = image.id  # the buttons act on the image shown, even if others change
        row = await services.datasets.get(self.owner_id, self.dataset)
        data = await asyncio.to_thread(thumbnail, services.datasets.image_path(row, image))
        embed = discord.Embed(
            title=t(
                "{dataset} · image {page}/{pages} (id {id})",
                dataset=self.dataset,
                page=self.page,
                pages=len(images),
                id=image.id,
            ),  # fmt: skip
            description=", ".join(f"`{t}`" for t in split_tags(image.caption))[:4096],
            color=discord.Color.blurple(),
        )
        embed.set_thumbnail(url="attachment://thumb.jpg")
        source = t(SOURCES[image.caption_source]) if image.caption_source in SOURCES else image.caption_source
        embed.set_footer(text=t("{file} · {size} · caption {source}", file=image.original_name,
                                size=f"{image.width}x{image.height}", source=source))  # fmt: skip
        return embed, [discord.File(io.BytesIO(data), filename="thumb.jpg")]

    def _fill_jump(self, count: int) -> None:
        """Up to 25 pages spread over the dataset (two taps to any image of 200)."""
        step = max(1, -(-count // 24))
        pages = [0, *range(1, count + 1, step)][:25]
        self.jump.options = [
            discord.SelectOption(
                label=self.t("Tag frequency") if p == 0 else self.t("Image {page}", page=p),
                value=str(p),
                default=p == self.page,
            )
            for p in pages
        ]
        self.jump.disabled = count == 0

    @discord.ui.select(placeholder="Go to…", row=2)
    async def jump(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
        self.page = int(select.values[0])
        await self.show(interaction)

    async def show(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer()  # a thumbnail of a large original takes a moment
        embed, files = await self.render(interaction)
        await interaction.edit_original_response(embed=embed, attachments=files, view=self)

    @discord.ui.button(emoji="◀️", style=discord.ButtonStyle.secondary)
    async def prev(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.page -= 1
        await self.show(interaction)

    @discord.ui.button(emoji="▶️", style=discord.ButtonStyle.secondary)
    async def next(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.page += 1
        await self.show(interaction)

    @discord.ui.button(label="Tags", emoji="🏷️", style=discord.ButtonStyle.secondary)
    async def overview(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.page = 0
        await self.show(interaction)

    @discord.ui.button(label="Remove tags…", emoji="✂️", style=discord.ButtonStyle.primary)
    async def remove(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await open_remover(interaction, self.dataset, self.image_id, self.t)

    @discord.ui.button(label="Delete image", emoji="🗑️", style=discord.ButtonStyle.danger, row=1)
    async def delete(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        from .base import ask_first

        services, t = services_of(interaction), self.t
        images = await services.datasets.images(self.owner_id, self.dataset)
        image = next((i for i in images if i.id == self.image_id), None)
        if image is None:
            await answer(interaction, t("That image is gone already: press ◀ or ▶ to refresh."))
            return
        owner, dataset = self.owner_id, self.dataset
        said = {"id": image.id, "name": image.original_name, "dataset": dataset}

        async def confirmed(click: discord.Interaction) -> None:
            await services.datasets.remove_images(owner, dataset, [image.id])
            left = len(await services.datasets.images(owner, dataset))
            content = "🗑️ " + t(
                "Deleted image {id} ({name}): {left} left in **{dataset}**.", left=left, **said
            )
            await click.response.edit_message(content=content, view=None)

        question = t("Delete image {id} ({name}) from **{dataset}**?", **said)
        await ask_first(interaction, question, confirmed, label=t("Delete"))

    @discord.ui.button(label="Edit caption", emoji="✏️", style=discord.ButtonStyle.secondary, row=1)
    async def caption(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        if self.image_id is not None:
            await open_caption_form(interaction, self.dataset, self.image_id, self, self.t)

    @discord.ui.button(label="Re-tag all…", emoji="🔁", style=discord.ButtonStyle.secondary, row=1)
    async def retag(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        from .retag import ask_retag

        ids = None if self.image_id is None else [self.image_id]
        await ask_retag(interaction, self.dataset, ids)  # a service error: on_error says it


async def open_caption_form(
    interaction: discord.Interaction,
    dataset: str,
    image_id: int,
    browser: TagBrowser | None = None,
    t: Messages | None = None,
) -> None:
    """Answer with the caption form of one image, prefilled with its caption (a modal must be the
    first answer, so this reads the caption and nothing slow)."""
    from .modals import CaptionModal

    t = t or messages(interaction.locale)
    images = await services_of(interaction).datasets.images(interaction.user.id, dataset)
    image = next((i for i in images if i.id == image_id), None)
    if image is None:
        text = t(
            "image {image} is not in dataset '{dataset}' (see /tags view).", image=image_id, dataset=dataset
        )
        await answer(interaction, "❌ " + text)
    elif len(image.caption) > MAX_CAPTION_CHARS:
        text = t(
            "The caption of image {image} is longer than a form holds ({limit} characters): "
            "edit it with `/tags remove` and `/tags add image:…` instead.",
            image=image_id, limit=MAX_CAPTION_CHARS,
        )  # fmt: skip
        await answer(interaction, "❌ " + text)
    else:
        await interaction.response.send_modal(
            CaptionModal(interaction.user.id, dataset, image_id, image.caption, browser, t)
        )


async def open_remover(
    interaction: discord.Interaction, dataset: str, image_id: int | None, t: Messages | None = None
) -> None:
    """Answer with a select menu of the dataset's (or one image's) tags, most frequent first."""
    view = TagRemover(interaction.user.id, dataset, image_id, t or messages(interaction.locale))
    if not await view.load(interaction):
        return
    view.message = await answer(interaction, view.prompt(), view=view)


class TagRemover(OwnerView):
    """Pick tags (25 per page) → Remove → confirm → removed from every caption (or one image)."""

    def __init__(self, owner_id: int, dataset: str, image_id: int | None, t: Messages):
        super().__init__(owner_id)
        self.dataset, self.image_id, self.t = dataset, image_id, t
        self.pick.placeholder, self.more.label = t("Tags to remove"), t("More tags ▶")
        self.tags: list[TagCount] = []
        self.chunk = 0
        self.chosen: set[str] = set()

    async def load(self, interaction: discord.Interaction) -> bool:
        services = services_of(interaction)
        table = await run_service(interaction, services.datasets.tag_table(self.owner_id, self.dataset))
        if table is None:
            return False
        row = await services.datasets.get(self.owner_id, self.dataset)
        if self.image_id is not None:
            images = await services.datasets.images(self.owner_id, self.dataset)
            mine = {t for i in images if i.id == self.image_id for t in split_tags(i.caption)}
            table = [t for t in table if t.tag in mine]
        self.tags = [t for t in table if t.tag != row.trigger_word]
        if not self.tags:
            await answer(interaction, self.t("There are no tags to remove (the trigger word always stays)."))
            return False
        self._fill()
        return True

    def prompt(self) -> str:
        t = self.t
        page = {"page": self.chunk + 1, "pages": -(-len(self.tags) // PAGE_TAGS)}
        if self.image_id is not None:
            text = t(
                "Pick tags to remove from image {image} (page {page}/{pages}).", image=self.image_id, **page
            )
        else:
            text = t("Pick tags to remove from every image of **{dataset}** (page {page}/{pages}).",
                     dataset=self.dataset, **page)  # fmt: skip
        if self.chosen:
            text += " " + t("Chosen: {tags}.", tags=listed(sorted(self.chosen), t=t))
        return text[:2000]

    def _fill(self) -> None:
        first = self.chunk * PAGE_TAGS
        part = self.tags[first : first + PAGE_TAGS]
        self.pick.options = [  # the value is the index: a tag may be longer than 100 characters
            discord.SelectOption(label=tag.tag[:100], value=str(first + i), default=tag.tag in self.chosen,
                                 description=self.t("on {n} image(s)", n=tag.count))
            for i, tag in enumerate(part)
        ]  # fmt: skip
        self.pick.max_values = len(part)
        self.more.disabled = len(self.tags) <= PAGE_TAGS
        self.apply.disabled = not self.chosen
        n = len(self.chosen)
        self.apply.label = self.t("Remove {n} tag(s)", n=n) if n else self.t("Remove")

    @discord.ui.select(placeholder="Tags to remove", min_values=0, max_values=1)
    async def pick(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
        shown = {self.tags[int(o.value)].tag for o in select.options}
        self.chosen = (self.chosen - shown) | {self.tags[int(v)].tag for v in select.values}
        self._fill()
        await interaction.response.edit_message(content=self.prompt(), view=self)

    @discord.ui.button(label="More tags ▶", style=discord.ButtonStyle.secondary)
    async def more(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.chunk = (self.chunk + 1) % -(-len(self.tags) // PAGE_TAGS)
        self._fill()
        await interaction.response.edit_message(content=self.prompt(), view=self)

    @discord.ui.button(label="Remove", style=discord.ButtonStyle.danger, disabled=True)
    async def apply(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        from .base import ConfirmView

        tags = sorted(self.chosen)
        owner, dataset, image_id, t = self.owner_id, self.dataset, self.image_id, self.t

        async def confirmed(click: discord.Interaction) -> None:
            services = services_of(click)
            result = await run_service(click, services.datasets.remove_tags(owner, dataset, tags, image_id))
            if result is not None:
                content = removed_line(tags, result.changed, dataset, t)
                await click.response.edit_message(content=content, view=None)

        self.stop()
        view = ConfirmView(owner, confirmed, confirm_label=t("Remove"), style=discord.ButtonStyle.danger, t=t)
        content = remove_question(tags, image_id, dataset, t)
        await interaction.response.edit_message(content=content, view=view)
        view.message = self.message


def remove_question(tags: list[str], image_id: int | None, dataset: str, t: Messages) -> str:
    """Remove these tags from every image (or one image) of the dataset?"""
    if image_id is not None:
        text = t("Remove {tags} from image {image} of **{dataset}**?",
                 tags=listed(tags, t=t), image=image_id, dataset=dataset)  # fmt: skip
    else:
        text = t("Remove {tags} from every image of **{dataset}**?", tags=listed(tags, t=t), dataset=dataset)
    return text[:2000]


def removed_line(tags: list[str], changed: int, dataset: str, t: Messages) -> str:
    return "✂️ " + t(
        "Removed {tags} from {n} caption(s). Undo with `/tags undo dataset:{dataset}`.",
        tags=listed(tags, t=t), n=changed, dataset=dataset,
    )  # fmt: skip
