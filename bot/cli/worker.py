"""``python -m bot worker``: the queue without Discord, until SIGTERM or Ctrl-C.

It runs the dispatcher and the daily-reset scheduler on the data folder and prints one line
per job update. Another process already running the queue there is one error line (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from typing import TYPE_CHECKING

from db import jobs as jobs_repo

from .queue import _detail, _when

if TYPE_CHECKING:
    from ..queue.bus import JobUpdate
    from ..services import Services

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def run_worker(s: Services, a: argparse.Namespace) -> int:
    """Run the dispatcher until SIGTERM/SIGINT; DispatcherBusy when another process runs it."""
    from ..services import running_queue

    _log_to_stderr()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        s.bus.subscribe(_print_update)
        async with running_queue(s):
            devices = ", ".join(s.settings.devices)
            _say(f"worker: running the queue on {s.settings.data_dir} (devices: {devices}); stop with Ctrl-C")
            await stop.wait()
        await s.bus.drain()
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    left = await jobs_repo.list_jobs(s.conn, states=("running",), limit=1000)
    _say(
        f"worker: stopped; {len(left)} running job(s) resume at the next start" if left else "worker: stopped"
    )
    return 0


def _log_to_stderr() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


async def _print_update(update: JobUpdate) -> None:
    job = update.job
    _say(f"{_when(time.time())} job #{job.id} {job.kind}: {_detail(update.kind, update.event, job)}")


def _say(line: str) -> None:
    print(line, flush=True)
