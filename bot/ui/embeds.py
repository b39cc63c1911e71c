"""How jobs, balances and tables look in Discord: short lines that read well on a phone."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from ..i18n import N_, Messages, messages
from ..queue.eta import format_duration
from ..queue.status import JobStatus

if TYPE_CHECKING:
    from db.jobs import JobRow

STATE_ICONS = {
    "queued": "⏳", "running": "🏃", "cancelling": "🛑", "done": "✅", "failed": "💥", "cancelled": "✖️",
}  # fmt: skip
KINDS = {"train": N_("training"), "generate": N_("render")}
COLORS = {
    "queued": discord.Color.light_grey(), "running": discord.Color.blue(), "cancelling": discord.Color.orange(),
    "done": discord.Color.green(), "failed": discord.Color.red(), "cancelled": discord.Color.dark_grey(),
}  # fmt: skip


def progress_bar(done: int, total: int, width: int = 12) -> str:
    share = 0.0 if total <= 0 else min(1.0, done / total)
    filled = round(share * width)
    return f"{'▰' * filled}{'▱' * (width - filled)} {share:.0%}"


def timing(status: JobStatus | None, t: Messages | None = None) -> str:
    """'#2 in line, starts in ~4m' / 'done in ~12m' / 'queue paused', or ''."""
    t = t or messages(None)
    if status is None or status.job.finished:
        return ""
    if status.paused and status.job.state == "queued":
        return t("queue paused by an operator")
    parts = []
    if status.position is not None:
        parts.append(t("#{position} in line", position=status.position))
    if status.starts_in_s is not None and status.job.state == "queued":
        parts.append(t("starts in ~{wait}", wait=format_duration(status.starts_in_s)))
    if status.ends_in_s is not None:
        parts.append(t("done in ~{wait}", wait=format_duration(status.ends_in_s)))
    if status.job.state in ("running", "cancelling") and status.job.device:
        parts.append(t("on {host}", host=host_of(status.job.device)))
    return t(", ").join(parts)


def host_of(device: str) -> str:
    """Where a job runs, for members: 'GPU 0', 'cpu', or a cluster node's 'host (ip) GPU 1'."""
    if device.startswith("ray:"):  # "ray:<node>/<gpu> <host> (<ip>)"
        slot, _, label = device.partition(" ")
        gpu = slot.rpartition("/")[2]
        return f"{label or slot} GPU {gpu}" if gpu.isdigit() else (label or slot)
    return device if device == "cpu" else f"GPU {device}"


def progress_text(status: JobStatus, t: Messages) -> str:
    """'120/400 steps, epoch 3/10, loss 0.0812' in ``t``'s language."""
    job = status.job
    if job.kind == "train":
        text = t("{step}/{total} steps", step=job.step, total=job.total_steps)
        if job.epoch:
            text += t(", epoch {epoch}/{epochs}", epoch=job.epoch, epochs=job.spec.get("epochs", "?"))
    else:
        text = t("{step}/{total} images", step=job.step, total=job.total_steps)
    if job.loss is not None and job.state in ("running", "cancelling"):
        text += t(", loss {loss}", loss=f"{job.loss:.4f}")
    return text


def job_line(status: JobStatus, *, owner: bool = False, t: Messages | None = None) -> str:
    """One job as one or two lines of a /queue embed."""
    t = t or messages(None)
    job = status.job
    who = f" <@{job.owner_id}>" if owner else ""
    kind, state = t(KINDS.get(job.kind, job.kind)), t(job.state)
    head = f"{STATE_ICONS.get(job.state, '•')} **#{job.id}** {kind} · {job.title[:40]}{who} · {state}"
    detail = progress_text(status, t)
    when = timing(status, t)
    if job.state == "failed" and job.error:
        detail += f" · {job.error[:120]}"
    return f"{head}\n  {detail}{f' · {when}' if when else ''}"


def job_embed(job: JobRow, status: JobStatus | None, t: Messages | None = None) -> discord.Embed:
    """The public progress message of a training job (edited in place), in the guild's language; a
    failure's details (they may name the server's paths) stay in the owner's /queue."""
    t = t or messages(None)
    embed = discord.Embed(
        title=f"{STATE_ICONS.get(job.state, '')} " + t("Job #{job} · {title}", job=job.id, title=job.title),
        color=COLORS.get(job.state, discord.Color.blurple()),
    )
    embed.title = embed.title[:256]
    epochs = job.spec.get("epochs", "?")
    embed.description = progress_bar(job.step, job.total_steps)
    embed.add_field(name=t("Step"), value=f"{job.step}/{job.total_steps}")
    embed.add_field(name=t("Epoch"), value=f"{job.epoch}/{epochs}")
    if job.loss is not None:
        embed.add_field(name=t("Loss"), value=f"{job.loss:.4f}")
    when = timing(status, t)
    if when:
        embed.add_field(name=t("When"), value=when, inline=False)
    if job.state == "done":
        embed.add_field(
            name=t("Next"), value=t("Pick an epoch: `/epochs job:{job}`", job=job.id), inline=False
        )
    elif job.state == "failed":
        embed.add_field(name=t("Failed"), value=t("the owner sees why in /queue"), inline=False)
    if job.finished and job.refunded:
        embed.add_field(name=t("Refunded"), value=t("{amount} stamina", amount=job.refunded))
    embed.set_footer(
        text=t("{model} · {resolution} px · batch {batch} · cost {cost}", model=job.base_model,
               resolution=job.resolution, batch=job.batch_size, cost=job.cost)
    )  # fmt: skip
    return embed


def table(rows: list[tuple[str, ...]], headers: tuple[str, ...], limit: int = 4096) -> str:
    """A monospace table in a code block (Discord has no tables), cut by whole rows to ``limit``."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [headers, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    out, size = [], 8 + 24  # the fences, and room for "… and N more"
    for line in lines:
        if size + len(line) + 1 > limit:
            break
        out.append(line)
        size += len(line) + 1
    more = len(lines) - len(out)
    return "```\n" + "\n".join(out) + "\n```" + (f"… and {more} more" if more else "")
