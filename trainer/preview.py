"""The per-epoch preview grid: the preview prompt at each preview weight, with the same seed."""

from __future__ import annotations

from pathlib import Path

from . import data, lora, render
from .events import StopFlag
from .run import Run, check_stop


def preview_epoch(run: Run, epoch: int, stop: StopFlag | None = None) -> Path:
    """A grid of the preview prompt at each preview weight, same seed; nothing kept afterwards."""
    job, model = run.job, run.model
    prompt = job.preview_prompt or data.default_preview_prompt(run.items)
    size = job.preview_size or run.resolution
    seed = job.preview_seed if job.preview_seed is not None else run.seed
    pipe = render.build_pipeline(model, job.preview_sampler)
    wrapped = [model.unet, *model.text_encoders]
    images = []
    for m in wrapped:
        m.eval()
    try:
        for weight in job.preview_weights:
            if stop is not None:
                check_stop(stop)
            lora.set_lora_weight(wrapped, weight)
            images.append(
                render.render(
                    pipe,
                    model,
                    prompt,
                    job.preview_negative,
                    steps=job.preview_steps,
                    cfg=job.preview_cfg,
                    width=size,
                    height=size,
                    seed=seed,
                    clip_skip=run.clip_skip,
                    device=run.device,
                    dtype=run.dtype,
                )
            )
    finally:
        lora.set_lora_weight(wrapped, 1.0)
        for m in wrapped:
            m.train()
        del pipe
    grid = render.make_grid(
        [images],
        [render.weight_label(w) for w in job.preview_weights],
        title=f"{job.output_name} epoch {epoch} - {prompt[:60]}",
    )
    path = run.out_dir / f"{job.output_name}-{epoch:06d}-preview.png"
    grid.save(path)
    render.release_memory(run.device)
    return path
