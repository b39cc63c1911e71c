"""Autocomplete for the lora options: the LoRAs a member may use, and those they own.

A LoRA another member shares is offered as ``name (model) · shared by <owner>``; its value is the
reference the services resolve (``name@owner_id``, see :mod:`bot.queue.library`).
"""

from __future__ import annotations

import discord
from discord import app_commands

from ..queue.library import owner_label
from .common import choices, quiet, services_of


@quiet
async def usable_lora_choices(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """The member's own LoRAs, then those others share (for /generate and /lora download)."""
    items = []
    for usable in await services_of(interaction).library.usable(interaction.user.id):
        lora = usable.lora
        if usable.mine:
            items.append((f"{lora.name} ({lora.base_model}){' · shared' * lora.shared}", usable.ref))
        else:
            items.append((f"{lora.name} ({lora.base_model}) · shared by {owner_label(lora)}", usable.ref))
    return choices(items, current)


@quiet
async def own_lora_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Only the member's own LoRAs (what they may rename, delete, share or unshare)."""
    rows = await services_of(interaction).library.list(interaction.user.id)
    return choices([(f"{r.name} ({r.base_model}){' · shared' * r.shared}", r.name) for r in rows], current)
