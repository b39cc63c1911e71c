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
from functools import partial
from pathlib import Path
from typing import Any

import aiosqlite

from db import jobs as repo
from db.database import transaction, until_written, wait_for_writes, write_patience

from ..registry import ModelRegistry
from ..settings import Settings
from .bus import EventBus, JobUpdate
from .outcome import bounded_step, failure_message, why
from .record import generation_job, job_paths, write_training_job
from .recorder import EventRecorder
from .recovery import DispatcherLock, kill_orphan
from .settle import settle
from .stamina import StaminaService
from .workers import GenerationLane, Outcome, StartError, TrainingWorker

log = logging.getLogger(__name__)
POLL_S = 1.0
STOP_WRITE_S = 10.0


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
        self._recorders: dict[int, EventRecorder] = {}
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
                await self._uncount(interrupted)
        finally:
            self._lock.release()

    async def _uncount(self, job_ids: list[int]) -> None:
        async def uncount() -> None:
            async with transaction(self.conn):
                for job_id in job_ids:
                    await repo.uncount_attempt(self.conn, job_id)

        try:  # bounded: a stopping bot does not wait for a database another process holds
            await asyncio.wait_for(until_written(uncount, "counting back interrupted starts"), STOP_WRITE_S)
        except (asyncio.TimeoutError, Exception):
            log.warning("could not count back the starts of jobs %s: they count as crashed", job_ids)

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
        with write_patience(None):  # start() runs in its caller's task: patience only for this block
            for job in await repo.list_jobs(self.conn, states=("running", "cancelling"), limit=10_000):
                await self._recover_one(job, "the bot stopped while it ran")

    async def _recover_one(self, job: repo.JobRow, why: str) -> None:
        await asyncio.to_thread(kill_orphan, job.pid, job.folder)
        if job.state == "cancelling":
            await self._end(job, "cancelled", job.step)
        else:
            await self._retry_or_fail(job, why)

    async def _reap_stranded(self) -> None:
        """No job stays ``running`` without a live process: one this dispatcher is not handling (its
        handler died on an error) and that has been silent for the hang timeout is recovered."""
        now = self.clock()
        for job in await repo.list_jobs(self.conn, states=("running", "cancelling"), limit=10_000):
            if job.id in self._claimed:
                continue
            last = max(job.started_at or 0.0, job.last_event_at or 0.0)
            if now - last > self.settings.hang_timeout_s:
                log.warning("job #%d was %s with no process handling it: recovering it", job.id, job.state)
                await self._recover_one(job, "its process was lost")

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

        async def requeue() -> repo.JobRow | None:
            async with transaction(self.conn):
                return await repo.transition(self.conn, job.id, ("running",), "queued", pid=None, **values)

        back = await until_written(requeue, f"job #{job.id}: putting it back in the queue")
        if back is not None:
            self.bus.publish(JobUpdate(back, "requeued", event))
            self.wake()
            return
        current = await repo.get_job(self.conn, job.id)
        if current is not None and current.state == "cancelling":
            await self._end(current, "cancelled", current.step)

    async def _end(self, job: repo.JobRow, state: str, done: int, error: str | None = None) -> None:
        """Settle the job (state and refund) however long the database takes to take it."""
        ended = await until_written(
            lambda: settle(self.conn, job.id, state, done, error, now=self.clock(), stamina=self.stamina),
            f"job #{job.id}: ending it as {state}",
        )
        if ended is not None:
            self.bus.publish(JobUpdate(ended, "finished", {"state": state, "refunded": ended.refunded}))

    # Claiming --------------------------------------------------------------------------------------

    async def _claim(self, kind: str, device: str) -> repo.JobRow | None:
        # reads first (they never wait for a writer): the write lock only when there is work
        if await repo.get_flag(self.conn, "paused") == "1" or not await repo.has_queued(self.conn, kind):
            return None
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
            if current is not None and not current.finished:  # if this fails too, _reap_stranded does it
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

        async def pause() -> None:
            async with transaction(self.conn):
                await repo.set_flag(self.conn, "paused", "1", None)

        await until_written(pause, "pausing the queue")
        await self._requeue(
            job, {"reason": what, "paused": True}, error=what, attempts=max(0, job.attempts - 1)
        )

    # Training --------------------------------------------------------------------------------------

    async def _training_loop(self, worker: TrainingWorker) -> None:
        wait_for_writes()
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
            await self._end(job, "failed", job.step, f"the job cannot start: {why(exc)}")
            return
        _, log_file = job_paths(job)
        recorder = self._recording(job, worker)
        try:
            outcome = await worker.run(job_file, log_file, self._on_event(recorder), self._on_start(recorder))
        except StartError as exc:
            await self._stop_recording(job, recorder)
            await self._infrastructure_fault(job, f"the trainer could not start ({exc})")
            return
        await self._stop_recording(job, recorder)
        await self._finish(job, outcome)

    def _recording(self, job: repo.JobRow, runner: Any) -> EventRecorder:
        """The job runs on ``runner`` from now on; its events are recorded in the background."""
        recorder = EventRecorder(self.conn, job, self.bus, self.clock)
        self._recorders[job.id] = recorder
        self._running[job.id] = runner
        self.bus.publish(JobUpdate(job, "running", {"device": runner.device, "attempt": job.attempts}))
        return recorder

    async def _stop_recording(self, job: repo.JobRow, recorder: EventRecorder) -> None:
        """The process has ended: every event it sent is stored before the job is ended."""
        self._running.pop(job.id, None)
        try:
            await recorder.close()
        finally:
            self._recorders.pop(job.id, None)

    @staticmethod
    def _on_start(recorder: EventRecorder):
        async def started(pid: int) -> None:
            recorder.started(pid)

        return started

    @staticmethod
    def _on_event(recorder: EventRecorder):
        async def handle(event: dict[str, Any]) -> None:
            recorder.add(event)  # never waits for the database: the trainer's output keeps flowing

        return handle

    async def _finish(self, job: repo.JobRow, outcome: Outcome) -> None:
        """End the job by how its process ended: done, cancelled, failed, or crashed (retry)."""
        current = await repo.get_job(self.conn, job.id)
        if current is None or current.finished:
            return
        terminal = outcome.terminal or {}
        kind = terminal.get("event")
        if kind == "done":
            await self._done(current)
        elif kind == "failed":
            await self._end(current, "failed", current.step, failure_message(str(terminal.get("message", "failed"))))
        elif current.state == "cancelling":
            done = bounded_step(terminal.get("step"), current) if current.kind == "train" else current.step
            await self._end(current, "cancelled", done)
        elif outcome.hung:
            await self._retry_or_fail(
                current, f"its process sent nothing for {self.settings.hang_timeout_s:g} s"
            )
        else:
            code = outcome.exit_code
            await self._retry_or_fail(current, f"its process stopped unexpectedly (exit code {code})")

    async def _done(self, job: repo.JobRow) -> None:
        """A training job is done whole; a generation is paid for the images it delivered only."""
        if job.kind == "train":
            await until_written(lambda: self._record_rate(job), f"job #{job.id}: its speed")
            await self._end(job, "done", job.total_steps)
            return
        delivered = sum(1 for _, _, grid in await repo.files(self.conn, job.id) if not grid)
        delivered = min(delivered, job.total_steps)
        missing = job.total_steps - delivered
        note = f"{missing} of {job.total_steps} images could not be made" if missing else None
        await self._end(job, "done", delivered, note)

    async def _record_rate(self, job: repo.JobRow) -> None:
        entry = self.registry.entries.get(job.base_model)
        if entry is not None and entry.tiny:  # a tiny model's speed would make real ETAs say "0s"
            return
        if job.steps_per_s:
            async with transaction(self.conn):
                await repo.record_step_rate(
                    self.conn, job.family, job.resolution, job.batch_size, job.steps_per_s
                )

    # Generation ------------------------------------------------------------------------------------

    async def _generation_loop(self, lane: GenerationLane) -> None:
        wait_for_writes()
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
            await self._end(job, "failed", job.step, f"the job cannot start: {why(exc)}")
            return
        recorder = self._recording(job, lane)
        try:
            outcome = await lane.run(str(job.id), request, self._on_event(recorder))
        except StartError as exc:
            await self._stop_recording(job, recorder)
            await self._infrastructure_fault(job, f"the generation process could not start ({exc})")
            return
        await self._stop_recording(job, recorder)
        await self._finish(job, outcome)

    # Cancelling ------------------------------------------------------------------------------------

    async def _watch_cancels(self) -> None:
        """Stop the processes of jobs marked ``cancelling`` (by a member, an operator or the CLI)."""
        wait_for_writes()
        asked: set[int] = set()
        wake = self._waker()
        while True:
            for step in (partial(self._deliver_cancels, asked), self._publish_unannounced, self._reap_stranded):
                try:  # each on its own: a cancel is delivered whatever the database does to the others
                    await step()
                except Exception:
                    log.exception("watching the queue")
            await self._idle(wake)

    async def _publish_unannounced(self) -> None:
        """Ended jobs whose end was never posted (another process ended them, or the bot stopped before
        posting) reach the subscribers; the persistent mark makes each end posted once, across restarts."""
        for job in await repo.unannounced(self.conn):
            self.bus.publish(JobUpdate(job, "finished", {"state": job.state, "refunded": job.refunded}))
            if job.channel_id is None:  # nowhere to post it (a job from the CLI): published is announced
                await repo.claim_announcement(self.conn, job.id)

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

