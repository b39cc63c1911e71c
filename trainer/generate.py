"""``python -m trainer generate``: render a prompt with a base model and LoRA files.

LoRA files are loaded with diffusers' ``load_lora_weights`` (the same path any user
of the files takes) and weighted with ``set_adapters``. With ``compare_weights`` the
first LoRA is rendered at each weight, same seeds, into one labelled grid.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from . import render
from .contract import EXIT_CANCELLED, EXIT_OK, GenerateJob, default_clip_skip
from .events import EventWriter, StopFlag
from .models import base_model_from_pipeline, load_pipeline, pick_device, place, weight_dtype
from .text import check_clip_skip

log = logging.getLogger(__name__)


class GenerateError(RuntimeError):
    pass


def _load_loras(pipe, job: GenerateJob) -> list[str]:
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


def run_generate(job: GenerateJob, events: EventWriter, stop: StopFlag) -> int:
    device = pick_device(job.device)
    dtype = weight_dtype(job.mixed_precision, device)
    pipe, family = load_pipeline(job.base_model, job.model_family, job.base_model_config)
    names = _load_loras(pipe, job)
    model = base_model_from_pipeline(pipe, family, job.base_model)
    place(model, device, dtype)
    pipe.scheduler = render.make_sampler(job.sampler, model.scheduler_config)
    pipe.set_progress_bar_config(disable=True)
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
            image = render.render(
                pipe,
                model,
                job.prompt,
                job.negative,
                steps=job.steps,
                cfg=job.cfg,
                width=width,
                height=height,
                seed=seed + n,
                clip_skip=clip_skip,
                device=device,
                dtype=dtype,
            )
            path = out / f"{job.output_name}-{n:02d}{f'-w{weights[0]:g}' if job.compare_weights else ''}.png"
            image.save(path)
            files.append(str(path))
            row.append(image)
            events.emit("image_ready", index=len(files) - 1, path=str(path), seed=seed + n, weights=weights)
        rows.append(row)
    if job.compare_weights or job.count > 1:
        files.append(str(_save_grid(job, rows, seed, out)))
        events.emit("image_ready", index=len(files) - 1, path=files[-1], grid=True)
    render.release_memory(device)
    events.emit("done", files=files, seed=seed)
    return EXIT_OK


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
