"""Captions and text conditioning: tag shuffling, tokenizing, clip-skipped embeddings.

Clip skip is applied here, not by diffusers' pipeline (its ``clip_skip`` crashes on
transformers 5's flattened CLIPTextModel). Conventions follow sd-scripts / A1111:

- SD1.5: ``final_layer_norm(hidden_states[-clip_skip])``; clip skip 1 is the last layer,
  2 the penultimate (diffusers' ``clip_skip=1``).
- SDXL: both encoders' ``hidden_states[-(clip_skip + 1)]`` without the final norm,
  concatenated; clip skip 1 is SDXL's usual penultimate layer. The pooled embedding is
  text_encoder_2's projected output.

Two options, as sd-scripts: ``max_token_length`` 150 or 225 encodes captions in 2 or 3 chunks
of 75 tokens (embeds of 152 or 227 tokens; SDXL's pooled is the first chunk's), and
``weighted`` reads A1111's ``(tag:1.2)`` / ``(tag)`` / ``[tag]`` weights and multiplies each
token's hidden state by its weight after encoding.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch
from torch import nn

from .errors import TrainerError
from .families import get_family

CLIP_LEN = 77  # CLIP's context: BOS + 75 tokens + EOS; longer captions are encoded in chunks
ROUND_FACTOR = 1.1  # (tag) multiplies by this, [tag] divides by it
# A1111's weighted-caption grammar: escapes, brackets, ":weight)", plain text, a lone ":".
_RE_ATTENTION = re.compile(r"\\[()\[\]\\]|\\|\(|\[|:([+-]?[.\d]+)\)|\)|]|[^\\()\[\]:]+|:")


class ClipSkipError(TrainerError, ValueError):
    """clip_skip asks for a layer the text encoder does not have."""


def check_clip_skip(clip_skip: int | None, family: str, text_encoders: list[nn.Module]) -> None:
    """clip_skip must leave at least one text-encoder layer (SDXL already starts at the penultimate);
    None: the family has no clip skip."""
    if clip_skip is None:
        return
    layers = min(te.config.num_hidden_layers for te in text_encoders)
    deepest = get_family(family).deepest_clip_skip(layers)
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
    embeds: torch.Tensor  # (B, max_token_length + 2, D): 77, 152 or 227 tokens
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


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    r"""Split an A1111-style weighted caption into (text, weight) runs (sd-scripts' parser).

    ``(abc)`` multiplies by 1.1, ``(abc:1.3)`` by 1.3, ``[abc]`` divides by 1.1; nesting
    multiplies; ``\(`` ``\)`` ``\[`` ``\]`` ``\\`` are literal; unclosed brackets close at
    the end; neighbouring runs of equal weight are merged.

    >>> parse_prompt_attention("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    >>> parse_prompt_attention("(unbalanced")
    [('unbalanced', 1.1)]
    >>> parse_prompt_attention(r"\(literal\]")
    [('(literal]', 1.0)]
    >>> parse_prompt_attention("")
    [('', 1.0)]
    """
    res: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for item in res[start:]:
            item[1] *= factor

    for m in _RE_ATTENTION.finditer(text):
        piece, weight = m.group(0), m.group(1)
        if piece.startswith("\\"):
            res.append([piece[1:], 1.0])
        elif piece == "(":
            round_open.append(len(res))
        elif piece == "[":
            square_open.append(len(res))
        elif weight is not None and round_open:
            multiply(round_open.pop(), _weight(weight, text))
        elif piece == ")" and round_open:
            multiply(round_open.pop(), ROUND_FACTOR)
        elif piece == "]" and square_open:
            multiply(square_open.pop(), 1 / ROUND_FACTOR)
        else:
            res.append([piece, 1.0])
    for start in round_open:
        multiply(start, ROUND_FACTOR)
    for start in square_open:
        multiply(start, 1 / ROUND_FACTOR)
    merged: list[list] = []
    for item in res or [["", 1.0]]:
        if merged and merged[-1][1] == item[1]:
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    return [(t, w) for t, w in merged]


def _weight(value: str, text: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"caption {text!r}: {value!r} is not a weight") from None


def _weighted_ids(tokenizer, text: str, max_length: int) -> tuple[list[int], list[float]]:
    """BOS + tokens of each weighted piece (truncated) + EOS + pad, and one weight per id."""
    ids: list[int] = []
    weights: list[float] = []
    for piece, weight in parse_prompt_attention(text):
        piece_ids = tokenizer(piece, verbose=False).input_ids[1:-1]
        ids += piece_ids
        weights += [weight] * len(piece_ids)
        if len(ids) > max_length - 2:
            break
    ids, weights = ids[: max_length - 2], weights[: max_length - 2]
    pad = max_length - 2 - len(ids)
    ids = [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id] + [tokenizer.pad_token_id] * pad
    return ids, [1.0, *weights] + [1.0] * (pad + 1)


def _long_ids(
    tokenizer, texts: list[str], max_length: int, weighted: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, max_length) ids and, when weighted, (B, max_length) float32 weights."""
    if not weighted:
        ids = tokenizer(
            texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
        ).input_ids
        return ids, None
    pairs = [_weighted_ids(tokenizer, t, max_length) for t in texts]
    ids = torch.tensor([p[0] for p in pairs], dtype=torch.long)
    return ids, torch.tensor([p[1] for p in pairs], dtype=torch.float32)


def _chunk_ids(tokenizer, ids: torch.Tensor) -> torch.Tensor:
    """(B, n*75+2) ids -> (B*n, 77) chunks of BOS + 75 tokens + the last id (sd-scripts' rule)."""
    rows = []
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    for row in ids:
        for i in range(1, ids.shape[1] - CLIP_LEN + 2, CLIP_LEN - 2):
            chunk = torch.cat([row[:1], row[i : i + CLIP_LEN - 2], row[-1:]])
            if pad != eos:  # SDXL's tokenizer_2 pads with "!": close each chunk with an EOS
                if chunk[-2] != eos and chunk[-2] != pad:
                    chunk[-1] = eos
                if chunk[1] == pad:
                    chunk[1] = eos
            rows.append(chunk)
    return torch.stack(rows)


def _merge_chunks(states: torch.Tensor, n: int) -> torch.Tensor:
    """(B*n, 77, D) chunk states -> (B, n*75+2, D): first BOS, each chunk's 75 inner states, last."""
    if n == 1:
        return states
    states = states.reshape(states.shape[0] // n, n * CLIP_LEN, states.shape[-1])
    inner = [states[:, i : i + CLIP_LEN - 2] for i in range(1, n * CLIP_LEN, CLIP_LEN)]
    return torch.cat([states[:, :1], *inner, states[:, -1:]], dim=1)


def _apply_weights(states: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Multiply each token's state by its weight (out of place; BOS/EOS/pad weigh 1.0).

    The flat (B, n*75+2) weights line up with the merged states: merged position 75*i + 1 + k
    is chunk i's token k, i.e. flat position 75*i + 1 + k, as sd-scripts' per-chunk slices.
    """
    if weights is None:
        return states
    weights = weights.to(states.device)
    return (states * weights[:, :, None]).to(states.dtype)


def _hidden(encoder: nn.Module, ids: torch.Tensor, layer: int, norm: bool):
    out = encoder(ids, output_hidden_states=True)
    hidden = out.hidden_states[layer]
    return (_final_layer_norm(encoder)(hidden) if norm else hidden), out


def _final_layer_norm(encoder: nn.Module) -> nn.Module:
    return getattr(encoder, "text_model", encoder).final_layer_norm


def encode_texts(
    family: str,
    text_encoders: list[nn.Module],
    tokenizers: list,
    texts: list[str],
    clip_skip: int,
    device: torch.device,
    max_token_length: int = 75,
    weighted: bool = False,
    sequence_length: int | None = None,
) -> Conditioning:
    """Clip-skipped text embeddings (and SDXL's pooled embedding) for ``texts``.

    ``max_token_length`` 75, 150 or 225 gives embeds of 77, 152 or 227 tokens (chunks of 75
    encoded separately, sd-scripts' rule); ``weighted`` reads ``(tag:1.2)``-style weights
    (:func:`parse_prompt_attention`) and multiplies each token's hidden state by its weight.
    """
    fam = get_family(family)
    if fam.encode is not None:  # a family with its own encoders (Flux: CLIP-L pooled + T5)
        return Conditioning(*fam.encode(text_encoders, tokenizers, texts, device, sequence_length))
    if max_token_length not in (75, 150, 225):
        raise ValueError(f"max_token_length must be 75, 150 or 225, not {max_token_length}")
    n = max_token_length // 75
    layer = fam.clip_hidden_layer(clip_skip)
    states, outs = [], []
    for encoder, tokenizer in zip(text_encoders, tokenizers, strict=True):
        if n == 1 and not weighted:  # the plain 77-token path (previews, /generate)
            ids, weights = tokenize(tokenizer, texts, device), None
        else:
            ids, weights = _long_ids(tokenizer, texts, max_token_length + 2, weighted)
            ids = (_chunk_ids(tokenizer, ids) if n > 1 else ids).to(device)
        hidden, out = _hidden(encoder, ids, layer, norm=fam.clip_final_norm)
        states.append(_apply_weights(_merge_chunks(hidden, n), weights))
        outs.append(out)
    return Conditioning(*fam.join_conditioning(states, outs, n))
