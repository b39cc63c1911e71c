"""The events of the contract: the JSON lines the trainer writes and the bot reads back.

Nothing a child process writes is trusted: every kind parses into its own model, with strict
types (``"step": "three"`` is refused, not coerced), numbers bounded to what SQLite's 64-bit
integers hold, strings bounded (messages and labels cut short, over-long paths refused), keys the
kind does not know dropped, and a line over :data:`MAX_LINE_BYTES` refused whole. Losses and
learning rates that are not finite (a diverged run) become None. :func:`make_event` builds events
through the same models, so the trainer cannot write what the bot would refuse.

Whether a path lies inside the job's folder is the bot's check (``bot.queue.trust``): the
contract cannot know the folder.
"""

from __future__ import annotations

import json
import math
import time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from .jobs import SCHEMA_VERSION

EventKind = Literal[
    "ready", "started", "step", "epoch_saved", "preview_ready", "image_ready", "done", "cancelled", "failed"
]

MAX_LINE_BYTES = 256 * 1024  # a ``done`` of 1000 epochs lists ~1000 paths; anything else is far smaller
MAX_PATH_CHARS = 4096
MAX_MESSAGE_CHARS = 2000
MAX_NAME_CHARS = 200  # request ids, families, devices, optimizers, labels
MAX_COUNT = 2**62  # steps, seeds, counts: well inside SQLite's 64-bit integers
MAX_EPOCHS = 1000  # TrainJob.epochs' bound
MAX_IMAGES = 1024  # images of one generation (GenerateJob allows far fewer)
MAX_FILES = 2048
MAX_TIME = 1e11  # Unix seconds (year 5138): a time is finite and positive


def _truncate(limit: int):
    def cut(value: Any) -> Any:
        return value[:limit] if isinstance(value, str) else value

    return BeforeValidator(cut)


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _no_nul(path: str) -> str:
    if "\x00" in path:
        raise ValueError("a path holds no NUL character")
    return path


Count = Annotated[int, Field(strict=True, ge=0, le=MAX_COUNT)]
Epoch = Annotated[int, Field(strict=True, ge=0, le=MAX_EPOCHS)]
Index = Annotated[int, Field(strict=True, ge=0, lt=MAX_IMAGES)]
Seconds = Annotated[float, Field(strict=True, ge=0.0, le=MAX_TIME, allow_inf_nan=False)]
Metric = Annotated[
    Annotated[float, Field(strict=True, allow_inf_nan=False)] | None, BeforeValidator(_finite_or_none)
]
Weight = Annotated[float, Field(strict=True, ge=-100.0, le=100.0, allow_inf_nan=False)]
Name = Annotated[str, Field(strict=True, max_length=MAX_NAME_CHARS)]
Label = Annotated[str, Field(strict=True), _truncate(MAX_NAME_CHARS)]
Message = Annotated[str, Field(strict=True), _truncate(MAX_MESSAGE_CHARS)]
PathText = Annotated[
    str, Field(strict=True, min_length=1, max_length=MAX_PATH_CHARS), AfterValidator(_no_nul)
]
RequestId = Name | Count


