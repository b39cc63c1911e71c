"""A long step's progress on a deferred answer ("⏳ Tagging: 12/40"), and its last word when it
stopped on an error. Used by uploads and re-tags; in the language of the member who started it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import discord

from ..errors import MEMBER_ERRORS, MemberError
from ..i18n import N_, Messages, messages
from .common import clip

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 2.0
STAGES = {"checking files": N_("Checking and cropping"), "tagging": N_("Tagging")}


class ProgressLine:
    """``progress(stage, done, total)`` for a service: edits the deferred answer at most once per
    PROGRESS_EVERY_S (and at the end of each stage)."""

    def __init__(self, interaction: discord.Interaction):
        self.interaction = interaction
        self.t = messages(interaction.locale)
        self.last = 0.0
        self.task: asyncio.Task | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if time.monotonic() - self.last >= PROGRESS_EVERY_S or done == total:
            label = self.t(STAGES[stage]) if stage in STAGES else stage.title()
            self.show(f"{label}: {done}/{total}")

    def show(self, text: str) -> None:
        if self.task is not None and not self.task.done():
            return
        self.last = time.monotonic()
        self.task = asyncio.create_task(self._edit(text))

    async def _edit(self, text: str) -> None:
        with contextlib.suppress(discord.HTTPException):
            await self.interaction.edit_original_response(content=f"⏳ {text}")

    async def finish(self) -> None:
        if self.task is not None:
            await self.task


def stopped_line(exc: Exception, what: str, nothing: str, t: Messages | None = None) -> str:
    """The last word of a step that failed, in ``t``'s language. ``what`` ("Upload") and ``nothing``
    (what it left as it was, for an error on the bot's side; a service error says so itself) are
    message ids, marked with ``N_``."""
    t = t or messages(None)
    if isinstance(exc, MEMBER_ERRORS):  # messages for the member
        error = exc.translated(t) if isinstance(exc, MemberError) else t(str(exc))
        return clip("❌ " + t("{what} stopped: {error}", what=t(what), error=error)) or ""
    log.error("%s failed", what.lower(), exc_info=exc)
    return "❌ " + t(
        "{what} stopped by an error on the bot's side: {nothing}. The operator can see it in the log; "
        "try again later.",
        what=t(what), nothing=t(nothing),
    )  # fmt: skip
