"""Job updates into Discord: one progress message per training job, edited in place at most once
per ``interval`` seconds; a preview grid per saved epoch; the owner mentioned at the end;
generated images posted when a /generate job is done. After the end is posted, ``on_end`` (the
owner's direct message, :mod:`bot.direct`) is told, whatever became of the post.

It is a subscriber of the queue's :class:`~bot.queue.bus.EventBus`. Messages go to the channel
the job was started from (a partial messageable: no fetch, no cache needed), and the progress
message's id is stored on the job, so after a restart the bot edits the same message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import discord

from .errors import DatabaseBusy
from .i18n import Messages, messages
from .queue.status import queue_status
from .queue.trust import trusted_job_file
from .ui.embeds import job_embed
from .ui.persistent import CancelJobButton, epoch_buttons

if TYPE_CHECKING:
    from db.jobs import JobRow

    from .queue.bus import JobUpdate
    from .services import Services

log = logging.getLogger(__name__)
PROGRESS_KINDS = frozenset({"queued", "running", "started", "step", "epoch_saved", "requeued", "cancelling"})
DEFAULT_UPLOAD_LIMIT = 10 * 2**20
MAX_FILES = 10
FINAL_TRIES = 3
KEEP_EDIT_TIMES = 100  # jobs whose edit times are kept (tests and diagnostics read them)


class ProgressNotifier:
    def __init__(
        self,
        client: discord.Client,
        services: Services,
        interval: float,
        clock=time.monotonic,
        on_end: Callable[[JobRow], Awaitable[None]] | None = None,
    ):
        self.client = client
        self.services = services
        self.interval = interval
        self.clock = clock
        self.on_end = on_end  # told of each end after its post; must not raise
        self._last_edit: dict[int, float] = {}
        self._pending: dict[int, asyncio.Task] = {}  # waiting for their turn
        self._inflight: set[asyncio.Task] = set()  # editing now
        self._locks: dict[int, asyncio.Lock] = {}
        self.closed = False
        self.edits: dict[int, list[float]] = {}  # job id -> clock of each edit (tests read it)

    async def on_update(self, update: JobUpdate) -> None:
        job = update.job
        if job.channel_id is None or self.closed:
            return
        if job.kind == "train":
            if update.kind in PROGRESS_KINDS or update.kind == "finished":
                self._request_edit(job.id)
            if update.kind == "preview_ready":
                await self._post_preview(job, int(update.event["epoch"]), Path(update.event["path"]))
            if update.kind == "finished" and await self._first_to_announce(job):
                await self._ended(job, self._announce_end)
        elif update.kind == "finished" and await self._first_to_announce(job):
            await self._ended(job, self._post_images)

    async def _ended(self, job: JobRow, post: Callable[[JobRow], Awaitable[None]]) -> None:
        """Post the end in the job's channel first; then tell ``on_end`` even if the post failed."""
        try:
            await post(job)
        finally:
            if self.on_end is not None:
                await self.on_end(job)

    async def _first_to_announce(self, job: JobRow) -> bool:
        """Each end is posted once, across restarts: whoever marks it in the database posts it."""
        try:
            return await self.services.queue.claim_announcement(job.id)
        except DatabaseBusy:  # not marked: the dispatcher publishes it again once the database is free
            self.services.bus.forget_finished(job.id)
            return False

    async def close(self, timeout: float = 5.0) -> None:
        """Stop: show every pending job's latest state now, all at once, within ``timeout`` seconds
        (a final state must not be lost, and a stopping process cannot wait long)."""
        self.closed = True
        pending = list(self._pending.items())
        self._pending.clear()
        for _, task in pending:
            task.cancel()
        await asyncio.gather(*(t for _, t in pending), return_exceptions=True)
        work = [asyncio.ensure_future(self._edit(job_id)) for job_id, _ in pending] + list(self._inflight)
        if work:
            _, late = await asyncio.wait(work, timeout=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*work, return_exceptions=True)

    # The progress message --------------------------------------------------------------------------

    def _request_edit(self, job_id: int) -> None:
        """Edit now if the last edit is ``interval`` old, else once when it is (latest state then)."""
        if job_id not in self._pending:
            self._pending[job_id] = asyncio.create_task(self._edit_when_due(job_id))

    async def _edit_when_due(self, job_id: int) -> None:
        try:
            while (wait := self._last_edit.get(job_id, -1e18) + self.interval - self.clock()) > 0:
                await asyncio.sleep(wait)
            self._last_edit[job_id] = self.clock()  # before any await: a new request waits from now
            self._pending.pop(job_id, None)
            self._inflight.add(asyncio.current_task())  # type: ignore[arg-type]
            await self._edit(job_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not update the progress message of job #%s", job_id)
        finally:
            self._inflight.discard(asyncio.current_task())  # type: ignore[arg-type]
            if self._pending.get(job_id) is asyncio.current_task():
                self._pending.pop(job_id, None)
            if job_id in self._last_edit:  # the interval counts from the end of the edit
                self._last_edit[job_id] = self.clock()

    async def _edit(self, job_id: int) -> None:
        async with self._locks.setdefault(job_id, asyncio.Lock()):
            job = await self.services.queue.get_job(job_id)
            if job is None or job.channel_id is None:
                return
            status = next(
                (s for s in await queue_status(self.services.queue, job.owner_id) if s.job.id == job_id), None
            )
            t = self._language(job)
            embed = job_embed(job, status, t)
            view = discord.ui.View(timeout=None)
            if not job.finished:
                view.add_item(CancelJobButton(job.id, t))
            self._note_edit(job_id)
            if not job.finished:
                await self._show(job, embed, view)
                return
            try:
                await self._show(job, embed, view, tries=FINAL_TRIES)  # nothing edits it later
            finally:
                self._forget(job_id)

    def _note_edit(self, job_id: int) -> None:
        self.edits.setdefault(job_id, []).append(self.clock())
        while len(self.edits) > KEEP_EDIT_TIMES:  # oldest jobs first (dicts keep insertion order)
            del self.edits[next(iter(self.edits))]

    async def _show(self, job: JobRow, embed: discord.Embed, view: discord.ui.View, tries: int = 1) -> None:
        """Edit the job's message (retrying a transient failure ``tries`` times), or post it."""
        channel = self.client.get_partial_messageable(job.channel_id)  # type: ignore[arg-type]
        for attempt in range(tries if job.message_id is not None else 0):
            try:
                await channel.get_partial_message(job.message_id).edit(content=None, embed=embed, view=view)  # type: ignore[arg-type]
                return
            except discord.NotFound:  # deleted by someone: post a new one
                break
            except (discord.DiscordServerError, aiohttp.ClientError, asyncio.TimeoutError):
                if attempt == tries - 1:
                    raise
                await asyncio.sleep(2**attempt)
        message = await channel.send(embed=embed, view=view, allowed_mentions=discord.AllowedMentions.none())
        await self.services.queue.set_progress_message(job.id, message.id)

    def _language(self, job: JobRow) -> Messages:
        """The messages of the guild the job's channel is in (its preferred locale), else English."""
        channel = self.client.get_channel(job.channel_id) if job.channel_id else None
        guild = getattr(channel, "guild", None)
        return messages(getattr(guild, "preferred_locale", None))

    def _forget(self, job_id: int) -> None:
        self._last_edit.pop(job_id, None)
        self._locks.pop(job_id, None)

    # Previews, the end, generated images -------------------------------------------------------------

    async def _post_preview(self, job: JobRow, epoch: int, path: Path) -> None:
        path = trusted_job_file(job.folder, path, ".png")  # checked again as it is sent
        if path is None:
            return
        channel = self.client.get_partial_messageable(job.channel_id)  # type: ignore[arg-type]
        t = self._language(job)
        embed = discord.Embed(
            title=t("Job #{job} · {title} · epoch {epoch}/{epochs}", job=job.id, title=job.title, epoch=epoch,
                    epochs=job.spec.get("epochs", "?")),
            color=discord.Color.blurple(),
        )  # fmt: skip
        embed.set_image(url=f"attachment://{path.name}")
        saved = {e.epoch for e in await self.services.queue.epochs(job.id)}
        view = discord.ui.View(timeout=None)
        if epoch in saved:
            for item in epoch_buttons(job.id, epoch, t):
                view.add_item(item)
        if os.path.getsize(path) > DEFAULT_UPLOAD_LIMIT:
            embed.description = t("The preview is too large to post here; see it in /epochs.")
            await channel.send(embed=embed, view=view, allowed_mentions=discord.AllowedMentions.none())
            return
        await channel.send(
            embed=embed, file=discord.File(path, filename=path.name), view=view,
            allowed_mentions=discord.AllowedMentions.none(),
        )  # fmt: skip

    async def _announce_end(self, job: JobRow) -> None:
        job = await self.services.queue.get_job(job.id) or job
        channel = self.client.get_partial_messageable(job.channel_id)  # type: ignore[arg-type]
        t = self._language(job)
        refund, values = _refund_note(job, t), {"job": job.id, "title": job.title}
        if job.state == "done":
            text = "✅ " + t(
                "job #{job} ({title}) is done: pick an epoch with `/epochs job:{job}`.", **values
            )
        elif job.state == "cancelled":
            text = "✖️ " + t("job #{job} ({title}) was cancelled.", **values) + refund
        else:  # the error itself may name paths of the server: the owner sees it in /queue
            text = "💥 " + t("job #{job} ({title}) failed (why: /queue).", **values) + refund
        await channel.send(f"<@{job.owner_id}> {text}", allowed_mentions=_only(job.owner_id))

    async def _post_images(self, job: JobRow) -> None:
        job = await self.services.queue.get_job(job.id) or job
        channel = self.client.get_partial_messageable(job.channel_id)  # type: ignore[arg-type]
        t = self._language(job)
        if job.state != "done":
            why = t(" (why: /queue)") if job.state == "failed" else ""
            await channel.send(
                f"<@{job.owner_id}> 🎨 #{job.id} {t(job.state)}{why}.{_refund_note(job, t)}",
                allowed_mentions=_only(job.owner_id),
            )
            return
        batches = image_batches(job, await self.services.queue.files(job.id))
        seed = job.spec.get("options", {}).get("seed")
        title = discord.utils.escape_mentions(job.title[:150])
        text = f"<@{job.owner_id}> 🎨 " + t(
            "#{job} · {title} · seed {seed}", job=job.id, title=title, seed=seed
        )
        if short := shortfall(job, t):
            text += f"\n⚠️ {short}"
        for part, batch in enumerate(batches or [[]]):  # the text alone when no image was made
            content = text if part == 0 else t("🎨 #{job} (more)", job=job.id)
            attached = {"files": [discord.File(p, filename=p.name) for p in batch]} if batch else {}
            await channel.send(content, **attached, allowed_mentions=_only(job.owner_id))


def shortfall(job: JobRow, t: Messages) -> str:
    """For a generation that ended with fewer images than charged: how many are missing and what came
    back ('' when all were made). ``job.step`` counts the images delivered, ``total_steps`` those asked."""
    missing = job.total_steps - job.step
    if job.kind == "train" or missing <= 0:
        return ""
    why = t(" (why: /queue)") if job.error else ""
    return t("{missing} of {total} images could not be made{why}: {refund}.", missing=missing,
             total=job.total_steps, why=why, refund=_refund_words(job, t))  # fmt: skip


def _refund_words(job: JobRow, t: Messages) -> str:
    expired = t("{expired} stamina expired at a daily reset", expired=job.refund_expired)
    if job.refunded:
        refunded = t("{refunded} stamina refunded", refunded=job.refunded)
        return refunded + (f" ({expired})" if job.refund_expired else "")
    return t("nothing refunded ({expired})", expired=expired) if job.refund_expired else t("nothing refunded")


def _refund_note(job: JobRow, t: Messages) -> str:
    """' N stamina refunded.' after an end, or why nothing came back; '' when nothing was due."""
    if not job.refunded and not job.refund_expired:
        return ""
    words = _refund_words(job, t)
    return f" {words[0].upper()}{words[1:]}" + t(".")


def _only(user_id: int) -> discord.AllowedMentions:
    """Mention the owner and nobody else, whatever a prompt or title holds."""
    return discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(user_id)])


def image_batches(job: JobRow, files: list[tuple[int, str, bool]]) -> list[list[Path]]:
    """A generation's images (``files``: index, path, is the grid), the grid first, those that are
    in the job's folder, in messages of at most MAX_FILES files and DEFAULT_UPLOAD_LIMIT bytes."""
    paths = [Path(p) for _, p, grid in files if grid] + [Path(p) for _, p, grid in files if not grid]
    return _batches([r for p in paths if (r := trusted_job_file(job.folder, p, ".png"))])


def _batches(paths: list[Path]) -> list[list[Path]]:
    """Messages of at most MAX_FILES files and DEFAULT_UPLOAD_LIMIT bytes each (every image is posted)."""
    out: list[list[Path]] = [[]]
    size = 0
    for path in paths:
        length = os.path.getsize(path)
        if out[-1] and (len(out[-1]) >= MAX_FILES or size + length > DEFAULT_UPLOAD_LIMIT):
            out.append([])
            size = 0
        out[-1].append(path)
        size += length
    return [b for b in out if b]
