"""Re-tag with a question first: what will be re-tagged, with which tagger and threshold, and how
many of the member's own captions (edited by hand, or from a zip) it replaces. Then the tagging's
progress on the same message, and what changed; all in the member's language."""

from __future__ import annotations

from collections.abc import Sequence

import discord

from ..datasets.retag import RetagPlan, RetagResult
from ..i18n import N_, Messages, messages
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
    t = messages(interaction.locale)
    view = RetagView(interaction.user.id, plan, t)
    view.message = await answer(interaction, retag_question(plan, t), view=view)


def retag_question(plan: RetagPlan, t: Messages) -> str:
    said = {"dataset": plan.dataset, "tagger": plan.tagger, "threshold": f"{plan.threshold:g}"}
    if plan.image_ids is None:
        lines = [t("Re-tag all {n} image(s) of **{dataset}** with `{tagger}` at threshold {threshold}?",
                   n=plan.images, **said)]  # fmt: skip
    elif plan.images == 1:
        lines = [t("Re-tag image {image} of **{dataset}** with `{tagger}` at threshold {threshold}?",
                   image=plan.image_ids[0], **said)]  # fmt: skip
    else:
        ids = ", ".join(map(str, plan.image_ids[:20])) + (" …" if plan.images > 20 else "")
        lines = [t("Re-tag {n} images of **{dataset}** ({ids}) with `{tagger}` at threshold {threshold}?",
                   n=plan.images, ids=ids, **said)]  # fmt: skip
    lines += replaced_lines(plan, t)
    if plan.saves_settings:
        lines.append(t("`{tagger}` at {threshold} becomes the dataset's setting for later uploads.", **said))
    lines.append(t("You can undo it with `/tags undo dataset:{dataset}`.", dataset=plan.dataset))
    return "\n".join(lines)


def replaced_lines(plan: RetagPlan, t: Messages) -> list[str]:
    """What the re-tag replaces of the member's own captions."""
    lines = []
    if plan.hand:
        lines.append(t("⚠️ **{n} caption(s) you edited by hand will be replaced.**", n=plan.hand))
    if plan.zip:
        lines.append(t("⚠️ **{n} caption(s) that came with your zip will be replaced.**", n=plan.zip))
    if not lines:
        lines.append(t("No caption here was edited by hand: only the tagger's captions are replaced."))
    return lines


def result_line(dataset: str, result: RetagResult, t: Messages) -> str:
    counts = {"tagged": result.tagged, "dataset": dataset, "changed": result.changed}
    if result.kept:
        lines = [t("🏷️ Re-tagged {tagged} image(s) of **{dataset}**: {changed} caption(s) changed, "
                   "{kept} of your own kept as they were.", kept=result.kept, **counts)]  # fmt: skip
    else:
        lines = [t("🏷️ Re-tagged {tagged} image(s) of **{dataset}**: {changed} caption(s) changed.", **counts)]
    if result.unreadable:
        names = ", ".join(result.unreadable[:10])
        lines.append(t("⚠️ {n} image file(s) could not be read and kept their caption: {names}.",
                       n=len(result.unreadable), names=names))  # fmt: skip
    if result.saved_settings:
        lines.append(t("The new tagger and threshold are the dataset's settings now."))
    lines.append(
        t(
            "Undo with `/tags undo dataset:{dataset}`; check with `/tags view dataset:{dataset}`.",
            dataset=dataset,
        )
    )
    return "\n".join(lines)


class RetagView(OwnerView):
    """Re-tag all (replaces the member's own captions) / keep them (re-tag only the tagger's) / cancel."""

    def __init__(self, owner_id: int, plan: RetagPlan, t: Messages):
        super().__init__(owner_id)
        self.plan, self.t = plan, t
        self.started = False
        self.retag_all.label = t("Re-tag {n}", n=plan.images) if plan.images > 1 else t("Re-tag")
        self.cancel.label = t("Cancel")
        if 0 < plan.own < plan.images:
            self.keep.label = t("Keep my {own}, re-tag {rest}", own=plan.own, rest=plan.images - plan.own)
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
        await interaction.response.edit_message(content=self.t("Cancelled: nothing was changed."), view=None)

    async def run(self, interaction: discord.Interaction, keep_own: bool) -> None:
        t = self.t
        if self.started:  # a second tap while the first one runs
            await answer(interaction, "⏳ " + t("Already on it."))
            return
        self.started = True
        self.stop()
        plan = self.plan
        content = "⏳ " + t("Re-tagging **{dataset}**…", dataset=plan.dataset)
        await interaction.response.edit_message(content=content, view=None)
        progress = ProgressLine(interaction)
        try:
            result = await services_of(interaction).datasets.retag(
                self.owner_id, plan.dataset, plan.image_ids, plan.tagger, plan.threshold,
                keep_own=keep_own, progress=progress,
            )  # fmt: skip
        except Exception as exc:  # the progress line ends with what happened, whatever it was
            await progress.finish()
            await interaction.edit_original_response(
                content=stopped_line(exc, N_("Re-tag"), N_("no caption was changed"), t)
            )
            return
        await progress.finish()
        await interaction.edit_original_response(content=result_line(plan.dataset, result, t))
