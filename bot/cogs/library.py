"""/lora list | download | rename | delete | share | unshare: the member's saved LoRAs (saved from
/epochs) and those other members share with the server (usable and downloadable, never theirs to
rename or delete)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from ..i18n import N_, Messages, messages
from ..queue.library import lora_ref, owner_label
from ..ui.base import ask_first
from ..ui.common import answer, defer_thinking, services_of
from ..ui.embeds import table
from ..ui.files import send_file
from ..ui.loras import own_lora_choices, usable_lora_choices
from ..ui.pages import PagedView

if TYPE_CHECKING:
    from db.library import LoraRow

MAX_FIELD = 1024  # an embed field's value
LIBRARY_PAGE = 10  # LoRAs per /lora list page (the shared table field holds 1024 characters)


@app_commands.guild_only()
class LibraryCog(commands.GroupCog, group_name="lora", group_description="Your saved LoRAs, and shared ones"):
    def __init__(self, bot: commands.Bot):
        self.bot = bot

    @app_commands.command(name="list", description="Your saved LoRAs, and those shared with the server")
    async def list_(self, interaction: discord.Interaction) -> None:
        library, t = services_of(interaction).library, messages(interaction.locale)
        own = await library.list(interaction.user.id)
        shared = await library.shared_by_others(interaction.user.id)
        if not own and not shared:
            await answer(interaction, t("Your library is empty: save an epoch from `/epochs`."))
            return
        items = [(True, r) for r in own] + [(False, r) for r in shared]  # yours first, then shared ones

        def render(page_items: Sequence, page: int, pages: int) -> discord.Embed:
            mine = [r for is_own, r in page_items if is_own]
            return library_embed(mine, [r for is_own, r in page_items if not is_own], t, empty_own=not own)

        view = PagedView(interaction.user.id, items, render, t, per_page=LIBRARY_PAGE)
        view.message = await answer(interaction, embed=view.embed(), view=view)

    @app_commands.command(name="download", description="Download a saved or shared LoRA (.safetensors)")
    @app_commands.autocomplete(name=usable_lora_choices)
    async def download(self, interaction: discord.Interaction, name: str) -> None:
        lora = await services_of(interaction).library.find(interaction.user.id, name)
        await defer_thinking(interaction)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in lora.name)
        ref = lora_ref(lora, interaction.user.id)
        await send_file(interaction, Path(lora.path), f"{safe}.safetensors", kind="lora", ref=ref)

    @app_commands.command(name="rename", description="Rename one of your LoRAs")
    @app_commands.describe(name="One of your LoRAs", new_name="Its new name (1-40 letters, digits, ' _-.')")
    @app_commands.autocomplete(name=own_lora_choices)
    async def rename(
        self, interaction: discord.Interaction, name: str, new_name: app_commands.Range[str, 1, 40]
    ) -> None:
        lora = await services_of(interaction).library.rename(interaction.user.id, name, new_name)
        t = messages(interaction.locale)
        await answer(interaction, "✏️ " + t("Renamed to **{name}**.", name=lora.name))

    @app_commands.command(name="delete", description="Delete one of your LoRAs (asks first)")
    @app_commands.autocomplete(name=own_lora_choices)
    async def delete(self, interaction: discord.Interaction, name: str) -> None:
        services, t = services_of(interaction), messages(interaction.locale)
        lora = await services.library.owned(interaction.user.id, name, N_("delete"))
        owner = interaction.user.id

        async def confirmed(click: discord.Interaction) -> None:
            await services.library.delete(owner, lora.name)
            t = messages(click.locale)
            done = t("Deleted **{name}** from your library.", name=lora.name)
            await click.response.edit_message(content=f"🗑️ {done}", view=None)

        question = (
            t("Delete **{name}** from your library? It is shared: the others lose it too.", name=lora.name)
            if lora.shared
            else t("Delete **{name}** from your library?", name=lora.name)
        )
        await ask_first(interaction, question, confirmed, label=t("Delete"), keep_label=t("Cancel"))

    @app_commands.command(name="share", description="Let everyone here generate with and download a LoRA")
    @app_commands.describe(name="One of your LoRAs")
    @app_commands.autocomplete(name=own_lora_choices)
    async def share(self, interaction: discord.Interaction, name: str) -> None:
        t, library = messages(interaction.locale), services_of(interaction).library
        lora = await library.share(interaction.user.id, name, interaction.user.display_name)
        await answer(interaction, "🔗 " + t(
            "**{name}** is shared with the server: everyone can pick it in `/generate` and `/lora download` "
            "(marked with your name). Only you can rename or delete it; `/lora unshare` stops sharing.", name=lora.name,
        ))  # fmt: skip

    @app_commands.command(name="unshare", description="Stop sharing one of your LoRAs")
    @app_commands.describe(name="One of your shared LoRAs")
    @app_commands.autocomplete(name=own_lora_choices)
    async def unshare(self, interaction: discord.Interaction, name: str) -> None:
        lora = await services_of(interaction).library.unshare(interaction.user.id, name)
        t = messages(interaction.locale)
        said = t("**{name}** is yours alone again: others cannot pick it any more (renders already in the queue still "
                 "finish).", name=lora.name)  # fmt: skip
        await answer(interaction, f"🔒 {said}")


def library_embed(
    own: list[LoraRow], shared: list[LoraRow], t: Messages, *, empty_own: bool = True
) -> discord.Embed:
    """The member's LoRAs as a table, and those others share, in ``t``'s language (one page of
    them; ``empty_own``: the member has none at all, not just none on this page)."""
    lines = [(r.name, r.base_model, r.trigger_word, _origin(r.job_id, r.epoch), t("yes") if r.shared else "")
             for r in own]  # fmt: skip
    headers = (t("name"), t("model"), t("trigger"), t("from"), t("shared"))
    embed = discord.Embed(
        title="📚 " + t("Your LoRAs"),
        description=table(lines, headers)
        if own
        else t("None yet: save an epoch from `/epochs`.")
        if empty_own
        else None,
    )
    if shared:
        others = [(r.name, r.base_model, r.trigger_word, owner_label(r, t)) for r in shared]
        headers = (t("name"), t("model"), t("trigger"), t("by"))
        embed.add_field(name="🔗 " + t("Shared with the server"), value=table(others, headers, limit=MAX_FIELD),
                        inline=False)  # fmt: skip
    embed.set_footer(text=t("Use one with /generate lora:<name> · share yours with /lora share"))
    return embed


def _origin(job_id: int | None, epoch: int | None) -> str:
    """Where a saved LoRA came from: ``#12 e3`` (blank once its job is gone)."""
    return f"#{job_id} e{epoch}" if job_id is not None else ""
