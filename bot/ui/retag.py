"""Re-tag with a question first: what will be re-tagged, with which tagger and threshold, and how
many of the member's own captions (edited by hand, or from a zip) it replaces. Then the tagging's
progress on the same message, and what changed."""

from __future__ import annotations

from collections.abc import Sequence

import discord

from ..datasets.retag import RetagPlan, RetagResult
from .base import OwnerView
from .common import answer, services_of
from .progress_line import ProgressLine, stopped_line


async def ask_retag(
    interaction: discord.Interaction,
    dataset: str,
    image_ids: Sequence[int] | None = None,
    tagger: str | None = None,
    threshold: float | None = None,
) -> None:
    """Answer with the question and its buttons; a bad request raises the service's error, unanswered."""
    plan = await services_of(interaction).datasets.plan_retag(
        interaction.user.id, dataset, image_ids, tagger, threshold
    )
    view = RetagView(interaction.user.id, plan)
    view.message = await answer(interaction, retag_question(plan), view=view)


def retag_question(plan: RetagPlan) -> str:
    if plan.image_ids is None:
        what = f"all {plan.images} image(s) of **{plan.dataset}**"
    elif plan.images == 1:
        what = f"image {plan.image_ids[0]} of **{plan.dataset}**"
    else:
        ids = ", ".join(map(str, plan.image_ids[:20])) + (" …" if plan.images > 20 else "")
        what = f"{plan.images} images of **{plan.dataset}** ({ids})"
    lines = [f"Re-tag {what} with `{plan.tagger}` at threshold {plan.threshold:g}?"]
    lines += replaced_lines(plan)
    if plan.saves_settings:
        lines.append(
            f"`{plan.tagger}` at {plan.threshold:g} becomes the dataset's setting for later uploads."
        )
    lines.append(f"You can undo it with `/tags undo dataset:{plan.dataset}`.")
    return "\n".join(lines)


def replaced_lines(plan: RetagPlan) -> list[str]:
    """What the re-tag replaces of the member's own captions."""
    lines = []
    if plan.hand:
        lines.append(f"⚠️ **{plan.hand} caption(s) you edited by hand will be replaced.**")
    if plan.zip:
        lines.append(f"⚠️ **{plan.zip} caption(s) that came with your zip will be replaced.**")
    if not lines:
        lines.append("No caption here was edited by hand: only the tagger's captions are replaced.")
    return lines


def result_line(dataset: str, result: RetagResult) -> str:
    line = f"🏷️ Re-tagged {result.tagged} image(s) of **{dataset}**: {result.changed} caption(s) changed"
    if result.kept:
        line += f", {result.kept} of your own kept as they were"
    line += "."
    if result.unreadable:
        names = ", ".join(result.unreadable[:10])
        line += (
            f"\n⚠️ {len(result.unreadable)} image file(s) could not be read and kept their caption: {names}."
        )
    if result.saved_settings:
        line += "\nThe new tagger and threshold are the dataset's settings now."
    return line + f"\nUndo with `/tags undo dataset:{dataset}`; check with `/tags view dataset:{dataset}`."


class RetagView(OwnerView):
    """Re-tag all (replaces the member's own captions) / keep them (re-tag only the tagger's) / cancel."""

    def __init__(self, owner_id: int, plan: RetagPlan):
        super().__init__(owner_id)
        self.plan = plan
        self.started = False
        self.retag_all.label = f"Re-tag {plan.images}" if plan.images > 1 else "Re-tag"
        if 0 < plan.own < plan.images:
            self.keep.label = f"Keep my {plan.own}, re-tag {plan.images - plan.own}"
        else:
            self.remove_item(self.keep)

    @discord.ui.button(label="Re-tag", style=discord.ButtonStyle.danger)
    async def retag_all(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self.run(interaction, keep_own=False)

    @discord.ui.button(label="Keep my captions", style=discord.ButtonStyle.primary)
    async def keep(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self.run(interaction, keep_own=True)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.stop()
        await interaction.response.edit_message(content="Cancelled: nothing was changed.", view=None)

    async def run(self, interaction: discord.Interaction, keep_own: bool) -> None:
        if self.started:  # a second tap while the first one runs
            await answer(interaction, "⏳ Already on it.")
            return
        self.started = True
        self.stop()
        plan = self.plan
        await interaction.response.edit_message(content=f"⏳ Re-tagging **{plan.dataset}**…", view=None)
        progress = ProgressLine(interaction)
        try:
            result = await services_of(interaction).datasets.retag(
                self.owner_id, plan.dataset, plan.image_ids, plan.tagger, plan.threshold,
                keep_own=keep_own, progress=progress,
            )  # fmt: skip
        except Exception as exc:  # the progress line ends with what happened, whatever it was
            await progress.finish()
            await interaction.edit_original_response(
                content=stopped_line(exc, "Re-tag", "no caption was changed")
            )
            return
        await progress.finish()
        await interaction.edit_original_response(content=result_line(plan.dataset, result))
