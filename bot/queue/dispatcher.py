"""The dispatcher: hands queued jobs to runners, records their events, ends them, recovers.

It runs in the bot process (asyncio). Every :class:`~.runner.Runner` (a local training worker or
generation lane per configured device, a cluster GPU's) gets one loop: claim, run, record,
settle. Without ``generate_alongside_training`` the local runners of one device take turns. Jobs
are claimed from SQLite (priority first, then FIFO) with a conditional update, so the queue
survives restarts and the operator CLI (another process) can cancel and pause.

Recovery: on start, jobs left ``running`` by a dead process are put back in the queue and
resume from their last saved state (``resume``), or fail with the refund after
``max_attempts`` starts. A trainer that crashes, is silent for ``hang_timeout_s``, or whose
cluster node is lost is handled the same way (:mod:`.ending`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

from db import jobs as repo
from db.database import transaction, until_written, wait_for_writes, write_patience

from ..registry import ModelRegistry
from ..settings import Settings
from .bus import EventBus, JobUpdate
from .ending import JobEnder
from .outcome import why
from .record import generation_job, training_job
from .recorder import EventRecorder
from .recovery import DispatcherLock, kill_orphan
from .runner import Launch, Runner
from .stamina import StaminaService
from .workers import StartError

log = logging.getLogger(__name__)
POLL_S = 1.0
STOP_WRITE_S = 10.0
#: A queued job that every runner of its kind declines (no host has its model, no GPU is large
#: enough) fails with the reasons after this long (a node that restarts comes back meanwhile).
UNPLACEABLE_GRACE_S = 60.0


class RemoteJobs(Protocol):
    """The cluster side of recovery: jobs whose device names a cluster node."""

    def owns(self, device: str | None) -> bool: ...

    async def stop_orphan(self, job: repo.JobRow) -> bool:
        """Stop the job's remote process if it still runs; False when the cluster cannot say."""
        ...


