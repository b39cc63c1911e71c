"""The events of the contract: the JSON lines the trainer writes and the bot reads back."""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from .jobs import SCHEMA_VERSION

EventKind = Literal[
    "ready", "started", "step", "epoch_saved", "preview_ready", "image_ready", "done", "cancelled", "failed"
]
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "ready": (),  # a long-lived process (``python -m trainer serve``) is up and reads requests
    "started": ("total_steps", "total_epochs"),
    "step": ("step", "total_steps", "epoch", "loss", "lr"),
    "epoch_saved": ("epoch", "path"),
    "preview_ready": ("epoch", "path"),
    "image_ready": ("index", "path"),
    "done": ("files",),
    "cancelled": ("step",),
    "failed": ("message",),
}


def make_event(kind: str, **fields: Any) -> dict[str, Any]:
    """Build an event dict with the common keys; checks the kind's required fields are there."""
    missing = [f for f in EVENT_FIELDS[kind] if f not in fields]
    if missing:
        raise ValueError(f"event {kind} lacks {missing}")
    return {"event": kind, "schema": SCHEMA_VERSION, "time": round(time.time(), 3), **fields}


def parse_event(line: str) -> dict[str, Any] | None:
    """Parse one stdout line of the trainer; None for lines that are not events."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get("event") not in EVENT_FIELDS:
        return None
    if any(f not in obj for f in EVENT_FIELDS[obj["event"]]):
        return None
    return obj
