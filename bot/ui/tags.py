"""Tag pruning without typing: a paged browser (tag frequency, then one image per page with its
thumbnail and caption; there an image's caption can be edited as text or the image re-tagged)
and a select menu to pick tags to remove, with a confirmation."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import discord

from ..datasets.captions import MAX_CAPTION_CHARS, TagCount, split_tags
from .base import OwnerView
from .common import answer, listed, run_service, services_of

THUMB = 256
PAGE_TAGS = 25
SOURCES = {"tagger": "by the tagger", "zip": "from your zip", "hand": "edited by hand"}


def frequency_embed(dataset: str, table: list[TagCount], images: int) -> discord.Embed:
    """The merged tag frequency as a bar table (the guide's lower panel)."""
    width = max((len(t.tag) for t in table[:40]), default=3)
    lines = [
        f"{t.tag[:28].ljust(min(width, 28))} {'█' * max(1, round(t.share * 10)):<10} {t.count}"
        for t in table[:40]
    ]
    more = f"\n… and {len(table) - 40} more" if len(table) > 40 else ""
    embed = discord.Embed(
        title=f"🏷️ {dataset}: {len(table)} tags on {images} images",
        description=("```\n" + "\n".join(lines) + "\n```" + more)[:4096] if lines else "No tags yet.",
        color=discord.Color.blurple(),
    )
    embed.set_footer(
        text="▶ to see each image · Remove tags… to prune · Re-tag… to tag again (undo: /tags undo)"
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

    def __init__(self, owner_id: int, dataset: str):
        super().__init__(owner_id)
        self.dataset = dataset
        self.page = 0
        self.image_id: int | None = None

    async def render(self, interaction: discord.Interaction) -> tuple[discord.Embed, list[discord.File]]:
        services = services_of(interaction)
        images = await services.datasets.images(self.owner_id, self.dataset)
        self.page = max(0, min(self.page, len(images)))
        self.prev.disabled = self.page == 0
        self.next.disabled = self.page >= len(images)
        self.delete.disabled = self.caption.disabled = self.page == 0
        self.retag.label = "Re-tag image…" if self.page else "Re-tag all…"
        self._fill_jump(len(images))
        if self.page == 0:
            self.image_id = None
            table = await services.datasets.tag_table(self.owner_id, self.dataset)
            return frequency_embed(self.dataset, table, len(images)), []
        image = images[self.page - 1]
        self.image_id = image.id  # the buttons act on the image shown, even if others change
        row = await services.datasets.get(self.owner_id, self.dataset)
        data = await asyncio.to_thread(thumbnail, services.datasets.image_path(row, image))
        embed = discord.Embed(
            title=f"{self.dataset} · image {self.page}/{len(images)} (id {image.id})",
            description=", ".join(f"`{t}`" for t in split_tags(image.caption))[:4096],
            color=discord.Color.blurple(),
        )
        embed.set_thumbnail(url="attachment://thumb.jpg")
        source = SOURCES.get(image.caption_source, image.caption_source)
        embed.set_footer(text=f"{image.original_name} · {image.width}x{image.height} · caption {source}")
        return embed, [discord.File(io.BytesIO(data), filename="thumb.jpg")]

    def _fill_jump(self, count: int) -> None:
        """Up to 25 pages spread over the dataset (two taps to any image of 200)."""
        step = max(1, -(-count // 24))
        pages = [0, *range(1, count + 1, step)][:25]
        self.jump.options = [
            discord.SelectOption(
                label="Tag frequency" if p == 0 else f"Image {p}", value=str(p), default=p == self.page
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
        await open_remover(interaction, self.dataset, self.image_id)

    @discord.ui.button(label="Delete image", emoji="🗑️", style=discord.ButtonStyle.danger, row=1)
    async def delete(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        from .base import ask_first

        services = services_of(interaction)
        images = await services.datasets.images(self.owner_id, self.dataset)
        image = next((i for i in images if i.id == self.image_id), None)
        if image is None:
            await answer(interaction, "That image is gone already: press ◀ or ▶ to refresh.")
            return
        owner, dataset = self.owner_id, self.dataset

        async def confirmed(click: discord.Interaction) -> None:
            await services.datasets.remove_images(owner, dataset, [image.id])
            left = len(await services.datasets.images(owner, dataset))
            await click.response.edit_message(
                content=f"🗑️ Deleted image {image.id} ({image.original_name}): {left} left in **{dataset}**.",
                view=None,
            )

        question = f"Delete image {image.id} ({image.original_name}) from **{dataset}**?"
        await ask_first(interaction, question, confirmed, label="Delete")

    @discord.ui.button(label="Edit caption", emoji="✏️", style=discord.ButtonStyle.secondary, row=1)
    async def caption(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        if self.image_id is not None:
            await open_caption_form(interaction, self.dataset, self.image_id, self)

    @discord.ui.button(label="Re-tag all…", emoji="🔁", style=discord.ButtonStyle.secondary, row=1)
    async def retag(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        from .retag import ask_retag

        ids = None if self.image_id is None else [self.image_id]
        await ask_retag(interaction, self.dataset, ids)  # a service error: on_error says it


async def open_caption_form(
    interaction: discord.Interaction, dataset: str, image_id: int, browser: TagBrowser | None = None
) -> None:
    """Answer with the caption form of one image, prefilled with its caption (a modal must be the
    first answer, so this reads the caption and nothing slow)."""
    from .modals import CaptionModal

    images = await services_of(interaction).datasets.images(interaction.user.id, dataset)
    image = next((i for i in images if i.id == image_id), None)
    if image is None:
        await answer(interaction, f"❌ image {image_id} is not in dataset '{dataset}' (see /tags view).")
    elif len(image.caption) > MAX_CAPTION_CHARS:
        await answer(
            interaction,
            f"❌ The caption of image {image_id} is longer than a form holds ({MAX_CAPTION_CHARS} characters): "
            "edit it with `/tags remove` and `/tags add image:…` instead.",
        )
    else:
        await interaction.response.send_modal(
            CaptionModal(interaction.user.id, dataset, image_id, image.caption, browser)
        )


async def open_remover(interaction: discord.Interaction, dataset: str, image_id: int | None) -> None:
    """Answer with a select menu of the dataset's (or one image's) tags, most frequent first."""
    view = TagRemover(interaction.user.id, dataset, image_id)
    if not await view.load(interaction):
        return
    view.message = await answer(interaction, view.prompt(), view=view)


class TagRemover(OwnerView):
    """Pick tags (25 per page) → Remove → confirm → removed from every caption (or one image)."""

    def __init__(self, owner_id: int, dataset: str, image_id: int | None):
        super().__init__(owner_id)
        self.dataset, self.image_id = dataset, image_id
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
            await answer(interaction, "There are no tags to remove (the trigger word always stays).")
            return False
        self._fill()
        return True

    def prompt(self) -> str:
        where = (
            f"image {self.image_id}" if self.image_id is not None else f"every image of **{self.dataset}**"
        )
        picked = f" Chosen: {listed(sorted(self.chosen))}." if self.chosen else ""
        pages = -(-len(self.tags) // PAGE_TAGS)
        return f"Pick tags to remove from {where} (page {self.chunk + 1}/{pages}).{picked}"[:2000]

    def _fill(self) -> None:
        first = self.chunk * PAGE_TAGS
        part = self.tags[first : first + PAGE_TAGS]
        self.pick.options = [  # the value is the index: a tag may be longer than 100 characters
            discord.SelectOption(label=t.tag[:100], value=str(first + i), description=f"on {t.count} image(s)",
                                 default=t.tag in self.chosen)
            for i, t in enumerate(part)
        ]  # fmt: skip
        self.pick.max_values = len(part)
        self.more.disabled = len(self.tags) <= PAGE_TAGS
        self.apply.disabled = not self.chosen
        self.apply.label = f"Remove {len(self.chosen)} tag(s)" if self.chosen else "Remove"

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
        owner, dataset, image_id = self.owner_id, self.dataset, self.image_id

        async def confirmed(click: discord.Interaction) -> None:
            services = services_of(click)
            result = await run_service(click, services.datasets.remove_tags(owner, dataset, tags, image_id))
            if result is not None:
                await click.response.edit_message(
                    content=f"✂️ Removed {listed(tags)} from {result.changed} caption(s). "
                    f"Undo with `/tags undo dataset:{dataset}`.",
                    view=None,
                )

        self.stop()
        where = f"image {image_id}" if image_id is not None else "every image"
        view = ConfirmView(owner, confirmed, confirm_label="Remove", style=discord.ButtonStyle.danger)
        await interaction.response.edit_message(
            content=f"Remove {listed(tags)} from {where} of **{dataset}**?"[:2000],
            view=view,
        )
        view.message = self.message
