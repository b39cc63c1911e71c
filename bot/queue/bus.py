"""Job updates published to subscribers (the Discord layer posts progress and previews from them).

Each subscriber gets its own queue and task, so a slow subscriber (Discord rate limits) never
holds up the dispatcher reading a trainer's output, and one subscriber's error never reaches
another. Updates reach each subscriber in the order they were published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from db.jobs import JobRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobUpdate:
    """``kind``: a trainer event kind (started, step, epoch_saved, preview_ready, image_ready, ...),
    or the queue's own: queued, requeued, cancelling, finished (the job reached a final state)."""

    job: JobRow
    kind: str
    event: dict[str, Any] = field(default_factory=dict)


Subscriber = Callable[[JobUpdate], Awaitable[None]]


class EventBus:
    def __init__(self) -> None:
        self._queues: dict[int, asyncio.Queue[JobUpdate | None]] = {}
        self._tasks: dict[int, asyncio.Task] = {}
        self._next = 0
        self._finished: set[int] = set()  # a job's "finished" goes out once, whoever noticed it

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` with every update from now on; returns the unsubscribe function."""
        key = self._next
        self._next += 1
        queue: asyncio.Queue[JobUpdate | None] = asyncio.Queue()
        self._queues[key] = queue
        self._tasks[key] = asyncio.create_task(self._deliver(queue, callback), name=f"bus-subscriber-{key}")

        def unsubscribe() -> None:
            if key in self._queues:
                self._queues.pop(key).put_nowait(None)
                self._tasks.pop(key, None)

        return unsubscribe

    def publish(self, update: JobUpdate) -> None:
        if update.kind == "finished":
            if update.job.id in self._finished:
                return
            self._finished.add(update.job.id)
        for queue in self._queues.values():
            queue.put_nowait(update)

    def forget_finished(self, job_id: int) -> None:
        """The job's end may be published again (its subscriber could not post it yet)."""
        self._finished.discard(job_id)

    async def drain(self) -> None:
        """Wait until every subscriber has handled what was published so far."""
        for queue in list(self._queues.values()):
            await queue.join()

    async def close(self) -> None:
        for queue in self._queues.values():
            queue.put_nowait(None)
        tasks = list(self._tasks.values())
        self._queues.clear()
        self._tasks.clear()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @staticmethod
    async def _deliver(queue: asyncio.Queue[JobUpdate | None], callback: Subscriber) -> None:
        while True:
            update = await queue.get()
            try:
                if update is None:
                    return
                await callback(update)
            except Exception:
                log.exception("a job-update subscriber failed on %s of job #%s", update.kind, update.job.id)
            finally:
                queue.task_done()
