"""Captions and text conditioning: tag shuffling, tokenizing, clip-skipped embeddings.

Clip skip is applied here, not by diffusers' pipeline (its ``clip_skip`` crashes on
transformers 5's flattened CLIPTextModel). Conventions follow sd-scripts / A1111:

- SD1.5: ``final_layer_norm(hidden_states[-clip_skip])``; clip skip 1 is the last layer,
  2 the penultimate (diffusers' ``clip_skip=1``).
- SDXL: both encoders' ``hidden_states[-(clip_skip + 1)]`` without the final norm,
  concatenated; clip skip 1 is SDXL's usual penultimate layer. The pooled embedding is
  text_encoder_2's projected output.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import nn


class ClipSkipError(ValueError):
    """clip_skip asks for a layer the text encoder does not have."""


def check_clip_skip(clip_skip: int, family: str, text_encoders: list[nn.Module]) -> None:
    """clip_skip must leave at least one text-encoder layer (SDXL already starts at the penultimate)."""
    layers = min(te.config.num_hidden_layers for te in text_encoders)
    deepest = layers if family == "sd15" else layers - 1
    if clip_skip > deepest:
        raise ClipSkipError(
            f"clip_skip {clip_skip} is deeper than this model's text encoder allows (at most {deepest})"
        )


def split_tags(caption: str) -> list[str]:
    return [t.strip() for t in caption.split(",") if t.strip()]


def process_caption(caption: str, shuffle: bool, keep_tokens: int, rng: random.Random) -> str:
    """Shuffle the tags after the first ``keep_tokens`` (sd-scripts' shuffle_caption/keep_tokens)."""
    tags = split_tags(caption)
    if shuffle and len(tags) > keep_tokens + 1:
        head, tail = tags[:keep_tokens], tags[keep_tokens:]
        rng.shuffle(tail)
        tags = head + tail
    return ", ".join(tags)


@dataclass
class Conditioning:
    embeds: torch.Tensor  # (B, 77, D)
    pooled: torch.Tensor | None = None  # (B, D2) for SDXL

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> Conditioning:
        pooled = self.pooled.to(device, dtype) if self.pooled is not None else None
        return Conditioning(self.embeds.to(device, dtype), pooled)

    def detach(self) -> Conditioning:
        pooled = self.pooled.detach() if self.pooled is not None else None
        return Conditioning(self.embeds.detach(), pooled)

    @staticmethod
    def cat(items: list[Conditioning]) -> Conditioning:
        pooled = None if items[0].pooled is None else torch.cat([c.pooled for c in items])
        return Conditioning(torch.cat([c.embeds for c in items]), pooled)


def tokenize(tokenizer, texts: list[str], device: torch.device) -> torch.Tensor:
    ids = tokenizer(
        texts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return ids.to(device)


def _final_layer_norm(encoder: nn.Module) -> nn.Module:
    return getattr(encoder, "text_model", encoder).final_layer_norm


def encode_texts(
    family: str,
    text_encoders: list[nn.Module],
    tokenizers: list,
    texts: list[str],
    clip_skip: int,
    device: torch.device,
) -> Conditioning:
    """Clip-skipped text embeddings (and SDXL's pooled embedding) for ``texts``."""
    if family == "sd15":
        out = text_encoders[0](tokenize(tokenizers[0], texts, device), output_hidden_states=True)
        hidden = out.hidden_states[-clip_skip]
        return Conditioning(_final_layer_norm(text_encoders[0])(hidden))
    out1 = text_encoders[0](tokenize(tokenizers[0], texts, device), output_hidden_states=True)
    out2 = text_encoders[1](tokenize(tokenizers[1], texts, device), output_hidden_states=True)
    layer = -(clip_skip + 1)
    embeds = torch.cat([out1.hidden_states[layer], out2.hidden_states[layer]], dim=-1)
    return Conditioning(embeds, out2.text_embeds)


def sdxl_time_ids(
    original_size: tuple[int, int], crop_top_left: tuple[int, int], target_size: tuple[int, int]
) -> torch.Tensor:
    """SDXL's micro-conditioning: (orig_h, orig_w, crop_top, crop_left, target_h, target_w)."""
    return torch.tensor([*original_size, *crop_top_left, *target_size], dtype=torch.float32)
