"""Buttons about a job or a saved epoch, and the buttons that outlive the bot process.

On public messages (progress, preview grids) they are ``DynamicItem``s: the job and epoch are
in the custom id, so after a restart discord.py rebuilds them and Cancel, Download and Save keep
working on messages posted long ago. Inside views that end (``/queue``, ``/epochs``) the same
actions are plain buttons: discord.py forgets a DynamicItem class for the whole bot when a
view holding one ends. Each action checks the clicker owns the job (operators may cancel any).
A custom id is whatever a client sends: its job and epoch are parsed like a typed job number
(:func:`~bot.queue.service.job_number`), so a crafted one gets the "no such job" answer.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import discord

from ..i18n import N_, Messages, messages
from ..ids import parse_id
from ..queue.service import no_epoch
from .common import answer, claim, defer_thinking, guarded, is_operator, run_service, services_of
from .files import send_file

if TYPE_CHECKING:
    from ..queue.refunds import RefundPreview

PREFIX = "lorabot"


# The actions --------------------------------------------------------------------------------------


async def ask_cancel(interaction: discord.Interaction, job_id: int | str) -> None:
    """Cancel asks first (a mis-tap must not stop hours of training), saying what will come back."""
    from .base import ask_first

    services, t = services_of(interaction), messages(interaction.locale)
    operator = is_operator(interaction)
    job = await run_service(interaction, services.queue.job(interaction.user.id, job_id, operator=operator))
    if job is None:
        return
    if job.finished:
        await answer(
            interaction, t("Job #{job} has already ended ({state}).", job=job.id, state=t(job.state))
        )
        return
    refund = await services.queue.refund_preview(interaction.user.id, job.id, operator=operator)

    async def confirmed(click: discord.Interaction) -> None:
        t = messages(click.locale)
        ended = await services.queue.cancel(click.user.id, job.id, operator=operator)
        if ended.state == "cancelled":
            refunded = _refunded(ended.refunded, ended.refund_expired, t)
            text = "🛑 " + t(
                "Job #{job} cancelled before it started: {refunded}.", job=ended.id, refunded=refunded
            )
        else:
            later = await services.queue.refund_preview(click.user.id, job.id, operator=operator)
            text = "🛑 " + t("Stopping job #{job}: {refund}", job=ended.id, refund=refund_text(later, t))
        await click.response.edit_message(content=text, view=None)

    question = t(
        "Stop job #{job} ({title})? {refund}", job=job.id, title=job.title, refund=refund_text(refund, t)
    )
    await ask_first(interaction, question, confirmed, label=t("Stop it"), keep_label=t("Keep it"))


def refund_text(refund: RefundPreview, t: Messages | None = None) -> str:
    """What stopping the job gives back, as :func:`settle` will compute it (never more than that)."""
    t = t or messages(None)
    expired = t(
        " ({expired} stamina expired: it was charged before a daily reset that has since topped your balance up)",
        expired=refund.expired,
    ) if refund.expired else ""  # fmt: skip
    if refund.state == "queued":
        return _not_started(refund, expired, t)
    values = {"done": refund.done, "total": refund.total, "refund": refund.refund, "expired": expired}
    nothing = expired or t(" (the work done is what it cost)")
    if refund.kind == "train":
        if refund.refund == 0:
            return t("It is at {done}/{total} steps: nothing comes back{why}; saved epochs stay.",
                     why=nothing, **values)  # fmt: skip
        return t("It is at {done}/{total} steps: the steps not done are refunded (about {refund} stamina now)"
                 "{expired}; saved epochs stay.", **values)  # fmt: skip
    if refund.refund == 0:
        return t("It is at {done}/{total} images: nothing comes back{why}.", why=nothing, **values)
    return t("It is at {done}/{total} images: the images not done are refunded (about {refund} stamina now)"
             "{expired}.", **values)  # fmt: skip


def _not_started(refund: RefundPreview, expired: str, t: Messages) -> str:
    if refund.cost == 0:
        return t("It has not started: it cost nothing.")
    if refund.refund == refund.cost:
        return t("It has not started: you get all its stamina back ({cost}).", cost=refund.cost)
    if refund.refund == 0:
        return t("It has not started: nothing comes back{expired}.", expired=expired)
    return t("It has not started: you get {refund} of its {cost} stamina back{expired}.",
             refund=refund.refund, cost=refund.cost, expired=expired)  # fmt: skip


def _refunded(amount: int, expired: int, t: Messages) -> str:
    if expired:
        return t(
            "{amount} stamina refunded, {expired} expired at a daily reset", amount=amount, expired=expired
        )
    return t("{amount} stamina refunded", amount=amount) if amount else t("nothing to refund")


async def download_epoch(interaction: discord.Interaction, job_id: int | str, epoch: int | str) -> None:
    services = services_of(interaction)
    await defer_thinking(interaction)
    path = await run_service(interaction, services.queue.epoch_file(interaction.user.id, job_id, epoch))
    if path is None:
        return
    job = await services.queue.job(interaction.user.id, job_id)
    job_id, epoch = job.id, _epoch(job.id, epoch)
    filename = f"{job.spec.get('output_name', 'lora')}-e{epoch:02d}.safetensors"
    await send_file(interaction, Path(path), filename, kind="epoch", ref=f"{job_id}/{epoch}")


async def save_epoch(interaction: discord.Interaction, job_id: int | str, epoch: int | str) -> None:
    job = await run_service(interaction, services_of(interaction).queue.job(interaction.user.id, job_id))
    if job is None:
        return
    from .modals import SaveLoraModal

    epoch = _epoch(job.id, epoch)
    t = messages(interaction.locale)
    await interaction.response.send_modal(
        SaveLoraModal(interaction.user.id, job.id, epoch, f"{job.title}-e{epoch}", t)
    )


async def train_further(interaction: discord.Interaction, job_id: int | str, epoch: int | str) -> None:
    job = await run_service(interaction, services_of(interaction).queue.job(interaction.user.id, job_id))
    if job is None:
        return
    from .modals import TrainFurtherModal

    t = messages(interaction.locale)
    await interaction.response.send_modal(
        TrainFurtherModal(interaction.user.id, job, _epoch(job.id, epoch), t)
    )


def _epoch(job_id: int, value: int | str) -> int:
    """An epoch number from a custom id, parsed like a job number (no such epoch otherwise)."""
    epoch = parse_id(value)
    if epoch is None:
        raise no_epoch(job_id, value)
    return epoch


# The DynamicItems (public messages) ---------------------------------------------------------------


class CancelJobButton(discord.ui.DynamicItem[discord.ui.Button], template=rf"{PREFIX}:cancel:(?P<job>[^:]+)"):
    """Its label is in ``t``'s language (the message's readers'); a click is answered in the clicker's."""

    def __init__(self, job_id: int | str, t: Messages | None = None):
        t = t or messages(None)
        button = discord.ui.Button(
            label=t("Cancel job"),
            style=discord.ButtonStyle.danger,
            custom_id=f"{PREFIX}:cancel:{job_id}",
            emoji="✖️",
        )
        super().__init__(button)
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ):
        return cls(match["job"])  # parsed when clicked: a bad one is answered, not logged

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        claim(interaction)
        return True

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, ask_cancel(interaction, self.job_id))


EpochAction = Callable[[discord.Interaction, int | str, int | str], Awaitable[None]]


class _EpochButton(discord.ui.DynamicItem[discord.ui.Button], template=r"unused"):
    """Base of the buttons about one saved epoch of a job."""

    action, label, emoji, style = "", "", "", discord.ButtonStyle.secondary
    run: EpochAction

    def __init__(self, job_id: int | str, epoch: int | str, t: Messages | None = None):
        super().__init__(
            discord.ui.Button(
                label=(t or messages(None))(self.label, epoch=epoch), emoji=self.emoji, style=self.style,
                custom_id=f"{PREFIX}:{self.action}:{job_id}:{epoch}",
            )
        )  # fmt: skip
        self.job_id, self.epoch = job_id, epoch

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ):
        return cls(match["job"], match["epoch"])  # parsed when clicked

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        claim(interaction)
        return True

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, type(self).run(interaction, self.job_id, self.epoch))


class DownloadEpochButton(_EpochButton, template=rf"{PREFIX}:download:(?P<job>[^:]+):(?P<epoch>[^:]+)"):
    action, label, emoji, style = "download", N_("Download e{epoch}"), "⬇️", discord.ButtonStyle.primary
    run = staticmethod(download_epoch)


class SaveEpochButton(_EpochButton, template=rf"{PREFIX}:save:(?P<job>[^:]+):(?P<epoch>[^:]+)"):
    action, label, emoji, style = "save", N_("Save e{epoch}"), "💾", discord.ButtonStyle.success
    run = staticmethod(save_epoch)


PERSISTENT_ITEMS = (CancelJobButton, DownloadEpochButton, SaveEpochButton)


def epoch_buttons(job_id: int, epoch: int, t: Messages | None = None) -> list[discord.ui.Item]:
    """Download and Save for a public message (they survive restarts), labelled in ``t``'s language."""
    return [DownloadEpochButton(job_id, epoch, t), SaveEpochButton(job_id, epoch, t)]


