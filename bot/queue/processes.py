"""Trainer processes on this host: starting them, reading their event lines, stopping them.

Each process leads its own session (a Ctrl-C to the bot is not a cancel of the job), dies with
the bot (``PR_SET_PDEATHSIG``), sees only its device's GPU, and writes its stderr to a log file.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.contract import parse_event_checked

log = logging.getLogger(__name__)

_LINE_LIMIT = 2**20


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


async def spawn(command: Sequence[str], device: str, log_file: Path, stdin: int | None = None):
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


async def read_line(stream: asyncio.StreamReader, timeout: float) -> bytes | None:
    """One line, or None for a line over the limit (skipped); raises TimeoutError after ``timeout``."""
    try:
        return await asyncio.wait_for(stream.readline(), timeout)
    except ValueError:  # longer than _LINE_LIMIT: asyncio dropped it; not an event of ours
        log.warning("skipped an over-long output line of a trainer process")
        return None


def parse(line: bytes) -> dict[str, Any] | None:
    """One output line as an event of the contract; a malformed event is logged with why, and
    skipped (the process goes on); other lines (its own log output) are not events."""
    event, why = parse_event_checked(line.decode("utf-8", "replace"))
    if why is not None:
        log.warning("refused an event line from a trainer process: %s", why)
    return event


def signal_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    """Signal the process and whatever it started (it leads its own session: a wrapper's trainer too)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)


async def kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        signal_group(proc, signal.SIGKILL)
        await proc.wait()
