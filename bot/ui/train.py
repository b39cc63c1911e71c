"""The /train confirmation: the step arithmetic, the exact cost, and Start / Advanced / Cancel.

The estimate shown is computed by the queue service on the dataset as it is now; Start passes
that cost back (``expected_cost``), so the member is charged exactly what they saw or told
that it changed.
"""

from __future__ import annotations

from typing import Any

import discord

from ..i18n import Messages, messages
from ..queue.eta import format_duration
from ..queue.service import TrainingEstimate
from .base import OwnerView
from .common import answer, require_posting, roles_of, run_service, services_of

COLOR = discord.Color.blurple()


def estimate_embed(
    est: TrainingEstimate, options: dict[str, Any], init_from: tuple[int, int] | None, t: Messages
) -> discord.Embed:
    """The steps arithmetic, the cost, the time and the options, in ``t``'s language."""
    embed = discord.Embed(title=t("Train a LoRA on '{dataset}'", dataset=est.dataset), color=COLOR)
    model = t("{model} ({family}), {resolution} px", model=est.base_model, family=est.family.upper(),
              resolution=est.resolution)  # fmt: skip
    embed.add_field(name=t("Base model"), value=model, inline=False)
    steps = t(
        "{images} images × {repeats} repeats ÷ batch {batch_size} = {per_epoch} steps per epoch\n"
        "× {epochs} epochs = **{total} steps**",
        images=est.images, repeats=est.repeats, batch_size=est.batch_size, per_epoch=est.steps_per_epoch,
        epochs=est.epochs, total=est.total_steps,
    )  # fmt: skip
    embed.add_field(name=t("Steps"), value=steps, inline=False)
    after = max(est.balance - est.cost, 0)
    cost = t("**{cost}** stamina (you have {balance}, {after} after)", cost=est.cost, balance=est.balance,
             after=after)  # fmt: skip
    embed.add_field(name=t("Cost"), value=cost)
    embed.add_field(name=t("Time"), value=t("about {eta} once started", eta=format_duration(est.eta_s)))
    shown = {k: v for k, v in sorted(options.items()) if k not in ("seed",)}
    if shown:
        text = "\n".join(f"{k} = {v}" for k, v in shown.items())
        embed.add_field(name=t("Options"), value=f"```\n{text[:990]}\n```", inline=False)
    if init_from:
        start = t("job #{job}, epoch {epoch}", job=init_from[0], epoch=init_from[1])
        embed.add_field(name=t("Starts from"), value=start, inline=False)
    if not est.affordable:
        embed.color = discord.Color.red()
        embed.set_footer(text=t("You need {more} more stamina: lower epochs or repeats, or wait for the daily "
                                "reset (/stamina).", more=est.cost - est.balance))  # fmt: skip
    else:
        embed.set_footer(text=t("Nothing is charged until you press Start."))
    return embed


class TrainConfirmView(OwnerView):
    def __init__(
        self, owner_id: int, dataset: str, options: dict[str, Any], est: TrainingEstimate,
        init_from: tuple[int, int] | None, t: Messages,
    ):  # fmt: skip
        super().__init__(owner_id)
        self.dataset, self.options, self.estimate, self.init_from = dataset, options, est, init_from
        self.t = t  # the language of the member who asked for the estimate
        self.starting = False
        self.start.label = t("Start ({cost} stamina)", cost=est.cost)
        self.start.disabled = not est.affordable
        self.advanced.label, self.cancel.label = t("Advanced…"), t("Cancel")

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if not await super().interaction_check(interaction):
            return False
        if self.starting:  # a tap while the job is being queued (never a second job, never "expired")
            t = messages(interaction.locale)
            await answer(interaction, "⏳ " + t("Already starting this job."))
            return False
        return True

    @discord.ui.button(label="Start", style=discord.ButtonStyle.success, emoji="🚀")
    async def start(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        require_posting(interaction)  # the job reports in this channel
        self.starting = True
        for item in self.children:
            item.disabled = True  # type: ignore[attr-defined]
        button.label = self.t("Starting…")
        await interaction.response.edit_message(view=self)  # copying the dataset can take a while
        try:
            await self._submit(interaction)
        finally:
            self.stop()

    async def _submit(self, interaction: discord.Interaction) -> None:
        services = services_of(interaction)
        job = await run_service(
            interaction,
            services.queue.submit_training(
                interaction.user.id, self.dataset, self.options, roles=roles_of(interaction),
                channel_id=interaction.channel_id, expected_cost=self.estimate.cost, init_from=self.init_from,
                locale=str(interaction.locale),
            ),
        )  # fmt: skip
        if job is None:
            await interaction.edit_original_response(view=None)
            return
        text = self.t(
            "✅ Queued **job #{job}**: {steps} steps for {cost} stamina. Its progress message and preview grids "
            "will appear in this channel; follow it in /queue.",
            job=job.id, steps=job.total_steps, cost=job.cost,
        )  # fmt: skip
        await interaction.edit_original_response(content=text, embed=None, view=None)

    @discord.ui.button(label="Advanced…", style=discord.ButtonStyle.secondary, emoji="⚙️")
    async def advanced(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        from .modals import AdvancedOptionsModal

        await interaction.response.send_modal(AdvancedOptionsModal(self))

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.stop()
        await interaction.response.edit_message(
            content=self.t("Not started: nothing was charged."), embed=None, view=None
        )

    async def refresh(self, interaction: discord.Interaction, options: dict[str, Any]) -> None:
        """Re-estimate with new options and show them on the same message."""
        if self.is_finished() or self.starting:
            t = messages(interaction.locale)
            await answer(interaction, t("This estimate is closed (started or cancelled): run /train again."))
            return
        est = await run_service(interaction, _estimate(interaction, self.dataset, options))
        if est is None:
            return
        self.stop()
        t = messages(interaction.locale)
        view = TrainConfirmView(self.owner_id, self.dataset, options, est, self.init_from, t)
        await interaction.response.edit_message(
            embed=estimate_embed(est, options, self.init_from, t), view=view
        )
        view.message = self.message


async def _estimate(
    interaction: discord.Interaction, dataset: str, options: dict[str, Any]
) -> TrainingEstimate:
    services = services_of(interaction)
    return await services.queue.estimate_training(
        interaction.user.id, dataset, options, roles_of(interaction)
    )


async def show_estimate(
    interaction: discord.Interaction,
    dataset: str,
    options: dict[str, Any],
    init_from: tuple[int, int] | None = None,
) -> None:
    """Answer with the estimate and the confirmation buttons (errors come back as messages)."""
    est = await run_service(interaction, _estimate(interaction, dataset, options))
    if est is None:
        return
    t = messages(interaction.locale)
    view = TrainConfirmView(interaction.user.id, dataset, options, est, init_from, t)
    view.message = await answer(interaction, embed=estimate_embed(est, options, init_from, t), view=view)
