"""sd-scripts ("kohya") LoRA key names, and conversion between them and our peft layers.

We do not use diffusers' ``convert_state_dict_to_kohya``: it writes alpha = rank, uses
``lora_te1_`` even for SD1.5 and keeps diffusers UNet names for SDXL. sd-scripts names:

- SD1.5 UNet: ``lora_unet_`` + the diffusers module path with ``.`` -> ``_``.
- SDXL UNet: ``lora_unet_`` + the original (SGM) path: ``down_blocks.i.attentions.j`` is
  ``input_blocks.{1 + i*(L+1) + j}.1``, ``mid_block.attentions.0`` is ``middle_block.1``,
  ``up_blocks.i.attentions.j`` is ``output_blocks.{i*(L+1) + j}.1`` (L = layers_per_block).
- Text encoders: ``lora_te_`` (SD1.5) or ``lora_te1_``/``lora_te2_`` (SDXL) + ``text_model_`` +
  the module path. transformers 5 dropped ``.text_model`` from ``CLIPTextModel``, so it is
  added back here.
- Tensors: ``.lora_down.weight``, ``.lora_up.weight`` and ``.alpha``, per module: the rank is
  ``lora_down``'s first dimension and the alpha the module's own (block_dims / block_alphas give
  modules of different blocks different ones).
"""

from __future__ import annotations

import logging
from collections import Counter

import torch
from torch import nn

from .families import get_family
from .lora import lora_alpha, lora_down_up, lora_layers, lora_rank

log = logging.getLogger(__name__)


def unet_key(name: str, family: str, layers_per_block: int) -> str:
    return get_family(family).unet_key(name, layers_per_block)


def text_encoder_prefix(family: str, index: int) -> str:
    return get_family(family).text_encoder_prefix(index)


def text_encoder_key(name: str, family: str, index: int) -> str:
    path = name.removeprefix("text_model.")
    return text_encoder_prefix(family, index) + "text_model_" + path.replace(".", "_")


def module_keys(unet: nn.Module | None, text_encoders: list[nn.Module], family: str) -> dict[str, nn.Module]:
    """kohya key prefix -> LoRA layer, for every LoRA layer of the UNet and text encoders."""
    keys: dict[str, nn.Module] = {}
    if unet is not None:
        lpb = get_family(family).layers_per_block(unet)
        for name, layer in lora_layers(unet):
            keys[unet_key(name, family, lpb)] = layer
    for index, te in enumerate(text_encoders):
        for name, layer in lora_layers(te):
            keys[text_encoder_key(name, family, index)] = layer
    return keys


