"""Text-encoder outputs computed once per job when the text encoders are frozen.

sd-scripts caches text-encoder outputs only without tag shuffling (it refuses the pair): a
cached embedding is one fixed caption. We keep the cache and the shuffling: each image gets
``caption_variants`` shuffled captions (fewer when its tags have fewer orders), all encoded
up front, and every step draws one of them. The variants come from the job's seed, so a
resumed job rebuilds the same ones; which variant a step uses comes from the job's caption
RNG, which the training state saves.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .accel import place_latent
from .models import BaseModel, autocast
from .text import Conditioning, encode_texts, process_caption

log = logging.getLogger(__name__)
ENCODE_BATCH = 16
MAX_DRAWS_PER_VARIANT = 4  # draws to find a new order before settling for fewer variants


@dataclass
class CaptionSettings:
    """What turns a caption into text-encoder input for one job."""

    shuffle: bool
    keep_tokens: int
    clip_skip: int | None
    max_token_length: int = 75
    weighted: bool = False
    sequence_length: int | None = None  #: T5 tokens (families with a T5)


@dataclass
class TextCache:
    """Per image, the cached conditioning of each of its caption variants."""

    variants: list[list[Conditioning]]
    captions: list[list[str]]
    on_device: bool

    def draw(self, indices: list[int], rng: random.Random, device: torch.device) -> Conditioning:
        """The conditioning of a batch: one variant per image, drawn with ``rng``."""
        picked = []
        for i in indices:
            options = self.variants[i]
            picked.append(options[rng.randrange(len(options))] if len(options) > 1 else options[0])
        cond = Conditioning.cat(picked)
        return cond if self.on_device else cond.to(device)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.variants)


def caption_variants(caption: str, settings: CaptionSettings, count: int, rng: random.Random) -> list[str]:
    """Up to ``count`` distinct shuffled orders of ``caption`` (just the caption when not shuffled)."""
    if not settings.shuffle or count == 1:
        return [process_caption(caption, settings.shuffle, settings.keep_tokens, rng)]
    found: list[str] = []
    for _ in range(count * MAX_DRAWS_PER_VARIANT):
        text = process_caption(caption, True, settings.keep_tokens, rng)
        if text not in found:
            found.append(text)
            if len(found) == count:
                break
    return found


@torch.no_grad()
def build_text_cache(
    model: BaseModel,
    captions: list[str],
    settings: CaptionSettings,
    *,
    count: int,
    seed: int,
    device: torch.device,
    dtype: torch.dtype,
    keep_on_device: Callable[[int], bool] = lambda _bytes: True,
    progress: Callable[[int, int], None] | None = None,
) -> TextCache:
    """Encode every image's caption variants once; identical texts are encoded once."""
    per_image = [
        caption_variants(c, settings, count, random.Random(f"{seed}-caption-{i}"))
        for i, c in enumerate(captions)
    ]
    unique = list(dict.fromkeys(t for texts in per_image for t in texts))
    encoded: dict[str, Conditioning] = {}
    for start in range(0, len(unique), ENCODE_BATCH):
        chunk = unique[start : start + ENCODE_BATCH]
        with autocast(device, dtype):
            enc = encode_texts(
                model.family, model.text_encoders, model.tokenizers, chunk, settings.clip_skip, device,
                max_token_length=settings.max_token_length, weighted=settings.weighted,
                sequence_length=settings.sequence_length,
            )  # fmt: skip
        for j, text in enumerate(chunk):
            pooled = enc.pooled[j : j + 1] if enc.pooled is not None else None
            encoded[text] = Conditioning(
                enc.embeds[j : j + 1].to(dtype), None if pooled is None else pooled.to(dtype)
            )
        if progress:
            progress(min(start + ENCODE_BATCH, len(unique)), len(unique))
    size = sum(c.embeds.numel() * c.embeds.element_size() for c in encoded.values())
    on_device = keep_on_device(size)
    if not on_device:
        encoded = {t: _on_host(c, device) for t, c in encoded.items()}
    log.info(
        "cached %d text-encoder outputs (%d captions x up to %d variants, %.1f MB, %s)",
        len(encoded), len(captions), count, size / 2**20, "on the device" if on_device else "in pinned memory",
    )  # fmt: skip
    return TextCache([[encoded[t] for t in texts] for texts in per_image], per_image, on_device)


def _on_host(cond: Conditioning, device: torch.device) -> Conditioning:
    """Where latents too big for the GPU wait: host memory, pinned for CUDA."""
    pooled = None if cond.pooled is None else place_latent(cond.pooled, device, on_device=False)
    return Conditioning(place_latent(cond.embeds, device, on_device=False), pooled)
