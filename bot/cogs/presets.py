"""/preset save | list | show | delete: named training recipes for /train preset:<name>."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from ..i18n import messages
from ..ui.common import answer, choices, preset_choices, services_of
from ..ui.embeds import table


@app_commands.guild_only()
class PresetCog(commands.GroupCog, group_name="preset", group_description="Your saved training recipes"):
    def __init__(self, bot: commands.Bot):
        self.bot = bot

    @app_commands.command(
        name="save", description="Save training options under a name (replaces one of that name)"
    )
    @app_commands.describe(
        name="e.g. 'prodigy-style'",
        options="key=value pairs separated by commas, e.g. optimizer=Prodigy, learning_rate=1, network_dim=16",
    )
    async def save(
        self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 40], options: str
    ) -> None:
        from ..queue.options import format_options, parse_option_lines

        services, t = services_of(interaction), messages(interaction.locale)
        parsed = parse_option_lines(options)
        preset = await services.presets.save(interaction.user.id, name, parsed)
        text = t("Saved preset **{name}**:\n```\n{options}\n```\nUse it with `/train preset:{name}`.",
                 name=preset.name, options=format_options(preset.options)[:1800])  # fmt: skip
        await answer(interaction, f"💾 {text}")

    @app_commands.command(name="list", description="Your presets")
    async def list_(self, interaction: discord.Interaction) -> None:
        rows = await services_of(interaction).presets.list(interaction.user.id)
        t = messages(interaction.locale)
        if not rows:
            await answer(
                interaction, t("No presets yet: `/preset save name:… options:optimizer=Prodigy, …`.")
            )
            return
        lines = [(p.name, ", ".join(f"{k}={v}" for k, v in sorted(p.options.items()))[:60]) for p in rows]
        embed = discord.Embed(title=t("Your presets"), description=table(lines, (t("name"), t("options"))))
        await answer(interaction, embed=embed)

    @app_commands.command(name="options", description="Every training option, or one in detail")
    @app_commands.describe(option="One option's name, e.g. min_snr_gamma (empty: all of them)")
    async def options(self, interaction: discord.Interaction, option: str | None = None) -> None:
        from ..queue.option_help import help_fields, help_text
        from ..queue.options import OPTIONS

        t = messages(interaction.locale)
        if option:
            if option not in OPTIONS:
                from ..queue.service import QueueError

                raise QueueError("there is no option '{option}': see /preset options", option=option)
            embed = discord.Embed(title=f"⚙️ {option}", description=help_text(option, t=t))
        else:
            embed = discord.Embed(
                title="⚙️ " + t("Training options"),
                description=t("Set them in /train's Advanced… form or a preset, as `key = value` lines."),
            )
            for name, value in help_fields(max_fields=24, t=t):
                embed.add_field(name=name, value=value, inline=False)
        await answer(interaction, embed=embed)

    @options.autocomplete("option")
    async def _option_names(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        from ..queue.options import OPTIONS

        return choices([(n, n) for n in OPTIONS], current)

    @app_commands.command(name="delete", description="Delete a preset")
    @app_commands.autocomplete(name=preset_choices)
    async def delete(self, interaction: discord.Interaction, name: str) -> None:
        await services_of(interaction).presets.delete(interaction.user.id, name)
        t = messages(interaction.locale)
        await answer(interaction, "🗑️ " + t("Deleted preset **{name}**.", name=name))
