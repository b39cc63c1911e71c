"""``python -m trainer generate``: render a prompt with a base model and LoRA files.

LoRA files are loaded with diffusers' ``load_lora_weights`` (the same path any user
of the files takes) and weighted with ``set_adapters``. With ``compare_weights`` the
first LoRA is rendered at each weight, same seeds, into one labelled grid.

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

from . import render
from .contract import EXIT_CANCELLED, EXIT_OK, GenerateJob, ModelSource, default_clip_skip
from .events import EventWriter, StopFlag
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


class GenerateError(RuntimeError):
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
    dtype = weight_dtype(job.mixed_precision, device)
    pipe, family = load_pipeline(job.base_model, job.model_family, job.base_model_config)
    model = base_model_from_pipeline(pipe, family, job.base_model)
    place(model, device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return LoadedPipeline(pipeline_key(job), pipe, model, device, dtype)


def load_loras(pipe, job: GenerateJob) -> list[str]:
    """Load the job's LoRA files as adapters lora0, lora1, ...; returns their names."""
    names = []
    for i, ref in enumerate(job.loras):
        if not Path(ref.path).is_file():
            raise GenerateError(f"LoRA file {ref.path} does not exist")
        name = f"lora{i}"
        try:
            pipe.load_lora_weights(ref.path, adapter_name=name)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise GenerateError(f"{Path(ref.path).name} does not fit this base model: {exc}") from exc
        names.append(name)
    return names


def unload_loras(pipe) -> None:
    """Remove every LoRA layer from the pipeline's models (the base weights stay untouched)."""
    pipe.unload_lora_weights()


def has_lora_layers(pipe) -> bool:
    """Whether any LoRA (PEFT) layer is still in the pipeline's UNet or text encoders."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    parts = [getattr(pipe, n, None) for n in ("unet", "text_encoder", "text_encoder_2")]
    return any(isinstance(m, BaseTunerLayer) for part in parts if part is not None for m in part.modules())


def run_generate(job: GenerateJob, events: EventWriter, stop: StopFlag) -> int:
    """The one-shot command: load the base model, render the job, return the exit code."""
    return render_job(load_for_job(job), job, events, stop)


def render_job(loaded: LoadedPipeline, job: GenerateJob, events: Emitter, stop: StopFlag) -> int:
    """Render a job on an already loaded pipeline; emits started, image_ready..., done | cancelled.

    The job's LoRAs are loaded first and always removed before returning, and the
    sampler is made afresh, so nothing of this job stays on the pipeline.
    """
    pipe = loaded.pipe
    try:
        names = load_loras(pipe, job)
        return _render_images(loaded, job, names, events, stop)
    finally:
        if job.loras:
            try:
                unload_loras(pipe)
            except Exception:  # the server sees the leftovers (has_lora_layers) and reloads
                log.exception("could not remove the LoRAs")


def _render_images(
    loaded: LoadedPipeline, job: GenerateJob, names: list[str], events: Emitter, stop: StopFlag
) -> int:
    pipe, model, family = loaded.pipe, loaded.model, loaded.family
    pipe.scheduler = render.make_sampler(job.sampler, model.scheduler_config)
    clip_skip = job.clip_skip if job.clip_skip is not None else default_clip_skip(family)
    check_clip_skip(clip_skip, family, model.text_encoders)
    width, height = job.resolved_size(family)
    seed = job.seed if job.seed is not None else random.SystemRandom().randrange(2**32)
    weights_sets = _weight_sets(job)
    out = Path(job.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = len(weights_sets) * job.count
    events.emit("started", total_steps=total, total_epochs=0, seed=seed, family=family, images=total)
    rows: list[list] = []
    files: list[str] = []
    for n in range(job.count):
        row = []
        for weights in weights_sets:
            if stop.requested:
                events.emit("cancelled", step=len(files), files=files)
                return EXIT_CANCELLED
            if names:
                pipe.set_adapters(names, adapter_weights=weights)
            image = _render_one(loaded, job, seed + n, clip_skip, (width, height))
            path = out / f"{job.output_name}-{n:02d}{f'-w{weights[0]:g}' if job.compare_weights else ''}.png"
            image.save(path)
            files.append(str(path))
            row.append(image)
            events.emit("image_ready", index=len(files) - 1, path=str(path), seed=seed + n, weights=weights)
        rows.append(row)
    if job.compare_weights or job.count > 1:
        files.append(str(_save_grid(job, rows, seed, out)))
        events.emit("image_ready", index=len(files) - 1, path=files[-1], grid=True)
    if loaded.device.type == "cuda":  # give sampling buffers back to a training job on the same GPU
        torch.cuda.empty_cache()  # (no gc.collect: a full collection costs a warm request ~0.25 s)
    events.emit("done", files=files, seed=seed)
    return EXIT_OK


def _render_one(
    loaded: LoadedPipeline, job: GenerateJob, seed: int, clip_skip: int, size: tuple[int, int]
) -> Image.Image:
    return render.render(
        loaded.pipe,
        loaded.model,
        job.prompt,
        job.negative,
        steps=job.steps,
        cfg=job.cfg,
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
    if job.compare_weights:
        cols = [render.weight_label(w) for w in job.compare_weights]
        row_labels = [f"seed {seed + n}" for n in range(len(rows))] if len(rows) > 1 else None
        grid = render.make_grid(rows, cols, row_labels, title=job.grid_title or job.prompt[:80])
    else:
        cols = [f"seed {seed + n}" for n in range(len(rows))]
        grid = render.make_grid([[r[0] for r in rows]], cols, title=job.grid_title or job.prompt[:80])
    path = out / f"{job.output_name}-grid.png"
    grid.save(path)
    return path
