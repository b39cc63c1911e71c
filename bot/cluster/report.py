"""``python -m bot check`` on the cluster: its nodes, their GPUs, and which base models each has."""

from __future__ import annotations

import asyncio

from ..registry import ModelRegistry, RegistryError
from ..settings import Settings

Result = tuple[bool | None, str]


def check_cluster(s: Settings) -> list[Result]:
    """One line per node (FAIL when the cluster cannot be reached, WARN when no node has a GPU)."""
    if not s.ray_address:
        return []
    try:
        registry = ModelRegistry.load(s.model_registry, s.data_dir)
    except RegistryError:
        return []  # the models check says why
    return asyncio.run(_survey(s, registry))


async def _survey(s: Settings, registry: ModelRegistry) -> list[Result]:
    from .pool import ClusterUnreachable, RayCluster

    cluster = RayCluster(s, registry)
    try:
        await cluster.connect()
    except ClusterUnreachable as exc:
        return [
            (False, f"{exc}: start the head with 'ray start --head' on this host, or fix LORABOT_RAY_ADDRESS")
        ]
    try:
        nodes = await cluster.survey()
    finally:
        await cluster.close()
    if not nodes:
        return [
            (None, f"ray cluster {s.ray_address}: no node has a GPU yet (join one: ray start --address=...)")
        ]
    results: list[Result] = []
    for node in nodes:
        memory = "/".join(f"{gb:g}" for gb in node.gpu_memory_gb) or "?"
        lacks = sorted(set(registry.keys()) - node.models)
        text = (f"ray node {node.label}{' (head)' if node.head else ''}: {node.gpus} GPU(s) of {memory} GB; "
                f"models: {', '.join(sorted(node.models)) or 'none'}")  # fmt: skip
        if lacks:
            text += f"; lacks {', '.join(lacks)} (copy them to the same path there, or its jobs go elsewhere)"
        if node.problem:
            results.append(
                (False, f"{text}; {node.problem} (fix it in the environment of 'ray start' there)")
            )
            continue
        results.append((None if lacks or not node.gpu_memory_gb else True, text))
    return results
