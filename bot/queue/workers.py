"""The runners of this host: a trainer process per training job, a long-lived generation process.

:class:`LocalTrainerWorker` runs ``python -m trainer train`` on one device, one job at a time;
:class:`GenerationLane` keeps one ``python -m trainer serve`` process per device, so the base
model stays loaded between /generate requests. Both are :class:`~.runner.Runner` s; a cluster
node runs the same two classes inside its actors (``bot.cluster.node``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from .processes import LaneStartError, StartError, kill, parse, read_line, signal_group, spawn
from .runner import TERMINAL, EventHandler, Launch, OnStart, Outcome

log = logging.getLogger(__name__)

STOP_GRACE_S = 60.0  # after SIGTERM, how long a trainer may take to stop before it is killed
EXIT_GRACE_S = 60.0  # after its last event, how long a trainer may take to exit before it is killed

__all__ = ["EventHandler", "GenerationLane", "LocalTrainerWorker", "Outcome", "StartError", "write_job_file"]


def write_job_file(launch: Launch) -> Path:
    """``job.json`` of a training launch, written atomically (a restart rewrites it)."""
    path = launch.job_file
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(launch.request, indent=1), encoding="utf-8")
    tmp.replace(path)
    return path


class LocalTrainerWorker:
    """Runs ``python -m trainer train --job FILE`` on one device, one job at a time."""

    kind = "train"
    local = True

    def __init__(self, device: str, hang_timeout_s: float, command: Sequence[str] | None = None):
        self.device = device
        self.hang_timeout_s = hang_timeout_s
        self.command = list(command or [sys.executable, "-m", "trainer"])
        self._proc: asyncio.subprocess.Process | None = None
        self._stop_requested = False

    def declines(self, base_model: str, family: str) -> str | None:
        return None

    async def ready(self) -> bool:
        return True

    async def run(self, launch: Launch, on_event: EventHandler, on_start: OnStart) -> Outcome:
        job_file = await asyncio.to_thread(write_job_file, launch)

        async def started(pid: int) -> None:
            await on_start(pid, self.device)

        return await self.run_file(job_file, launch.log_file, on_event, started)

    async def run_file(
        self, job_file: Path, log_file: Path, on_event: EventHandler, on_pid: Callable[[int], Awaitable[None]]
    ) -> Outcome:
        """The trainer on ``job_file`` to its end (its stderr in ``log_file``)."""
        self._stop_requested = False
        proc = await spawn([*self.command, "train", "--job", str(job_file)], self.device, log_file)
        self._proc = proc
        try:
            await on_pid(proc.pid)
            if self._stop_requested:  # a cancel that came while the process was being started
                signal_group(proc, signal.SIGTERM)
            terminal, hung = await self._read_events(proc, on_event)
            code = await proc.wait()
        except BaseException:
            await kill(proc)  # the dispatcher is stopping: the job stays 'running' and resumes on restart
            raise
        finally:
            self._proc = None
        return Outcome(code, terminal, hung)

    async def _read_events(
        self, proc: asyncio.subprocess.Process, on_event: EventHandler
    ) -> tuple[dict[str, Any] | None, bool]:
        """Pass events on until the output ends; kill a process silent too long (or slow to exit)."""
        terminal = None
        while True:
            wait = min(self.hang_timeout_s, EXIT_GRACE_S) if terminal else self.hang_timeout_s
            try:
                line = await read_line(proc.stdout, wait)
            except asyncio.TimeoutError:
                log.warning("trainer pid %d sent nothing for %.0f s: killing it", proc.pid, wait)
                await kill(proc)
                return terminal, terminal is None
            if line is None:
                continue
            if not line:
                return terminal, False
            event = parse(line)
            if event is not None:
                if event["event"] in TERMINAL:
                    terminal = event
                await on_event(event)

    async def stop(self, job_id: int | None = None) -> None:
        """SIGTERM: the trainer stops between steps and reports ``cancelled``; killed after a grace time."""
        self._stop_requested = True
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            signal_group(proc, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), STOP_GRACE_S)
        except asyncio.TimeoutError:
            await kill(proc)

    async def close(self) -> None:
        return None


class GenerationLane:
    """One long-lived ``python -m trainer serve`` process on a device; requests go one at a time."""

    kind = "generate"
    local = True

    def __init__(
        self, device: str, hang_timeout_s: float, log_file: Path, command: Sequence[str] | None = None
    ):
        self.device = device
        self.hang_timeout_s = hang_timeout_s
        self.log_file = log_file
        self.command = list(command or [sys.executable, "-m", "trainer"])
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._current: str | None = None
        self._cancel_requested: set[str] = set()

    def declines(self, base_model: str, family: str) -> str | None:
        return None

    async def ready(self) -> bool:
        return True

    async def run(self, launch: Launch, on_event: EventHandler, on_start: OnStart) -> Outcome:
        await on_start(None, self.device)
        return await self.render(str(launch.job_id), launch.request, on_event)

    async def _ensure_started(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        proc = await spawn(
            [*self.command, "serve"], self.device, self.log_file, stdin=asyncio.subprocess.PIPE
        )
        try:
            while True:  # wait for "ready": the process is up and reads requests
                try:
                    line = await read_line(proc.stdout, self.hang_timeout_s)
                except asyncio.TimeoutError:
                    raise LaneStartError(f"the generation process on {self.device} did not start") from None
                if line == b"":
                    raise LaneStartError(f"the process exited at start (see {self.log_file})")
                event = parse(line) if line else None
                if event is not None and event["event"] == "ready":
                    break
        except BaseException:
            await kill(proc)
            raise
        self._proc = proc
        return proc

    async def render(self, request_id: str, job: dict[str, Any], on_event: EventHandler) -> Outcome:
        """Render one request; events are passed on without their ``request`` key."""
        async with self._lock:
            try:
                proc = await self._ensure_started()
                self._current = request_id
                return await self._exchange(proc, request_id, job, on_event)
            except BaseException:
                if self._proc is not None:
                    await kill(self._proc)
                raise
            finally:
                self._current = None
                self._cancel_requested.discard(request_id)

    async def _exchange(self, proc, request_id: str, job: dict[str, Any], on_event: EventHandler) -> Outcome:
        proc.stdin.write((json.dumps({"id": request_id, "job": job}) + "\n").encode())
        if request_id in self._cancel_requested:  # cancelled while the process was starting
            proc.stdin.write((json.dumps({"cancel": request_id}) + "\n").encode())
        await proc.stdin.drain()
        deadline = time.monotonic() + self.hang_timeout_s
        while True:
            try:
                line = await read_line(proc.stdout, max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                log.warning("generation process on %s hung: killing it", self.device)
                await kill(proc)
                return Outcome(proc.returncode, None, hung=True)
            if line == b"":
                return Outcome(await proc.wait(), None)
            event = parse(line) if line else None
            if event is None or event.get("request") != request_id:
                continue
            deadline = time.monotonic() + self.hang_timeout_s
            event.pop("request", None)
            await on_event(event)
            if event["event"] in TERMINAL:
                return Outcome(None, event)

    async def stop(self, job_id: int | str) -> None:
        """Cancel a request: now if it is rendering, or as soon as it is sent."""
        request_id = str(job_id)
        self._cancel_requested.add(request_id)
        proc = self._proc
        if proc is None or proc.returncode is not None or self._current != request_id:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            proc.stdin.write((json.dumps({"cancel": request_id}) + "\n").encode())
            await proc.stdin.drain()

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                await kill(proc)
