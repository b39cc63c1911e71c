"""Workers: where a job's process runs. The dispatcher only sees the small interfaces here.

:class:`TrainingWorker` runs one training job to its end and can be asked to stop it;
:class:`LocalTrainerWorker` does it with a ``python -m trainer train`` process per job on one
device of this host. A worker on another host (Ray) implements the same two methods.
:class:`GenerationLane` keeps one ``python -m trainer serve`` process per device, so the base
model stays loaded between /generate requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from trainer.contract import parse_event_checked

log = logging.getLogger(__name__)

EventHandler = Callable[[dict[str, Any]], Awaitable[None]]
TERMINAL = ("done", "cancelled", "failed")
STOP_GRACE_S = 60.0  # after SIGTERM, how long a trainer may take to stop before it is killed
EXIT_GRACE_S = 60.0  # after its last event, how long a trainer may take to exit before it is killed
_LINE_LIMIT = 2**20


@dataclass(frozen=True)
class Outcome:
    """How a job's process ended: its exit code, its last terminal event (if any), and whether it hung."""

    exit_code: int | None
    terminal: dict[str, Any] | None
    hung: bool = False


class TrainingWorker(Protocol):
    device: str

    async def run(
        self,
        job_file: Path,
        log_file: Path,
        on_event: EventHandler,
        on_start: Callable[[int], Awaitable[None]],
    ) -> Outcome: ...

    async def stop(self) -> None: ...


def trainer_env(device: str) -> dict[str, str]:
    """The environment of a trainer on ``device``: only that GPU visible (none for cpu)."""
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = "" if device == "cpu" else device
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class StartError(RuntimeError):
    """A job's process could not be started at all (bad command, missing interpreter)."""


class LaneStartError(StartError):
    """The generation process did not come up."""


def _death_signal():
    """Linux: a preexec function giving the child SIGKILL when the bot dies (PR_SET_PDEATHSIG).

    prctl is looked up here, in the parent: the child, forked from a threaded process, only calls it.
    If the bot died before the call took effect, the child exits at once.
    """
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_death_signal() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl(1, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)

    return set_death_signal


async def _spawn(command: Sequence[str], device: str, log_file: Path, stdin: int | None = None):
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as err:
        try:
            return await _exec(command, device, stdin, err)
        except OSError as exc:
            raise StartError(f"{command[0]}: {exc.strerror or exc}") from exc


async def _exec(command: Sequence[str], device: str, stdin: int | None, err) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=err,
        env=trainer_env(device),
        preexec_fn=_death_signal(),
        start_new_session=True,  # Ctrl-C or systemd's SIGTERM to the bot is not a cancel of the job
        limit=_LINE_LIMIT,
    )


async def _read_line(stream: asyncio.StreamReader, timeout: float) -> bytes | None:
    """One line, or None for a line over the limit (skipped); raises TimeoutError after ``timeout``."""
    try:
        return await asyncio.wait_for(stream.readline(), timeout)
    except ValueError:  # longer than _LINE_LIMIT: asyncio dropped it; not an event of ours
        log.warning("skipped an over-long output line of a trainer process")
        return None


def _parse(line: bytes) -> dict[str, Any] | None:
    """One output line as an event of the contract; a malformed event is logged with why, and
    skipped (the process goes on); other lines (its own log output) are not events."""
    event, why = parse_event_checked(line.decode("utf-8", "replace"))
    if why is not None:
        log.warning("refused an event line from a trainer process: %s", why)
    return event


def _signal_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    """Signal the process and whatever it started (it leads its own session: a wrapper's trainer too)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        _signal_group(proc, signal.SIGKILL)
        await proc.wait()


class LocalTrainerWorker:
    """Runs ``python -m trainer train --job FILE`` on one device, one job at a time."""

    def __init__(self, device: str, hang_timeout_s: float, command: Sequence[str] | None = None):
        self.device = device
        self.hang_timeout_s = hang_timeout_s
        self.command = list(command or [sys.executable, "-m", "trainer"])
        self._proc: asyncio.subprocess.Process | None = None
        self._stop_requested = False

    async def run(
        self,
        job_file: Path,
        log_file: Path,
        on_event: EventHandler,
        on_start: Callable[[int], Awaitable[None]],
    ) -> Outcome:
        self._stop_requested = False
        proc = await _spawn([*self.command, "train", "--job", str(job_file)], self.device, log_file)
        self._proc = proc
        try:
            await on_start(proc.pid)
            if self._stop_requested:  # a cancel that came while the process was being started
                _signal_group(proc, signal.SIGTERM)
            terminal, hung = await self._read_events(proc, on_event)
            code = await proc.wait()
        except BaseException:
            await _kill(proc)  # the dispatcher is stopping: the job stays 'running' and resumes on restart
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
                line = await _read_line(proc.stdout, wait)
            except asyncio.TimeoutError:
                log.warning("trainer pid %d sent nothing for %.0f s: killing it", proc.pid, wait)
                await _kill(proc)
                return terminal, terminal is None
            if line is None:
                continue
            if not line:
                return terminal, False
            event = _parse(line)
            if event is not None:
                if event["event"] in TERMINAL:
                    terminal = event
                await on_event(event)

    async def stop(self) -> None:
        """SIGTERM: the trainer stops between steps and reports ``cancelled``; killed after a grace time."""
        self._stop_requested = True
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            _signal_group(proc, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), STOP_GRACE_S)
        except asyncio.TimeoutError:
            await _kill(proc)


class GenerationLane:
    """One long-lived ``python -m trainer serve`` process on a device; requests go one at a time."""

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

    async def _ensure_started(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        proc = await _spawn(
            [*self.command, "serve"], self.device, self.log_file, stdin=asyncio.subprocess.PIPE
        )
        try:
            while True:  # wait for "ready": the process is up and reads requests
                try:
                    line = await _read_line(proc.stdout, self.hang_timeout_s)
                except asyncio.TimeoutError:
                    raise LaneStartError(f"the generation process on {self.device} did not start") from None
                if line == b"":
                    raise LaneStartError(f"the process exited at start (see {self.log_file})")
                event = _parse(line) if line else None
                if event is not None and event["event"] == "ready":
                    break
        except BaseException:
            await _kill(proc)
            raise
        self._proc = proc
        return proc

    async def run(self, request_id: str, job: dict[str, Any], on_event: EventHandler) -> Outcome:
        """Render one request; events are passed on without their ``request`` key."""
        async with self._lock:
            try:
                proc = await self._ensure_started()
                self._current = request_id
                return await self._exchange(proc, request_id, job, on_event)
            except BaseException:
                if self._proc is not None:
                    await _kill(self._proc)
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
                line = await _read_line(proc.stdout, max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                log.warning("generation process on %s hung: killing it", self.device)
                await _kill(proc)
                return Outcome(proc.returncode, None, hung=True)
            if line == b"":
                return Outcome(await proc.wait(), None)
            event = _parse(line) if line else None
            if event is None or event.get("request") != request_id:
                continue
            deadline = time.monotonic() + self.hang_timeout_s
            event.pop("request", None)
            await on_event(event)
            if event["event"] in TERMINAL:
                return Outcome(None, event)

    async def stop(self, request_id: str) -> None:
        """Cancel a request: now if it is rendering, or as soon as it is sent."""
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
                await _kill(proc)
