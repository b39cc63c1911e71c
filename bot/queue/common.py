"""What every part of the queue refuses with, and the one parser of job numbers from Discord."""

from __future__ import annotations

from ..datasets.service import ServiceError
from ..ids import parse_id, shown

#: Job keys the bot fills in itself; a member's options may not set them.
BOT_KEYS = frozenset(
    {"dataset_dir", "output_dir", "output_name", "base_model", "model_family", "base_model_config", "device",
     "resume", "init_weights", "event_every_n_steps", "schema"}
)  # fmt: skip


class QueueError(ServiceError):
    """A queue request that cannot be done; the message says what to do."""


def no_job(value: object) -> QueueError:
    """The one answer for a job the caller cannot see: unknown, another member's, or no job number."""
    return QueueError("you have no job #{job} (see your jobs with /queue)", job=shown(value))


def job_number(value: int | str | None) -> int:
    """The one job-number parser, for every job id that comes from Discord ("12", "#12", a custom
    id's digits): a number SQLite cannot hold, or no number, is answered like an unknown job."""
    number = parse_id(value)
    if number is None:
        raise no_job(value)
    return number


def no_epoch(job_id: int, epoch: object) -> QueueError:
    return QueueError(
        "job #{job} has no saved epoch {epoch}: see /epochs job:{job}", job=job_id, epoch=shown(epoch)
    )
