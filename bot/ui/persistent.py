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

    services = services_of(interaction)
    operator = is_operator(interaction)
    job = await run_service(interaction, services.queue.job(interaction.user.id, job_id, operator=operator))
    if job is None:
        return
    if job.finished:
        await answer(interaction, f"Job #{job.id} has already ended ({job.state}).")
        return
    refund = await services.queue.refund_preview(interaction.user.id, job.id, operator=operator)

    async def confirmed(click: discord.Interaction) -> None:
        ended = await services.queue.cancel(click.user.id, job.id, operator=operator)
        if ended.state == "cancelled":
            text = f"🛑 Job #{ended.id} cancelled before it started: {_refunded(ended.refunded, ended.refund_expired)}."
        else:
            later = await services.queue.refund_preview(click.user.id, job.id, operator=operator)
            text = f"🛑 Stopping job #{ended.id}: {refund_text(later)}"
        await click.response.edit_message(content=text, view=None)

    question = f"Stop job #{job.id} ({job.title})? {refund_text(refund)}"
    await ask_first(interaction, question, confirmed, label="Stop it", keep_label="Keep it")


def refund_text(refund: RefundPreview) -> str:
    """What stopping the job gives back, as :func:`settle` will compute it (never more than that)."""
    expired = (
        f" ({refund.expired} stamina expired: it was charged before a daily reset that has since topped "
        "your balance up)" if refund.expired else ""
    )  # fmt: skip
    if refund.state == "queued":
        head = "It has not started: "
        if refund.cost == 0:
            return f"{head}it cost nothing."
        if refund.refund == refund.cost:
            return f"{head}you get all its stamina back ({refund.cost})."
        if refund.refund == 0:
            return f"{head}nothing comes back{expired}."
        return f"{head}you get {refund.refund} of its {refund.cost} stamina back{expired}."
    head = f"It is at {refund.done}/{refund.total} {refund.unit}: "
    kept = "; saved epochs stay." if refund.kind == "train" else "."
    if refund.refund == 0:
        return f"{head}nothing comes back{expired or ' (the work done is what it cost)'}{kept}"
    return f"{head}the {refund.unit} not done are refunded (about {refund.refund} stamina now){expired}{kept}"


def _refunded(amount: int, expired: int) -> str:
    if expired:
        return f"{amount} stamina refunded, {expired} expired at a daily reset"
    return f"{amount} stamina refunded" if amount else "nothing to refund"


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
    await interaction.response.send_modal(
        SaveLoraModal(interaction.user.id, job.id, epoch, f"{job.title}-e{epoch}")
    )


async def train_further(interaction: discord.Interaction, job_id: int | str, epoch: int | str) -> None:
    job = await run_service(interaction, services_of(interaction).queue.job(interaction.user.id, job_id))
    if job is None:
        return
    from .modals import TrainFurtherModal

    await interaction.response.send_modal(TrainFurtherModal(interaction.user.id, job, _epoch(job.id, epoch)))


def _epoch(job_id: int, value: int | str) -> int:
    """An epoch number from a custom id, parsed like a job number (no such epoch otherwise)."""
    epoch = parse_id(value)
    if epoch is None:
        raise no_epoch(job_id, value)
    return epoch


# The DynamicItems (public messages) ---------------------------------------------------------------


class CancelJobButton(discord.ui.DynamicItem[discord.ui.Button], template=rf"{PREFIX}:cancel:(?P<job>[^:]+)"):
    def __init__(self, job_id: int | str):
        button = discord.ui.Button(
            label="Cancel job",
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

    def __init__(self, job_id: int | str, epoch: int | str):
        super().__init__(
            discord.ui.Button(
                label=f"{self.label} e{epoch}", emoji=self.emoji, style=self.style,
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
    action, label, emoji, style = "download", "Download", "⬇️", discord.ButtonStyle.primary
    run = staticmethod(download_epoch)


class SaveEpochButton(_EpochButton, template=rf"{PREFIX}:save:(?P<job>[^:]+):(?P<epoch>[^:]+)"):
    action, label, emoji, style = "save", "Save", "💾", discord.ButtonStyle.success
    run = staticmethod(save_epoch)


PERSISTENT_ITEMS = (CancelJobButton, DownloadEpochButton, SaveEpochButton)


def epoch_buttons(job_id: int, epoch: int) -> list[discord.ui.Item]:
    """Download and Save for a public message (they survive restarts)."""
    return [DownloadEpochButton(job_id, epoch), SaveEpochButton(job_id, epoch)]


# Plain buttons (inside views that end) -------------------------------------------------------------


class ActionButton(discord.ui.Button):
    """A button inside an ending view that runs one of the actions above."""

    def __init__(self, label: str, emoji: str, style: discord.ButtonStyle, run: Callable[[discord.Interaction], Awaitable[None]], row: int | None = None):  # fmt: skip
        super().__init__(label=label, emoji=emoji, style=style, row=row)
        self._run = run

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self._run(interaction))


def epoch_action_buttons(job_id: int, epoch: int) -> list[discord.ui.Button]:
    return [
        ActionButton(f"Download e{epoch}", "⬇️", discord.ButtonStyle.primary, lambda i: download_epoch(i, job_id, epoch)),
        ActionButton(f"Save e{epoch}", "💾", discord.ButtonStyle.success, lambda i: save_epoch(i, job_id, epoch)),
        ActionButton(f"Train further from e{epoch}", "➕", discord.ButtonStyle.secondary,
                     lambda i: train_further(i, job_id, epoch)),
    ]  # fmt: skip


def cancel_action_button(job_id: int) -> discord.ui.Button:
    return ActionButton(f"Cancel #{job_id}", "✖️", discord.ButtonStyle.danger, lambda i: ask_cancel(i, job_id))
