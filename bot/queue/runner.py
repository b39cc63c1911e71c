"""The one interface the dispatcher runs jobs through, for training and generation, here or remote.

A :class:`Runner` takes jobs of one ``kind`` for one ``device`` (a local GPU such as ``0``, or a
GPU of a cluster node such as ``ray:1a2b3c4d/0``). The dispatcher claims a job for it, builds the
job's :class:`Launch`, and hands it over; the runner reports the job's events as they come and
how its process ended (:class:`Outcome`). A new kind of worker is one class with these methods.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

EventHandler = Callable[[dict[str, Any]], Awaitable[None]]
#: Called once the job's process is up: its pid on this host (None elsewhere), and where it runs.
OnStart = Callable[[int | None, str], Awaitable[None]]
TERMINAL = ("done", "cancelled", "failed")


@dataclass(frozen=True)
class Outcome:
    """How a job's process ended: its exit code, its last terminal event (if any), whether it hung,
    and ``lost``: the host it ran on went away (a node of the cluster died or was removed)."""

    exit_code: int | None
    terminal: dict[str, Any] | None
    hung: bool = False
    lost: str | None = None


@dataclass(frozen=True)
class Launch:
    """One attempt of a job, as a runner gets it.

    ``request`` is the trainer's job (training) or ``trainer serve``'s request (generation), with
    paths in the job's ``folder`` of the bot's data folder: a runner on another host moves the
    files it needs and maps the paths (no shared filesystem is assumed).
    """

    job_id: int
    kind: str
    attempt: int
    folder: Path
    request: dict[str, Any]
    base_model: str
    family: str

    @property
    def job_file(self) -> Path:
        return self.folder / "job.json"

    @property
    def log_file(self) -> Path:
        return self.folder / f"trainer-{self.attempt}.log"


class Runner(Protocol):
    kind: str  #: "train" or "generate"
    device: str  #: the device it claims jobs for (stored as the job's ``device``)
    #: runners on one local device take turns unless generation runs alongside training
    local: bool

    def declines(self, base_model: str, family: str) -> str | None:
        """Why this runner can never take such a job (the model is not on its host, its GPU is too
        small), or None. The dispatcher leaves declined jobs to the others, and fails a job that
        every runner declines, with the reason."""
        ...

    async def ready(self) -> bool:
        """Whether it can take a job now (a cluster GPU another workload holds is not ready)."""
        ...

    async def run(self, launch: Launch, on_event: EventHandler, on_start: OnStart) -> Outcome: ...

    async def stop(self, job_id: int) -> None:
        """Cancel the job (SIGTERM semantics: it stops between steps, its saved epochs stay)."""
        ...

    async def close(self) -> None:
        """Free what it holds between jobs (a generation process's loaded model)."""
        ...
