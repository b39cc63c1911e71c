"""Turning a job's process events into the database's picture of the job, and into job files.

:func:`record_event` stores one trainer event (events table, progress columns, saved epochs,
previews, generated images) in one transaction. :func:`write_training_job` and
:func:`generation_job` build the trainer's job from what the member asked for (the job's
``spec``) and where the operator's registry says the base model is.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import aiosqlite

from db import jobs as repo
from db.database import transaction

from ..registry import ModelRegistry


def job_paths(job: repo.JobRow) -> tuple[Path, Path]:
    """(job file, log file) of a job's current attempt."""
    folder = Path(job.folder)
    return folder / "job.json", folder / f"trainer-{job.attempts}.log"


def _model(registry: ModelRegistry, job: repo.JobRow, device: str) -> dict[str, Any]:
    entry = registry.ensure_available(job.base_model)  # raises RegistryError when the key is gone
    return {
        "base_model": entry.source,
        "model_family": job.family,
        "base_model_config": entry.config,
        "device": "cpu" if device == "cpu" else "cuda",
    }


def write_training_job(registry: ModelRegistry, job: repo.JobRow, device: str) -> Path:
    """Write ``job.json`` for ``python -m trainer train``; a restarted job resumes from its saved state."""
    folder = Path(job.folder)
    data = {
        **job.spec["options"],
        **_model(registry, job, device),
        "dataset_dir": str(folder / "dataset"),
        "output_dir": str(folder / "output"),
        "output_name": job.spec.get("output_name", "lora"),
        "resume": job.attempts > 1,
    }
    if not Path(data["dataset_dir"]).is_dir():
        raise FileNotFoundError(f"the job's dataset snapshot {data['dataset_dir']} is missing")
    path, _ = job_paths(job)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return path


def generation_job(registry: ModelRegistry, job: repo.JobRow, device: str) -> dict[str, Any]:
    """The request for ``python -m trainer serve``."""
    return {
        **job.spec["options"],
        **_model(registry, job, device),
        "output_dir": str(Path(job.folder) / "output"),
        "output_name": "image",
    }


async def record_event(
    conn: aiosqlite.Connection,
    job: repo.JobRow,
    event: dict[str, Any],
    now: float | None = None,
    started: dict[str, Any] | None = None,
) -> repo.JobRow:
    """Store one event of ``job``'s process; returns the job as it is afterwards.

    ``started`` is this attempt's ``started`` event (the speed is measured from it).
    """
    now = time.time() if now is None else now
    kind = event["event"]
    progress: dict[str, Any] = {"last_event_at": now}
    async with transaction(conn):
        await repo.add_event(conn, job.id, event)
        if kind == "step":
            progress.update(step=int(event["step"]), epoch=int(event["epoch"]), loss=event.get("loss"))
            rate = _rate(started, int(event["step"]), float(event.get("time", now))) if started else None
            if rate:
                progress["steps_per_s"] = rate
        elif kind == "epoch_saved":
            await repo.save_epoch(
                conn, job.id, int(event["epoch"]), int(event.get("step", 0)), str(event["path"])
            )
            progress.update(epoch=int(event["epoch"]), step=int(event.get("step", job.step)))
        elif kind == "preview_ready":
            await repo.set_preview(conn, job.id, int(event["epoch"]), str(event["path"]))
        elif kind == "image_ready":
            grid = bool(event.get("grid"))
            await repo.add_file(conn, job.id, int(event["index"]), str(event["path"]), grid)
            if not grid:
                progress["step"] = sum(1 for _, _, g in await repo.files(conn, job.id) if not g)
        await repo.update_progress(conn, job.id, **progress)
        updated = await repo.get_job(conn, job.id)
    assert updated is not None
    return updated


def _rate(started: dict[str, Any], step: int, at: float) -> float | None:
    """Steps per second of this attempt so far, from its ``started`` event."""
    done = step - int(started.get("resumed_from_step", 0))
    elapsed = at - float(started["time"])
    return done / elapsed if done > 0 and elapsed > 0 else None
