"""What /queue and ``python -m bot queue`` show: each job with its position, progress and ETA."""

from __future__ import annotations

from dataclasses import dataclass

from db import jobs as repo

from .eta import Shape, Slot, eta_seconds, plan
from .service import QueueService


@dataclass(frozen=True)
class JobStatus:
    job: repo.JobRow
    position: int | None  # 1-based among waiting jobs of its kind; None when not waiting
    starts_in_s: float | None  # None when running, finished, or the queue is paused
    ends_in_s: float | None
    paused: bool

    @property
    def progress(self) -> str:
        job = self.job
        unit = "steps" if job.kind == "train" else "images"
        text = f"{job.step}/{job.total_steps} {unit}"
        if job.kind == "train" and job.epoch:
            text += f", epoch {job.epoch}/{job.spec.get('epochs', '?')}"
        if job.loss is not None and job.state in ("running", "cancelling"):
            text += f", loss {job.loss:.4f}"
        return text


async def queue_status(
    queue: QueueService, owner_id: int | None = None, include_finished: bool = False, limit: int | None = 50
) -> list[JobStatus]:
    """Active jobs (and, with ``include_finished``, the ``limit`` most recent ended ones, or all of
    them when None) of one member or of everyone."""
    paused = await queue.paused()
    slots: dict[int, Slot] = {}
    for kind in ("train", "generate"):
        slots.update(await _plan_kind(queue, kind))
    rows = await repo.list_jobs(queue.conn, owner_id=owner_id, states=repo.ACTIVE, limit=10_000)
    if include_finished:  # every active job, then the most recent ended ones
        rows += await repo.list_jobs(
            queue.conn, owner_id=owner_id, states=repo.FINISHED, limit=-1 if limit is None else limit
        )
    result = []
    for job in sorted(rows, key=_order):
        slot = slots.get(job.id)
        waiting = job.state == "queued"
        result.append(
            JobStatus(
                job,
                slot.position if slot and waiting else None,
                slot.starts_in_s if slot and waiting and not paused else None,
                slot.ends_in_s if slot and not job.finished and not (paused and waiting) else None,
                paused,
            )
        )
    return result


def _order(job: repo.JobRow) -> tuple:
    rank = {"running": 0, "cancelling": 0, "queued": 1}.get(job.state, 2)
    return (rank, -job.priority if rank == 1 else 0, job.id if rank < 2 else -job.id)


async def _plan_kind(queue: QueueService, kind: str) -> dict[int, Slot]:
    running = await repo.list_jobs(queue.conn, states=("running", "cancelling"), kind=kind, limit=1000)
    waiting = await repo.queued_in_order(queue.conn, kind)
    run_left = [(job, await eta_seconds(queue, Shape.of(job), done=job.step, job=job)) for job in running]
    wait_len = [(job, await eta_seconds(queue, Shape.of(job), done=_kept(job))) for job in waiting]
    return plan(run_left, wait_len, len(queue.settings.devices) + queue.cluster_gpus)


def _kept(job: repo.JobRow) -> int:
    """Steps a waiting job has behind it: a training job requeued to resume keeps what it trained."""
    return job.step if job.kind == "train" else 0
