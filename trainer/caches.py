"""What a job computes once before step 1: the latents of its images and, while the text
encoders are frozen, their outputs for every caption variant (``text_cache.py``)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

from . import accel, data
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
    """Encode every caption variant once when the text encoders are frozen (text_cache.py)."""
    if run.job.trains_text_encoder():
        return
    job = run.job
    run.text_cache = build_text_cache(
        run.model, [it.caption for it in run.items], caption_settings(run),
        count=job.caption_variants, seed=run.seed, device=run.device, dtype=run.dtype,
        keep_on_device=lambda size: accel.latents_on_device(size, run.device),
        progress=lambda done, total: _latent_progress(done, total, stop, "text-encoder outputs"),
    )  # fmt: skip
    if _offloads_text_encoders(run):
        _move_text_encoders(run, torch.device("cpu"))


def _offloads_text_encoders(run: Run) -> bool:
    """Frozen and cached on a GPU, the text encoders wait on the host: the memory goes to batches."""
    return run.text_cache is not None and run.device.type == "cuda"


def _move_text_encoders(run: Run, device: torch.device) -> None:
    for te in run.model.text_encoders:
        te.to(device)
    accel.release_memory(run.device)


@contextlib.contextmanager
def text_encoders_on_device(run: Run) -> Iterator[None]:
    """The text encoders on the job's device for a while (previews), wherever they wait."""
    if not _offloads_text_encoders(run):
        yield
        return
    _move_text_encoders(run, run.device)
    try:
        yield
    finally:
        _move_text_encoders(run, torch.device("cpu"))


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
