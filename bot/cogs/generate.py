"""/generate: render with up to three LoRAs (yours or shared ones) at a weight each, with a sampler;
compare_weights makes one grid of the first LoRA at several weights.

The LoRAs are three pairs of options, lora/weight, lora2/weight2, lora3/weight3: on a phone each
is one autocomplete field and one number, filled in any order; the first pair alone is the old
single-LoRA usage.
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from ..i18n import messages
from ..queue.generation import GenerateRequest
from ..queue.service import QueueError
from ..ui.common import answer, base_model_choices, require_posting, roles_of, services_of
from ..ui.loras import usable_lora_choices

#: The trainer's samplers (trainer/render.py SAMPLERS), as a member reads them.
SAMPLERS = (
    ("Euler a (default)", "euler_a"), ("Euler", "euler"), ("DPM++ 2M", "dpmpp_2m"),
    ("DPM++ 2M Karras", "dpmpp_2m_karras"), ("DDIM", "ddim"), ("PNDM", "pndm"), ("LMS", "lms"), ("Heun", "heun"),
)  # fmt: skip
Weight = app_commands.Range[float, 0.0, 2.0]


def parse_weights(text: str | None) -> list[float] | None:
    """'0.7, 0.8, 1.0' -> [0.7, 0.8, 1.0]; a clear error for anything else."""
    if not text or not text.strip():
        return None
    try:
        weights = [float(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise QueueError(
            "compare_weights '{text}' is not numbers separated by commas, e.g. 0.7,0.8,1.0", text=text
        ) from None
    if not 1 <= len(weights) <= 8 or any(not -2 <= w <= 2 for w in weights):
        raise QueueError("compare_weights takes 1 to 8 weights between -2 and 2, e.g. 0.7,0.8,1.0")
    return weights


def lora_slots(*slots: tuple[str | None, float | None]) -> tuple[tuple[str, float], ...]:
    """The (LoRA, weight) pairs filled in, in order: lora/weight, lora2/weight2, ...; a weight
    without its LoRA is a mistake worth saying (the member meant to pick one)."""
    picks = []
    for number, (name, weight) in enumerate(slots, start=1):
        suffix = "" if number == 1 else str(number)
        if name and name.strip():
            picks.append((name.strip(), 1.0 if weight is None else weight))
        elif weight is not None:
            raise QueueError(
                "weight{suffix} is set but lora{suffix} is empty: pick a LoRA in lora{suffix}, "
                "or leave weight{suffix} out",
                suffix=suffix,
            )
    return tuple(picks)


class GenerateCog(commands.Cog):
    def __init__(self, bot: commands.Bot):
        self.bot = bot

    @app_commands.command(name="generate", description="Render images with up to three LoRAs")
    @app_commands.guild_only()
    @app_commands.describe(
        prompt="What to draw (put your trigger words in it)",
        lora="A LoRA: yours (save one from /epochs) or one shared with the server",
        weight="How strongly lora applies, 0-2 (default 1)",
        lora2="A second LoRA (optional)",
        weight2="How strongly lora2 applies, 0-2 (default 1)",
        lora3="A third LoRA (optional)",
        weight3="How strongly lora3 applies, 0-2 (default 1)",
        sampler="How the image is sampled (default Euler a; Flux uses its own: leave it out)",
        negative="What to avoid (SD models: Flux takes no negative prompt)",
        seed="Same seed, same picture (default random)",
        steps="Sampling steps (default: the model's, 25; Flux 20)",
        cfg="Prompt strength (default: the model's, 7; Flux 3.5)",
        size="WIDTHxHEIGHT, e.g. 512x768 (default: the model's size)",
        count="How many images (default 1)",
        compare_weights="The first LoRA at several weights side by side in one grid, e.g. 0.7,0.8,1.0",
        base_model="Without a LoRA: which base model",
    )
    @app_commands.choices(sampler=[app_commands.Choice(name=n, value=v) for n, v in SAMPLERS])
    @app_commands.autocomplete(
        lora=usable_lora_choices, lora2=usable_lora_choices, lora3=usable_lora_choices,
        base_model=base_model_choices,
    )  # fmt: skip
    async def generate(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 1000],
        lora: str | None = None,
        weight: Weight | None = None,
        lora2: str | None = None,
        weight2: Weight | None = None,
        lora3: str | None = None,
        weight3: Weight | None = None,
        sampler: str | None = None,
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
            prompt=prompt, loras=lora_slots((lora, weight), (lora2, weight2), (lora3, weight3)),
            sampler=sampler, negative=negative, seed=seed, steps=steps, cfg=cfg, size=size, count=count,
            compare_weights=parse_weights(compare_weights), base_model=base_model, locale=str(interaction.locale),
        )  # fmt: skip
        job = await services.generation.submit(
            interaction.user.id, request, roles=roles_of(interaction), channel_id=interaction.channel_id
        )
        t = messages(interaction.locale)
        text = t.plural(
            "🎨 Queued **#{job}**: {n} image for {cost} stamina. It will be posted in this channel when ready "
            "(see /queue).",
            "🎨 Queued **#{job}**: {n} images for {cost} stamina. They will be posted in this channel when ready "
            "(see /queue).",
            job.total_steps, job=job.id, cost=job.cost,
        )  # fmt: skip
        await answer(interaction, text)
