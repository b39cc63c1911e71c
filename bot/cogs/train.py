"""/train: the common options as slash options; the rest from a preset, an earlier job
(``like``), the Advanced form, or "train further" from a saved epoch. Always shows the exact
cost and asks before charging anything."""

from __future__ import annotations

from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from ..queue.service import QueueError, job_number
from ..ui.common import dataset_choices, job_choices, preset_choices, require_posting, services_of
from ..ui.train import show_estimate

Optimizer = Literal["AdamW", "AdamW8bit", "Adafactor", "Lion", "DAdaptation", "DAdaptAdam", "Prodigy"]


class TrainCog(commands.Cog):
    def __init__(self, bot: commands.Bot):
        self.bot = bot

    @app_commands.command(
        name="train", description="Train a LoRA on a dataset: shows the steps and cost first"
    )
    @app_commands.guild_only()
    @app_commands.describe(
        dataset="The dataset to train on",
        epochs="Passes over the dataset (default 10)",
        repeats="Times each image is seen per epoch (default 10)",
        batch_size="Images per step (default 1)",
        learning_rate="e.g. 0.0001 (Prodigy/DAdaptation want 1)",
        optimizer="default AdamW8bit where available",
        network_dim="LoRA rank (default 32)",
        network_alpha="LoRA alpha (default 16)",
        resolution="Training resolution in px (default: the model's, or the crop size)",
        preset="Start from one of your saved presets",
        like="Copy the settings of one of your earlier jobs",
        continue_job="Train further from a saved epoch of this job (with continue_epoch)",
        continue_epoch="The saved epoch to start from",
    )
    @app_commands.autocomplete(
        dataset=dataset_choices, like=job_choices, continue_job=job_choices, preset=preset_choices
    )
    async def train(
        self,
        interaction: discord.Interaction,
        dataset: str,
        epochs: app_commands.Range[int, 1, 1000] | None = None,
        repeats: app_commands.Range[int, 1, 1000] | None = None,
        batch_size: app_commands.Range[int, 1, 64] | None = None,
        learning_rate: app_commands.Range[float, 0.0, 10.0] | None = None,
        optimizer: Optimizer | None = None,
        network_dim: app_commands.Range[int, 1, 1024] | None = None,
        network_alpha: app_commands.Range[float, 0.01, 1024.0] | None = None,
        resolution: app_commands.Range[int, 64, 4096] | None = None,
        preset: str | None = None,
        like: str | None = None,
        continue_job: str | None = None,
        continue_epoch: app_commands.Range[int, 1, 1000] | None = None,
    ) -> None:
        explicit: dict[str, Any] = {
            "epochs": epochs, "repeats": repeats, "batch_size": batch_size, "learning_rate": learning_rate,
            "optimizer": optimizer, "network_dim": network_dim, "network_alpha": network_alpha,
            "resolution": resolution,
        }  # fmt: skip
        require_posting(interaction)
        services = services_of(interaction)
        options = await services.presets.resolve_train_options(
            interaction.user.id, preset=preset, like=like, explicit=explicit
        )  # like: parsed there, as every job number (job_number)
        init_from = None
        if continue_job is not None or continue_epoch is not None:
            if continue_job is None or continue_epoch is None:
                raise QueueError("train further needs both continue_job and continue_epoch")
            init_from = (job_number(continue_job), continue_epoch)
            await services.queue.epoch_file(interaction.user.id, *init_from)  # no such job/epoch: say so now
        await show_estimate(interaction, dataset, options, init_from)
