"""The cluster as the dispatcher sees it: connected at start, its nodes' GPUs as runners.

:class:`RayCluster` connects to ``LORABOT_RAY_ADDRESS``, asks every node with GPUs what it has
(:func:`.node.node_facts`), gives the dispatcher one :class:`~.runners.RayTrainingRunner` per GPU
and one :class:`~.runners.RayGenerationRunner` per node, and keeps that list current: a node that
joins adds runners, one that dies or leaves retires them (its running job comes back as lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from ..registry import ModelRegistry
from ..settings import Settings
from .placement import NodeFacts
from .runners import NAMESPACE, PREFIX, RayGenerationRunner, RayTrainingRunner, _pinned

log = logging.getLogger(__name__)
REFRESH_S = 10.0
ASK_EVERY = 6  # refreshes between asking known nodes again
FACTS_TIMEOUT_S = 60.0
CONNECT_S = 5.0


class ClusterUnreachable(RuntimeError):
    """The cluster at the address could not be joined: ``str()`` is one line saying why."""


class RayCluster:
    def __init__(self, settings: Settings, registry: ModelRegistry):
        self.address = settings.ray_address
        self.registry = registry
        self.hang_timeout_s = settings.hang_timeout_s
        self.watchdog_s = max(60.0, min(settings.hang_timeout_s, 300.0))
        self.generate_gpus = settings.ray_generate_gpus
        self.command: list[str] | None = None  # each node runs its own `python -m trainer`
        self.nodes: dict[str, NodeFacts] = {}
        self.training: dict[str, int] = {}  # node id -> our training jobs running there
        self._runners: dict[str, list[Any]] = {}
        self._free: tuple[float, dict[str, Any] | None] = (0.0, {})
        self._told_blind = False
        self._task: asyncio.Task | None = None
        self.connected = False
        self.on_size: Callable[[int], None] = lambda gpus: None  # the cluster's GPU count changed

    # Connecting -----------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Join the cluster as a driver; :class:`ClusterUnreachable` with one line when it cannot."""
        try:
            import ray
        except ImportError:
            raise ClusterUnreachable("LORABOT_RAY_ADDRESS is set but Ray is not installed: "
                                     "pip install -e '.[ray]'") from None  # fmt: skip

        await self._reachable()

        def join() -> None:
            ray.init(address=self.address, namespace=NAMESPACE, log_to_driver=False,
                     logging_level=logging.ERROR, ignore_reinit_error=True)  # fmt: skip

        try:
            await asyncio.wait_for(asyncio.to_thread(join), 60)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ClusterUnreachable(
                f"the Ray cluster at {self.address!r} cannot be reached: {first[:300]}"
            ) from None
        self.connected = True

    async def _reachable(self) -> None:
        """A head's ``host:port`` answers a TCP connect within seconds (Ray itself retries for minutes)."""
        host, _, port = self.address.removeprefix("ray://").rpartition(":")
        if not host or not port.isdigit():
            return  # "auto": Ray finds this host's cluster, or says at once that there is none
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), CONNECT_S)
        except (OSError, asyncio.TimeoutError) as exc:
            raise ClusterUnreachable(
                f"the Ray cluster at {self.address!r} cannot be reached: nothing answers at {host}:{port}"
                f" ({exc.strerror if isinstance(exc, OSError) and exc.strerror else 'timed out'})"
            ) from None
        writer.close()

    def models(self) -> dict[str, dict[str, Any]]:
        return {key: {"source": e.source, "tiny": e.tiny, "family": e.family}
                for key, e in self.registry.entries.items()}  # fmt: skip

    def tiny(self, key: str) -> dict[str, Any] | None:
        entry = self.registry.entries.get(key)
        return {"family": entry.family} if entry is not None and entry.tiny else None

    async def survey(self, ask_known: bool = True) -> list[NodeFacts]:
        """Every live node with GPUs, with what it reports of itself (models, card memory); a known
        node is asked again only with ``ask_known`` (and keeps what it said when it does not answer)."""
        import ray

        alive = [n for n in await asyncio.to_thread(ray.nodes) if n.get("Alive")]
        found = []
        for node in alive:
            gpus = int(node.get("Resources", {}).get("GPU", 0))
            known = self.nodes.get(node["NodeID"])
            if gpus < 1 or (known is not None and not ask_known):
                found += [known] if known is not None and gpus >= 1 else []
                continue
            head = "node:__internal_head__" in node.get("Resources", {})
            try:
                found.append(NodeFacts.from_report(await self._ask(node["NodeID"]), gpus, head))
            except Exception as exc:
                log.warning("cluster node %s did not report (%s)", node["NodeID"][:8], exc)
                found += [known] if known is not None else []
        return found

    async def _ask(self, node_id: str) -> dict[str, Any]:
        import ray

        from .node import node_facts

        ref = ray.remote(num_cpus=0)(node_facts).options(scheduling_strategy=_pinned(node_id))
        return await asyncio.wait_for(ref.remote(self.models()), FACTS_TIMEOUT_S)

    # Runners --------------------------------------------------------------------------------------

    async def start(self, dispatcher) -> None:
        """Give the dispatcher the cluster's runners now, and keep them current."""
        await self.refresh(dispatcher)
        self._task = asyncio.create_task(self._keep_current(dispatcher), name="ray-cluster")

    async def _keep_current(self, dispatcher) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(REFRESH_S)
            rounds += 1
            try:  # which nodes live: every round; what each has (models copied since): every minute
                await self.refresh(dispatcher, ask_known=rounds % ASK_EVERY == 0)
            except Exception:
                log.exception("surveying the Ray cluster")

    async def refresh(self, dispatcher, ask_known: bool = True) -> None:
        nodes = {facts.node_id: facts for facts in await self.survey(ask_known)}
        for node_id in [n for n in self._runners if n not in nodes]:
            log.warning("cluster node %s left: its jobs resume elsewhere", self.nodes[node_id].label)
            for runner in self._runners.pop(node_id):
                dispatcher.retire_runner(runner)
        for node_id, facts in nodes.items():
            if node_id in self._runners:
                for runner in self._runners[node_id]:
                    runner.node = facts  # models added since, say
                continue
            runners: list[Any] = [RayTrainingRunner(self, facts, gpu) for gpu in range(facts.gpus)]
            runners.append(RayGenerationRunner(self, facts))
            self._runners[node_id] = runners
            log.info("cluster node %s: %d GPU(s) of %s GB, models %s", facts.label, facts.gpus,
                     facts.smallest_gpu_gb, ", ".join(sorted(facts.models)) or "none")  # fmt: skip
            for runner in runners:
                dispatcher.add_runner(runner)
        self.nodes = nodes
        self.on_size(sum(facts.gpus for facts in nodes.values()))

    async def gpu_free(self, node_id: str, for_generation: bool = False) -> bool:
        """Whether a GPU of the node is free now (another workload of the cluster may hold them).

        Generation that reserves no share (``ray_generate_gpus`` 0) also goes where our own
        training holds the GPU (as ``generate_alongside_training``), never beside another workload."""
        at, free = self._free
        if time.monotonic() - at > 0.5:
            free = await asyncio.to_thread(_available_per_node)
            self._free = (time.monotonic(), free)
        if free is None:  # this Ray cannot say: every GPU counts as free (Ray queues what it cannot place)
            if not self._told_blind:
                self._told_blind = True
                log.warning(
                    "this Ray cannot report free GPUs per node: a GPU another workload holds is not seen"
                )
            return True
        gpus = float(free.get(node_id, {}).get("GPU", 0))
        if not for_generation:
            return gpus >= 1
        if self.generate_gpus > 0:
            return gpus >= self.generate_gpus
        return gpus >= 1 or self.training.get(node_id, 0) > 0

    # Recovery -------------------------------------------------------------------------------------

    def owns(self, device: str | None) -> bool:
        return bool(device) and device.startswith(PREFIX)

    async def stop_orphan(self, job) -> bool:
        """The job's actor, if it still lives (it should not: it died with the bot that made it)."""
        if not self.connected:
            return False
        import ray

        try:
            actor = ray.get_actor(f"lorabot-job-{job.id}", namespace=NAMESPACE)
        except ValueError:
            return True
        except Exception:
            return False
        with contextlib.suppress(Exception):
            ray.kill(actor)
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.connected:
            import ray

            await asyncio.to_thread(ray.shutdown)
            self.connected = False


def _available_per_node() -> dict[str, Any] | None:
    """Ray's free resources per node id; None when this Ray version has no such call (it is not
    public API: ``ray._private.state``)."""
    try:
        from ray._private import state

        return state.available_resources_per_node()
    except (ImportError, AttributeError):
        return None
