"""Autocomplete for the lora options: the LoRAs a member may use, and those they own.

A LoRA another member shares is offered as ``name (model) · shared by <owner>``; its value is the
reference the services resolve (``name@owner_id``, see :mod:`bot.queue.library`).
"""

from __future__ import annotations

import discord
from discord import app_commands

from db.library import LoraRow

from ..i18n import Messages, messages
from ..queue.library import owner_label
from .common import choices, quiet, services_of


@quiet
async def usable_lora_choices(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """The member's own LoRAs, then those others share (for /generate and /lora download)."""
    items, t = [], messages(interaction.locale)
    for usable in await services_of(interaction).library.usable(interaction.user.id):
        lora = usable.lora
        if usable.mine:
            items.append((_own_label(lora, t), usable.ref))
        else:
            label = t("{name} ({model}) · shared by {owner}", name=lora.name, model=lora.base_model,
                      owner=owner_label(lora, t))  # fmt: skip
            items.append((label, usable.ref))
    return choices(items, current)


@quiet
async def own_lora_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Only the member's own LoRAs (what they may rename, delete, share or unshare)."""
    rows = await services_of(interaction).library.list(interaction.user.id)
    t = messages(interaction.locale)
    return choices([(_own_label(r, t), r.name) for r in rows], current)


def _own_label(lora: LoraRow, t: Messages) -> str:
    """``name (model)``, with ``· shared`` when the member shares it."""
    if lora.shared:
        return t("{name} ({model}) · shared", name=lora.name, model=lora.base_model)
    return f"{lora.name} ({lora.base_model})"
