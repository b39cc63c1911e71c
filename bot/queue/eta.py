"""Queue positions and ETAs from measured training speed.

Speed is looked up in this order: the running job's own measured rate; the average of
finished jobs with the same family, resolution and batch size; a finished job of the same
family at another size, scaled by pixels x batch; the operator's default for the family
(``steps_per_s_sd15``/``steps_per_s_sdxl``, at 512 px and batch 1), scaled the same way.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from db.jobs import JobRow

REFERENCE_SIDE = 512


@dataclass(frozen=True)
class Slot:
    """Where a job stands: 1-based position among waiting jobs (0 when running) and seconds from now."""

    position: int
    starts_in_s: float
    ends_in_s: float


def work(resolution: int, batch_size: int) -> float:
    """Relative GPU work of one step: pixels x batch, 1.0 at 512 px and batch 1."""
    return (resolution / REFERENCE_SIDE) ** 2 * batch_size


def estimate_rate(
    family: str,
    resolution: int,
    batch_size: int,
    measured: list[tuple[int, int, float]],
    default_rate: float,
) -> float:
    """Steps per second for a job shape; ``measured`` holds (resolution, batch, steps/s) of the family."""
    for res, batch, rate in measured:
        if res == resolution and batch == batch_size:
            return rate
    if measured:
        # closest measured shape by work, scaled to this one
        res, batch, rate = min(measured, key=lambda m: abs(work(m[0], m[1]) - work(resolution, batch_size)))
        return rate * work(res, batch) / work(resolution, batch_size)
    return default_rate / work(resolution, batch_size)


def plan(
    running: list[tuple[JobRow, float]],
    queued: list[tuple[JobRow, float]],
    workers: int,
) -> dict[int, Slot]:
    """Simulate the queue: each waiting job goes to the worker that frees up first.

    ``running`` holds (job, seconds left); ``queued`` holds (job, seconds it will take), in run order.
    """
    free_at = [0.0] * max(0, workers - len(running)) + [max(0.0, left) for _, left in running]
    heapq.heapify(free_at)
    slots = {job.id: Slot(0, 0.0, max(0.0, left)) for job, left in running}
    for position, (job, seconds) in enumerate(queued, start=1):
        start = heapq.heappop(free_at) if free_at else 0.0
        slots[job.id] = Slot(position, start, start + seconds)
        heapq.heappush(free_at, start + seconds)
    return slots


def format_duration(seconds: float) -> str:
    """'45s', '12m', '2h 05m': short enough for a phone."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes}m"
    return f"{minutes // 60}h {minutes % 60:02d}m"