# Plain buttons (inside views that end) -------------------------------------------------------------


class ActionButton(discord.ui.Button):
    """A button inside an ending view that runs one of the actions above."""

    def __init__(self, label: str, emoji: str, style: discord.ButtonStyle, run: Callable[[discord.Interaction], Awaitable[None]], row: int | None = None):  # fmt: skip
        super().__init__(label=label, emoji=emoji, style=style, row=row)
        self._run = run

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self._run(interaction))


def epoch_action_buttons(job_id: int, epoch: int, t: Messages) -> list[discord.ui.Button]:
    return [
        ActionButton(t("Download e{epoch}", epoch=epoch), "⬇️", discord.ButtonStyle.primary,
                     lambda i: download_epoch(i, job_id, epoch)),
        ActionButton(t("Save e{epoch}", epoch=epoch), "💾", discord.ButtonStyle.success,
                     lambda i: save_epoch(i, job_id, epoch)),
        ActionButton(t("Train further from e{epoch}", epoch=epoch), "➕", discord.ButtonStyle.secondary,
                     lambda i: train_further(i, job_id, epoch)),
    ]  # fmt: skip


def cancel_action_button(job_id: int, t: Messages | None = None) -> discord.ui.Button:
    t = t or messages(None)
    label = t("Cancel #{job}", job=job_id)
    return ActionButton(label, "✖️", discord.ButtonStyle.danger, lambda i: ask_cancel(i, job_id))
