"""sd-scripts' Flux.1 LoRA files (``networks/lora_flux.py``) from and to our peft layers on diffusers'
``FluxTransformer2DModel``, exactly.

sd-scripts trains BFL's original Flux module, whose attention q, k, v (and, in a single block, the MLP
input too) are one fused Linear; diffusers splits them. A file module is named ``lora_unet_`` + the BFL
path (``double_blocks_3_img_attn_qkv``, ``single_blocks_0_linear1``), CLIP-L modules ``lora_te1_
text_model_...`` and T5-XXL ones ``lora_te3_...``; tensors ``.lora_down.weight``, ``.lora_up.weight``,
``.alpha``, and every reader (sd-scripts, ComfyUI, Forge, diffusers) scales a module by alpha / rank
with rank = ``lora_down``'s first dimension.

Fusing split parts is exact: down = the parts' downs stacked (rank = their sum), up = their ups
block-diagonal, alpha = scale * rank. sd-scripts' own fused modules share one down instead; the
importer reads both layouts.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import NamedTuple

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from .kohya import _first
from .lora import lora_alpha, lora_down_up, lora_layers, lora_rank

log = logging.getLogger(__name__)

#: BFL module of a double block (in sd-scripts' key spelling) -> the diffusers modules it fuses, in row order.
DOUBLE_BLOCK: dict[str, tuple[str, ...]] = {
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "img_attn_proj": ("attn.to_out.0",),
    "img_mlp_0": ("ff.net.0.proj",),
    "img_mlp_2": ("ff.net.2",),
    "img_mod_lin": ("norm1.linear",),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "txt_attn_proj": ("attn.to_add_out",),
    "txt_mlp_0": ("ff_context.net.0.proj",),
    "txt_mlp_2": ("ff_context.net.2",),
    "txt_mod_lin": ("norm1_context.linear",),
}
SINGLE_BLOCK: dict[str, tuple[str, ...]] = {
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
    "linear2": ("proj_out",),
    "modulation_lin": ("norm.linear",),
}
TRAIN_BLOCKS = ("all", "double", "single")


class Part(NamedTuple):
    """One diffusers module of a file module: its name, output width and LoRA layer (None: untrained)."""

    name: str
    rows: int
    layer: LoraLayer | None


def flux_key_map(num_double: int, num_single: int, train_blocks: str = "all") -> dict[str, tuple[str, ...]]:
    """sd-scripts key -> the diffusers module names it fuses, in the fused module's row order."""
    if train_blocks not in TRAIN_BLOCKS:
        raise ValueError(f"train_blocks must be one of {TRAIN_BLOCKS}, not {train_blocks!r}")
    keys: dict[str, tuple[str, ...]] = {}
    for i in range(num_double if train_blocks != "single" else 0):
        for bfl, parts in DOUBLE_BLOCK.items():
            keys[f"lora_unet_double_blocks_{i}_{bfl}"] = tuple(f"transformer_blocks.{i}.{p}" for p in parts)
    for i in range(num_single if train_blocks != "double" else 0):
        for bfl, parts in SINGLE_BLOCK.items():
            keys[f"lora_unet_single_blocks_{i}_{bfl}"] = tuple(
                f"single_transformer_blocks.{i}.{p}" for p in parts
            )
    return keys


def _block_counts(transformer: nn.Module) -> tuple[int, int]:
    return len(transformer.transformer_blocks), len(transformer.single_transformer_blocks)


def flux_target_modules(transformer: nn.Module, train_blocks: str = "all") -> list[str]:
    """The diffusers names of the modules sd-scripts trains by default (``networks/lora_flux.py``).

    ``LoRANetwork`` wraps every Linear inside BFL's ``DoubleStreamBlock`` and ``SingleStreamBlock``
    (``train_blocks`` "all", the default; "double" / "single" keep one kind): per double block the
    img and txt attention qkv and proj, MLP 0 and 2 and the modulation ``mod.lin``; per single block
    ``linear1``, ``linear2`` and ``modulation.lin``. Modulation is trained by default. The embedders
    (img_in, txt_in, time_in, vector_in, guidance_in) only get LoRA with ``in_dims``, final_layer never.
    ``split_qkv`` only trains q, k, v (and the MLP input) with a down/up each: the file stays fused.
    """
    names = [n for parts in flux_key_map(*_block_counts(transformer), train_blocks).values() for n in parts]
    for name in names:
        transformer.get_submodule(name)  # raises for a model of another layout
    return sorted(names)


def _text_encoder_key(name: str, index: int) -> str:
    """sd-scripts' Flux prefixes: CLIP-L ``lora_te1_text_model_...``, T5-XXL ``lora_te3_...``."""
    if index == 0:
        return "lora_te1_text_model_" + name.removeprefix("text_model.").replace(".", "_")
    if index == 1:
        return "lora_te3_" + name.replace(".", "_")
    raise ValueError("Flux has two text encoders (CLIP-L, T5-XXL)")


