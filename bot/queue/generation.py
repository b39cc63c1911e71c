"""/generate requests and the member's LoRA library. Plain values in and out.

A saved LoRA is the member's own copy of an epoch file (``DATA_DIR/library/<owner>/``), so
deleting the job's folder never breaks /generate. A generation job is charged per image at
submission (a compare grid of 3 weights is 3 images) and refunded for images not rendered.
:meth:`GenerationService.compare_epochs` renders saved epochs of a training job x weights into
one grid (rows "epoch N", columns "weight W", one seed) to pick the best epoch.
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db import jobs as jobs_repo
from db import library as repo
from db.database import transaction
from trainer.contract import GenerateJob, JobError, PreviewOptions, parse_job
from trainer.contract.families import family_info, render_options_not_taken

from ..registry import RegistryError
from . import costs
from .service import QueueError, QueueService

_LORA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,39}$")
MAX_COMPARE = 8  # epochs (rows) and weights (columns) of one compare grid


@dataclass(frozen=True)
class GenerateRequest:
    prompt: str
    lora: str | None = None
    weight: float = 1.0
    negative: str = ""
    seed: int | None = None
    steps: int | None = None  # None: the family's default (table)
    cfg: float | None = None
    size: str | None = None
    count: int = 1
    compare_weights: list[float] | None = None
    base_model: str | None = None
    sampler: str | None = None  # None: the job's default (a family may refuse one that is set)


@dataclass(frozen=True)
class GenerateEstimate:
    base_model: str
    family: str
    images: int
    width: int
    height: int
    cost: int


class LibraryService:
    """Save epochs into a member's library; list, find and delete them."""

    def __init__(self, queue: QueueService):
        self.queue = queue
        self.conn = queue.conn

    def folder(self, owner_id: int) -> Path:
        return self.queue.settings.data_dir / "library" / str(owner_id)

    async def save(self, owner_id: int, job_id: int, epoch: int, name: str | None = None) -> repo.LoraRow:
        job = await self.queue.job(owner_id, job_id)
        path = Path(await self.queue.epoch_file(owner_id, job.id, epoch))
        name = (name or f"{job.title}-e{epoch}").strip()
        if not _LORA_NAME.match(name):
            raise QueueError(
                "a LoRA name is 1-40 letters, digits, spaces, '_', '-' or '.', starting with one"
            )
        if await repo.get_lora(self.conn, owner_id, name) is not None:
            raise QueueError(f"you already have a LoRA named '{name}': pick another name")
        target = self.folder(owner_id) / f"{uuid.uuid4().hex}.safetensors"
        await asyncio.to_thread(_copy, path, target)
        try:
            async with transaction(self.conn):
                return await repo.insert_lora(
                    self.conn, owner_id, name, str(target), job.base_model, job.family, job.id, epoch,
                    job.spec.get("trigger", ""),
                )  # fmt: skip
        except sqlite3.IntegrityError:
            target.unlink(missing_ok=True)
            raise QueueError(f"you already have a LoRA named '{name}': pick another name") from None
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    async def list(self, owner_id: int) -> list[repo.LoraRow]:
        return await repo.list_loras(self.conn, owner_id)

    async def get(self, owner_id: int, name: str) -> repo.LoraRow:
        lora = await repo.get_lora(self.conn, owner_id, name.strip())
        if lora is None:
            raise QueueError(f"you have no LoRA named '{name}' (save one from /epochs)")
        return lora

    async def delete(self, owner_id: int, name: str) -> None:
        lora = await self.get(owner_id, name)
        async with transaction(self.conn):
            await repo.delete_lora(self.conn, lora.id)
        Path(lora.path).unlink(missing_ok=True)


