"""The one ETA: how long a job takes, from its shape and a speed; and where each job stands in line.

Every time a member or the operator sees (the estimate before confirming, ``/queue``, the progress
message, ``python -m bot estimate|queue|job show``) comes from :func:`seconds_left`, through
:func:`eta_seconds`, which looks the speed up.

A training job takes its family's start-up (the trainer process starting, the base model loading,
captions and latents cached: ``startup_s`` of the family table) plus its steps at the speed of its
shape. The speed is looked up in this order: the running job's own measured rate (its start-up is
then behind it); the average of finished jobs with the same family, resolution and batch size; a
finished job of the same family at another size, scaled by pixels x batch; the operator's default
for the family (``LORABOT_STEPS_PER_S``, else the family table's ``steps_per_s``, at 512 px and
batch 1), scaled the same way. A generation runs in the device's long-lived renderer, which keeps
its model loaded: its images' sampling steps only, a sampling step costing a third of a training step.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import TYPE_CHECKING

from db import jobs as repo
from db.jobs import JobRow
from trainer.contract.families import FAMILIES

if TYPE_CHECKING:
    from .service import QueueService

REFERENCE_SIDE = 512
SAMPLING_SPEEDUP = 3.0  #: training steps per second / sampling steps per second, same family and size
DEFAULT_STARTUP_S = 30.0  #: the start-up of a family this bot does not know


@dataclass(frozen=True)
class Slot:
    """Where a job stands: 1-based position among waiting jobs (0 when running) and seconds from now."""

    position: int
    starts_in_s: float
    ends_in_s: float


@dataclass(frozen=True)
class Shape:
    """What a job has to do: ``steps`` training steps, or images of ``sampling_steps`` steps each."""

    kind: str  # "train" | "generate"
    family: str
    resolution: int
    batch_size: int
    steps: int
    sampling_steps: int = 0

    @classmethod
    def of(cls, job: JobRow) -> Shape:
        if job.kind == "generate":
            options = job.spec.get("options", {})
            sampling = int(options.get("steps") or _default_sampling_steps(job.family))
            return cls("generate", job.family, job.resolution, 1, job.total_steps, sampling)
        return cls("train", job.family, job.resolution, job.batch_size, job.total_steps)


def _default_sampling_steps(family: str) -> int:
    return FAMILIES[family].default_steps if family in FAMILIES else 25


def startup_seconds(family: str) -> float:
    """Seconds from a trainer's start to its first step (loading and caching), by family."""
    return FAMILIES[family].startup_s if family in FAMILIES else DEFAULT_STARTUP_S


def seconds_left(
    shape: Shape,
    rate: float,
    *,
    done: int = 0,
    running_for: float | None = None,
    measured: float | None = None,
) -> float:
    """The one ETA: seconds until a job of ``shape`` is done, ``done`` steps in.

    ``rate`` is training steps per second for its shape (:func:`estimate_rate`); ``running_for``
    the seconds since its trainer started (None: not started); ``measured`` its own steps per
    second once it reports them, which replaces ``rate`` and means the start-up is over.
    """
    left = max(0, shape.steps - done)
    if shape.kind == "generate":
        return left * shape.sampling_steps / (SAMPLING_SPEEDUP * rate)
    if measured:
        return left / measured
    startup = startup_seconds(shape.family)
    if running_for is not None:
        startup = max(0.0, startup - running_for)
    return startup + left / rate


async def eta_seconds(
    queue: QueueService, shape: Shape, *, done: int = 0, job: JobRow | None = None
) -> float:
    """Seconds until a job of ``shape`` is done, ``done`` steps in: :func:`seconds_left` at the speed
    this server measured for the shape, else the default. ``job``: the job itself, whose start and
    own measured speed count while it runs."""
    measured_rates = await repo.step_rates(queue.conn, shape.family)
    default = queue.settings.default_steps_per_s(shape.family)
    rate = estimate_rate(shape.family, shape.resolution, shape.batch_size, measured_rates, default)
    running = job is not None and job.state in ("running", "cancelling")
    running_for = max(0.0, queue.clock() - job.started_at) if running and job.started_at else None
    measured = job.steps_per_s if running and shape.kind == "train" else None
    return seconds_left(shape, rate, done=done, running_for=running_for, measured=measured)


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
