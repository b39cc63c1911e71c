"""/operator grant | revoke | tier | pause | resume | cancel | models: for members with the
operator permission (Discord hides the group from others; every command checks again)."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from ..i18n import N_, messages
from ..ui.common import answer, any_job_choices, require_operator, services_of
from ..ui.embeds import table

#: What /operator cancel did to a job.
STOPPED, STOPPING = N_("cancelled"), N_("stopping")


@app_commands.guild_only()
class OperatorCog(commands.GroupCog, group_name="operator", group_description="Run the bot (operators only)"):
    def __init__(self, bot: commands.Bot):
        self.bot = bot
        permission = bot.settings.operator_permission  # type: ignore[attr-defined]
        self.__cog_app_commands_group__.default_permissions = discord.Permissions(**{permission: True})

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        require_operator(interaction)
        return True

    @app_commands.command(name="grant", description="Give a member stamina (kept across resets)")
    async def grant(
        self, interaction: discord.Interaction, member: discord.Member, amount: app_commands.Range[int, 1, 1_000_000],
        note: str = "",
    ) -> None:  # fmt: skip
        balance = await services_of(interaction).stamina.grant(member.id, amount, interaction.user.id, note)
        t = messages(interaction.locale)
        text = t("Granted {amount} to {member}: balance {balance}.", amount=amount, member=member.mention,
                 balance=balance.balance)  # fmt: skip
        await answer(interaction, f"⚡ {text}")

    @app_commands.command(name="revoke", description="Take stamina from a member (never below 0)")
    async def revoke(
        self, interaction: discord.Interaction, member: discord.Member, amount: app_commands.Range[int, 1, 1_000_000],
        note: str = "",
    ) -> None:  # fmt: skip
        balance = await services_of(interaction).stamina.revoke(member.id, amount, interaction.user.id, note)
        t = messages(interaction.locale)
        text = t("Took up to {amount} from {member}: balance {balance}.", amount=amount, member=member.mention,
                 balance=balance.balance)  # fmt: skip
        await answer(interaction, f"⚡ {text}")

    @app_commands.command(
        name="tier", description="Put a member on a stamina tier (empty: back to their roles)"
    )
    async def tier(
        self, interaction: discord.Interaction, member: discord.Member, tier: str | None = None
    ) -> None:
        balance = await services_of(interaction).stamina.set_tier(member.id, tier, interaction.user.id)
        t = messages(interaction.locale)
        text = t(
            "{member} is on tier **{tier}** ({allowance} a day).", member=member.mention, tier=balance.tier,
            allowance=balance.allowance,
        )  # fmt: skip
        await answer(interaction, f"🎚️ {text}")

    @tier.autocomplete("tier")
    async def _tiers(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        names = ["default", *services_of(interaction).settings.tiers]
        return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n.lower()][:25]

    @app_commands.command(name="pause", description="Pause the queue: running jobs finish, no new ones start")
    async def pause(self, interaction: discord.Interaction) -> None:
        await services_of(interaction).queue.pause(interaction.user.id)
        t = messages(interaction.locale)
        await answer(interaction, "⏸️ " + t("The queue is paused. `/operator resume` starts it again."))

    @app_commands.command(name="resume", description="Resume the queue")
    async def resume(self, interaction: discord.Interaction) -> None:
        await services_of(interaction).queue.resume(interaction.user.id)
        t = messages(interaction.locale)
        await answer(interaction, "▶️ " + t("The queue runs again."))

    @app_commands.command(name="cancel", description="Cancel any member's job (refunds what was not used)")
    @app_commands.autocomplete(job=any_job_choices)
    async def cancel(self, interaction: discord.Interaction, job: str) -> None:
        row = await services_of(interaction).queue.cancel(interaction.user.id, job, operator=True)
        t = messages(interaction.locale)
        state = t(STOPPED if row.state == "cancelled" else STOPPING)
        await answer(interaction, "🛑 " + t("Job #{job} of {owner}: {state}.", job=row.id, owner=f"<@{row.owner_id}>",
                                            state=state))  # fmt: skip

    @app_commands.command(name="models", description="The base models members can train on")
    async def models(self, interaction: discord.Interaction) -> None:
        registry, t = services_of(interaction).registry, messages(interaction.locale)
        rows = []
        for key in registry.keys():
            entry = registry.get(key)
            rows.append((key, entry.family or "?", t("tiny") if entry.tiny else entry.source[-40:]))
        headers = (t("key"), t("family"), t("source"))
        embed = discord.Embed(title="🧩 " + t("Base models"), description=table(rows, headers))
        embed.set_footer(
            text=t("Edit the registry file (LORABOT_MODEL_REGISTRY) and restart to change them.")
        )
        await answer(interaction, embed=embed)
