"""One dispatcher per data folder, and no trainer left behind by a dead one."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from pathlib import Path


class DispatcherBusy(RuntimeError):
    """Another live process already runs the queue on this data folder."""


class DispatcherLock:
    """An exclusive ``flock`` on a file in the data folder, held while the dispatcher runs.

    The kernel drops it when the process dies, however it dies, so a killed bot never blocks
    the next start; a second bot on the same folder is refused instead of running jobs twice.
    """

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DispatcherBusy(
                f"another process (pid {holder}) already runs the queue on {self.path.parent}: stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _is_job_process(pid: int, folder: str) -> bool:
    """Whether ``pid`` is still a process of this job (its command line names the job's folder)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return folder in cmdline


def kill_orphan(pid: int | None, folder: str, timeout_s: float = 30.0) -> bool:
    """Kill a job's process that outlived the dispatcher that started it; True if one was killed.

    Checks the process is really this job's (a recycled pid is left alone) and waits until it
    is gone, so a resumed job never shares its folder with the old process.
    """
    if not pid or not _is_job_process(pid, folder):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _is_job_process(pid, folder):
        stat = Path(f"/proc/{pid}/stat")
        with contextlib.suppress(OSError):
            if stat.read_text().split(")")[-1].split()[0] == "Z":  # a zombie holds nothing any more
                return True
        time.sleep(0.05)
    return True
