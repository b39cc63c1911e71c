"""What every part of the queue refuses with, and the one parser of job numbers from Discord."""

from __future__ import annotations

from typing import Any

from ..datasets.service import ServiceError
from ..i18n import DEFAULT_LANGUAGE, messages
from ..ids import parse_id, shown

#: Job keys the bot fills in itself; a member's options may not set them.
BOT_KEYS = frozenset(
    {"dataset_dir", "output_dir", "output_name", "base_model", "model_family", "base_model_config", "device",
     "resume", "init_weights", "event_every_n_steps", "schema", "grid_labels"}
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


def grid_labels(
    locale: str | None, epochs: list[int] | None = None, *, preview: bool = False
) -> dict[str, Any]:
    """The ``grid_labels`` option of a grid job for a member in ``locale`` (none in English: the
    trainer's defaults are the English words): the column and row label templates, and a compare
    grid's row names ("epoch 2") for ``epochs``, a training job's (``preview``) title template
    ("epoch {epoch}") for its preview grids. The trainer draws English where no font has the
    glyphs, so a compare row keeps its English ``label`` too."""
    t = messages(locale)
    if t.language == DEFAULT_LANGUAGE:
        return {}
    words: dict[str, Any] = {"weight": t("weight {weight}"), "seed": t("seed {seed}")}
    if preview:
        words["epoch"] = t("epoch {epoch}")
    if epochs:
        words["rows"] = [t("epoch {epoch}", epoch=e) for e in epochs]
    return {"grid_labels": words}
