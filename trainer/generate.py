"""``python -m trainer generate``: render a prompt with a base model and LoRA files.

LoRA files are loaded with diffusers' ``load_lora_weights`` (the same path any user
of the files takes) and weighted with ``set_adapters``. With ``compare_weights`` the
first LoRA is rendered at each weight, same seeds, into one labelled grid. With
``compare_loras`` too (compare epochs), each row is one of those LoRAs, loaded as its own
adapter and the only compared one active in its row, at each weight, all with one seed;
the job's ``loras`` apply in every cell at their weights.

The work is split in two so ``python -m trainer serve`` can keep a model loaded:
:func:`load_for_job` loads and places a base model's pipeline, :func:`render_job`
renders one job on it (loading the job's LoRAs and removing them again afterwards).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from . import delivered, fonts, render
from .contract import EXIT_CANCELLED, EXIT_OK, GenerateJob, JobError, ModelSource, default_clip_skip
from .contract.families import family_info, refused_render_options
from .contract.labels import GridLabels
from .errors import TrainerError
from .events import EventWriter, StopFlag
from .families import get_family
from .models import (
    BaseModel,
    base_model_from_pipeline,
    load_pipeline,
    pick_device,
    place,
    resolved_precision,
    weight_dtype,
)
from .text import check_clip_skip

log = logging.getLogger(__name__)


class GenerateError(TrainerError, RuntimeError):
    pass


class Emitter(Protocol):
    """Anything that writes contract events (an :class:`EventWriter` or a wrapper of one)."""

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]: ...


PipelineKey = tuple[str, str, str, str, str]


@dataclass
class LoadedPipeline:
    """A base model's diffusers pipeline, placed on its device, ready for any number of jobs."""

    key: PipelineKey
    pipe: Any
    model: BaseModel
    device: torch.device
    dtype: torch.dtype

    @property
    def family(self) -> str:
        return self.model.family


def pipeline_key(job: ModelSource) -> PipelineKey:
    """What identifies a loaded pipeline: base model, family, config, device and precision."""
    device = pick_device(job.device)
    return (
        job.base_model,
        job.model_family or "",
        job.base_model_config or "",
        str(device),
        resolved_precision(job.mixed_precision, device),
    )


