"""/generate requests: up to three LoRAs (the member's own or shared ones, see
:mod:`bot.queue.library`) at a weight each, a sampler, and the rest. Plain values in and out.

A generation job is charged per image at submission (a compare grid of 3 weights is 3 images) and
refunded for images not rendered. Its LoRA files are hard-linked into the job's own folder when it
is queued, so their owner renaming, unsharing or deleting one never breaks a render in the queue.
:meth:`GenerationService.compare_epochs` renders saved epochs of a training job x weights into
one grid (rows "epoch N", columns "weight W", one seed) to pick the best epoch.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db import jobs as jobs_repo
from db.library import LoraRow
from trainer.contract import GenerateJob, JobError, PreviewOptions, parse_job
from trainer.contract.families import (
    family_info,
    family_label,
    refused_render_options,
    render_options_not_taken,
)

from ..i18n import messages
from ..registry import RegistryError
from . import costs
from .common import grid_labels
from .library import LibraryService
from .service import QueueError, QueueService

__all__ = ["MAX_LORAS", "GenerateEstimate", "GenerateRequest", "GenerationService", "LibraryService"]

MAX_COMPARE = 8  # epochs (rows) and weights (columns) of one compare grid
MAX_LORAS = 3  # LoRAs applied together in one /generate
MAX_WEIGHT = 2.0  # a LoRA's weight goes from -MAX_WEIGHT to MAX_WEIGHT (the trainer's range)


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
    loras: tuple[tuple[str, float], ...] = ()  # more (reference, weight) pairs, after ``lora``
    locale: str | None = None  # the member's Discord locale: the grid's words are in its language

    def picks(self) -> list[tuple[str, float]]:
        """Every LoRA asked for, as (reference, weight): ``lora`` first, then ``loras``."""
        first = [(self.lora, self.weight)] if self.lora else []
        return first + [(name, weight) for name, weight in self.loras]


@dataclass(frozen=True)
class GenerateEstimate:
    base_model: str
    family: str
    images: int
    width: int
    height: int
    cost: int


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
        folder = self._new_folder()
        try:
            options["loras"] = await asyncio.to_thread(_snapshot, folder, options["loras"])
            return await self._enqueue(
                owner_id, estimate, options, request.prompt[:80], roles, channel_id, expected_cost, folder
            )
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise

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
        locale: str | None = None,
    ) -> jobs_repo.JobRow:
        """Queue one grid of saved epochs (rows) x LoRA weights (columns) of one of the member's
        training jobs, all with one seed; prompt, negative, steps, seed, cfg, sampler and size
        default to the job's preview settings (the prompt to its trigger word when it had none).
        ``locale``: the member's, whose language the grid's labels are in."""
        estimate, options, title = await self._prepare_compare(
            owner_id, job_id, epochs, weights, prompt=prompt, negative=negative, seed=seed, steps=steps,
            locale=locale,
        )  # fmt: skip
        return await self._enqueue(
            owner_id, estimate, options, title, roles, channel_id, expected_cost, self._new_folder()
        )

    def _new_folder(self) -> Path:
        return self.queue.settings.jobs_dir() / uuid.uuid4().hex

    async def _enqueue(
        self, owner_id: int, estimate: GenerateEstimate, options: dict[str, Any], title: str,
        roles: Iterable[str] | None, channel_id: int | None, expected_cost: int | None, folder: Path,
    ) -> jobs_repo.JobRow:  # fmt: skip
        if expected_cost is not None and expected_cost != estimate.cost:
            raise QueueError(
                "the cost changed from {old} to {new}: confirm again", old=expected_cost, new=estimate.cost
            )
        new = jobs_repo.NewJob(
            owner_id=owner_id, kind="generate", priority=0, title=title, dataset_id=None,
            base_model=estimate.base_model, family=estimate.family, resolution=max(estimate.width, estimate.height),
            batch_size=1, total_steps=estimate.images, cost=estimate.cost, spec={"options": options},
            folder=str(folder), channel_id=channel_id,
        )  # fmt: skip
        return await self.queue.enqueue(new, roles, "render fewer or smaller images")

    async def _prepare_compare(
        self, owner_id: int, job_id: int, epochs: list[int], weights: list[float], *,
        prompt: str | None = None, negative: str | None = None, seed: int | None = None, steps: int | None = None,
        locale: str | None = None,
    ) -> tuple[GenerateEstimate, dict[str, Any], str]:  # fmt: skip
        job = await self.queue.job(owner_id, job_id)  # another member's job is "not found"
        job_id = job.id
        if job.kind != "train":
            raise QueueError(
                "job #{job} is not a training job: compare the epochs of a /train job", job=job_id
            )
        epochs, weights = _compare_axes(epochs, weights)
        rows = [
            {"path": await self.queue.epoch_file(owner_id, job_id, e), "label": f"epoch {e}"} for e in epochs
        ]
        family, source = self._model(job.base_model)
        options = {
            **_preview_defaults(job, prompt, negative, seed, steps, family), "loras": [], "count": 1,
            "compare_weights": weights, "compare_loras": rows, **grid_labels(locale, epochs),
        }  # fmt: skip
        estimate, options = self._priced(job.base_model, family, source, options, len(epochs) * len(weights))
        return estimate, options, compare_title(locale, job_id, epochs, weights)

    async def _prepare(
        self, owner_id: int, request: GenerateRequest
    ) -> tuple[GenerateEstimate, dict[str, Any]]:
        loras = await self._loras(owner_id, request.picks())
        base_model = request.base_model or (loras[0][0].base_model if loras else None)
        if base_model is None:
            raise QueueError("name a LoRA (one of yours or one shared with the server), or a base model")
        family, source = self._model(base_model)
        for lora, _ in loras:
            if lora.family != family:
                raise QueueError(
                    "LoRA '{name}' was trained on {trained} ({trained_family}): it does not fit {model} ({family})",
                    name=lora.name, trained=lora.base_model, trained_family=family_label(lora.family),
                    model=base_model, family=family_label(family),
                )  # fmt: skip
        width, height = self._size(request.size, family)
        options = {
            "prompt": request.prompt, "negative": request.negative,
            "loras": [{"path": lora.path, "weight": weight} for lora, weight in loras],
            "compare_weights": request.compare_weights, "steps": request.steps, "cfg": request.cfg,
            "width": width, "height": height, "count": request.count,
            "seed": request.seed if request.seed is not None else random.SystemRandom().randrange(2**32),
        }  # fmt: skip
        if request.compare_weights or request.count > 1:  # a grid: its labels in the member's language
            options.update(grid_labels(request.locale))
        if request.sampler is not None:  # named, even as the default: a family renders with its own
            refused = refused_render_options(family, {"sampler": request.sampler})
            if refused:
                raise QueueError("; ".join(refused))
            options["sampler"] = request.sampler
        images = request.count * (len(request.compare_weights) if request.compare_weights else 1)
        return self._priced(base_model, family, source, options, images)

    async def _loras(self, owner_id: int, picks: list[tuple[str, float]]) -> list[tuple[LoraRow, float]]:
        """The LoRAs picked (the member's own or shared ones) with their weights, checked."""
        if len(picks) > MAX_LORAS:
            raise QueueError(
                "at most {most} LoRAs go together (got {got}): leave some out", most=MAX_LORAS, got=len(picks)
            )
        for name, weight in picks:
            if not -MAX_WEIGHT <= weight <= MAX_WEIGHT:
                raise QueueError(
                    "the weight of '{name}' is {weight}: a LoRA weight goes from {low} to {high} "
                    "(1 is full strength, e.g. 0.8)",
                    name=name, weight=f"{weight:g}", low=f"{-MAX_WEIGHT:g}", high=f"{MAX_WEIGHT:g}",
                )  # fmt: skip
        found = [(await self.library.find(owner_id, name), float(weight)) for name, weight in picks]
        seen: set[int] = set()
        for lora, _ in found:
            if lora.id in seen:
                raise QueueError(
                    "'{name}' is picked twice: pick each LoRA once (its weight sets how much)", name=lora.name
                )
            seen.add(lora.id)
        return found

    def _model(self, base_model: str) -> tuple[str, str]:
        """(family, source) of a registry key; QueueError when it cannot be used."""
        try:
            entry = self.queue.registry.get(base_model)
            return self.queue.registry.family(base_model), entry.source
        except RegistryError as exc:  # its message and values, translated where it is said
            raise QueueError(exc.msgid, **exc.values) from None
        except (ValueError, RuntimeError) as exc:
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
            raise QueueError(
                "size '{text}' is not WIDTHxHEIGHT or one number (e.g. 512x768 or 1024)", text=text
            )
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


def compare_title(locale: str | None, job_id: int, epochs: list[int], weights: list[float]) -> str:
    """An epoch compare job's title (/queue lists it) in the member's language: "compare #12 epochs
    1,2 x 0.6/0.8/1", 80 characters at most."""
    t = messages(locale)
    columns = "/".join(f"{w:g}" for w in weights)
    epochs_text = ",".join(map(str, epochs))
    return t("compare #{job} epochs {epochs} x {weights}", job=job_id, epochs=epochs_text, weights=columns)[
        :80
    ]


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _compare_axes(epochs: list[int], weights: list[float]) -> tuple[list[int], list[float]]:
    """The grid's rows (distinct epochs, in order) and columns (weights as given), checked."""
    epochs = sorted(set(epochs))
    if not 1 <= len(epochs) <= MAX_COMPARE:
        raise QueueError(
            "pick 1 to {most} saved epochs to compare (got {got})", most=MAX_COMPARE, got=len(epochs)
        )
    if not 1 <= len(weights) <= MAX_COMPARE:
        raise QueueError(
            "pick 1 to {most} weights to compare (got {got}), e.g. 0.6, 0.8, 1.0",
            most=MAX_COMPARE,
            got=len(weights),
        )
    bad = [w for w in weights if not -2.0 <= w <= 2.0]
    if bad:
        raise QueueError("a LoRA weight goes from -2 to 2 (got {got}): e.g. 0.6, 0.8, 1.0", got=f"{bad[0]:g}")
    return epochs, [float(w) for w in weights]


def _snapshot(folder: Path, loras: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The job's LoRAs as hard links in its own folder (``loras/loraN.safetensors``): the owner
    deleting one (a shared LoRA, say) after this does not break the render. Where no link can be
    made (another file system), the job uses the library's file."""
    out = []
    for i, ref in enumerate(loras):
        target = folder / "loras" / f"lora{i}.safetensors"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(ref["path"], target)
        except OSError:
            out.append(ref)
            continue
        out.append({**ref, "path": str(target)})
    return out
