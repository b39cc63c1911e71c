"""Handing a member a file: an attachment when it fits the interaction's upload limit,
otherwise a signed link to the bot's own file server that expires."""

from __future__ import annotations

import os
import time
from pathlib import Path

import discord

from ..i18n import messages
from .common import answer, bot_of


def fits(path: Path, interaction: discord.Interaction) -> bool:
    """Whether Discord takes ``path`` as an attachment of an answer to ``interaction``."""
    return os.path.getsize(path) <= interaction.filesize_limit


async def send_file(
    interaction: discord.Interaction, path: Path, filename: str, *, kind: str, ref: str, note: str = ""
) -> None:
    """Send ``path`` (as ``filename``) to the caller, privately, in their language. The interaction must
    be deferred or answered already; ``kind``/``ref`` let the file server find the file again for a link."""
    t = messages(interaction.locale)
    size = f"{os.path.getsize(path) / 2**20:.1f}"
    if fits(path, interaction):
        text = note + t("`{filename}` ({size} MB)", filename=filename, size=size)
        await answer(interaction, text, file=discord.File(path, filename=filename))
        return
    server = bot_of(interaction).file_server
    limit = f"{interaction.filesize_limit / 2**20:.0f}"
    if server is None:
        await answer(interaction, "❌ " + t(
            "`{filename}` is {size} MB, over this server's {limit} MB upload limit, and the bot's download links "
            "are turned off: ask the operator.", filename=filename, size=size, limit=limit,
        ))  # fmt: skip
        return
    url = server.make_url(interaction.user.id, kind, ref, filename)
    expires = int(time.time() + bot_of(interaction).settings.link_lifetime_s)
    view = discord.ui.View()
    label = t("Download {filename}", filename=filename)[:80]
    view.add_item(discord.ui.Button(label=label, url=url, style=discord.ButtonStyle.link))
    text = note + t(
        "`{filename}` is {size} MB, over Discord's {limit} MB limit here: download it from the bot instead. "
        "Keep the link to yourself: it works for whoever has it until it expires <t:{expires}:R>.",
        filename=filename, size=size, limit=limit, expires=expires,
    )  # fmt: skip
    await answer(interaction, text, view=view)
