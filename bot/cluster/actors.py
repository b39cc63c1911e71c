"""The Ray actors of a node: one per training job, one generation actor per node.

The bot creates them with ``ray.remote(...)`` (see :mod:`.runners`), pinned to a node. Both run
this host's own runners inside; the bot polls their :class:`~.node.Outbox` for events and files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from ..queue.workers import GenerationLane, LocalTrainerWorker
from .node import Outbox, _device, _local_model, node_facts, work_root
from .transfer import unpack

log = logging.getLogger(__name__)


def _placed() -> dict[str, Any]:
    import ray

    return {"node": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address()}


class TrainingActor:
    """One training job attempt on this node: ``python -m trainer train`` in a work folder."""

    def __init__(self, job_id: int, hang_timeout_s: float, watchdog_s: float, command: list[str] | None):
        self.job_id = job_id
        self.folder = work_root() / f"job-{job_id}"
        self.device = _device()
        self.worker = LocalTrainerWorker(self.device, hang_timeout_s, command)
        self.watchdog_s = watchdog_s
        self.outbox = Outbox(self.folder / "output")
        self._pid: asyncio.Future[int] | None = None
        self._tasks: list[asyncio.Task] = []

    async def start(
        self, request: dict[str, Any], bundle: bytes, tiny: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Unpack the dataset (and resume state), start the trainer; where it runs and its pid."""
        shutil.rmtree(self.folder, ignore_errors=True)
        await asyncio.to_thread(unpack, bundle, self.folder)
        request = {**request, "dataset_dir": str(self.folder / "dataset"),
                   "output_dir": str(self.folder / "output"), "device": "cpu" if self.device == "cpu" else "cuda"}  # fmt: skip
        await asyncio.to_thread(_local_model, request, tiny)
        (self.folder / "output").mkdir(parents=True, exist_ok=True)
        job_file = self.folder / "job.json"
        job_file.write_text(json.dumps(request), encoding="utf-8")
        self._pid = asyncio.get_running_loop().create_future()
        self._tasks.append(asyncio.create_task(self._run(job_file)))
        self._tasks.append(asyncio.create_task(self._watchdog()))
        done, _ = await asyncio.wait([self._pid, self._tasks[0]], return_when=asyncio.FIRST_COMPLETED)
        pid = self._pid.result() if self._pid.done() else None
        return {**_placed(), "pid": pid, "device": self.device, "output_dir": str(self.folder / "output")}

    async def _run(self, job_file: Path) -> None:
        async def on_event(event: dict[str, Any]) -> None:
            self.outbox.add(event)

        async def on_pid(pid: int) -> None:
            if not self._pid.done():
                self._pid.set_result(pid)

        try:
            outcome = await self.worker.run_file(job_file, self.folder / "trainer.log", on_event, on_pid)
        except Exception as exc:  # could not start: the bot's StartError
            from ..queue.runner import Outcome

            outcome = Outcome(None, None, lost=f"start: {exc}")
        self.outbox.end(outcome)

    async def _watchdog(self) -> None:
        """No poll for ``watchdog_s``: the bot is gone and will resume the job; stop and leave."""
        while time.monotonic() - self.outbox.polled_at < self.watchdog_s:
            await asyncio.sleep(min(5.0, self.watchdog_s / 4))
        log.warning("job #%d: the bot stopped polling; stopping its trainer", self.job_id)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.worker.stop(), 90)
        os.kill(os.getpid(), signal.SIGTERM)  # the actor ends; the bot's next poll finds it gone

    async def poll(self, after: int, wait_s: float) -> dict[str, Any]:
        return await self.outbox.take(after, wait_s)

    async def stop(self) -> None:
        await self.worker.stop()

    async def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class GenerationActor:
    """The node's long-lived ``trainer serve`` (the base model stays loaded), one request at a time."""

    def __init__(self, hang_timeout_s: float, command: list[str] | None):
        self.folder = work_root() / "generate"
        self.device = _device()
        self.lane = GenerationLane(self.device, hang_timeout_s, self.folder / "serve.log", command)
        self.outboxes: dict[int, Outbox] = {}
        self._tasks: dict[int, asyncio.Task] = {}

    async def facts(self, models: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return await asyncio.to_thread(node_facts, models)

    async def start(
        self, job_id: int, request: dict[str, Any], bundle: bytes, tiny: dict[str, Any] | None
    ) -> dict:
        """Unpack the LoRAs it uses, map the paths, queue the request behind the lane's lock."""
        folder = self.folder / f"job-{job_id}"
        shutil.rmtree(folder, ignore_errors=True)
        await asyncio.to_thread(unpack, bundle, folder / "in")
        request = {
            **request,
            "output_dir": str(folder / "output"),
            "device": "cpu" if self.device == "cpu" else "cuda",
        }
        for key in ("loras", "compare_loras"):
            for lora in request.get(key) or []:
                lora["path"] = str(folder / "in" / lora["path"])
        await asyncio.to_thread(_local_model, request, tiny)
        (folder / "output").mkdir(parents=True, exist_ok=True)
        outbox = self.outboxes[job_id] = Outbox(folder / "output")

        async def render() -> None:
            async def on_event(event: dict[str, Any]) -> None:
                outbox.add(event)

            try:
                outbox.end(await self.lane.render(str(job_id), request, on_event))
            except Exception as exc:
                from ..queue.runner import Outcome

                outbox.end(Outcome(None, None, lost=f"the generation process failed ({exc})"))

        self._tasks[job_id] = asyncio.create_task(render())
        return {**_placed(), "pid": None, "device": self.device, "output_dir": str(folder / "output")}

    async def poll(self, job_id: int, after: int, wait_s: float) -> dict[str, Any]:
        result = await self.outboxes[job_id].take(after, wait_s)
        if result["outcome"] is not None:
            self.outboxes.pop(job_id, None)
            self._tasks.pop(job_id, None)
            shutil.rmtree(self.folder / f"job-{job_id}", ignore_errors=True)
        return result

    async def stop(self, job_id: int) -> None:
        await self.lane.stop(job_id)
