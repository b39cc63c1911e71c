"""The dispatcher: hands queued jobs to workers, records their events, ends them, recovers.

It runs in the bot process (asyncio). Per configured device there is one training worker and
one generation lane; with ``generate_alongside_training`` off, the two take turns on the
device. Jobs are claimed from SQLite (priority first, then FIFO) with a conditional update, so
the queue survives restarts and the operator CLI (another process) can cancel and pause.

Recovery: on start, jobs left ``running`` by a dead process are put back in the queue and
resume from their last saved state (``resume``), or fail with the refund after
``max_attempts`` starts. A trainer that crashes, or is silent for ``hang_timeout_s``, is
handled the same way. Charges happen once at submission; refunds once at the end (the ledger
allows no second one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite

from db import jobs as repo
from db.database import BUSY_TIMEOUT_MS, transaction

from ..registry import ModelRegistry
from ..settings import Settings
from .bus import EventBus, JobUpdate
from .record import generation_job, job_paths, record_event, write_training_job
from .recovery import DispatcherLock, kill_orphan
from .settle import settle
from .stamina import StaminaService
from .workers import GenerationLane, Outcome, StartError, TrainingWorker

log = logging.getLogger(__name__)
POLL_S = 1.0


class Dispatcher:
    def __init__(
        self,
        conn: aiosqlite.Connection,
        settings: Settings,
        registry: ModelRegistry,
        bus: EventBus,
        workers: list[TrainingWorker],
        lanes: list[GenerationLane],
        clock: Callable[[], float] = time.time,
        stamina: StaminaService | None = None,
    ):
        self.conn = conn
        self.settings = settings
        self.registry = registry
        self.bus = bus
        self.workers = workers
        self.lanes = lanes
        self.clock = clock
        self.stamina = stamina
        self._wakers: list[asyncio.Event] = []
        self._tasks: list[asyncio.Task] = []
        self._running: dict[int, Any] = {}  # job id -> the worker or lane running it
        self._stopping: set[asyncio.Task] = set()
        self._claimed: set[int] = set()  # jobs this dispatcher took and has not finished handling
        self._ended_mark = clock()
        self._device_locks = {w.device: asyncio.Lock() for w in workers}
        self._lock = DispatcherLock(settings.data_dir / "dispatcher.lock")

    # Life cycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Take the data folder's dispatcher lock, recover, and start the worker loops."""
        self._lock.acquire()
        await self.recover()
        for worker in self.workers:
            self._tasks.append(
                asyncio.create_task(self._training_loop(worker), name=f"train-{worker.device}")
            )
        for lane in self.lanes:
            self._tasks.append(
                asyncio.create_task(self._generation_loop(lane), name=f"generate-{lane.device}")
            )
        self._tasks.append(asyncio.create_task(self._watch_cancels(), name="cancel-watch"))

    async def stop(self) -> None:
        """Stop the loops; running jobs stay ``running`` and resume on the next start."""
        interrupted = list(self._claimed)
        try:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._tasks.clear()
            for lane in self.lanes:
                await lane.close()
            if interrupted:  # a planned restart is not a crash: it does not use up one of the job's starts
                async with transaction(self.conn):
                    for job_id in interrupted:
                        await repo.uncount_attempt(self.conn, job_id)
        finally:
            self._lock.release()

    def wake(self) -> None:
        """Something changed (a job queued or cancelled, the queue resumed): look now, not at the next poll."""
        for event in self._wakers:
            event.set()

    def _waker(self) -> asyncio.Event:
        event = asyncio.Event()
        self._wakers.append(event)
        return event

    @staticmethod
    async def _idle(wake: asyncio.Event) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), POLL_S)
        wake.clear()

    # Recovery --------------------------------------------------------------------------------------

    async def recover(self) -> None:
        """Jobs a dead process left running: kill any leftover process, then resume or end them."""
        for job in await repo.list_jobs(self.conn, states=("running", "cancelling"), limit=10_000):
            await asyncio.to_thread(kill_orphan, job.pid, job.folder)
            if job.state == "cancelling":
                await self._end(job, "cancelled", job.step)
            else:
                await self._retry_or_fail(job, "the bot stopped while it ran")

    async def _retry_or_fail(self, job: repo.JobRow, why: str) -> None:
        if job.attempts >= self.settings.max_attempts:
            await self._end(job, "failed", job.step, f"{why}, {job.attempts} times: the job was stopped")
            return
        log.warning("job #%d: %s; it resumes (start %d of %d)", job.id, why, job.attempts + 1,
                    self.settings.max_attempts)  # fmt: skip
        await self._requeue(job, {"reason": why}, error=f"restarted: {why}",
                            **({"step": 0} if job.kind == "generate" else {}))  # fmt: skip

    async def _requeue(self, job: repo.JobRow, event: dict[str, Any], **values: Any) -> None:
        """Put a running job back in the queue; one cancelled meanwhile ends as cancelled instead."""
        async with transaction(self.conn):
            back = await repo.transition(self.conn, job.id, ("running",), "queued", pid=None, **values)
        if back is not None:
            self.bus.publish(JobUpdate(back, "requeued", event))
            self.wake()
            return
        current = await repo.get_job(self.conn, job.id)
        if current is not None and current.state == "cancelling":
            await self._end(current, "cancelled", current.step)

    async def _end(self, job: repo.JobRow, state: str, done: int, error: str | None = None) -> None:
        ended = await settle(self.conn, job.id, state, done, error, now=self.clock(), stamina=self.stamina)
        if ended is not None:
            self.bus.publish(JobUpdate(ended, "finished", {"state": state, "refunded": ended.refunded}))

    # Claiming --------------------------------------------------------------------------------------

    async def _claim(self, kind: str, device: str) -> repo.JobRow | None:
        async with transaction(self.conn):
            if await repo.get_flag(self.conn, "paused") == "1":
                return None
            job = await repo.claim_next(self.conn, kind, device, self.clock())
        if job is not None:
            self._claimed.add(job.id)
        return job

    def _device_lock(self, device: str) -> contextlib.AbstractAsyncContextManager:
        if self.settings.generate_alongside_training or device not in self._device_locks:
            return contextlib.nullcontext()
        return self._device_locks[device]

    async def _guarded(self, running, job: repo.JobRow) -> None:
        """Run one job; an unexpected error ends in a retry (or failure with the refund), never a dead loop."""
        try:
            await running
            self._claimed.discard(job.id)
        except Exception as exc:
            self._claimed.discard(job.id)
            log.exception("job #%d", job.id)
            self._running.pop(job.id, None)
            current = await repo.get_job(self.conn, job.id)
            if current is not None and not current.finished:
                await self._retry_or_fail(current, f"an internal error ({type(exc).__name__}: {exc})"[:300])

    async def _free_lane(self, device: str) -> None:
        """Without generation alongside training, the lane's loaded model leaves the device first."""
        if not self.settings.generate_alongside_training:
            for lane in self.lanes:
                if lane.device == device:
                    await lane.close()

    async def _infrastructure_fault(self, job: repo.JobRow, what: str) -> None:
        """The trainer cannot even start (bad command, missing interpreter): every job would fail the
        same way, so put this one back without using up a start and pause the queue for an operator."""
        log.error("%s: the queue is paused until an operator fixes it ('python -m bot queue resume')", what)
        async with transaction(self.conn):
            await repo.set_flag(self.conn, "paused", "1", None)
        await self._requeue(
            job, {"reason": what, "paused": True}, error=what, attempts=max(0, job.attempts - 1)
        )

    # Training --------------------------------------------------------------------------------------

    async def _training_loop(self, worker: TrainingWorker) -> None:
        wake = self._waker()
        while True:
            try:
                async with self._device_lock(worker.device):
                    job = await self._claim("train", worker.device)
                    if job is not None:
                        await self._free_lane(worker.device)
                        await self._guarded(self._run_training(worker, job), job)
                        continue
            except Exception:  # the database, most likely: log it and keep the device serving
                log.exception("training loop on %s", worker.device)
            await self._idle(wake)

    async def _run_training(self, worker: TrainingWorker, job: repo.JobRow) -> None:
        try:
            job_file = await asyncio.to_thread(write_training_job, self.registry, job, worker.device)
        except Exception as exc:  # base model gone from the registry, snapshot missing, disk full
            await self._end(job, "failed", job.step, f"the job cannot start: {exc}")
            return
        _, log_file = job_paths(job)
        self._running[job.id] = worker
        self.bus.publish(JobUpdate(job, "running", {"device": worker.device, "attempt": job.attempts}))
        try:
            outcome = await worker.run(job_file, log_file, self._on_event(job), self._on_start(job))
        except StartError as exc:
            self._running.pop(job.id, None)
            await self._infrastructure_fault(job, f"the trainer could not start ({exc})")
            return
        finally:
            self._running.pop(job.id, None)
        await self._finish(job, outcome)

    def _on_start(self, job: repo.JobRow):
        async def started(pid: int) -> None:
            async with transaction(self.conn):
                await repo.update_progress(self.conn, job.id, pid=pid, last_event_at=self.clock())

        return started

    def _on_event(self, job: repo.JobRow):
        attempt: dict[str, Any] = {}

        async def handle(event: dict[str, Any]) -> None:
            if event["event"] == "started":
                attempt["started"] = event
            updated = await record_event(self.conn, job, event, self.clock(), attempt.get("started"))
            self.bus.publish(JobUpdate(updated, event["event"], event))

        return handle

    async def _finish(self, job: repo.JobRow, outcome: Outcome) -> None:
        """End the job by how its process ended: done, cancelled, failed, or crashed (retry)."""
        current = await repo.get_job(self.conn, job.id)
        if current is None or current.finished:
            return
        terminal = outcome.terminal or {}
        kind = terminal.get("event")
        if kind == "done":
            if current.kind == "train":
                await self._record_rate(current)
            await self._end(current, "done", current.total_steps)
        elif kind == "failed":
            await self._end(current, "failed", current.step, str(terminal.get("message", "failed"))[:500])
        elif current.state == "cancelling":
            done = int(terminal.get("step", current.step)) if current.kind == "train" else current.step
            await self._end(current, "cancelled", done)
        elif outcome.hung:
            await self._retry_or_fail(
                current, f"its process sent nothing for {self.settings.hang_timeout_s:g} s"
            )
        else:
            code = outcome.exit_code
            await self._retry_or_fail(current, f"its process stopped unexpectedly (exit code {code})")

    async def _record_rate(self, job: repo.JobRow) -> None:
        if job.steps_per_s:
            async with transaction(self.conn):
                await repo.record_step_rate(
                    self.conn, job.family, job.resolution, job.batch_size, job.steps_per_s
                )

    # Generation ------------------------------------------------------------------------------------

    async def _generation_loop(self, lane: GenerationLane) -> None:
        wake = self._waker()
        while True:
            try:
                async with self._device_lock(lane.device):
                    job = await self._claim("generate", lane.device)
                    if job is not None:
                        await self._guarded(self._run_generation(lane, job), job)
                        continue
            except Exception:
                log.exception("generation loop on %s", lane.device)
            await self._idle(wake)

    async def _run_generation(self, lane: GenerationLane, job: repo.JobRow) -> None:
        try:
            request = await asyncio.to_thread(generation_job, self.registry, job, lane.device)
            Path(request["output_dir"]).mkdir(parents=True, exist_ok=True)
        except Exception as exc:
            await self._end(job, "failed", job.step, f"the job cannot start: {exc}")
            return
        self._running[job.id] = lane
        self.bus.publish(JobUpdate(job, "running", {"device": lane.device, "attempt": job.attempts}))
        try:
            outcome = await lane.run(str(job.id), request, self._on_event(job))
        except StartError as exc:
            self._running.pop(job.id, None)
            await self._infrastructure_fault(job, f"the generation process could not start ({exc})")
            return
        finally:
            self._running.pop(job.id, None)
        await self._finish(job, outcome)

    # Cancelling ------------------------------------------------------------------------------------

    async def _watch_cancels(self) -> None:
        """Stop the processes of jobs marked ``cancelling`` (by a member, an operator or the CLI)."""
        asked: set[int] = set()
        wake = self._waker()
        while True:
            try:
                await self._deliver_cancels(asked)
                await self._publish_ended_elsewhere()
            except Exception:
                log.exception("watching for cancelled jobs")
            await self._idle(wake)

    async def _publish_ended_elsewhere(self) -> None:
        """Jobs another process ended (the operator CLI cancelled a waiting job) reach the subscribers too."""
        since, self._ended_mark = self._ended_mark, self.clock()
        # finished_at is stamped before the commit, which may wait for SQLite's write lock: look back that far
        for job in await repo.finished_since(self.conn, since - BUSY_TIMEOUT_MS / 1000 - 2 * POLL_S):
            self.bus.publish(JobUpdate(job, "finished", {"state": job.state, "refunded": job.refunded}))

    async def _deliver_cancels(self, asked: set[int]) -> None:
        for job in await repo.list_jobs(self.conn, states=("cancelling",), limit=1000):
            runner = self._running.get(job.id)
            if runner is None or job.id in asked:
                continue
            asked.add(job.id)
            self.bus.publish(JobUpdate(job, "cancelling"))
            stop = runner.stop(str(job.id)) if isinstance(runner, GenerationLane) else runner.stop()
            task = asyncio.create_task(stop, name=f"stop-{job.id}")
            self._stopping.add(task)  # keep a reference until it is done
            task.add_done_callback(self._stopping.discard)
        asked &= set(self._running)
