"""The per-epoch preview grid: the preview prompt at each preview weight, with the same seed.

A preview that runs out of memory must not kill the job it reports on: the grid is rendered again
at a smaller size, and skipped (None) when even the smallest does not fit.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from . import accel, delivered, fonts, lora, render
from .caches import preview_prompt
from .contract import TrainJob
from .contract.families import family_info
from .contract.labels import GridLabels
from .events import StopFlag
from .run import Run, check_stop

log = logging.getLogger(__name__)

MIN_FALLBACK_SIZE = 256
FALLBACK_FRACTIONS = ((3, 4), (1, 2))


def fallback_sizes(size: int) -> list[int]:
    """``size``, then 3/4 and 1/2 of it rounded down to multiples of 64, none below 256 (or
    ``size`` when that is smaller); each smaller than the one before."""
    floor = min(size, MIN_FALLBACK_SIZE)
    sizes = [size]
    for num, den in FALLBACK_FRACTIONS:
        smaller = max(floor, size * num // den // 64 * 64)
        if smaller < sizes[-1]:
            sizes.append(smaller)
    return sizes


def preview_epoch(run: Run, epoch: int, stop: StopFlag | None = None) -> Path | None:
    """A grid of the preview prompt at each preview weight, same seed; nothing kept afterwards.

    Out of memory, the whole grid is rendered again at the next of :func:`fallback_sizes`; None
    (and a warning) when even the smallest fails. Cancellation and other errors propagate.
    """
    job, model = run.job, run.model
    prompt = preview_prompt(run)
    size = job.preview_size or run.resolution
    pipe = render.build_pipeline(model, job.preview_sampler)
    wrapped = [model.unet, *model.text_encoders]
    images: list[Image.Image] | None = None
    used = size
    for m in wrapped:
        m.eval()
    try:
        for used in fallback_sizes(size):
            images = _render_weights(run, pipe, prompt, used, stop)
            if images is not None:
                break
            render.release_memory(run.device)
            log.warning("epoch %d preview: out of memory at %d px", epoch, used)
    finally:
        lora.set_lora_weight(wrapped, 1.0)
        for m in wrapped:
            m.train()
        del pipe
        render.release_memory(run.device)
    if images is None:
        log.warning("epoch %d preview skipped: out of memory even at %d px", epoch, used)
        return None
    note = ""
    if used != size:
        note = f" (rendered at {used} px: out of memory at {size})"
        log.warning("epoch %d preview rendered at %d px instead of %d (out of memory)", epoch, used, size)
    cols, named = preview_labels(job, epoch)
    grid = render.make_grid([images], cols, title=f"{job.output_name} {named}{note} - {prompt[:60]}")
    path = run.out_dir / f"{job.output_name}-{epoch:06d}-preview.png"
    delivered.save_image(grid, path)
    return path


def preview_labels(job: TrainJob, epoch: int) -> tuple[list[str], str]:
    """The preview grid's column labels (one per preview weight) and its title's "epoch N", in the
    job's ``grid_labels`` words, or in English when no font here draws those."""

    def labels(words: GridLabels) -> tuple[list[str], str]:
        cols = [render.weight_label(w, words.weight) for w in job.preview_weights]
        return cols, words.epoch.format(epoch=epoch)

    def flat(words: GridLabels) -> list[str]:
        cols, named = labels(words)
        return [*cols, named]

    return labels(fonts.drawn_words(job.grid_labels, flat))


def _render_weights(
    run: Run, pipe, prompt: str, size: int, stop: StopFlag | None
) -> list[Image.Image] | None:
    """One image per preview weight at ``size``; None when the device ran out of memory."""
    job, model = run.job, run.model
    wrapped = [model.unet, *model.text_encoders]
    seed = job.preview_seed if job.preview_seed is not None else run.seed
    images = []
    try:
        for weight in job.preview_weights:
            if stop is not None:
                check_stop(stop)
            lora.set_lora_weight(wrapped, weight)
            with accel.eager(model.unet):  # compiled, it would recompile for these shapes and no grad
                image = render.render(
                    pipe,
                    model,
                    prompt,
                    job.preview_negative,
                    steps=job.preview_steps,
                    cfg=job.preview_cfg
                    if job.preview_cfg is not None
                    else family_info(model.family).default_cfg,
                    width=size,
                    height=size,
                    seed=seed,
                    clip_skip=run.clip_skip,
                    device=run.device,
                    dtype=run.dtype,
                    t5_max_length=job.t5_max_length,
                    conditioning=run.preview_text,
                )
            images.append(image)
    except Exception as exc:
        if not accel.is_out_of_memory(exc):
            raise
        return None  # leaving the handler drops the traceback and the tensors its frames hold
    return images
