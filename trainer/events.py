"""JSON-line events on stdout (one object a line), and the stop flag SIGTERM sets."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from .contract import make_event


class EventWriter:
    """Writes contract events, one JSON object per line, flushed at once.

    Step events are throttled: the first, then at most one per ``interval`` seconds of ``clock``
    (about one a second by default), or every ``every_n_steps`` steps when the job sets
    ``event_every_n_steps``; the last step is always written.
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        every_n_steps: int | None = None,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.stream = stream if stream is not None else sys.stdout
        self.every_n_steps = every_n_steps
        self.interval = interval
        self.clock = clock
        self._last_step_time: float | None = None  # none written yet: the first is due
        self._lock = threading.Lock()

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = make_event(kind, **fields)
        line = json.dumps(event, separators=(",", ":"), default=str)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()
        return event

    def step(self, step: int, total_steps: int, force: bool = False, **fields: Any) -> bool:
        """Emit a step event if due; returns whether it was written."""
        now = self.clock()
        if self.every_n_steps is not None:
            due = step % self.every_n_steps == 0
        else:
            due = self._last_step_time is None or now - self._last_step_time >= self.interval
        if not (due or force or step == total_steps):
            return False
        self._last_step_time = now
        self.emit("step", step=step, total_steps=total_steps, **fields)
        return True


class StopFlag:
    """Set by SIGTERM/SIGINT; the loops check it between steps and stop cleanly."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def install(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._event.set())
        return self

    def set(self) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()
