"""Turning a job's process events into the database's picture of the job, and into job files.

:func:`record_event` stores one trainer event (events table, progress columns, saved epochs,
previews, generated images) in one transaction, after checking it: the trainer is not trusted
(:class:`UntrustedEvent`; file paths must lie in the job's output folder, see :mod:`.trust`), and
a job keeps a bounded sample of its step events. :func:`training_job` and
:func:`generation_job` build the trainer's job from what the member asked for (the job's
``spec``) and where the operator's registry says the base model is.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiosqlite

from db import jobs as repo
from db.database import transaction
from trainer.contract import EventRefused, validate_event

from ..registry import ModelRegistry
from .trust import trusted_job_file


def _model(registry: ModelRegistry, job: repo.JobRow, device: str) -> dict[str, Any]:
    entry = registry.ensure_available(job.base_model)  # raises RegistryError when the key is gone
    return {
        "base_model": entry.source,
        "model_family": job.family,
        "base_model_config": entry.config,
        "device": "cpu" if device == "cpu" else "cuda",
    }


def training_job(registry: ModelRegistry, job: repo.JobRow, device: str) -> dict[str, Any]:
    """The job for ``python -m trainer train``; a restarted job resumes from its saved state."""
    folder = Path(job.folder)
    data = {
        **job.spec["options"],
        **_model(registry, job, device),
        "dataset_dir": str(folder / "dataset"),
        "output_dir": str(folder / "output"),
        "output_name": job.spec.get("output_name", "lora"),
        # a later start, or the first after a planned stop (which does not count as a start)
        "resume": job.attempts > 1 or job.step > 0,
        **{k: job.spec[k] for k in ("grid_labels",) if k in job.spec},  # the member's language
    }
    if not Path(data["dataset_dir"]).is_dir():
        raise FileNotFoundError(f"the job's dataset snapshot {data['dataset_dir']} is missing")
    return data


def generation_job(registry: ModelRegistry, job: repo.JobRow, device: str) -> dict[str, Any]:
    """The request for ``python -m trainer serve``."""
    return {
        **job.spec["options"],
        **_model(registry, job, device),
        "output_dir": str(Path(job.folder) / "output"),
        "output_name": "image",
    }


class UntrustedEvent(ValueError):
    """A trainer event the bot refuses: invalid, or naming a file outside the job's output folder
    (or not a regular file). Nothing of it was stored; the job goes on. ``str()`` says why."""


#: Step events stored per attempt: about one per 1/STEP_SAMPLES of the job (progress columns
#: still follow every step); and at most MAX_STORED_EVENTS events a job, whatever the trainer sends
#: (terminal events are always stored).
STEP_SAMPLES = 200
MAX_STORED_EVENTS = 2000
_FILE_SUFFIX = {"epoch_saved": ".safetensors", "preview_ready": ".png", "image_ready": ".png"}
_TERMINAL = frozenset({"done", "cancelled", "failed"})


def trusted_event(job: repo.JobRow, event: dict[str, Any]) -> dict[str, Any]:
    """``event`` validated by the contract, its file path resolved inside the job's output folder,
    and its ``files`` (done, cancelled) cut to those that are; :class:`UntrustedEvent` otherwise."""
    try:
        event = validate_event(event)
    except EventRefused as exc:
        raise UntrustedEvent(str(exc)) from None
    kind = event["event"]
    if kind in _FILE_SUFFIX:
        real = trusted_job_file(job.folder, event["path"], _FILE_SUFFIX[kind])
        if real is None:
            raise UntrustedEvent(
                f"{kind} names {event['path'][:300]!r}: not a {_FILE_SUFFIX[kind]} file in the job's output folder"
            )
        event["path"] = str(real)
    epochs = job.spec.get("epochs") if job.kind == "train" else None
    if kind in ("epoch_saved", "preview_ready") and isinstance(epochs, int) and event["epoch"] > epochs:
        raise UntrustedEvent(f"{kind} of epoch {event['epoch']}: the job has {epochs}")
    if event.get("files"):
        kept = [str(p) for p in (trusted_job_file(job.folder, f) for f in event["files"]) if p is not None]
        if len(kept) < len(event["files"]):
            event["files_refused"] = len(event["files"]) - len(kept)
        event["files"] = kept
    return event


async def _keep(
    conn: aiosqlite.Connection, job_id: int, event: dict[str, Any], prev_step: int, total: int
) -> bool:
    """Whether to store ``event``: every terminal one; the others up to MAX_STORED_EVENTS, step
    events only when they enter a new 1/STEP_SAMPLES of the job (or end it)."""
    kind = event["event"]
    if kind in _TERMINAL:
        return True
    if kind == "step":
        step, every = event["step"], max(1, total // STEP_SAMPLES)
        if step < total and step // every == prev_step // every:
            return False  # decided without a query: most step events
    stored, steps = await repo.count_events(conn, job_id)
    if stored >= MAX_STORED_EVENTS:
        return False
    # resumed attempts sample again; a trainer going back and forth is stopped here
    return kind != "step" or steps < 2 * STEP_SAMPLES + 50


async def record_event(
    conn: aiosqlite.Connection,
    job: repo.JobRow,
    event: dict[str, Any],
    now: float | None = None,
    started: dict[str, Any] | None = None,
) -> repo.JobRow:
    """Store one event of ``job``'s process; returns the job as it is afterwards.

    ``started`` is this attempt's ``started`` event (the speed is measured from it). Raises
    :class:`UntrustedEvent`, before writing anything, for an event the bot refuses (see
    :func:`trusted_event`); the caller logs it and goes on without publishing it.
    """
    now = time.time() if now is None else now
    if event.get("path") is not None or event.get("files"):  # resolving paths touches the disk
        event = await asyncio.to_thread(trusted_event, job, event)
    else:
        event = trusted_event(job, event)
    kind = event["event"]
    progress: dict[str, Any] = {"last_event_at": now}
    async with transaction(conn):
        current = await repo.get_job(conn, job.id)
        prev_step = current.step if current is not None else 0
        if await _keep(conn, job.id, event, prev_step, max(job.total_steps, 1)):
            await repo.add_event(conn, job.id, event)
        if kind == "step":
            progress.update(step=event["step"], epoch=event["epoch"], loss=event.get("loss"))
            rate = _rate(started, event["step"], event["time"]) if started else None
            if rate:
                progress["steps_per_s"] = rate
        elif kind == "epoch_saved":
            step = event["step"] if event.get("step") is not None else prev_step
            await repo.save_epoch(conn, job.id, event["epoch"], step, event["path"])
            progress.update(epoch=event["epoch"], step=step)
        elif kind == "preview_ready":
            await repo.set_preview(conn, job.id, event["epoch"], event["path"])
        elif kind == "image_ready":
            grid = bool(event.get("grid"))
            await repo.add_file(conn, job.id, event["index"], event["path"], grid)
            if not grid:
                progress["step"] = sum(1 for _, _, g in await repo.files(conn, job.id) if not g)
        await repo.update_progress(conn, job.id, **progress)
        updated = await repo.get_job(conn, job.id)
    assert updated is not None
    return updated


def _rate(started: dict[str, Any], step: int, at: float) -> float | None:
    """Steps per second of this attempt so far, from its ``started`` event."""
    done = step - int(started.get("resumed_from_step") or 0)
    elapsed = at - float(started["time"])
    return done / elapsed if done > 0 and elapsed > 0 else None
