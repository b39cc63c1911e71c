"""The /train confirmation: the step arithmetic, the exact cost, and Start / Advanced / Cancel.

The estimate shown is computed by the queue service on the dataset as it is now; Start passes
that cost back (``expected_cost``), so the member is charged exactly what they saw or told
that it changed.
"""

from __future__ import annotations

from typing import Any

import discord

from ..queue.eta import format_duration
from ..queue.service import TrainingEstimate
from .base import OwnerView
from .common import answer, require_posting, roles_of, run_service, services_of

COLOR = discord.Color.blurple()


def estimate_embed(
    est: TrainingEstimate, options: dict[str, Any], init_from: tuple[int, int] | None
) -> discord.Embed:
    per_epoch = (
        f"{est.images} images × {est.repeats} repeats ÷ batch {est.batch_size} = {est.steps_per_epoch} steps"
    )
    embed = discord.Embed(title=f"Train a LoRA on '{est.dataset}'", color=COLOR)
    embed.add_field(
        name="Base model", value=f"{est.base_model} ({est.family.upper()}), {est.resolution} px", inline=False
    )
    embed.add_field(name="Steps", value=f"{per_epoch} per epoch\n× {est.epochs} epochs = **{est.total_steps} steps**",
                    inline=False)  # fmt: skip
    after = est.balance - est.cost
    embed.add_field(
        name="Cost", value=f"**{est.cost}** stamina (you have {est.balance}, {max(after, 0)} after)"
    )
    embed.add_field(name="Time", value=f"about {format_duration(est.eta_s)} once started")
    shown = {k: v for k, v in sorted(options.items()) if k not in ("seed",)}
    if shown:
        text = "\n".join(f"{k} = {v}" for k, v in shown.items())
        embed.add_field(name="Options", value=f"```\n{text[:990]}\n```", inline=False)
    if init_from:
        embed.add_field(name="Starts from", value=f"job #{init_from[0]}, epoch {init_from[1]}", inline=False)
    if not est.affordable:
        embed.color = discord.Color.red()
        embed.set_footer(text=f"You need {est.cost - est.balance} more stamina: lower epochs or repeats, "
                              "or wait for the daily reset (/stamina).")  # fmt: skip
    else:
        embed.set_footer(text="Nothing is charged until you press Start.")
    return embed


class TrainConfirmView(OwnerView):
    def __init__(
        self, owner_id: int, dataset: str, options: dict[str, Any], est: TrainingEstimate,
        init_from: tuple[int, int] | None,
    ):  # fmt: skip
        super().__init__(owner_id)
        self.dataset, self.options, self.estimate, self.init_from = dataset, options, est, init_from
        self.starting = False
        self.start.label = f"Start ({est.cost} stamina)"
        self.start.disabled = not est.affordable

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if not await super().interaction_check(interaction):
            return False
        if self.starting:  # a tap while the job is being queued (never a second job, never "expired")
            await answer(interaction, "⏳ Already starting this job.")
            return False
        return True

    @discord.ui.button(label="Start", style=discord.ButtonStyle.success, emoji="🚀")
    async def start(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        require_posting(interaction)  # the job reports in this channel
        self.starting = True
        for item in self.children:
            item.disabled = True  # type: ignore[attr-defined]
        button.label = "Starting…"
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
            ),
        )  # fmt: skip
        if job is None:
            await interaction.edit_original_response(view=None)
            return
        await interaction.edit_original_response(
            content=f"✅ Queued **job #{job.id}**: {job.total_steps} steps for {job.cost} stamina. Its progress "
            "message and preview grids will appear in this channel; follow it in /queue.",
            embed=None,
            view=None,
        )

    @discord.ui.button(label="Advanced…", style=discord.ButtonStyle.secondary, emoji="⚙️")
    async def advanced(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        from .modals import AdvancedOptionsModal

        await interaction.response.send_modal(AdvancedOptionsModal(self))

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.stop()
        await interaction.response.edit_message(
            content="Not started: nothing was charged.", embed=None, view=None
        )

    async def refresh(self, interaction: discord.Interaction, options: dict[str, Any]) -> None:
        """Re-estimate with new options and show them on the same message."""
        if self.is_finished() or self.starting:
            await answer(interaction, "This estimate is closed (started or cancelled): run /train again.")
            return
        est = await run_service(interaction, _estimate(interaction, self.dataset, options))
        if est is None:
            return
        self.stop()
        view = TrainConfirmView(self.owner_id, self.dataset, options, est, self.init_from)
        await interaction.response.edit_message(embed=estimate_embed(est, options, self.init_from), view=view)
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
    view = TrainConfirmView(interaction.user.id, dataset, options, est, init_from)
    view.message = await answer(interaction, embed=estimate_embed(est, options, init_from), view=view)
