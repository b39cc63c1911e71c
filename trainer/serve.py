"""``python -m trainer serve``: a long-lived generation process that keeps a base model loaded.

The bot keeps one of these per device, so a second ``/generate`` on the same base
model does not load it again.

Protocol (JSON lines; logs go to stderr):

stdin, one object a line:

- ``{"id": "<string>", "job": {...GenerateJob fields...}}`` queues a request. Requests
  run one at a time in arrival order. An id should be unique among the requests that
  have not finished; a second request with a busy id is refused (``failed``).
- ``{"cancel": "<id>"}`` cancels that request: a running one stops between images
  (as SIGTERM stops ``generate``) and emits ``cancelled``; a waiting one emits
  ``cancelled`` (``step`` 0, no files) at once and never starts. A cancel for an id
  that is not waiting or running (already finished, never sent) is logged and ignored.
- Anything else (not JSON, unknown keys, an invalid job) is logged on stderr and
  answered with a ``failed`` event, carrying ``"request": id`` when an id could be
  read; the server goes on reading.

stdout, one event a line (see :mod:`trainer.contract`):

- ``{"event": "ready", "pid": ...}`` once, when the process reads requests.
- For each request exactly the events ``python -m trainer generate`` emits (``started``,
  ``image_ready``..., then one of ``done`` | ``cancelled`` | ``failed``), each with
  ``"request": id``. ``started`` also carries ``model_cached`` (the base model was
  already loaded) and ``load_s`` (seconds spent loading it, 0 when cached). A request
  that fails before rendering (invalid job, base model or LoRA that cannot load) gets
  only its ``failed``; one cancelled before it starts only its ``cancelled``.
- Refusals of bad lines and cancels of waiting requests are answered as soon as the
  line is read, so they can come between the events of the running request: match
  events by ``request``.

The last base model stays loaded, keyed by (base_model, model_family,
base_model_config, device, mixed_precision), device and precision resolved as
``generate`` resolves them; a request for another one frees it
before loading the new one. LoRAs and the sampler are set up per request and removed
afterwards. A failing request does not stop the server; after an out-of-memory error
(or any unexpected one) the model is dropped and the next request loads it afresh.

stdin EOF: the queued requests are finished, then the process exits 0. SIGTERM /
SIGINT: the running request is cancelled (its ``cancelled`` is emitted), waiting ones
get ``cancelled`` too, and the process exits with ``EXIT_CANCELLED`` (3).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .contract import EXIT_CANCELLED, EXIT_OK, GenerateJob, JobError, parse_job
from .errors import TrainerError
from .events import EventWriter, StopFlag

if TYPE_CHECKING:
    from .generate import LoadedPipeline

log = logging.getLogger(__name__)

_EOF = object()


@dataclass
class Request:
    """One queued request: its id, its job, and its own stop flag."""

    id: str
    job: GenerateJob
    stop: StopFlag = field(default_factory=StopFlag)
    state: str = "waiting"  # waiting -> running -> finished; or waiting -> cancelled


class RequestEvents:
    """Writes a request's events: each gets ``request``, and ``started`` the cache fields."""

    def __init__(self, writer: EventWriter, request: str, **started: Any):
        self.writer = writer
        self.request = request
        self.started = started

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        if kind == "started":
            fields.update(self.started)
        return self.writer.emit(kind, request=self.request, **fields)


