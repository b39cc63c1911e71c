"""The queue as a member and an operator see it: estimate, submit, cancel, pause. Plain values.

Submitting a job snapshots what it needs into its own folder (``DATA_DIR/jobs/<uuid>``), then
debits the stamina and inserts the job in ONE transaction: the debit is a conditional update,
so concurrent submissions can never overdraw, and a failed insert charges nothing. The cost
charged is computed by the same function, on the same snapshot, as the estimate shown; a
caller that showed an estimate passes it as ``expected_cost`` and the submission is refused if
the job changed since (e.g. images were added).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import re
import shutil
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from db import jobs as repo
from db import stamina as stamina_repo
from db.database import transaction
from trainer.contract import JobError, TrainJob, parse_job, total_steps
from trainer.contract.blocks import block_problems
from trainer.contract.families import family_info, refused_options

from ..datasets.service import DatasetService, ServiceError
from ..errors import MemberError
from ..i18n import N_
from ..ids import parse_id, shown
from ..registry import ModelRegistry, RegistryError
from ..settings import Settings
from . import costs
from .eta import Shape, eta_seconds
from .refunds import RefundPreview
from .settle import settle
from .stamina import StaminaService
from .trust import trusted_job_file

__all__ = ["QueueError", "QueueService", "TrainingEstimate", "job_number", "no_job"]

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


@dataclass(frozen=True)
class TrainingEstimate:
    dataset: str
    base_model: str
    family: str
    images: int
    repeats: int
    epochs: int
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    resolution: int
    cost: int
    balance: int
    eta_s: float

    @property
    def affordable(self) -> bool:
        return self.balance >= self.cost


@dataclass(frozen=True)
class _Prepared:
    estimate: TrainingEstimate
    options: dict[str, Any]
    dataset_id: int
    trigger: str


class QueueService:
    def __init__(
        self,
        conn: aiosqlite.Connection,
        settings: Settings,
        registry: ModelRegistry,
        datasets: DatasetService,
        stamina: StaminaService,
        clock: Callable[[], float] = time.time,
        bus=None,
    ):
        self.conn = conn
        self.settings = settings
        self.registry = registry
        self.datasets = datasets
        self.stamina = stamina
        self.clock = clock
        self.on_change: Callable[[], None] | None = None  # the dispatcher's wake-up, when one runs here
        self.bus = bus

    # Training --------------------------------------------------------------------------------------

    async def estimate_training(
        self,
        owner_id: int,
        dataset: str,
        options: dict[str, Any] | None = None,
        roles: Iterable[str] | None = None,
    ) -> TrainingEstimate:
        """Steps, cost and ETA of a training job, without queueing it."""
        row = await self.datasets.get(owner_id, dataset)
        images = len(await self.datasets.images(owner_id, dataset))
        prepared = await self._prepare(owner_id, row, images, dict(options or {}), roles)
        return prepared.estimate

    async def submit_training(
        self,
        owner_id: int,
        dataset: str,
        options: dict[str, Any] | None = None,
        *,
        roles: Iterable[str] | None = None,
        channel_id: int | None = None,
        expected_cost: int | None = None,
        init_from: tuple[int, int] | None = None,
    ) -> repo.JobRow:
        """Queue a training job: snapshot the dataset, debit the cost and insert the job together.

        ``init_from`` = (job id, epoch) starts from that saved epoch of one of the member's jobs
        ("train further").
        """
        row = await self.datasets.get(owner_id, dataset)
        options = dict(options or {})
        if init_from is not None:
            options["init_weights"] = await self.epoch_file(owner_id, *init_from)
        folder = self.settings.jobs_dir() / uuid.uuid4().hex
        try:
            await self.datasets.export(owner_id, row.name, folder / "dataset")
            images = sum(1 for p in (folder / "dataset").iterdir() if p.suffix == ".png")
            prepared = await self._prepare(owner_id, row, images, options, roles)
            if expected_cost is not None and prepared.estimate.cost != expected_cost:
                raise QueueError(
                    "the cost changed from {old} to {new} since the estimate (the dataset changed): "
                    "check the new estimate and confirm again",
                    old=expected_cost, new=prepared.estimate.cost,
                )  # fmt: skip
            return await self._insert_and_charge(owner_id, prepared, folder, roles, channel_id)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise

    async def _prepare(
        self, owner_id: int, dataset, images: int, options: dict[str, Any], roles: Iterable[str] | None
    ) -> _Prepared:
        init_weights = options.pop("init_weights", None)
        given = sorted(BOT_KEYS & options.keys())
        if given:
            raise QueueError("the bot sets {keys} itself: leave them out", keys=", ".join(given))
        if images == 0:
            raise QueueError("dataset '{name}' has no images yet: upload some first", name=dataset.name)
        try:
            entry = self.registry.get(dataset.base_model)
            family = self.registry.family(dataset.base_model)
        except (RegistryError, ValueError, RuntimeError) as exc:
            raise QueueError("the dataset's base model cannot be used: {why}", why=exc) from None
        options.setdefault("resolution", self.default_resolution(dataset, family))
        if options.get("seed") is None:
            options["seed"] = random.SystemRandom().randrange(
                2**32
            )  # fixed now: resume and "like" reproduce it
        job = self._validate(options, entry, family, init_weights)
        steps = total_steps(images, job.repeats, job.batch_size, job.epochs)
        resolution = job.resolved_resolution(family)
        cost = costs.training_cost(
            steps, job.batch_size, resolution, family,
            {family: self.settings.step_cost(family)},
        )  # fmt: skip
        eta_s = await eta_seconds(self, Shape("train", family, resolution, job.batch_size, steps))
        balance = (await self.stamina.balance(owner_id, roles)).balance
        estimate = TrainingEstimate(
            dataset.name, dataset.base_model, family, images, job.repeats, job.epochs, job.batch_size,
            steps // job.epochs, steps, resolution, cost, balance, eta_s,
        )  # fmt: skip
        if init_weights:
            options["init_weights"] = init_weights
        return _Prepared(estimate, options, dataset.id, dataset.trigger_word)

    @staticmethod
    def _validate(options: dict[str, Any], entry, family: str, init_weights: str | None) -> TrainJob:
        full = {
            **options, "dataset_dir": "dataset", "output_dir": "output", "base_model": entry.source,
            "model_family": family, "base_model_config": entry.config, "init_weights": init_weights,
        }  # fmt: skip
        try:
            job = parse_job(full, TrainJob)
        except JobError as exc:
            raise QueueError("; ".join(exc.problems)) from None
        # options the family does not take, and block counts that depend on it: before any charge
        if problems := refused_options(family, job.changed_options()) or block_problems(job, family):
            raise QueueError("; ".join(problems))
        return job

    @staticmethod
    def default_resolution(dataset, family: str) -> int:
        """The family's resolution, or less when the images were cropped smaller (never upscale them)."""
        side = family_info(family).default_side
        if dataset.crop_mode != "none":
            cropped = int(math.sqrt(dataset.crop_width * dataset.crop_height)) // 64 * 64
            side = max(64, min(side, cropped))
        return side

    async def _insert_and_charge(
        self, owner_id: int, prepared: _Prepared, folder: Path, roles, channel_id: int | None
    ) -> repo.JobRow:
        est = prepared.estimate
        new = repo.NewJob(
            owner_id=owner_id, kind="train", priority=0, title=est.dataset,
            dataset_id=prepared.dataset_id, base_model=est.base_model, family=est.family,
            resolution=est.resolution, batch_size=est.batch_size, total_steps=est.total_steps,
            cost=est.cost, folder=str(folder), channel_id=channel_id,
            spec={"options": prepared.options, "output_name": _file_name(est.dataset),
                  "trigger": prepared.trigger, "epochs": est.epochs, "repeats": est.repeats,
                  "images": est.images},
        )  # fmt: skip
        return await self.enqueue(new, roles, N_("lower epochs, repeats or images"))

    async def enqueue(self, new: repo.NewJob, roles: Iterable[str] | None, cheaper: str) -> repo.JobRow:
        """Insert a job at its owner's tier priority and charge its cost, in one transaction.

        Refused (nothing written) over the member's job limit or balance; ``cheaper`` says how to
        make the job cost less. Subscribers hear "queued" afterwards.
        """
        async with transaction(self.conn):
            user = await self.stamina.ensure_user(new.owner_id, roles)
            tier = self.stamina.tier(self.stamina.effective_tier(user))
            await self._check_room(new.owner_id, tier.max_queued)
            job = await repo.insert_job(
                self.conn, dataclasses.replace(new, priority=tier.priority), self.clock()
            )
            await self._charge(job, cheaper)
        self._publish(job, "queued")
        return job

    async def _check_room(self, owner_id: int, max_queued: int) -> None:
        active = await repo.count_active(self.conn, owner_id)
        if active >= max_queued:
            raise QueueError(
                "you already have {active} of your {limit} jobs queued or running: wait for one to finish "
                "or cancel one in /queue",
                active=active, limit=max_queued,
            )  # fmt: skip

    async def _charge(self, job: repo.JobRow, cheaper: str) -> None:
        if job.cost == 0:
            return
        try:
            await stamina_repo.change_balance(
                self.conn, job.owner_id, -job.cost, "charge", job_id=job.id, note=f"job #{job.id} {job.title}",
                now=self.clock(),
            )  # fmt: skip
        except stamina_repo.Overdraw as exc:
            reset = self.stamina.now()
            raise QueueError(
                "this job costs {cost} stamina and you have {balance}: {cheaper}, or wait for the daily "
                "reset (in {wait})",
                cost=job.cost, balance=exc.balance, cheaper=MemberError(cheaper),
                wait=_until_reset(self.stamina, reset),
            ) from None  # fmt: skip

    async def epoch_file(self, owner_id: int, job_id: int | str, epoch: int | str) -> str:
        """The saved epoch's file, resolved, checked again to be in the job's output folder (ids as
        Discord sent them, or ints)."""
        job = await self.job(owner_id, job_id)
        number = parse_id(epoch)
        for row in await repo.epochs(self.conn, job.id):
            if row.epoch == number:
                real = await asyncio.to_thread(trusted_job_file, job.folder, row.path, ".safetensors")
                if real is not None:
                    return str(real)
        raise no_epoch(job.id, epoch)

    # Jobs ------------------------------------------------------------------------------------------

    async def job(self, user_id: int, job_id: int | str, operator: bool = False) -> repo.JobRow:
        """One job, if the caller may see it (its owner, or an operator); ``job_id`` may be what
        Discord sent ("#12"): see :func:`job_number`."""
        job = await repo.get_job(self.conn, job_number(job_id))
        if job is None or (job.owner_id != user_id and not operator):
            raise no_job(job_id)
        return job

    async def get_job(self, job_id: int) -> repo.JobRow | None:
        """Any job by id, whoever owns it (the progress notifier's read); None when there is none."""
        number = parse_id(job_id)
        return None if number is None else await repo.get_job(self.conn, number)

    async def list_jobs(
        self, owner_id: int | None, *, active: bool = False, kind: str | None = None, limit: int = 100
    ) -> list[repo.JobRow]:
        """Jobs newest first: one member's (or everyone's with None), only active ones if ``active``."""
        states = repo.ACTIVE if active else None
        return await repo.list_jobs(self.conn, owner_id=owner_id, states=states, kind=kind, limit=limit)

    async def epochs(self, job_id: int, *, on_disk: bool = False) -> list[repo.EpochRow]:
        """A job's saved epochs, oldest first; ``on_disk``: only those whose file is still there (in
        the job's own output folder)."""
        rows = await repo.epochs(self.conn, job_id)
        if not on_disk:
            return rows
        job = await repo.get_job(self.conn, job_id)
        return [e for e in rows if job and trusted_job_file(job.folder, e.path, ".safetensors")]

    async def files(self, job_id: int) -> list[tuple[int, str, bool]]:
        """The images a generation job made: (index, path, is the grid)."""
        return await repo.files(self.conn, job_id)

    async def set_progress_message(self, job_id: int, message_id: int) -> None:
        """Remember the job's progress message, so a restarted bot edits the same one."""
        async with transaction(self.conn):
            await repo.update_progress(self.conn, job_id, message_id=message_id)

    async def claim_announcement(self, job_id: int) -> bool:
        """Mark a finished job's end as posted; True only for the one caller that marked it."""
        return await repo.claim_announcement(self.conn, job_id)

    async def refund_preview(self, user_id: int, job_id: int | str, operator: bool = False) -> RefundPreview:
        """What cancelling the job now would give back, computed as :func:`settle` will (nothing is written
        but a due daily reset of the owner, which any balance read applies)."""
        from .refunds import preview

        job = await self.job(user_id, job_id, operator)
        return await preview(self.conn, self.stamina, job)

    async def cancel(self, user_id: int, job_id: int | str, operator: bool = False) -> repo.JobRow:
        """Cancel a job: a waiting one ends now with a full refund; a running one is told to stop
        (the dispatcher stops its trainer and refunds the steps not trained)."""
        job = await self.job(user_id, job_id, operator)
        if job.finished:
            raise QueueError(
                "job #{job} has already ended ({state})", job=job.id, state=MemberError(job.state)
            )
        if job.state == "queued":
            done = job.step if job.kind == "train" else 0  # a job waiting to resume keeps what it trained
            ended = await settle(
                self.conn,
                job.id,
                "cancelled",
                done,
                now=self.clock(),
                from_states=("queued",),
                stamina=self.stamina,
            )
            if ended is not None:
                self._publish(ended, "finished", {"state": "cancelled", "refunded": ended.refunded})
                return ended
        async with transaction(self.conn):
            moved = await repo.transition(self.conn, job.id, ("running",), "cancelling")
        self._changed()
        return moved or await self.job(user_id, job.id, operator)

    async def pause(self, actor_id: int | None) -> None:
        async with transaction(self.conn):
            await repo.set_flag(self.conn, "paused", "1", actor_id)

    async def resume(self, actor_id: int | None) -> None:
        async with transaction(self.conn):
            await repo.set_flag(self.conn, "paused", "0", actor_id)
        self._changed()

    async def paused(self) -> bool:
        return await repo.get_flag(self.conn, "paused") == "1"

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _publish(self, job: repo.JobRow, kind: str, event: dict[str, Any] | None = None) -> None:
        """Tell the subscribers (the Discord layer) and wake the dispatcher."""
        if self.bus is not None:
            from .bus import JobUpdate

            self.bus.publish(JobUpdate(job, kind, event or {}))
        self._changed()


def _file_name(title: str) -> str:
    """The LoRA's file name from a dataset name in any script: accents folded ("été" -> "ete"), other
    letters dropped, "lora" when nothing is left (the trainer takes ASCII names only)."""
    folded = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", folded).strip("._-")[:60] or "lora"


def _until_reset(stamina: StaminaService, now) -> str:
    from .eta import format_duration
    from .stamina import next_reset

    when = next_reset(now, stamina.tz, stamina.settings.reset_hour)
    return format_duration(when.timestamp() - now.timestamp())  # real seconds, across DST too
