"""Which cluster node may take which job: it has the base model, and its cards are large enough."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainer.contract.families import FAMILIES


@dataclass(frozen=True)
class NodeFacts:
    """What a node reported of itself (``bot.cluster.node.node_facts``) and Ray's count of its GPUs."""

    node_id: str
    host: str
    ip: str
    gpus: int
    gpu_memory_gb: tuple[float, ...] = ()
    models: frozenset[str] = field(default_factory=frozenset)
    head: bool = False
    problem: str | None = None  #: a setting of that host to fix before it takes jobs

    @classmethod
    def from_report(cls, report: dict[str, Any], gpus: int, head: bool = False) -> NodeFacts:
        return cls(report["node_id"], str(report["host"]), str(report["ip"]), gpus,
                   tuple(float(x) for x in report.get("gpu_memory_gb") or ()),
                   frozenset(report.get("models") or ()), head, report.get("problem"))  # fmt: skip

    @property
    def label(self) -> str:
        return f"{self.host} ({self.ip})"

    @property
    def smallest_gpu_gb(self) -> float | None:
        return min(self.gpu_memory_gb) if self.gpu_memory_gb else None


def declines(node: NodeFacts, base_model: str, family: str) -> str | None:
    """Why ``node`` can never run a job of ``base_model`` (of ``family``), or None."""
    if node.problem:
        return f"{node.label}: {node.problem}"
    if base_model not in node.models:
        return f"the base model {base_model} is not on {node.label}"
    info = FAMILIES.get(family)
    need = info.min_gpu_gb if info else 0.0
    have = node.smallest_gpu_gb
    if have is None:
        return f"{node.label} reports no GPU memory (nvidia-smi, or set LORABOT_NODE_GPU_MEMORY_GB there)"
    if have < need:
        return f"{info.label if info else family} needs a GPU of {need:g} GB; {node.label} has {have:g} GB"
    return None
