"""/lora list | download | delete: the member's saved LoRAs (saved from /epochs)."""

from __future__ import annotations

from pathlib import Path

import discord
from discord import app_commands
from discord.ext import commands

from ..ui.base import ask_first
from ..ui.common import answer, defer_thinking, lora_choices, services_of
from ..ui.embeds import table
from ..ui.files import send_file


@app_commands.guild_only()
class LibraryCog(commands.GroupCog, group_name="lora", group_description="Your saved LoRAs"):
    def __init__(self, bot: commands.Bot):
        self.bot = bot

    @app_commands.command(name="list", description="Your saved LoRAs")
    async def list_(self, interaction: discord.Interaction) -> None:
        rows = await services_of(interaction).library.list(interaction.user.id)
        if not rows:
            await answer(interaction, "Your library is empty: save an epoch from `/epochs`.")
            return
        lines = [(r.name, r.base_model, r.trigger_word, f"#{r.job_id} e{r.epoch}") for r in rows]
        embed = discord.Embed(
            title="📚 Your LoRAs", description=table(lines, ("name", "model", "trigger", "from"))
        )
        embed.set_footer(text="Use one with /generate lora:<name>")
        await answer(interaction, embed=embed)

    @app_commands.command(name="download", description="Download a saved LoRA (.safetensors)")
    @app_commands.autocomplete(name=lora_choices)
    async def download(self, interaction: discord.Interaction, name: str) -> None:
        lora = await services_of(interaction).library.get(interaction.user.id, name)
        await defer_thinking(interaction)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in lora.name)
        await send_file(interaction, Path(lora.path), f"{safe}.safetensors", kind="lora", ref=lora.name)

    @app_commands.command(name="delete", description="Delete a saved LoRA (asks first)")
    @app_commands.autocomplete(name=lora_choices)
    async def delete(self, interaction: discord.Interaction, name: str) -> None:
        services = services_of(interaction)
        lora = await services.library.get(interaction.user.id, name)
        owner = interaction.user.id

        async def confirmed(click: discord.Interaction) -> None:
            await services.library.delete(owner, lora.name)
            await click.response.edit_message(
                content=f"🗑️ Deleted **{lora.name}** from your library.", view=None
            )

        await ask_first(interaction, f"Delete **{lora.name}** from your library?", confirmed, label="Delete")