class Server:
    """The request queue, the reader of stdin lines and the one loaded pipeline."""

    def __init__(self, events: EventWriter | None = None):
        self.events = events if events is not None else EventWriter()
        self.queue: queue.Queue = queue.Queue()
        self.requests: dict[str, Request] = {}  # waiting or running
        self.current: Request | None = None
        self.loaded: LoadedPipeline | None = None
        self.shutdown = threading.Event()
        self._lock = threading.Lock()

    # stdin side (reader thread) ---------------------------------------------------------------

    def handle_line(self, line: str) -> None:
        """Act on one stdin line: queue a request, cancel one, or answer ``failed``."""
        line = line.strip()
        if not line:
            return
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            return self._refuse(f"not a JSON line ({exc}): {line[:200]}")
        if not isinstance(obj, dict):
            return self._refuse(f"expected a JSON object, got: {line[:200]}")
        if "cancel" in obj:
            if set(obj) != {"cancel"} or not isinstance(obj["cancel"], str):
                return self._refuse('a cancel line is {"cancel": "<id>"}', _scalar(obj.get("cancel")))
            return self.cancel(obj["cancel"])
        self._add_request(obj)

    def _add_request(self, obj: dict[str, Any]) -> None:
        rid = obj.get("id")
        if not isinstance(rid, str) or not rid:
            return self._refuse('a request needs an "id" string', _scalar(rid))
        extra = sorted(set(obj) - {"id", "job"})
        if extra or not isinstance(obj.get("job"), dict):
            what = f"unknown keys {extra}" if extra else 'a "job" object is missing'
            return self._refuse(f'a request is {{"id": ..., "job": {{...}}}}: {what}', rid)
        try:
            job = parse_job(obj["job"], GenerateJob)
        except JobError as exc:
            return self._refuse("invalid job: " + "; ".join(exc.problems), rid)
        with self._lock:
            if rid in self.requests:
                return self._refuse(f"request id {rid!r} is already waiting or running", rid)
            request = self.requests[rid] = Request(rid, job)
        log.info("request %s queued", rid)
        self.queue.put(request)

    def cancel(self, rid: str) -> None:
        """Cancel a waiting request (its ``cancelled`` is emitted now) or stop the running one."""
        with self._lock:
            request = self.requests.get(rid)
            if request is None:
                log.warning("cancel %s: no such request waiting or running", rid)
                return
            request.stop.set()
            if request.state != "waiting":
                log.info("request %s: cancel asked, stopping after this image", rid)
                return
            request.state = "cancelled"
            del self.requests[rid]
        log.info("request %s cancelled before it started", rid)
        self.events.emit("cancelled", request=rid, step=0, files=[])

    def _refuse(self, message: str, rid: Any = None) -> None:
        log.error("%s", message)
        fields = {"request": rid} if rid is not None else {}
        self.events.emit("failed", message=message, **fields)

    def read_forever(self, fd: int) -> None:
        """Read lines from a file descriptor until EOF, then queue the end marker.

        ``os.read`` on the raw descriptor (no buffered ``sys.stdin``) lets the process
        exit while this daemon thread still waits for input.
        """
        pending = b""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError as exc:
                log.error("stdin: %s", exc)
                chunk = b""
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                self._safe_handle(raw)
        self._safe_handle(pending)
        self.end_of_input()

    def end_of_input(self) -> None:
        """No more requests: :meth:`run` returns 0 once the queued ones are served."""
        self.queue.put(_EOF)

    def _safe_handle(self, raw: bytes) -> None:
        try:
            self.handle_line(raw.decode("utf-8", errors="replace"))
        except Exception:  # the reader must survive anything
            log.exception("could not handle a stdin line")

    # render side (main thread) ----------------------------------------------------------------

    def run(self, fd: int | None = None) -> int:
        """Emit ``ready``, start reading ``fd`` (when given), then serve queued requests
        until EOF (returns 0) or a signal (returns ``EXIT_CANCELLED``)."""
        self.events.emit("ready", pid=os.getpid())
        if fd is not None:
            threading.Thread(target=self.read_forever, args=(fd,), name="serve-stdin", daemon=True).start()
        while True:
            if self.shutdown.is_set():
                self._cancel_waiting()
                return EXIT_CANCELLED
            try:
                item = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _EOF:
                log.info("stdin closed: exiting")
                return EXIT_OK
            if self.serve_request(item):
                self.drop_model()

    def serve_request(self, request: Request) -> bool:
        """Render one request; returns whether the loaded model should be dropped."""
        with self._lock:
            if request.state != "waiting":
                return False  # cancelled while waiting: its event is out already
            request.state = "running"
            self.current = request
        try:
            if self.shutdown.is_set():
                request.stop.set()
            if request.stop.requested:
                self.events.emit("cancelled", request=request.id, step=0, files=[])
                return False
            return self._render(request)
        finally:
            with self._lock:
                request.state = "finished"
                self.requests.pop(request.id, None)
                self.current = None

    def _render(self, request: Request) -> bool:
        from .cli import user_message
        from .generate import has_lora_layers, render_job

        log.info("request %s: rendering %d image(s)", request.id, request.job.count)
        try:
            loaded, cached, load_s = self._pipeline_for(request.job)
            events = RequestEvents(self.events, request.id, model_cached=cached, load_s=load_s)
            code = render_job(loaded, request.job, events, request.stop)
            log.info("request %s finished (exit code %d)", request.id, code)
            return has_lora_layers(loaded.pipe)
        except Exception as exc:  # the request fails, the server goes on
            # a TrainerError says the job is wrong, not the model: the loaded model stays
            keep = isinstance(exc, TrainerError) and "out of memory" not in str(exc).lower()
            if keep:
                log.error("request %s failed: %s", request.id, exc)
            else:
                traceback.print_exc(file=sys.stderr)
            self.events.emit("failed", request=request.id, message=user_message(exc))
            return not keep or (self.loaded is not None and has_lora_layers(self.loaded.pipe))

    def _pipeline_for(self, job: GenerateJob) -> tuple[LoadedPipeline, bool, float]:
        """The loaded pipeline for the job, loading it (and freeing another) when needed;
        returns (pipeline, was it cached, seconds spent loading)."""
        from .generate import load_for_job, pipeline_key

        if self.loaded is not None and self.loaded.key == pipeline_key(job):
            return self.loaded, True, 0.0
        self.drop_model()
        start = time.monotonic()
        self.loaded = load_for_job(job)
        load_s = round(time.monotonic() - start, 3)
        log.info("loaded %s in %.1f s", job.base_model, load_s)
        return self.loaded, False, load_s

    def drop_model(self) -> None:
        """Forget the loaded pipeline and give its memory back."""
        if self.loaded is None:
            return
        from . import render

        device = self.loaded.device
        log.info("dropping the loaded model %s", self.loaded.key[0])
        self.loaded = None
        render.release_memory(device)

    def _cancel_waiting(self) -> None:
        with self._lock:
            waiting = [r for r in self.requests.values() if r.state == "waiting"]
            for request in waiting:
                request.state = "cancelled"
                del self.requests[request.id]
        for request in waiting:
            self.events.emit("cancelled", request=request.id, step=0, files=[])

    def on_signal(self, *_: Any) -> None:
        """SIGTERM/SIGINT: stop the running request between images, then exit."""
        self.shutdown.set()
        current = self.current
        if current is not None:
            current.stop.set()


def _scalar(value: Any) -> Any:
    """A request id worth echoing back in a ``failed`` event (a string or an integer), or None."""
    return value if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def serve(fd: int | None = None, events: EventWriter | None = None) -> int:
    """Run the server on stdin (or ``fd``) until EOF or a signal; returns the exit code."""
    server = Server(events)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, server.on_signal)
    return server.run(sys.stdin.fileno() if fd is None else fd)
