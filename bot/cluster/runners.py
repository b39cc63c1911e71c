"""The bot's runners for a cluster node's GPUs: the dispatcher sees them as any other runner.

:class:`RayTrainingRunner` serves one GPU of one node: it claims only jobs whose base model the
node has and whose family fits the card (:func:`.placement.declines`), starts a
:class:`~.actors.TrainingActor` pinned there with ``num_gpus=1``, sends the dataset snapshot (and
the resume state of a resumed job) through the object store, and polls the events back as they
come, writing each file the node returns into the job's folder before the event that names it is
recorded. A node that dies mid-job ends the attempt as ``lost``: the dispatcher resumes the job
from the last state that came back. :class:`RayGenerationRunner` does the same for /generate on
the node's long-lived :class:`~.actors.GenerationActor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from ..queue.runner import EventHandler, Launch, OnStart, Outcome
from .placement import NodeFacts, declines
from .transfer import RefusedFile, pack, write_returned

log = logging.getLogger(__name__)
NAMESPACE = "lorabot"
POLL_WAIT_S = 2.0
PREFIX = "ray:"


def _ray():
    import ray

    return ray


def _lost(exc: BaseException) -> bool:
    ray = _ray()
    return isinstance(exc, (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError,
                            ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError))  # fmt: skip


def _pinned(node_id: str):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id, soft=False)


class _Polling:
    """Events from a node's outbox into the dispatcher's handler, files first."""

    def __init__(self, launch: Launch, node: NodeFacts, remote_output: str):
        self.launch = launch
        self.node = node
        self.remote_output = remote_output.rstrip("/") + "/"
        self.output = launch.folder / "output"

    def _local(self, path: str) -> str:
        """A node's path in its output folder -> the same file in the job's folder here."""
        if path.startswith(self.remote_output):
            return str(self.output / path[len(self.remote_output) :])
        return path  # the recorder refuses it: not in the job's folder

    def _write(self, files: list[tuple[str, bytes]]) -> None:
        for relative, data in files:
            try:
                write_returned(self.output, relative, data)
            except (RefusedFile, OSError) as exc:
                log.warning(
                    "job #%d: refused a file from node %s: %s", self.launch.job_id, self.node.label, exc
                )

    async def deliver(self, item: tuple[int, dict[str, Any], list], on_event: EventHandler) -> int:
        seq, event, files = item
        if files:
            await asyncio.to_thread(self._write, files)
        if isinstance(event.get("path"), str):
            event["path"] = self._local(event["path"])
        if isinstance(event.get("files"), list):
            event["files"] = [self._local(p) if isinstance(p, str) else p for p in event["files"]]
        if event.get("event") == "started":
            event["node"] = self.node.node_id
        await on_event(event)
        return seq


async def _started(start, node: NodeFacts, hang_s: float) -> dict[str, Any] | Outcome:
    """What an actor's ``start`` returned, or the attempt's outcome: ``hung`` when Ray could not
    place it within the hang time (its GPU taken meanwhile), ``lost`` when its node went away."""
    try:
        return await asyncio.wait_for(start, hang_s)
    except asyncio.TimeoutError:
        return Outcome(None, None, hung=True)
    except Exception as exc:
        if not _lost(exc):
            raise
        return Outcome(None, None, lost=f"its host {node.label} was lost")


async def _follow(poll, polling: _Polling, on_event: EventHandler, hang_s: float) -> Outcome:
    """Poll until the outcome; a node gone (or silent past the hang time) ends the attempt as lost."""
    after = 0
    try:
        while True:
            result = await asyncio.wait_for(poll(after), POLL_WAIT_S + hang_s)
            for item in result["events"]:
                after = await polling.deliver(item, on_event)
            if result["outcome"] is not None:
                return Outcome(**result["outcome"])
    except asyncio.TimeoutError:
        return Outcome(None, None, hung=True)
    except Exception as exc:
        if not _lost(exc):
            raise
        return Outcome(None, None, lost=f"its host {polling.node.label} was lost")


class RayTrainingRunner:
    kind = "train"
    local = False

    def __init__(self, cluster, node: NodeFacts, gpu: int):
        self.cluster = cluster
        self.node = node
        self.device = f"{PREFIX}{node.node_id[:8]}/{gpu}"
        self._actor = None

    def declines(self, base_model: str, family: str) -> str | None:
        return declines(self.node, base_model, family)

    async def ready(self) -> bool:
        return await self.cluster.gpu_free(self.node.node_id)

    async def run(self, launch: Launch, on_event: EventHandler, on_start: OnStart) -> Outcome:
        ray = _ray()
        name = launch.request.get("output_name", "lora")
        bundle = await asyncio.to_thread(pack, [
            (launch.folder / "dataset", "dataset"),
            (launch.folder / "output" / f"{name}-state.pt", f"output/{name}-state.pt"),
        ])  # fmt: skip
        from .actors import TrainingActor

        actor = ray.remote(TrainingActor).options(
            name=f"lorabot-job-{launch.job_id}", namespace=NAMESPACE, num_gpus=1, num_cpus=1,
            max_restarts=0, max_task_retries=0, scheduling_strategy=_pinned(self.node.node_id),
        ).remote(launch.job_id, self.cluster.hang_timeout_s, self.cluster.watchdog_s, self.cluster.command)  # fmt: skip
        self._actor = actor
        node_id = self.node.node_id
        self.cluster.training[node_id] = self.cluster.training.get(node_id, 0) + 1
        try:
            return await self._follow_actor(actor, launch, bundle, on_event, on_start)
        finally:
            self.cluster.training[node_id] -= 1
            self._actor = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(actor.cleanup.remote(), 30)
            with contextlib.suppress(Exception):
                ray.kill(actor)

    async def _follow_actor(self, actor, launch: Launch, bundle: bytes, on_event: EventHandler,
                            on_start: OnStart) -> Outcome:  # fmt: skip
        start = actor.start.remote(launch.request, bundle, self.cluster.tiny(launch.base_model))
        placed = await _started(start, self.node, self.cluster.hang_timeout_s)
        if isinstance(placed, Outcome):
            return placed  # the caller kills the actor
        await on_start(None, f"{self.device} {self.node.label}")
        polling = _Polling(launch, self.node, placed["output_dir"])
        return await _follow(lambda after: actor.poll.remote(after, POLL_WAIT_S), polling, on_event,
                             self.cluster.hang_timeout_s)  # fmt: skip

    async def stop(self, job_id: int) -> None:
        actor = self._actor
        if actor is not None:
            with contextlib.suppress(Exception):
                await actor.stop.remote()

    async def close(self) -> None:
        return None


class RayGenerationRunner:
    kind = "generate"
    local = False

    def __init__(self, cluster, node: NodeFacts):
        self.cluster = cluster
        self.node = node
        self.device = f"{PREFIX}{node.node_id[:8]}/generate"
        self._actor = None

    def declines(self, base_model: str, family: str) -> str | None:
        return declines(self.node, base_model, family)

    async def ready(self) -> bool:
        if self._actor is not None and self.cluster.generate_gpus > 0:
            return True  # it holds its share already
        return await self.cluster.gpu_free(self.node.node_id, for_generation=True)

    def _lane(self):
        if self._actor is None:
            from .actors import GenerationActor

            self._actor = _ray().remote(GenerationActor).options(
                name=f"lorabot-generate-{self.node.node_id[:12]}", namespace=NAMESPACE, num_cpus=0,
                num_gpus=self.cluster.generate_gpus, max_restarts=0, max_task_retries=0, get_if_exists=True,
                scheduling_strategy=_pinned(self.node.node_id),
            ).remote(self.cluster.hang_timeout_s, self.cluster.command)  # fmt: skip
        return self._actor

    async def run(self, launch: Launch, on_event: EventHandler, on_start: OnStart) -> Outcome:
        request = dict(launch.request)
        members: list[tuple[Path, str]] = []
        for key in ("loras", "compare_loras"):
            request[key] = [dict(lora) for lora in request.get(key) or []] or request.get(key)
            for i, lora in enumerate(request.get(key) or []):
                name = f"{key}-{i}.safetensors"
                members.append((Path(lora["path"]), name))
                lora["path"] = name
        bundle = await asyncio.to_thread(pack, members)
        actor = self._lane()
        start = actor.start.remote(launch.job_id, request, bundle, self.cluster.tiny(launch.base_model))
        placed = await _started(start, self.node, self.cluster.hang_timeout_s)
        if isinstance(placed, Outcome):
            self._actor = None  # a new one next time
            with contextlib.suppress(Exception):
                _ray().kill(actor)
            return placed
        await on_start(None, f"{self.device} {self.node.label}")
        polling = _Polling(launch, self.node, placed["output_dir"])
        outcome = await _follow(lambda after: actor.poll.remote(launch.job_id, after, POLL_WAIT_S), polling,
                                on_event, self.cluster.hang_timeout_s)  # fmt: skip
        if outcome.lost or outcome.hung:
            self._actor = None
        return outcome

    async def stop(self, job_id: int) -> None:
        if self._actor is not None:
            with contextlib.suppress(Exception):
                await self._actor.stop.remote(job_id)

    async def close(self) -> None:
        return None  # the model stays loaded on its node: generation there is what it is for
