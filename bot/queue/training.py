"""Training jobs from a dataset: the estimate (steps, cost, ETA) and the submission that snapshots
the dataset, checks the options against the contract and the family, and hands the job to
:meth:`QueueService.enqueue <bot.queue.service.QueueService.enqueue>` (one transaction with the
charge). The estimate and the charge come from the same function on the same snapshot.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import shutil
import unicodedata
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from db import jobs as repo
from trainer.contract import JobError, TrainJob, parse_job, total_steps
from trainer.contract.blocks import block_problems
from trainer.contract.families import family_info, refused_options

from ..i18n import N_
from ..registry import RegistryError
from . import costs
from .common import BOT_KEYS, QueueError, grid_labels
from .eta import Shape, eta_seconds

if TYPE_CHECKING:
    from ..datasets.service import DatasetService
    from ..registry import ModelRegistry
    from ..settings import Settings
    from .stamina import StaminaService


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


class TrainingSubmissions:
    """The training half of :class:`~bot.queue.service.QueueService` (which provides ``enqueue``,
    ``epoch_file`` and the services below)."""

    settings: Settings
    registry: ModelRegistry
    datasets: DatasetService
    stamina: StaminaService

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
        locale: str | None = None,
    ) -> repo.JobRow:
        """Queue a training job: snapshot the dataset, debit the cost and insert the job together.

        ``init_from`` = (job id, epoch) starts from that saved epoch of one of the member's jobs
        ("train further"); ``locale``: the member's, whose language its preview grids' words are in.
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
            labels = grid_labels(locale, preview=True)
            return await self._insert_and_charge(owner_id, prepared, folder, roles, channel_id, labels)
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
        self, owner_id: int, prepared: _Prepared, folder: Path, roles, channel_id: int | None,
        labels: dict[str, Any],
    ) -> repo.JobRow:  # fmt: skip
        """``labels``: the preview grids' ``grid_labels`` (none in English), kept beside the
        member's options (the bot sets them, a member cannot)."""
        est = prepared.estimate
        new = repo.NewJob(
            owner_id=owner_id, kind="train", priority=0, title=est.dataset,
            dataset_id=prepared.dataset_id, base_model=est.base_model, family=est.family,
            resolution=est.resolution, batch_size=est.batch_size, total_steps=est.total_steps,
            cost=est.cost, folder=str(folder), channel_id=channel_id,
            spec={"options": prepared.options, "output_name": _file_name(est.dataset),
                  "trigger": prepared.trigger, "epochs": est.epochs, "repeats": est.repeats,
                  "images": est.images, **labels},
        )  # fmt: skip
        return await self.enqueue(new, roles, N_("lower epochs, repeats or images"))


def _file_name(title: str) -> str:
    """The LoRA's file name from a dataset name in any script: accents folded ("été" -> "ete"), other
    letters dropped, "lora" when nothing is left (the trainer takes ASCII names only)."""
    folded = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", folded).strip("._-")[:60] or "lora"