class Dispatcher:
    def __init__(
        self,
        conn: aiosqlite.Connection,
        settings: Settings,
        registry: ModelRegistry,
        bus: EventBus,
        runners: list[Runner],
        clock: Callable[[], float] = time.time,
        stamina: StaminaService | None = None,
    ):
        self.conn = conn
        self.settings = settings
        self.registry = registry
        self.bus = bus
        self.runners = list(runners)
        self.clock = clock
        self.remote: RemoteJobs | None = None
        self.ends = JobEnder(conn, settings, registry, bus, clock, stamina, self.wake)
        self._wakers: list[asyncio.Event] = []
        self._tasks: list[asyncio.Task] = []
        self._loops: dict[int, asyncio.Task] = {}  # id(runner) -> its loop
        self._retired: set[int] = set()
        self._running: dict[int, Runner] = {}  # job id -> the runner running it
        self._stopping: set[asyncio.Task] = set()
        self._claimed: set[int] = set()  # jobs this dispatcher took and has not finished handling
        self._declined_since: dict[int, float] = {}
        self._device_locks: dict[str, asyncio.Lock] = {}
        self._lock = DispatcherLock(settings.data_dir / "dispatcher.lock")
        self._started = False

    # Life cycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Take the data folder's dispatcher lock, recover, and start the runner loops."""
        self._lock.acquire()
        await self.recover()
        self._started = True
        for runner in self.runners:
            self._start_loop(runner)
        self._tasks.append(asyncio.create_task(self._watch(), name="queue-watch"))

    def add_runner(self, runner: Runner) -> None:
        """A runner that came later (a cluster node joined): it serves from now on."""
        self.runners.append(runner)
        if self._started:
            self._start_loop(runner)
        self.wake()

    def retire_runner(self, runner: Runner) -> None:
        """The runner's host went away: its loop ends once its current job (if any) has ended."""
        self._retired.add(id(runner))
        self.runners = [r for r in self.runners if r is not runner]
        self.wake()

    def _start_loop(self, runner: Runner) -> None:
        task = asyncio.create_task(self._loop(runner), name=f"{runner.kind}-{runner.device}")
        self._loops[id(runner)] = task
        task.add_done_callback(lambda _: self._loops.pop(id(runner), None))

    async def stop(self) -> None:
        """Stop the loops; running jobs stay ``running`` and resume on the next start."""
        interrupted = list(self._claimed)
        try:
            tasks = [*self._tasks, *self._loops.values()]
            for task in tasks:
                task.cancel()
            if tasks:  # bounded: a task that swallows its cancel does not keep the bot from stopping
                _, stuck = await asyncio.wait(tasks, timeout=STOP_WRITE_S)
                if stuck:
                    log.warning("stopping the queue: %s did not stop", ", ".join(t.get_name() for t in stuck))
            self._tasks.clear()
            for runner in self.runners:
                with contextlib.suppress(Exception):
                    await runner.close()
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
        if self.remote is not None and self.remote.owns(job.device):
            if not await self.remote.stop_orphan(job):
                log.warning("job #%d ran on %s, which cannot be reached: it resumes once it is silent "
                            "for the hang timeout", job.id, job.device)  # fmt: skip
                return
        else:
            await asyncio.to_thread(kill_orphan, job.pid, job.folder)
        if job.state == "cancelling":
            await self.ends.end(job, "cancelled", job.step)
        else:
            await self.ends.retry_or_fail(job, why)

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

    # Claiming and running --------------------------------------------------------------------------

    async def _claim(self, runner: Runner) -> repo.JobRow | None:
        # reads first (they never wait for a writer): the write lock only when there is work
        if await repo.get_flag(self.conn, "paused") == "1" or not await repo.has_queued(
            self.conn, runner.kind
        ):
            return None
        if not await runner.ready():
            return None
        admits = None if runner.local else (lambda model, family: runner.declines(model, family) is None)
        async with transaction(self.conn):
            if await repo.get_flag(self.conn, "paused") == "1":
                return None
            job = await repo.claim_next(self.conn, runner.kind, runner.device, self.clock(), admits)
        if job is not None:
            self._claimed.add(job.id)
        return job

    def _device_lock(self, runner: Runner) -> contextlib.AbstractAsyncContextManager:
        if self.settings.generate_alongside_training or not runner.local:
            return contextlib.nullcontext()
        return self._device_locks.setdefault(runner.device, asyncio.Lock())

    async def _loop(self, runner: Runner) -> None:
        wait_for_writes()
        wake = self._waker()
        while id(runner) not in self._retired:
            try:
                async with self._device_lock(runner):
                    job = await self._claim(runner)
                    if job is not None:
                        await self._free_lanes(runner)
                        await self._guarded(self._run(runner, job), job)
                        continue
            except Exception:  # the database, most likely: log it and keep the device serving
                log.exception("%s loop on %s", runner.kind, runner.device)
            await self._idle(wake)

    async def _free_lanes(self, runner: Runner) -> None:
        """Without generation alongside training, a local lane's loaded model leaves the device first."""
        if runner.kind == "train" and runner.local and not self.settings.generate_alongside_training:
            for other in self.runners:
                if other.kind == "generate" and other.local and other.device == runner.device:
                    await other.close()

    async def _guarded(self, running: Awaitable[None], job: repo.JobRow) -> None:
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
                await self.ends.retry_or_fail(
                    current, f"an internal error ({type(exc).__name__}: {exc})"[:300]
                )

    def _launch(self, runner: Runner, job: repo.JobRow) -> Launch:
        if job.kind == "train":
            request = training_job(self.registry, job, runner.device)
        else:
            request = generation_job(self.registry, job, runner.device)
            Path(request["output_dir"]).mkdir(parents=True, exist_ok=True)
        return Launch(job.id, job.kind, job.attempts, Path(job.folder), request, job.base_model, job.family)

    async def _run(self, runner: Runner, job: repo.JobRow) -> None:
        try:
            launch = await asyncio.to_thread(self._launch, runner, job)
        except Exception as exc:  # base model gone from the registry, snapshot missing, disk full
            await self.ends.end(job, "failed", job.step, f"the job cannot start: {why(exc)}")
            return
        recorder = EventRecorder(self.conn, job, self.bus, self.clock)
        self._running[job.id] = runner
        self.bus.publish(JobUpdate(job, "running", {"device": runner.device, "attempt": job.attempts}))

        async def on_event(event: dict[str, Any]) -> None:
            recorder.add(event)  # never waits for the database: the trainer's output keeps flowing

        async def on_start(pid: int | None, where: str) -> None:
            recorder.started(pid, where)

        try:
            outcome = await runner.run(launch, on_event, on_start)
        except StartError as exc:
            await self._stop_recording(job, recorder)
            process = "trainer" if job.kind == "train" else "generation process"
            await self.ends.infrastructure_fault(job, f"the {process} could not start ({exc})")
            return
        await self._stop_recording(job, recorder)
        await self.ends.finish(job, outcome)

    async def _stop_recording(self, job: repo.JobRow, recorder: EventRecorder) -> None:
        """The process has ended: every event it sent is stored before the job is ended."""
        self._running.pop(job.id, None)
        await recorder.close()

    # Watching the queue ----------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Cancels, unannounced ends, stranded and unplaceable jobs: each on its own, so a cancel is
        delivered whatever the database does to the others."""
        wait_for_writes()
        asked: set[int] = set()
        wake = self._waker()
        while True:
            for step in (partial(self._deliver_cancels, asked), self._publish_unannounced, self._reap_stranded,
                         self._fail_unplaceable):  # fmt: skip
                try:
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
            task = asyncio.create_task(runner.stop(job.id), name=f"stop-{job.id}")
            self._stopping.add(task)  # keep a reference until it is done
            task.add_done_callback(self._stopping.discard)
        asked &= set(self._running)

    async def _fail_unplaceable(self) -> None:
        """A queued job that every runner of its kind declines for UNPLACEABLE_GRACE_S fails, refunded."""
        if not any(not r.local for r in self.runners):
            return  # local runners take every job
        now, seen = self.clock(), set()
        for job in await repo.list_jobs(self.conn, states=("queued",), limit=1000):
            runners = [r for r in self.runners if r.kind == job.kind]
            reasons = [r.declines(job.base_model, job.family) for r in runners]
            if not runners or not all(reasons):
                continue
            seen.add(job.id)
            since = self._declined_since.setdefault(job.id, now)
            if now - since >= UNPLACEABLE_GRACE_S:
                why = "; ".join(sorted({str(r) for r in reasons}))
                await self.ends.end(job, "failed", job.step, f"no host can run it: {why}"[:500])
        self._declined_since = {k: v for k, v in self._declined_since.items() if k in seen}
