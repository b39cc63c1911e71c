"""/help: the guide's ten steps in five pages, with the commands for each, in the member's language.

The steps follow the SeaArt guide the product is modeled on (and SPEC.md's user flow): make a
dataset, add images, let the tagger caption them, prune the tags, train, wait in the queue, watch
the previews, pick an epoch, generate, keep and share what you made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import discord
from discord import app_commands
from discord.ext import commands

from ..i18n import N_, Messages, messages
from ..ui.common import answer
from ..ui.pages import PagedView


@dataclass(frozen=True)
class Step:
    title: str
    text: str
    commands: str  # the commands themselves: never translated


STEPS = (
    Step(
        N_("Make a dataset"),
        N_(
            "A dataset is the images your LoRA learns from. Pick the base model it is for and a trigger word: "
            "the word that will call up your character or style later."
        ),
        "`/dataset new` · `/dataset list` · `/dataset info` · `/dataset edit`",
    ),
    Step(
        N_("Add images"),
        N_(
            "Upload up to ten images at once, or a zip of images with .txt captions. On a phone, the easiest "
            "way is the message menu: long-press a message with pictures, Apps, Add to dataset. "
            "Ten to twenty clear images of one subject are a good start."
        ),
        "`/upload` · Apps ▸ Add to dataset",
    ),
    Step(
        N_("Crop and tag"),
        N_(
            "Each image is cropped as the dataset says and captioned by the tagger; your trigger word is "
            "always the first tag. A lower threshold gives more tags."
        ),
        "`/dataset new … threshold:` · `/tags retag`",
    ),
    Step(
        N_("Prune the tags"),
        N_(
            "See how often each tag appears, then remove the traits that always belong to your character "
            "(hair colour, eye colour…): they bind to the trigger word instead. Edit one caption by hand, or "
            "undo the last change."
        ),
        "`/tags view` · `/tags remove` · `/tags add` · `/tags replace` · `/tags caption` · `/tags undo`",
    ),
    Step(
        N_("Train"),
        N_(
            "Set repeats and epochs (images x repeats x epochs / batch size = steps). The bot shows the steps, "
            "the time and the stamina it costs before anything is charged; confirm to queue it. Save a recipe "
            "as a preset, or copy an earlier job."
        ),
        "`/train` · `/preset save` · `/preset options` · `/stamina`",
    ),
    Step(
        N_("Wait in the queue"),
        N_(
            "Your job waits its turn on the server's GPU. See its place, progress and time left, or cancel "
            "it: what was not used comes back."
        ),
        "`/queue` · `/notify`",
    ),
    Step(
        N_("Watch the previews"),
        N_(
            "After every saved epoch a preview grid appears in the channel: the preview prompt at a few "
            "weights, so you can see the LoRA learn."
        ),
        "`/queue`",
    ),
    Step(
        N_("Pick an epoch"),
        N_(
            "Every saved epoch can be downloaded or kept in your library. Compare epochs side by side in one "
            "grid with the same seed to find the best one: the last is not always it."
        ),
        "`/epochs`",
    ),
    Step(
        N_("Generate"),
        N_(
            "Draw with up to three LoRAs, each at its own weight (0.7 to 1.0 is usual). Put the trigger word "
            "in the prompt. compare_weights shows several weights side by side."
        ),
        "`/generate`",
    ),
    Step(
        N_("Keep and share"),
        N_(
            "Download the .safetensors for ComfyUI, A1111, Forge or any other tool, rename it, or share it "
            "so everyone here can generate with it."
        ),
        "`/lora list` · `/lora download` · `/lora share` · `/lora rename`",
    ),
)
STEPS_PER_PAGE = 2


def help_embed(steps: Sequence[tuple[int, Step]], t: Messages) -> discord.Embed:
    embed = discord.Embed(title="📖 " + t("How to make a LoRA"), color=discord.Color.teal())
    embed.description = t("Ten steps, from your images to a LoRA you can use anywhere.")
    for number, step in steps:
        embed.add_field(
            name=t("Step {number}: {title}", number=number, title=t(step.title)),
            value=f"{t(step.text)}\n{step.commands}",
            inline=False,
        )
    return embed


class HelpCog(commands.Cog):
    def __init__(self, bot: commands.Bot):
        self.bot = bot

    @app_commands.command(
        name="help", description="How to make a LoRA here: the ten steps and their commands"
    )
    @app_commands.describe(step="Open at this step (1-10)")
    async def help(self, interaction: discord.Interaction, step: app_commands.Range[int, 1, 10] = 1) -> None:
        t = messages(interaction.locale)
        numbered = list(enumerate(STEPS, start=1))
        pages = [numbered[i : i + STEPS_PER_PAGE] for i in range(0, len(numbered), STEPS_PER_PAGE)]

        def render(items: Sequence[list[tuple[int, Step]]], page: int, count: int) -> discord.Embed:
            return help_embed(items[0], t)

        view = PagedView(interaction.user.id, pages, render, t, per_page=1, page=(step - 1) // STEPS_PER_PAGE)
        view.message = await answer(interaction, embed=view.embed(), view=view)