def file_modules(transformer: nn.Module | None, text_encoders: list[nn.Module]) -> dict[str, list[Part]]:
    """sd-scripts key -> its parts, for every file module with at least one LoRA layer in the job."""
    out: dict[str, list[Part]] = {}
    if transformer is not None:
        layers = dict(lora_layers(transformer))
        key_map = flux_key_map(*_block_counts(transformer))
        if unnamed := sorted(set(layers) - {n for parts in key_map.values() for n in parts}):
            raise ValueError(f"no sd-scripts Flux name for LoRA modules {unnamed[:3]}")
        for key, names in key_map.items():
            if any(n in layers for n in names):
                mods = [transformer.get_submodule(n) for n in names]
                out[key] = [Part(n, m.out_features, layers.get(n)) for n, m in zip(names, mods, strict=True)]
    for index, te in enumerate(text_encoders):
        for name, layer in lora_layers(te):
            out[_text_encoder_key(name, index)] = [Part(name, layer.out_features, layer)]
    return out


def _scale(layer: LoraLayer) -> float:
    return lora_alpha(layer) / lora_rank(layer)  # not .scaling: set_scale changes it


def fuse(parts: list[Part]) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(down, up, alpha) of one file module: downs stacked, ups block-diagonal (zero rows for an
    untrained part), alpha so alpha / rank is the parts' most common scale; a part with another
    scale has the ratio folded into its up block."""
    trained = [p.layer for p in parts if p.layer is not None]
    ref = Counter(_scale(layer) for layer in trained).most_common(1)[0][0]
    downs = [lora_down_up(layer)[0].detach().float() for layer in trained]
    down = torch.cat(downs)
    up = down.new_zeros(sum(p.rows for p in parts), down.shape[0])
    row = col = 0
    for part in parts:
        if part.layer is not None:
            rank = lora_rank(part.layer)
            block = lora_down_up(part.layer)[1].detach().float()
            up[row : row + part.rows, col : col + rank] = block * (_scale(part.layer) / ref)
            col += rank
        row += part.rows
    if len(trained) == 1:
        return down, up, lora_alpha(trained[0])  # its own alpha, not scale * rank (rounded)
    return down, up, ref * down.shape[0]


def export_flux_state_dict(
    transformer: nn.Module | None, text_encoders: list[nn.Module], dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """The LoRA as sd-scripts writes a Flux LoRA, in ``dtype``; each file module has the same delta W
    (alpha / rank * up @ down, split by rows) as our layers."""
    out: dict[str, torch.Tensor] = {}
    for key, parts in file_modules(transformer, text_encoders).items():
        down, up, alpha = fuse(parts)
        out[f"{key}.lora_down.weight"] = down.to("cpu", dtype).contiguous()
        out[f"{key}.lora_up.weight"] = up.to("cpu", dtype).contiguous()
        out[f"{key}.alpha"] = torch.tensor(alpha, dtype=dtype)
    return out


Piece = tuple[LoraLayer, torch.Tensor, torch.Tensor]  # a layer and the (down, up) the file gives it


def _rank_problem(key: str, rank: int, ranks: list[int]) -> str:
    job = str(ranks[0]) if len(set(ranks)) == 1 else "/".join(map(str, ranks))
    fused = f" (shared) or {sum(ranks)} (block-diagonal)" if len(ranks) > 1 else ""
    return f"{key}: rank {rank} in the file, {job}{fused} in the job"


def split(key: str, down: torch.Tensor, up: torch.Tensor, parts: list[Part]) -> list[Piece] | str:
    """Each trained part's (down, up) from a fused file module, or a problem.

    Rows of up go to the parts by the model's own widths. A down shared by all parts (sd-scripts'
    layout, rank = the job's) goes whole to each; a block-diagonal up (our export, rank = the sum of
    the job's) gives each part its block of rows of down. Rows of an untrained part must be zero."""
    trained = [p for p in parts if p.layer is not None]
    ranks = [lora_rank(p.layer) for p in trained]
    in_features = lora_down_up(trained[0].layer)[0].shape[1]
    if (
        up.shape[0] != sum(p.rows for p in parts)
        or down.shape[1] != in_features
        or up.shape[1] != down.shape[0]
    ):
        want = (sum(p.rows for p in parts), in_features)
        return f"{key}: shape {(up.shape[0], down.shape[1])} in the file, {want} in the model"
    rows = dict(zip((p.name for p in parts), torch.split(up, [p.rows for p in parts]), strict=True))
    if any(rows[p.name].any() for p in parts if p.layer is None):
        return f"{key}: changes {[p.name for p in parts if p.layer is None]}, which this job does not train"
    rank = down.shape[0]
    if all(r == rank for r in ranks):
        return [(p.layer, down, rows[p.name]) for p in trained]
    if rank != sum(ranks):
        return _rank_problem(key, rank, ranks)
    pieces: list[Piece] = []
    col = 0
    for part, r in zip(trained, ranks, strict=True):
        block = rows[part.name]
        if block[:, :col].any() or block[:, col + r :].any():
            return _rank_problem(key, rank, ranks) + ": the file's up is not block-diagonal"
        pieces.append((part.layer, down[col : col + r], block[:, col : col + r]))
        col += r
    return pieces