class _Event(BaseModel):
    """The keys every event has: ``event``, ``schema``, ``time``; and ``request`` on serve's."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    event: str  # each kind narrows it to its name
    schema_version: Annotated[int, Field(strict=True, ge=0, le=1000, alias="schema")]
    time: Seconds
    request: RequestId | None = None


class Ready(_Event):
    event: Literal["ready"]
    pid: Count | None = None


class Started(_Event):
    event: Literal["started"]
    total_steps: Count
    total_epochs: Epoch
    steps_per_epoch: Count | None = None
    images: Count | None = None
    seed: Count | None = None
    family: Name | None = None
    optimizer: Name | None = None
    precision: Name | None = None
    device: Name | None = None
    resumed_from_step: Count | None = None
    preflight_peak_mb: Seconds | None = None  # a bounded non-negative float, like seconds
    compiled: Annotated[bool, Field(strict=True)] | None = None
    cached_text_outputs: Count | None = None
    model_cached: Annotated[bool, Field(strict=True)] | None = None  # serve: the model was loaded
    load_s: Seconds | None = None
    node: Name | None = None  # the cluster node it runs on (added by the bot's cluster runner)


class Step(_Event):
    event: Literal["step"]
    step: Count
    total_steps: Count
    epoch: Epoch
    loss: Metric
    lr: Metric
    avg_loss: Metric = None

    @model_validator(mode="after")
    def _within_total(self) -> Step:
        if self.step > self.total_steps:
            raise ValueError(f"step {self.step} is past total_steps {self.total_steps}")
        return self


class EpochSaved(_Event):
    event: Literal["epoch_saved"]
    epoch: Epoch
    path: PathText
    step: Count | None = None


class PreviewReady(_Event):
    event: Literal["preview_ready"]
    epoch: Epoch
    path: PathText


class ImageReady(_Event):
    event: Literal["image_ready"]
    index: Index
    path: PathText
    grid: Annotated[bool, Field(strict=True)] | None = None
    seed: Count | None = None
    weights: Annotated[list[Weight], Field(max_length=64)] | None = None
    label: Label | None = None
    row: Index | None = None


Files = Annotated[list[PathText], Field(max_length=MAX_FILES)]


class Done(_Event):
    event: Literal["done"]
    files: Files
    steps: Count | None = None
    seconds: Seconds | None = None
    seed: Count | None = None


class Cancelled(_Event):
    event: Literal["cancelled"]
    step: Count
    epoch: Epoch | None = None
    files: Files | None = None


class Failed(_Event):
    event: Literal["failed"]
    message: Message


MODELS: dict[str, type[_Event]] = {
    "ready": Ready,
    "started": Started,
    "step": Step,
    "epoch_saved": EpochSaved,
    "preview_ready": PreviewReady,
    "image_ready": ImageReady,
    "done": Done,
    "cancelled": Cancelled,
    "failed": Failed,
}
_COMMON_KEYS = frozenset({"event", "schema", "time", "request"})
_COMMON_FIELDS = frozenset({"event", "schema_version", "time", "request"})
#: The fields each kind must carry (besides ``event``, ``schema`` and ``time``).
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    kind: tuple(
        name for name, f in model.model_fields.items() if f.is_required() and name not in _COMMON_FIELDS
    )
    for kind, model in MODELS.items()
}


class EventRefused(ValueError):
    """A line that looks like an event but is not a valid one; ``str()`` says why, briefly."""


def _problems(kind: str, exc: ValidationError) -> str:
    shown = [
        f"{'.'.join(str(p) for p in e['loc']) or kind}: {e['msg']}" for e in exc.errors(include_url=False)[:3]
    ]
    more = exc.error_count() - len(shown)
    return f"{kind} event: " + "; ".join(shown) + (f" (and {more} more)" if more > 0 else "")


def validate_event(obj: dict[str, Any]) -> dict[str, Any]:
    """The event ``obj`` validated and normalised (only the keys it was given that its kind knows);
    :class:`EventRefused` says why it is not a valid event."""
    kind = obj.get("event")
    model = MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise EventRefused(f"unknown event kind {str(kind)[:40]!r}")
    try:
        parsed = model.model_validate(obj)
    except ValidationError as exc:
        raise EventRefused(_problems(kind, exc)) from None
    return parsed.model_dump(by_alias=True, exclude_unset=True)


def check_event(line: str) -> dict[str, Any] | None:
    """The validated event on one stdout line of the trainer; None for a line that is not meant
    as one (not starting with ``{``); :class:`EventRefused` for one that is but is invalid."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    size = len(line.encode("utf-8", "surrogatepass"))
    if size > MAX_LINE_BYTES:
        raise EventRefused(f"a line of {size} bytes, over the {MAX_LINE_BYTES // 1024} KiB an event may take")
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:  # bad JSON, a huge integer, deep nesting
        raise EventRefused(f"not JSON ({str(exc)[:80]})") from None
    if not isinstance(obj, dict):
        raise EventRefused("not a JSON object")
    return validate_event(obj)


def parse_event_checked(line: str) -> tuple[dict[str, Any] | None, str | None]:
    """(event, None) for a valid event; (None, why) for a refused one; (None, None) for a line
    that is not meant as an event (log output)."""
    try:
        return check_event(line), None
    except EventRefused as exc:
        return None, str(exc)


def parse_event(line: str) -> dict[str, Any] | None:
    """The validated event on one stdout line of the trainer; None for anything else."""
    return parse_event_checked(line)[0]


def make_event(kind: str, **fields: Any) -> dict[str, Any]:
    """Build an event with the common keys, validated as the bot will parse it; ValueError if
    the kind is unknown, a required field is missing, a field is unknown, or a value is invalid."""
    model = MODELS.get(kind)
    if model is None:
        raise ValueError(f"unknown event kind {kind!r}")
    missing = [f for f in EVENT_FIELDS[kind] if f not in fields]
    if missing:
        raise ValueError(f"event {kind} lacks {missing}")
    unknown = sorted(set(fields) - set(model.model_fields) - _COMMON_KEYS)
    if unknown:
        raise ValueError(f"event {kind} has no fields {unknown}: add them to the contract first")
    event = validate_event({"event": kind, "schema": SCHEMA_VERSION, "time": round(time.time(), 3), **fields})
    size = len(json.dumps(event, separators=(",", ":")).encode())
    if size > MAX_LINE_BYTES:
        raise ValueError(f"event {kind} takes {size} bytes, over the {MAX_LINE_BYTES} an event may take")
    return event