class GenerationService:
    """Estimate and queue /generate jobs (they run on the dispatcher's generation lane)."""

    def __init__(self, queue: QueueService, library: LibraryService):
        self.queue = queue
        self.library = library

    async def estimate(self, owner_id: int, request: GenerateRequest) -> GenerateEstimate:
        estimate, _ = await self._prepare(owner_id, request)
        return estimate

    async def submit(
        self,
        owner_id: int,
        request: GenerateRequest,
        *,
        roles: Iterable[str] | None = None,
        channel_id: int | None = None,
        expected_cost: int | None = None,
    ) -> jobs_repo.JobRow:
        estimate, options = await self._prepare(owner_id, request)
        return await self._enqueue(
            owner_id, estimate, options, request.prompt[:80], roles, channel_id, expected_cost
        )

    async def estimate_compare(
        self, owner_id: int, job_id: int, epochs: list[int], weights: list[float], *,
        prompt: str | None = None, negative: str | None = None, seed: int | None = None, steps: int | None = None,
    ) -> GenerateEstimate:  # fmt: skip
        """Images and cost of :meth:`compare_epochs` (same arguments), without queueing it."""
        estimate, _, _ = await self._prepare_compare(
            owner_id, job_id, epochs, weights, prompt=prompt, negative=negative, seed=seed, steps=steps
        )
        return estimate

    async def compare_epochs(
        self,
        owner_id: int,
        job_id: int,
        epochs: list[int],
        weights: list[float],
        *,
        prompt: str | None = None,
        negative: str | None = None,
        seed: int | None = None,
        steps: int | None = None,
        roles: Iterable[str] | None = None,
        channel_id: int | None = None,
        expected_cost: int | None = None,
    ) -> jobs_repo.JobRow:
        """Queue one grid of saved epochs (rows) x LoRA weights (columns) of one of the member's
        training jobs, all with one seed; prompt, negative, steps, seed, cfg, sampler and size
        default to the job's preview settings (the prompt to its trigger word when it had none)."""
        estimate, options, title = await self._prepare_compare(
            owner_id, job_id, epochs, weights, prompt=prompt, negative=negative, seed=seed, steps=steps
        )
        return await self._enqueue(owner_id, estimate, options, title, roles, channel_id, expected_cost)

    async def _enqueue(
        self, owner_id: int, estimate: GenerateEstimate, options: dict[str, Any], title: str,
        roles: Iterable[str] | None, channel_id: int | None, expected_cost: int | None,
    ) -> jobs_repo.JobRow:  # fmt: skip
        if expected_cost is not None and expected_cost != estimate.cost:
            raise QueueError(f"the cost changed from {expected_cost} to {estimate.cost}: confirm again")
        new = jobs_repo.NewJob(
            owner_id=owner_id, kind="generate", priority=0, title=title, dataset_id=None,
            base_model=estimate.base_model, family=estimate.family, resolution=max(estimate.width, estimate.height),
            batch_size=1, total_steps=estimate.images, cost=estimate.cost, spec={"options": options},
            folder=str(self.queue.settings.jobs_dir() / uuid.uuid4().hex), channel_id=channel_id,
        )  # fmt: skip
        return await self.queue.enqueue(new, roles, "render fewer or smaller images")

    async def _prepare_compare(
        self, owner_id: int, job_id: int, epochs: list[int], weights: list[float], *,
        prompt: str | None = None, negative: str | None = None, seed: int | None = None, steps: int | None = None,
    ) -> tuple[GenerateEstimate, dict[str, Any], str]:  # fmt: skip
        job = await self.queue.job(owner_id, job_id)  # another member's job is "not found"
        job_id = job.id
        if job.kind != "train":
            raise QueueError(f"job #{job_id} is not a training job: compare the epochs of a /train job")
        epochs, weights = _compare_axes(epochs, weights)
        rows = [
            {"path": await self.queue.epoch_file(owner_id, job_id, e), "label": f"epoch {e}"} for e in epochs
        ]
        family, source = self._model(job.base_model)
        options = {
            **_preview_defaults(job, prompt, negative, seed, steps, family), "loras": [], "count": 1,
            "compare_weights": weights, "compare_loras": rows,
        }  # fmt: skip
        estimate, options = self._priced(job.base_model, family, source, options, len(epochs) * len(weights))
        columns = "/".join(f"{w:g}" for w in weights)
        return estimate, options, f"compare #{job_id} epochs {','.join(map(str, epochs))} x {columns}"[:80]

    async def _prepare(
        self, owner_id: int, request: GenerateRequest
    ) -> tuple[GenerateEstimate, dict[str, Any]]:
        loras = []
        base_model = request.base_model
        if request.lora:
            lora = await self.library.get(owner_id, request.lora)
            loras.append({"path": lora.path, "weight": request.weight})
            if base_model is not None and base_model != lora.base_model:
                raise QueueError(f"LoRA '{lora.name}' was trained on {lora.base_model}, not {base_model}")
            base_model = lora.base_model
        if base_model is None:
            raise QueueError("name a LoRA from your library, or a base model")
        family, source = self._model(base_model)
        width, height = self._size(request.size, family)
        options = {
            "prompt": request.prompt, "negative": request.negative, "loras": loras,
            "compare_weights": request.compare_weights, "steps": request.steps, "cfg": request.cfg,
            "width": width, "height": height, "count": request.count,
            "seed": request.seed if request.seed is not None else random.SystemRandom().randrange(2**32),
        }  # fmt: skip
        if request.sampler is not None:
            options["sampler"] = request.sampler
        images = request.count * (len(request.compare_weights) if request.compare_weights else 1)
        return self._priced(base_model, family, source, options, images)

    def _model(self, base_model: str) -> tuple[str, str]:
        """(family, source) of a registry key; QueueError when it cannot be used."""
        try:
            entry = self.queue.registry.get(base_model)
            return self.queue.registry.family(base_model), entry.source
        except (RegistryError, ValueError, RuntimeError) as exc:
            raise QueueError(str(exc)) from None

    def _priced(
        self, base_model: str, family: str, source: str, options: dict[str, Any], images: int
    ) -> tuple[GenerateEstimate, dict[str, Any]]:
        """Validate the job options as the trainer will and price ``images`` pictures; options the
        family renders without (Flux: a negative prompt, a sampler) are refused here, before any
        charge (GenerateJob's rules call ``refused_render_options`` for the family)."""
        try:
            parse_job(
                {**options, "output_dir": "out", "base_model": source, "model_family": family}, GenerateJob
            )
        except JobError as exc:
            raise QueueError("; ".join(exc.problems)) from None
        width, height = options["width"], options["height"]
        settings = self.queue.settings
        cost = costs.generation_cost(
            images,
            width,
            height,
            family,
            {family: settings.image_cost(family)},
        )
        return GenerateEstimate(base_model, family, images, width, height, cost), options

    @staticmethod
    def _size(text: str | None, family: str) -> tuple[int, int]:
        if text is None:
            side = family_info(family).default_side
            return side, side
        match = re.fullmatch(r"\s*(\d{2,4})\s*(?:[x×*]\s*(\d{2,4}))?\s*", text)
        if match is None:
            raise QueueError(f"size '{text}' is not WIDTHxHEIGHT or one number (e.g. 512x768 or 1024)")
        width = int(match.group(1))
        height = int(match.group(2) or width)
        if width % 8 or height % 8 or not (64 <= width <= 2048 and 64 <= height <= 2048):
            raise QueueError("the size must be 64-2048 pixels a side, in multiples of 8 (e.g. 512x768)")
        return width, height


