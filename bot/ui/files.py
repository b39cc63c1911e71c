"""Handing a member a file: an attachment when it fits the interaction's upload limit,
otherwise a signed link to the bot's own file server that expires."""

from __future__ import annotations

import os
import time
from pathlib import Path

import discord

from .common import answer, bot_of


def fits(path: Path, interaction: discord.Interaction) -> bool:
    """Whether Discord takes ``path`` as an attachment of an answer to ``interaction``."""
    return os.path.getsize(path) <= interaction.filesize_limit


async def send_file(
    interaction: discord.Interaction, path: Path, filename: str, *, kind: str, ref: str, note: str = ""
) -> None:
    """Send ``path`` (as ``filename``) to the caller, privately. The interaction must be deferred
    or answered already; ``kind``/``ref`` let the file server find the file again for a link."""
    size_mb = os.path.getsize(path) / 2**20
    if fits(path, interaction):
        await answer(
            interaction, f"{note}`{filename}` ({size_mb:.1f} MB)", file=discord.File(path, filename=filename)
        )
        return
    server = bot_of(interaction).file_server
    limit_mb = interaction.filesize_limit / 2**20
    if server is None:
        await answer(
            interaction,
            f"❌ `{filename}` is {size_mb:.1f} MB, over this server's {limit_mb:.0f} MB upload limit, and the "
            "bot's download links are turned off: ask the operator.",
        )
        return
    url = server.make_url(interaction.user.id, kind, ref, filename)
    expires = int(time.time() + bot_of(interaction).settings.link_lifetime_s)
    view = discord.ui.View()
    view.add_item(discord.ui.Button(label=f"Download {filename}", url=url, style=discord.ButtonStyle.link))
    await answer(
        interaction,
        f"{note}`{filename}` is {size_mb:.1f} MB, over Discord's {limit_mb:.0f} MB limit here: download it "
        f"from the bot instead. Keep the link to yourself: it works for whoever has it until it expires <t:{expires}:R>.",
        view=view,
    )