def _part_of(key: str) -> str:
    """lora_unet / lora_te1 / lora_te3 of a key."""
    return "_".join(key.split("_", 2)[:2])


def import_flux_state_dict(
    state: dict[str, torch.Tensor], transformer: nn.Module | None, text_encoders: list[nn.Module]
) -> list[str]:
    """Copy an sd-scripts Flux LoRA into our layers (train further). Returns problems; empty when all fit.

    As :func:`trainer.kohya.import_state_dict`: parts of the file the job does not train are left out
    with a warning, every other module must be the job's with a rank that fits (nothing is copied
    otherwise), and a file alpha other than the job's is folded into the ups so delta W is the file's.
    """
    targets = file_modules(transformer, text_encoders)
    prefixes = {k.removesuffix(".lora_down.weight") for k in state if k.endswith(".lora_down.weight")}
    trained = {_part_of(t) for t in targets}
    if skipped := sorted(p for p in prefixes if _part_of(p) not in trained):
        log.warning("init weights: %d modules of parts this job does not train are left out", len(skipped))
        prefixes -= set(skipped)
    problems = [f"{p} is not a module of this model/job" for p in sorted(prefixes - set(targets))]
    if problems:
        return _first(problems)
    copies: list[tuple[Piece, float]] = []
    for prefix in sorted(prefixes):
        down, up = state[f"{prefix}.lora_down.weight"].float(), state[f"{prefix}.lora_up.weight"].float()
        rank = down.shape[0]
        alpha = float(state.get(f"{prefix}.alpha", torch.tensor(float(rank)))) or rank  # 0 means rank
        pieces = split(prefix, down, up, targets[prefix])
        if isinstance(pieces, str):
            problems.append(pieces)
        else:
            copies.extend((piece, alpha / rank) for piece in pieces)
    if problems:
        return _first(problems)
    with torch.no_grad():
        for (layer, src_down, src_up), file_scale in copies:
            down, up = lora_down_up(layer)
            down.copy_(src_down.to(down.dtype))
            up.copy_((src_up * (file_scale / _scale(layer))).to(up.dtype))
    return []


def diffusers_lora_state(
    state: dict[str, torch.Tensor], transformer: nn.Module, clip: nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """An sd-scripts Flux file as diffusers' peft keys (``transformer.<module>.lora_A.weight``, ...)
    for ``load_lora_weights`` on a model of any width, exactly: a fused module's up rows go to its
    parts by the model's own widths, each with only the rank columns its rows use (our block-diagonal
    export: its own block; sd-scripts' shared down: all), and alpha / rank is folded into the ups
    (diffusers then scales by 1). Unknown keys raise."""
    names = flux_key_map(*_block_counts(transformer))
    clip_names = {}
    if clip is not None:
        linears = [n.removesuffix(".base_layer") for n, m in clip.named_modules() if isinstance(m, nn.Linear)]
        clip_names = {_text_encoder_key(n, 0): n for n in linears}  # a loaded LoRA wraps them: base_layer
    out: dict[str, torch.Tensor] = {}
    prefixes = {k.removesuffix(".lora_down.weight") for k in state if k.endswith(".lora_down.weight")}
    for prefix in sorted(prefixes):
        down, up = state[f"{prefix}.lora_down.weight"].float(), state[f"{prefix}.lora_up.weight"].float()
        rank = down.shape[0]
        scale = (float(state.get(f"{prefix}.alpha", torch.tensor(float(rank)))) or rank) / rank
        if prefix in names:
            parts = names[prefix]
            rows = [transformer.get_submodule(n).out_features for n in parts]
            if up.shape[0] != sum(rows):
                raise ValueError(f"{prefix}: {up.shape[0]} output rows in the file, {sum(rows)} in the model")
            pieces = zip((f"transformer.{n}" for n in parts), torch.split(up, rows), strict=True)
        elif prefix in clip_names:
            pieces = [(f"text_encoder.{clip_names[prefix]}", up)]
        else:
            raise ValueError(f"{prefix} is not a module of this Flux model")
        for name, part_up in pieces:
            used = part_up.any(dim=0)  # a block-diagonal up: only this part's own rank columns
            if not used.any():
                continue  # a part the LoRA does not change
            out[f"{name}.lora_A.weight"] = down[used]
            out[f"{name}.lora_B.weight"] = part_up[:, used] * scale
    return out
