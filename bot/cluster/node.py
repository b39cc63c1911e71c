"""What runs on a cluster node: the node's facts, a training job's actor, the generation actor.

The actors run this host's own runners (``bot.queue.workers``) in a work folder of the node, and
keep what the trainer reports in an :class:`Outbox` that the bot polls: each event with the files
it names (and the resume state once it changed), so every saved epoch comes back when saved and
a lost node costs at most the current epoch. An actor whose bot stopped polling for
``watchdog_s`` stops its trainer and exits, so a job never runs twice once the bot resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ..queue.runner import Outcome

#: Per-card memory in GB of GPUs nvidia-smi cannot see (and of simulated GPUs in tests): "24,24".
GPU_MEMORY_ENV = "LORABOT_NODE_GPU_MEMORY_GB"
WORK_DIR_ENV = "LORABOT_NODE_WORK_DIR"
_FILE_KINDS = ("epoch_saved", "preview_ready", "image_ready")


def work_root() -> Path:
    """The node's work folder, resolved (the paths the trainer reports start with it)."""
    return Path(os.environ.get(WORK_DIR_ENV) or Path(tempfile.gettempdir()) / "lorabot-node").resolve()


def gpu_memory_gb() -> list[float]:
    """Each GPU's memory on this node, in GB (empty without GPUs)."""
    override = os.environ.get(GPU_MEMORY_ENV, "").strip()
    if override:
        try:
            sizes = [float(x) for x in override.split(",")]
        except ValueError:
            sizes = []
        if not sizes or not all(0 < gb < 10_000 for gb in sizes):
            raise ValueError(f"{GPU_MEMORY_ENV}={override!r} is not GB per card, like 24 or 24,80")
        return sizes
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    return [round(float(line) / 1024, 1) for line in out.split() if line.strip()]


def model_present(entry: dict[str, Any]) -> bool:
    """Whether the registry entry's base model is on this node (a tiny one is built when needed)."""
    if entry.get("tiny"):
        return True
    source = str(entry["source"])
    if Path(source).exists():
        return True
    if source.count("/") == 1 and not source.startswith((".", "/", "~")):  # a hub id: in the hub's cache?
        try:
            from huggingface_hub import try_to_load_from_cache

            return isinstance(try_to_load_from_cache(source, "model_index.json"), str)
        except Exception:
            return False
    return False


def node_facts(models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """This node: its id, host, GPUs' memory and which of the registry's models it has."""
    import ray

    try:
        memory, problem = gpu_memory_gb(), None
    except ValueError as exc:  # the operator's setting on that host: said, and no job goes there
        memory, problem = [], str(exc)
    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "host": socket.gethostname(),
        "ip": ray.util.get_node_ip_address(),
        "gpu_memory_gb": memory,
        "models": sorted(key for key, entry in models.items() if model_present(entry)),
        "problem": problem,
    }


def _local_model(request: dict[str, Any], tiny: dict[str, Any] | None) -> None:
    """A tiny base model missing here is built in the node's work folder (same seed: same weights)."""
    if tiny is None or Path(request["base_model"]).exists():
        return
    from trainer.tiny import make_tiny

    from ..buildonce import build_folder_once

    target = work_root() / "models" / f"tiny-{tiny['family']}"
    build_folder_once(target, "model_index.json", lambda out: make_tiny(tiny["family"], out))
    request["base_model"] = str(target)


def _device() -> str:
    """The GPU Ray gave this actor ("0"; the node's first for an actor that asked for none), or cpu
    where the node has none that nvidia-smi sees (simulated GPUs: the trainer runs on the CPU)."""
    import ray

    if not shutil.which("nvidia-smi"):
        return "cpu"
    return ",".join(str(i) for i in ray.get_gpu_ids()) or "0"


class Outbox:
    """Events (with their files) in order, numbered, until the bot has taken them."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.items: list[tuple[int, dict[str, Any], list[tuple[str, bytes]]]] = []
        self.seq = 0
        self.changed = asyncio.Event()
        self.outcome: Outcome | None = None
        self.polled_at = time.monotonic()
        self._state_mtime: dict[str, float] = {}
        self._sent: set[str] = set()

    def add(self, event: dict[str, Any]) -> None:
        files = []
        if event["event"] in _FILE_KINDS:
            files.append(self._file(Path(event["path"])))
        if event["event"] == "epoch_saved":  # the resume state was rewritten just before
            files += [self._file(p) for p in self._changed_states()]
        for path in event.get("files") or []:  # done, cancelled: the final copy is named only here
            if str(Path(path).resolve()) not in self._sent:
                files.append(self._file(Path(path)))
        self.seq += 1
        self.items.append((self.seq, event, [f for f in files if f is not None]))
        self.changed.set()

    def _file(self, path: Path) -> tuple[str, bytes] | None:
        try:
            found = path.resolve().relative_to(self.folder.resolve()).as_posix(), path.read_bytes()
            self._sent.add(str(path.resolve()))
            return found
        except (OSError, ValueError):
            return None  # the bot refuses the event's path: nothing to send

    def _changed_states(self) -> list[Path]:
        found = []
        for path in self.folder.glob("*-state.pt"):
            mtime = path.stat().st_mtime
            if self._state_mtime.get(path.name) != mtime:
                self._state_mtime[path.name] = mtime
                found.append(path)
        return found

    def end(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.changed.set()

    async def take(self, after: int, wait_s: float) -> dict[str, Any]:
        """Events after ``after`` (those up to it are dropped: the bot has them), waiting up to
        ``wait_s`` for the first; and the outcome once the process has ended and all is taken."""
        self.polled_at = time.monotonic()
        self.items = [item for item in self.items if item[0] > after]
        if not self.items and self.outcome is None:
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), wait_s)
        done = self.outcome if not self.items else None
        return {"events": list(self.items), "outcome": done.__dict__ if done else None}