def load_for_job(job: ModelSource) -> LoadedPipeline:
    """Load the job's base model and move it to its device in its precision."""
    device = pick_device(job.device)
    pipe, family = load_pipeline(job.base_model, job.model_family, job.base_model_config)
    dtype = weight_dtype(job.mixed_precision or family_info(family).default_precision, device)
    model = base_model_from_pipeline(pipe, family, job.base_model)
    place(model, device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return LoadedPipeline(pipeline_key(job), pipe, model, device, dtype)


def load_loras(pipe, job: GenerateJob, model) -> list[str]:
    """Load the job's LoRA files as adapters lora0, lora1, ...; returns their names."""
    return [_load_lora(pipe, ref.path, f"lora{i}", model) for i, ref in enumerate(job.loras)]


def load_compared(pipe, job: GenerateJob, model) -> list[str]:
    """Load the compare grid's row LoRAs as adapters cmp0, cmp1, ...; returns their names."""
    return [_load_lora(pipe, row.path, f"cmp{i}", model) for i, row in enumerate(job.compare_loras or [])]


def _load_lora(pipe, path: str, name: str, model) -> str:
    if not Path(path).is_file():
        raise GenerateError(f"LoRA file {path} does not exist")
    from safetensors.torch import load_file

    try:
        state = load_file(path)
    except Exception as exc:  # safetensors' own error type, OSError, ...
        raise GenerateError(f"{Path(path).name} is not a readable .safetensors LoRA: {exc}") from exc
    try:
        pipe.load_lora_weights(get_family(model.family).lora_for_diffusers(state, model), adapter_name=name)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise GenerateError(f"{Path(path).name} does not fit this base model: {exc}") from exc
    return name


def unload_loras(pipe) -> None:
    """Remove every LoRA layer from the pipeline's models (the base weights stay untouched)."""
    pipe.unload_lora_weights()


def has_lora_layers(pipe) -> bool:
    """Whether any LoRA (PEFT) layer is still in the pipeline's denoiser (UNet or transformer) or
    text encoders."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    parts = [getattr(pipe, n, None) for n in ("unet", "transformer", "text_encoder", "text_encoder_2")]
    return any(isinstance(m, BaseTunerLayer) for part in parts if part is not None for m in part.modules())


def run_generate(job: GenerateJob, events: EventWriter, stop: StopFlag) -> int:
    """The one-shot command: load the base model, render the job, return the exit code."""
    return render_job(load_for_job(job), job, events, stop)


def render_job(loaded: LoadedPipeline, job: GenerateJob, events: Emitter, stop: StopFlag) -> int:
    """Render a job on an already loaded pipeline; emits started, image_ready..., done | cancelled.

    The job's LoRAs are loaded first and always removed before returning, and the
    sampler is made afresh, so nothing of this job stays on the pipeline. Options the model's
    family renders without (Flux: a negative prompt, a sampler) fail the job with a
    :class:`JobError` first; a job naming its family was refused so when it was read.
    """
    if problems := refused_render_options(loaded.family, job.changed_options()):
        raise JobError(problems)
    pipe = loaded.pipe
    try:
        names = load_loras(pipe, job, loaded.model)
        rows = load_compared(pipe, job, loaded.model)
        return _render_images(loaded, job, names, rows, events, stop)
    finally:
        if job.loras or job.compare_loras:
            try:
                unload_loras(pipe)
            except Exception:  # the server sees the leftovers (has_lora_layers) and reloads
                log.exception("could not remove the LoRAs")


def _render_images(
    loaded: LoadedPipeline,
    job: GenerateJob,
    names: list[str],
    rows: list[str],
    events: Emitter,
    stop: StopFlag,
) -> int:
    pipe, model, family = loaded.pipe, loaded.model, loaded.family
    pipe.scheduler = get_family(family).make_scheduler(job.sampler, model.scheduler_config)
    clip_skip = job.clip_skip if job.clip_skip is not None else default_clip_skip(family)
    check_clip_skip(clip_skip, family, model.text_encoders)
    width, height = job.resolved_size(family)
    seed = job.seed if job.seed is not None else random.SystemRandom().randrange(2**32)
    plan = _plan(job, names, rows, seed)
    out = Path(job.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = sum(len(cells) for cells in plan)
    events.emit("started", total_steps=total, total_epochs=0, seed=seed, family=family, images=total)
    grid_rows: list[list] = []
    files: list[str] = []
    for cells in plan:
        grid_rows.append([])
        for cell in cells:
            if stop.requested:
                events.emit("cancelled", step=len(files), files=files)
                return EXIT_CANCELLED
            if cell.adapters:
                pipe.set_adapters(cell.adapters, adapter_weights=cell.weights)
            image = _render_one(loaded, job, cell.seed, clip_skip, (width, height))
            path = out / f"{job.output_name}{cell.suffix}.png"
            delivered.save_image(image, path)
            files.append(str(path))
            grid_rows[-1].append(image)
            events.emit("image_ready", index=len(files) - 1, path=str(path), **cell.info)
    if job.compare_weights or job.count > 1:
        files.append(str(_save_grid(job, grid_rows, seed, out)))
        events.emit("image_ready", index=len(files) - 1, path=files[-1], grid=True)
    if loaded.device.type == "cuda":  # give sampling buffers back to a training job on the same GPU
        torch.cuda.empty_cache()  # (no gc.collect: a full collection costs a warm request ~0.25 s)
    events.emit("done", files=files, seed=seed)
    return EXIT_OK


@dataclass(frozen=True)
class _Cell:
    """One image: the adapters active for it at their weights, its seed, file suffix and event fields."""

    adapters: list[str]
    weights: list[float]
    seed: int
    suffix: str
    info: dict[str, Any]


def _plan(job: GenerateJob, names: list[str], rows: list[str], seed: int) -> list[list[_Cell]]:
    """The images row by row: seeds x weights, or (compare_loras) row LoRAs x weights with one seed.

    Only the row's compared adapter is active in its row (the others are not computed at all),
    ahead of the job's ``loras``, so a row renders as a compare_weights job with that LoRA first.
    """
    base = [ref.weight for ref in job.loras]
    if rows:
        labels = [row.label for row in job.compare_loras or []]
        return [
            [_Cell([row, *names], [w, *base], seed, f"-r{r:02d}-w{w:g}",
                   {"seed": seed, "weights": [w, *base], "label": labels[r], "row": r})
             for w in job.compare_weights or []]
            for r, row in enumerate(rows)
        ]  # fmt: skip
    return [
        [_Cell(names, weights, seed + n, f"-{n:02d}{f'-w{weights[0]:g}' if job.compare_weights else ''}",
               {"seed": seed + n, "weights": weights})
         for weights in _weight_sets(job)]
        for n in range(job.count)
    ]  # fmt: skip


def _render_one(
    loaded: LoadedPipeline, job: GenerateJob, seed: int, clip_skip: int, size: tuple[int, int]
) -> Image.Image:
    return render.render(
        loaded.pipe,
        loaded.model,
        job.prompt,
        job.negative,
        steps=job.resolved_steps(loaded.family),
        cfg=job.resolved_cfg(loaded.family),
        width=size[0],
        height=size[1],
        seed=seed,
        clip_skip=clip_skip,
        device=loaded.device,
        dtype=loaded.dtype,
    )


def _weight_sets(job: GenerateJob) -> list[list[float]]:
    base = [ref.weight for ref in job.loras]
    if not job.compare_weights:
        return [base]
    return [[w, *base[1:]] for w in job.compare_weights]


def _save_grid(job: GenerateJob, rows: list[list], seed: int, out: Path) -> Path:
    cols, row_labels = grid_labels(job, seed, len(rows))
    title = job.grid_title or job.prompt[:80]
    if job.compare_weights:
        grid = render.make_grid(rows, cols, row_labels, title=title)
    else:
        grid = render.make_grid([[r[0] for r in rows]], cols, title=title)
    path = out / f"{job.output_name}-grid.png"
    delivered.save_image(grid, path)
    return path


def grid_labels(job: GenerateJob, seed: int, count: int) -> tuple[list[str], list[str] | None]:
    """The grid's column and row labels (None: no row labels) in the job's ``grid_labels`` words,
    or in English when no font here draws those (:func:`fonts.drawn_words`)."""

    def flat(words: GridLabels) -> list[str]:
        cols, rows = _grid_labels(job, words, seed, count)
        return [*cols, *(rows or [])]

    return _grid_labels(job, fonts.drawn_words(job.grid_labels, flat), seed, count)


def _grid_labels(
    job: GenerateJob, words: GridLabels, seed: int, count: int
) -> tuple[list[str], list[str] | None]:
    seeds = [words.seed.format(seed=seed + n) for n in range(count)]
    if not job.compare_weights:
        return seeds, None
    cols = [render.weight_label(w, words.weight) for w in job.compare_weights]
    if job.compare_loras:
        return cols, words.rows or [row.label for row in job.compare_loras]
    return cols, seeds if count > 1 else None
