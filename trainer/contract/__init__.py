"""The job/event contract between the bot and the trainer process.

This module is the one bridge between ``bot`` and ``trainer``: the bot writes a
job file that validates here, starts ``python -m trainer train --job FILE`` and
reads back JSON-line events that parse here. It imports no torch, so the bot
can import it cheaply.

Versioning: ``SCHEMA_VERSION`` is written into every event (``schema``) and may
be given in a job file (``schema``). A job that names a newer schema than this
trainer knows is refused instead of half-understood.
"""

from __future__ import annotations

from .events import (
    EVENT_FIELDS,
    EventKind,
    EventRefused,
    make_event,
    parse_event,
    parse_event_checked,
    validate_event,
)
from .jobs import (
    ADAPTIVE_OPTIMIZERS,
    DEFAULT_LEARNING_RATE,
    DEFAULT_PREVIEW_NEGATIVE,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_INVALID_JOB,
    EXIT_OK,
    SCHEMA_VERSION,
    Family,
    GenerateJob,
    JobError,
    LabelledLora,
    LoraRef,
    ModelSource,
    OptimizerName,
    Precision,
    PreviewOptions,
    SamplerName,
    SavePrecision,
    SchedulerName,
    TrainJob,
    default_clip_skip,
    default_resolution,
    steps_per_epoch,
    total_steps,
    warmup_steps,
)
from .loading import load_job, parse_job, read_job_file

__all__ = [
    "ADAPTIVE_OPTIMIZERS",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_PREVIEW_NEGATIVE",
    "EVENT_FIELDS",
    "EXIT_CANCELLED",
    "EXIT_FAILED",
    "EXIT_INVALID_JOB",
    "EXIT_OK",
    "EventKind",
    "EventRefused",
    "Family",
    "GenerateJob",
    "JobError",
    "LabelledLora",
    "LoraRef",
    "ModelSource",
    "OptimizerName",
    "Precision",
    "PreviewOptions",
    "SCHEMA_VERSION",
    "SamplerName",
    "SavePrecision",
    "SchedulerName",
    "TrainJob",
    "default_clip_skip",
    "default_resolution",
    "load_job",
    "make_event",
    "parse_event",
    "parse_event_checked",
    "parse_job",
    "read_job_file",
    "steps_per_epoch",
    "total_steps",
    "validate_event",
    "warmup_steps",
]
