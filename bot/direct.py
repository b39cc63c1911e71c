"""Direct messages about a member's jobs (``/notify on``).

When a job finishes or fails, its owner, if they asked for it, gets a DM in the language they
asked from, with what the channel shows: for a training job the last saved epoch's preview grid
with its Download and Save buttons (the persistent ones: they work after a restart and in a DM),
for a /generate the images. The channel post is made first and stays. A DM Discord refuses (the
member closed their DMs: 403, code 50007) is logged and changes nothing else; nothing here raises
into the progress notifier, the job or the queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any

import aiohttp
import discord

from .i18n import Messages, messages
from .progress import DEFAULT_UPLOAD_LIMIT, image_batches
from .queue.trust import trusted_job_file
from .ui.persistent import epoch_buttons

if TYPE_CHECKING:
    from db.jobs import JobRow

    from .services import Services

log = logging.getLogger(__name__)
TOLD = ("done", "failed")  # a cancel is the member's own doing (or an operator's, said in the channel)
Message = dict[str, Any]  # the keyword arguments of one ``send``


async def send_direct(client: discord.Client, user_id: int, **message: Any) -> discord.Message | None:
    """Send ``user_id`` a direct message; None when Discord refuses (logged): the member takes no
    DMs from the server's members (50007) or shares no server with the bot."""
    try:
        channel = await client.create_dm(discord.Object(user_id))
        return await channel.send(allowed_mentions=discord.AllowedMentions.none(), **message)
    except discord.Forbidden as exc:
        log.warning("member %s takes no direct messages from the bot (%s: %s)", user_id, exc.code, exc.text)
        return None


class DirectNotifier:
    """Tells a job's owner of its end in a DM, when they asked for it (see ``ProgressNotifier.on_end``)."""

    def __init__(self, client: discord.Client, services: Services):
        self.client = client
        self.services = services

    async def job_ended(self, job: JobRow) -> None:
        """DM the end of ``job`` to its owner if they turned DMs on; never raises."""
        try:
            setting = await self.services.notify.setting(job.owner_id)
            if setting is None:
                return
            job = await self.services.queue.get_job(job.id) or job
            if job.state not in TOLD:
                return
            t = messages(setting.locale)
            parts = await (self._training(job, t) if job.kind == "train" else self._generation(job, t))
            for part in parts:
                if await send_direct(self.client, job.owner_id, **part) is None:
                    return
        except (discord.HTTPException, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("could not send member %s the end of job #%s: %s", job.owner_id, job.id, exc)
        except Exception:
            log.exception("could not send member %s the end of job #%s", job.owner_id, job.id)

    async def _training(self, job: JobRow, t: Messages) -> list[Message]:
        values = {"job": job.id, "title": job.title, "channel": f"<#{job.channel_id}>"}
        if job.state == "done":
            text = t(
                "✅ Job #{job} ({title}) is done: pick an epoch with `/epochs job:{job}` in {channel}.",
                **values,
            )
        else:  # the error may name the server's paths: the owner reads it in /queue
            text = t("💥 Job #{job} ({title}) failed: see why with `/queue` in {channel}.", **values)
        message: Message = {"content": text + refund_lines(job, t)}
        saved = await self.services.queue.epochs(job.id)
        if not saved:
            return [message]
        last = saved[-1]
        embed = discord.Embed(
            title=t("Job #{job} · {title} · epoch {epoch}/{epochs}", job=job.id, title=job.title,
                    epoch=last.epoch, epochs=job.spec.get("epochs", "?")),
            color=discord.Color.blurple(),
        )  # fmt: skip
        preview = trusted_job_file(job.folder, last.preview_path, ".png") if last.preview_path else None
        if preview is not None and os.path.getsize(preview) <= DEFAULT_UPLOAD_LIMIT:
            embed.set_image(url=f"attachment://{preview.name}")
            message["file"] = discord.File(preview, filename=preview.name)
        elif preview is not None:
            embed.description = t("The preview is too large to send here; see it in /epochs.")
        return [{**message, "embed": embed, "view": epoch_view(job.id, last.epoch, t)}]

    async def _generation(self, job: JobRow, t: Messages) -> list[Message]:
        values = {"job": job.id, "title": job.title[:150], "channel": f"<#{job.channel_id}>"}
        if job.state != "done":
            text = t("💥 Your images #{job} ({title}) could not be made: see why with `/queue` in {channel}.",
                     **values)  # fmt: skip
            return [{"content": text + refund_lines(job, t)}]
        seed = job.spec.get("options", {}).get("seed")
        text = t("🎨 Your images #{job} are ready · {title} · seed {seed}", seed=seed, **values)
        if (missing := job.total_steps - job.step) > 0:
            text += "\n⚠️ " + t("{missing} of {total} images could not be made.", missing=missing,
                                 total=job.total_steps) + refund_lines(job, t)  # fmt: skip
        batches = image_batches(job, await self.services.queue.files(job.id))
        parts: list[Message] = []
        for index, batch in enumerate(batches or [[]]):  # the text alone when no image was made
            part: Message = {"content": text if index == 0 else t("🎨 #{job} (more)", job=job.id)}
            if batch:
                part["files"] = [discord.File(p, filename=p.name) for p in batch]
            parts.append(part)
        return parts


def refund_lines(job: JobRow, t: Messages) -> str:
    """What came back of the job's stamina, on a line of its own ('' when nothing was due)."""
    if job.refunded and job.refund_expired:
        line = t("{refunded} stamina refunded ({expired} expired at a daily reset).",
                 refunded=job.refunded, expired=job.refund_expired)  # fmt: skip
    elif job.refunded:
        line = t("{refunded} stamina refunded.", refunded=job.refunded)
    elif job.refund_expired:
        line = t("Nothing refunded: {expired} stamina expired at a daily reset.", expired=job.refund_expired)
    else:
        return ""
    return "\n" + line


def epoch_view(job_id: int, epoch: int, t: Messages) -> discord.ui.View:
    """Download and Save for one epoch, labelled in ``t``'s language (the same persistent buttons
    as the channel's preview grid)."""
    view = discord.ui.View(timeout=None)
    for item in epoch_buttons(job_id, epoch, t):
        view.add_item(item)
    return view
