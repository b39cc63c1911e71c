"""Lists that never cut: a list shown a page at a time, ◀ ▶ to move, "page 2/7" in the footer.

The items are fetched once when the command runs; each page is an embed made by the caller's
``render(items_on_page, page, pages)``, so every list (jobs, stamina history, datasets, LoRAs)
pages the same way. Only the member who ran the command can turn the pages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import discord

from ..i18n import Messages
from .base import OwnerView

PER_PAGE = 10
LIST_PAGE = 15  #: rows of a one-line-per-item table (datasets) on one page

Render = Callable[[Sequence[Any], int, int], discord.Embed]


def page_count(total: int, per_page: int = PER_PAGE) -> int:
    return max(1, -(-total // per_page))


def page_items(items: Sequence[Any], page: int, per_page: int = PER_PAGE) -> Sequence[Any]:
    return items[page * per_page : (page + 1) * per_page]


class PageTurner(OwnerView):
    """◀ ▶ between ``pages``; a subclass shows a page (:meth:`show_page`) and sends it (:meth:`send_page`)."""

    def __init__(self, owner_id: int, pages: int, t: Messages, *, page: int = 0, timeout: float = 600):
        super().__init__(owner_id, timeout=timeout)
        self.t, self.pages = t, max(1, pages)
        self.page = min(max(page, 0), self.pages - 1)
        self.previous.label, self.next.label = t("Previous"), t("Next")
        if self.pages == 1:
            self.remove_item(self.previous)
            self.remove_item(self.next)

    def show_page(self) -> None:
        """Set the components for ``self.page`` (the arrows here; a subclass adds its own)."""
        self.previous.disabled = self.page == 0
        self.next.disabled = self.page >= self.pages - 1

    async def send_page(self, interaction: discord.Interaction) -> None:
        raise NotImplementedError

    async def _turn(self, interaction: discord.Interaction, step: int) -> None:
        self.page = min(max(self.page + step, 0), self.pages - 1)
        self.show_page()
        await self.send_page(interaction)

    @discord.ui.button(emoji="◀️", style=discord.ButtonStyle.secondary, row=4)  # the last row, under the page
    async def previous(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self._turn(interaction, -1)

    @discord.ui.button(emoji="▶️", style=discord.ButtonStyle.secondary, row=4)
    async def next(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self._turn(interaction, 1)


class PagedView(PageTurner):
    """An embed per page of ``items``; ``extra`` adds a page's own buttons (e.g. Cancel for its jobs)."""

    def __init__(
        self,
        owner_id: int,
        items: Sequence[Any],
        render: Render,
        t: Messages,
        *,
        per_page: int = PER_PAGE,
        page: int = 0,
        extra: Callable[[Sequence[Any]], list[discord.ui.Item]] | None = None,
        timeout: float = 600,
    ):
        super().__init__(owner_id, page_count(len(items), per_page), t, page=page, timeout=timeout)
        self.items, self.render, self.per_page, self.extra = items, render, per_page, extra
        self._fixed = list(self.children)  # the class's own buttons; ``extra`` ones change per page
        self.show_page()

    def embed(self) -> discord.Embed:
        embed = self.render(page_items(self.items, self.page, self.per_page), self.page, self.pages)
        if self.pages > 1:
            note = self.t("page {page}/{pages}", page=self.page + 1, pages=self.pages)
            footer = embed.footer.text if embed.footer and embed.footer.text else ""
            embed.set_footer(text=f"{footer} · {note}" if footer else note)
        return embed

    def show_page(self) -> None:
        super().show_page()
        for item in [c for c in self.children if c not in self._fixed]:
            self.remove_item(item)
        if self.extra is not None:
            for item in self.extra(page_items(self.items, self.page, self.per_page)):
                self.add_item(item)

    async def send_page(self, interaction: discord.Interaction) -> None:
        await interaction.response.edit_message(embed=self.embed(), view=self)