def _preview_defaults(
    job: jobs_repo.JobRow, prompt: str | None, negative: str | None, seed: int | None, steps: int | None,
    family: str,
) -> dict[str, Any]:  # fmt: skip
    """Render options from a training job's preview settings (the trainer's defaults where it set
    none; the prompt falls back to the trigger word), overridden by the given values. Settings the
    family renders without (Flux: the default preview negative) are not carried over; a negative
    the member gives is kept, to be refused."""
    trained = job.spec.get("options", {})
    preview = PreviewOptions.model_validate(
        {k: v for k, v in trained.items() if k in PreviewOptions.model_fields}
    )
    size = preview.preview_size or job.resolution
    options = {
        "prompt": _first(prompt or None, preview.preview_prompt, job.spec.get("trigger") or None, job.title),
        "negative": _first(negative, preview.preview_negative), "steps": _first(steps, preview.preview_steps),
        "seed": _first(seed, preview.preview_seed, trained.get("seed"), random.SystemRandom().randrange(2**32)),
        "cfg": preview.preview_cfg, "sampler": preview.preview_sampler, "width": size, "height": size,
        "clip_skip": trained.get("clip_skip"),
    }  # fmt: skip
    given = {"negative"} if negative is not None else set()
    return {k: v for k, v in options.items() if k not in render_options_not_taken(family) - given}


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _compare_axes(epochs: list[int], weights: list[float]) -> tuple[list[int], list[float]]:
    """The grid's rows (distinct epochs, in order) and columns (weights as given), checked."""
    epochs = sorted(set(epochs))
    if not 1 <= len(epochs) <= MAX_COMPARE:
        raise QueueError(f"pick 1 to {MAX_COMPARE} saved epochs to compare (got {len(epochs)})")
    if not 1 <= len(weights) <= MAX_COMPARE:
        raise QueueError(
            f"pick 1 to {MAX_COMPARE} weights to compare (got {len(weights)}), e.g. 0.6, 0.8, 1.0"
        )
    bad = [w for w in weights if not -2.0 <= w <= 2.0]
    if bad:
        raise QueueError(f"a LoRA weight goes from -2 to 2 (got {bad[0]:g}): e.g. 0.6, 0.8, 1.0")
    return epochs, [float(w) for w in weights]


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