def export_state_dict(
    unet: nn.Module | None,
    text_encoders: list[nn.Module],
    family: str,
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    """The LoRA as sd-scripts writes it: down/up weights and each module's own alpha, in ``dtype``."""
    if (own := get_family(family).export_state_dict) is not None:
        return own(unet, text_encoders, dtype)
    out: dict[str, torch.Tensor] = {}
    for key, layer in module_keys(unet, text_encoders, family).items():
        down, up = lora_down_up(layer)
        out[f"{key}.lora_down.weight"] = down.detach().to("cpu", dtype).contiguous()
        out[f"{key}.lora_up.weight"] = up.detach().to("cpu", dtype).contiguous()
        out[f"{key}.alpha"] = torch.tensor(lora_alpha(layer), dtype=dtype)
    return out


def _part(prefix: str) -> str:
    """lora_unet / lora_te / lora_te1 / lora_te2 of a module key."""
    return prefix.split("_text_model_")[0] if "_text_model_" in prefix else "lora_unet"


def import_state_dict(
    state: dict[str, torch.Tensor],
    unet: nn.Module | None,
    text_encoders: list[nn.Module],
    family: str,
) -> list[str]:
    """Copy a kohya LoRA into our layers (train further). Returns problems; empty when all fit.

    Every module of the file must exist in the model with the same rank (ranks may differ from
    module to module). A module whose alpha in the file differs from its alpha in the job has its
    up weights rescaled so the LoRA's effect is unchanged.
    """
    if (own := get_family(family).import_state_dict) is not None:
        return own(state, unet, text_encoders)
    targets = module_keys(unet, text_encoders, family)
    prefixes = {k.rsplit(".lora_down.weight", 1)[0] for k in state if k.endswith(".lora_down.weight")}
    # A part the job does not train (text encoders with unet_only, ...) is left out, as sd-scripts'
    # non-strict loading does; a module the model lacks in a part it trains is a mismatch.
    trained_parts = {_part(t) for t in targets}
    skipped = sorted(p for p in prefixes if _part(p) not in trained_parts)
    if skipped:
        log.warning("init weights: %d modules of parts this job does not train are left out", len(skipped))
        prefixes -= set(skipped)
    problems = [f"{p} is not a module of this model/job" for p in sorted(prefixes - set(targets))]
    if problems:
        return _first(problems)
    for prefix in sorted(prefixes):
        down, up = lora_down_up(targets[prefix])
        src_down, src_up = state[f"{prefix}.lora_down.weight"], state[f"{prefix}.lora_up.weight"]
        if src_down.shape[0] != down.shape[0]:
            problems.append(f"{prefix}: rank {src_down.shape[0]} in the file, {down.shape[0]} in the job")
        elif src_down.shape != down.shape or src_up.shape != up.shape:
            problems.append(
                f"{prefix}: shape {tuple(src_down.shape)} in the file, {tuple(down.shape)} in the model"
            )
    if problems:
        return _first(problems)
    with torch.no_grad():
        for prefix in prefixes:
            layer = targets[prefix]
            down, up = lora_down_up(layer)
            src_down, src_up = state[f"{prefix}.lora_down.weight"], state[f"{prefix}.lora_up.weight"]
            rank = src_down.shape[0]
            file_alpha = float(state.get(f"{prefix}.alpha", torch.tensor(float(rank))))
            file_alpha = file_alpha or rank  # sd-scripts: alpha 0 means alpha = rank
            job_scale = lora_alpha(layer) / lora_rank(layer)  # not .scaling: set_scale changes it
            down.copy_(src_down.to(down.dtype))
            up.copy_((src_up.float() * (file_alpha / rank) / job_scale).to(up.dtype))
    return []


def _first(problems: list[str], count: int = 5) -> list[str]:
    more = len(problems) - count
    return problems[:count] + ([f"... and {more} more"] if more > 0 else [])


def uniform_alpha(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same LoRA with one alpha for every module: each module's own alpha / rank scale is kept
    by folding ``alpha / common`` into its ``lora_up``. Unchanged when the alphas already agree.

    For diffusers' ``load_lora_weights``: its kohya loader (0.42) loses the alphas of the attention
    projections (``attn1``/``attn2`` ``to_q/k/v/out``) and gives them the most common alpha of the
    file, so a file with per-block alphas (block_alphas) would load mis-scaled. Ranks it reads right.
    """
    alphas = {}
    for key, value in state.items():
        prefix = key.removesuffix(".alpha")
        if prefix != key and f"{prefix}.lora_down.weight" in state:
            rank = state[f"{prefix}.lora_down.weight"].shape[0]
            alphas[prefix] = float(value) or float(rank)  # sd-scripts: alpha 0 means alpha = rank
    if len(set(alphas.values())) <= 1:
        return dict(state)
    common = Counter(alphas.values()).most_common(1)[0][0]
    out = dict(state)
    for prefix, alpha in alphas.items():
        if alpha == common and float(state[f"{prefix}.alpha"]) == common:
            continue
        up = state[f"{prefix}.lora_up.weight"]
        out[f"{prefix}.lora_up.weight"] = (up.float() * (alpha / common)).to(up.dtype)
        out[f"{prefix}.alpha"] = torch.tensor(common, dtype=state[f"{prefix}.alpha"].dtype)
    return out
