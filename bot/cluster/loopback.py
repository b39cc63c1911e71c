"""A Ray cluster of two nodes on this machine, for the tests, ``bench/ray_cluster.py`` and trying Ray
on one machine: a head and a second node, one simulated GPU each (the trainers run on the CPU),
each node with its own work folder, so nothing passes through a shared folder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .node import GPU_MEMORY_ENV, WORK_DIR_ENV


@dataclass
class LoopbackCluster:
    cluster: Any  # ray.cluster_utils.Cluster
    head: Any
    second: Any

    @property
    def address(self) -> str:
        return self.cluster.address

    @property
    def head_id(self) -> str:
        return self.head.node_id

    @property
    def second_id(self) -> str:
        return self.second.node_id

    def kill_second(self) -> None:
        """The second node dies (its raylet and every worker on it)."""
        self.cluster.remove_node(self.second, allow_graceful=False)


def _node_env(work: Path, name: str, gpu_gb: float) -> dict[str, str]:
    return {GPU_MEMORY_ENV: str(gpu_gb), WORK_DIR_ENV: str(work / name)}


@contextmanager
def two_nodes(work: Path, gpu_gb: float = 24.0) -> Iterator[LoopbackCluster]:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "num_gpus": 1,
        "env_vars": _node_env(work, "head", gpu_gb),
    })  # fmt: skip
    try:
        second = cluster.add_node(num_cpus=2, num_gpus=1, env_vars=_node_env(work, "second", gpu_gb))
        cluster.wait_for_nodes()
        yield LoopbackCluster(cluster, cluster.head_node, second)
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()


class _Holder:
    def ping(self) -> bool:
        return True


def hold_gpu(node_id: str):
    """Another workload holding a node's GPU (an actor with ``num_gpus=1`` pinned there)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    holder = (
        ray.remote(_Holder)
        .options(
            num_gpus=1, num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
        )
        .remote()
    )
    ray.get(holder.ping.remote(), timeout=60)
    return holder
