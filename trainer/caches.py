"""What a job computes once before step 1: the latents of its images and, while the text
encoders are frozen, their outputs for every caption variant (``text_cache.py``)."""

from __future__ import annotations

import logging

import torch

from . import accel, data, render
from .events import StopFlag
from .families import get_family
from .run import Cancelled, Run
from .text_cache import CaptionSettings, build_text_cache

log = logging.getLogger(__name__)


def cache_latents(run: Run, stop: StopFlag | None = None) -> None:
    counts = data.assign_buckets(run.items, run.resolution)
    log.info(
        "buckets (w x h: images): %s", ", ".join(f"{w}x{h}: {n}" for (w, h), n in sorted(counts.items()))
    )
    # Decided before caching, so a dataset too big for the GPU never has all its latents there.
    size = accel.latent_bytes([it.bucket for it in run.items], run.model.vae)
    on_device = accel.latents_on_device(size, run.device)
    if not on_device:
        log.info("latents (%.0f MB) stay in pinned memory and move per batch", size / 2**20)
    gen = torch.Generator("cpu").manual_seed(run.seed)
    data.cache_latents(
        run.items,
        run.model.vae,
        run.device,
        gen,
        progress=lambda done, total: _latent_progress(done, total, stop),
        place=lambda t: accel.place_latent(t, run.device, on_device),
    )
    get_family(run.model.family).prepare_items(run.items, run.device)


def cache_text(run: Run, stop: StopFlag | None = None) -> None:
    """Encode every caption variant once when the text encoders are frozen (text_cache.py), and
    the preview prompt; on a GPU the encoders then leave it for good (Flux's T5-XXL: 9.5 GB)."""
    if run.job.trains_text_encoder():
        return
    job = run.job
    run.text_cache = build_text_cache(
        run.model, [it.caption for it in run.items], caption_settings(run),
        count=job.caption_variants, seed=run.seed, device=run.device, dtype=run.dtype,
        keep_on_device=lambda size: accel.latents_on_device(size, run.device),
        progress=lambda done, total: _latent_progress(done, total, stop, "text-encoder outputs"),
    )  # fmt: skip
    if job.previews:
        run.preview_text = render.encode_prompts(
            run.model, preview_prompt(run), job.preview_negative, clip_skip=run.clip_skip,
            device=run.device, dtype=run.dtype, t5_max_length=job.t5_max_length,
        )  # fmt: skip
    if run.device.type == "cuda":
        for te in run.model.text_encoders:
            te.to("cpu")
        accel.release_memory(run.device)


def preview_prompt(run: Run) -> str:
    return run.job.preview_prompt or data.default_preview_prompt(run.items)


def caption_settings(run: Run) -> CaptionSettings:
    job = run.job
    length = get_family(run.model.family).sequence_length(run.model, job.t5_max_length)
    return CaptionSettings(
        job.shuffle_tags, job.keep_tokens, run.clip_skip, job.max_token_length, job.weighted_captions, length
    )


def _latent_progress(done: int, total: int, stop: StopFlag | None, what: str = "latents") -> None:
    log.info("cached %s %d/%d", what, done, total)
    if stop is not None and stop.requested:
        raise Cancelled
