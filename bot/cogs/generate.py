"""/generate: render with a LoRA of your library at a weight; compare_weights makes one grid."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from ..queue.generation import GenerateRequest
from ..queue.service import QueueError
from ..ui.common import answer, base_model_choices, lora_choices, require_posting, roles_of, services_of


def parse_weights(text: str | None) -> list[float] | None:
    """'0.7, 0.8, 1.0' -> [0.7, 0.8, 1.0]; a clear error for anything else."""
    if not text or not text.strip():
        return None
    try:
        weights = [float(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise QueueError(
            f"compare_weights '{text}' is not numbers separated by commas, e.g. 0.7,0.8,1.0"
        ) from None
    if not 1 <= len(weights) <= 8 or any(not -2 <= w <= 2 for w in weights):
        raise QueueError("compare_weights takes 1 to 8 weights between -2 and 2, e.g. 0.7,0.8,1.0")
    return weights


class GenerateCog(commands.Cog):
    def __init__(self, bot: commands.Bot):
        self.bot = bot

    @app_commands.command(name="generate", description="Render images with one of your LoRAs")
    @app_commands.guild_only()
    @app_commands.describe(
        prompt="What to draw (put your trigger word in it)",
        lora="A LoRA from your library (save one from /epochs)",
        weight="How strongly the LoRA applies, 0-2 (default 1)",
        negative="What to avoid (SD models: Flux takes no negative prompt)",
        seed="Same seed, same picture (default random)",
        steps="Sampling steps (default: the model's, 25; Flux 20)",
        cfg="Prompt strength (default: the model's, 7; Flux 3.5)",
        size="WIDTHxHEIGHT, e.g. 512x768 (default: the model's size)",
        count="How many images (default 1)",
        compare_weights="Several weights side by side in one grid, e.g. 0.7,0.8,1.0",
        base_model="Without a LoRA: which base model",
    )
    @app_commands.autocomplete(lora=lora_choices, base_model=base_model_choices)
    async def generate(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 1000],
        lora: str | None = None,
        weight: app_commands.Range[float, 0.0, 2.0] = 1.0,
        negative: app_commands.Range[str, 0, 1000] = "",
        seed: app_commands.Range[int, 0, 2**32 - 1] | None = None,
        steps: app_commands.Range[int, 1, 150] | None = None,
        cfg: app_commands.Range[float, 1.0, 30.0] | None = None,
        size: str | None = None,
        count: app_commands.Range[int, 1, 16] = 1,
        compare_weights: str | None = None,
        base_model: str | None = None,
    ) -> None:
        require_posting(interaction)
        services = services_of(interaction)
        request = GenerateRequest(
            prompt=prompt, lora=lora, weight=weight, negative=negative, seed=seed, steps=steps, cfg=cfg,
            size=size, count=count, compare_weights=parse_weights(compare_weights), base_model=base_model,
        )  # fmt: skip
        job = await services.generation.submit(
            interaction.user.id, request, roles=roles_of(interaction), channel_id=interaction.channel_id
        )
        images = job.total_steps
        await answer(
            interaction,
            f"🎨 Queued **#{job.id}**: {images} image{'s' * (images != 1)} for {job.cost} stamina. "
            "They will be posted in this channel when ready (see /queue).",
        )
