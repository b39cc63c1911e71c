"""The base view: only the member it was made for may click it; a clear note when it expired."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import discord

from ..i18n import Messages, messages
from .common import answer, claim, report_error

log = logging.getLogger(__name__)
VIEW_TIMEOUT_S = 600.0


class OwnerView(discord.ui.View):
    """A view that answers only ``owner_id``; others get a short ephemeral note."""

    def __init__(self, owner_id: int, *, timeout: float | None = VIEW_TIMEOUT_S):
        super().__init__(timeout=timeout)
        self.owner_id = owner_id
        self.message: discord.Message | discord.InteractionMessage | None = None

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        claim(interaction)
        if interaction.user.id == self.owner_id:
            return True
        t = messages(interaction.locale)  # the one who clicked
        await answer(interaction, "⛔ " + t("These buttons belong to the member who ran the command."))
        return False

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item
    ) -> None:
        await report_error(interaction, error, f"view {type(self).__name__}")

    async def on_timeout(self) -> None:
        """Grey the controls out so a late click does not fail silently."""
        for item in self.children:
            if hasattr(item, "disabled"):
                item.disabled = True  # type: ignore[attr-defined]
        if self.message is not None:
            with contextlib.suppress(discord.HTTPException):
                await self.message.edit(view=self)


class ConfirmView(OwnerView):
    """Confirm / Cancel. ``on_confirm(interaction)`` runs on Confirm; both remove the buttons.
    The labels are in ``t``'s language (the member's); ``confirm_label`` comes translated."""

    def __init__(
        self,
        owner_id: int,
        on_confirm: Callable[[discord.Interaction], Awaitable[None]],
        *,
        confirm_label: str | None = None,
        style: discord.ButtonStyle = discord.ButtonStyle.success,
        t: Messages | None = None,
    ):
        super().__init__(owner_id)
        t = t or messages(None)
        self.busy = False
        self._on_confirm = on_confirm
        self.confirm.label = confirm_label or t("Confirm")
        self.confirm.style = style
        self.cancel.label = t("Cancel")

    @discord.ui.button(label="Confirm", style=discord.ButtonStyle.success)
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        if self.busy:  # a second tap while the first one runs
            t = messages(interaction.locale)
            await answer(interaction, "⏳ " + t("Already on it."))
            return
        self.busy = True
        try:
            await self._on_confirm(interaction)
        finally:
            self.busy = False
        if interaction.response.is_done():
            self.stop()

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.stop()
        t = messages(interaction.locale)
        await interaction.response.edit_message(
            content=t("Cancelled: nothing was changed."), embed=None, view=None
        )


async def ask_first(
    interaction: discord.Interaction,
    question: str,
    on_confirm: Callable[[discord.Interaction], Awaitable[None]],
    *,
    label: str,
    keep_label: str | None = None,
) -> None:
    """Answer with ``question`` and a red ``label`` button that runs ``on_confirm`` (a destructive step);
    ``question`` and the labels come in the member's language, Cancel is put in it."""
    t = messages(interaction.locale)
    view = ConfirmView(
        interaction.user.id, on_confirm, confirm_label=label, style=discord.ButtonStyle.danger, t=t
    )
    if keep_label:
        view.cancel.label = keep_label
    view.message = await answer(interaction, question[:2000], view=view)
