"""Block-wise ranks and learning rates on the UNet (sd-scripts' ``block_dims`` / ``*_lr_weight``).

The per-block lists come from :mod:`trainer.contract.blocks`; here each UNet LoRA module is put
in its block the way sd-scripts' ``get_block_index`` does it, from the module's kohya key, so a
block means the same modules here, in sd-scripts and in the file's ``ss_network_args``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from torch import nn

from . import kohya, lora
from .contract.blocks import block_dims_alphas, block_lr_weights, block_problems, layout
from .families import get_family

if TYPE_CHECKING:
    from .contract import TrainJob

log = logging.getLogger(__name__)


def kohya_block_index(key: str, family: str) -> int:
    """sd-scripts' block index of a UNet module from its kohya key (``lora_unet_...``); -1 if none."""
    return get_family(family).block_index(key)


def unet_block_index(module_name: str, family: str, layers_per_block: int) -> int:
    """sd-scripts' block index of the UNet module at diffusers path ``module_name``.

    ``layers_per_block`` (the UNet config's) places SDXL modules in the original ``input_blocks.N``
    numbering; SD1.5 keys are diffusers paths, numbered ``3 * level + index`` as sd-scripts does.
    """
    index = kohya_block_index(kohya.unet_key(module_name, family, layers_per_block), family)
    if index < 0:
        raise ValueError(f"UNet module {module_name!r} is in no block sd-scripts numbers")
    return index


def _layers_per_block(unet: nn.Module, family: str) -> int:
    return get_family(family).layers_per_block(unet)


def add_unet_lora(unet: nn.Module, job: TrainJob, family: str) -> list[dict[str, Any]]:
    """Add the UNet's LoRA for ``job`` and return its optimizer param groups.

    With block_dims or lr weights each module gets its block's rank and alpha (rank 0: no module);
    with lr weights there is one group per block holding modules, ``name`` ``unet_block{i}`` and lr
    unet lr x the block's weight, as sd-scripts' ``prepare_optimizer_params``. Otherwise one group
    with network_dim/network_alpha everywhere. Raises ValueError (one line per problem joined by
    "; ") when the block options do not fit ``family``.
    """
    if problems := block_problems(job, family):
        raise ValueError("; ".join(problems))
    targets = get_family(family).denoiser_targets(unet)
    unet_lr = job.resolved_unet_lr()
    per_block = block_dims_alphas(job, family)
    if per_block is None:
        lora.add_lora(unet, targets, job.network_dim, job.network_alpha)
        return [{"params": lora.lora_parameters(unet), "lr": unet_lr}]

    dims, alphas = per_block
    lpb = _layers_per_block(unet, family)
    block_of = {name: unet_block_index(name, family, lpb) for name in targets}
    ranks = {name: (dims[b], alphas[b]) for name, b in block_of.items()}
    if not any(rank for rank, _ in ranks.values()):
        labels = layout(family).names(sorted(set(block_of.values())))
        raise ValueError(
            f"block_dims and the lr weights leave no UNet module with LoRA: this model has LoRA "
            f"modules only in {labels}; give one of them a rank and an lr weight above 0"
        )
    lora.add_lora(unet, targets, job.network_dim, job.network_alpha, ranks=ranks)
    _log_blocks(unet, family, block_of)

    weights = block_lr_weights(job, family)
    if weights is None:
        return [{"params": lora.lora_parameters(unet), "lr": unet_lr}]
    params: dict[int, list[nn.Parameter]] = {}
    for name, layer in lora.lora_layers(unet):
        params.setdefault(block_of[name], []).extend(lora.lora_down_up(layer))
    groups = []
    for block in sorted(params):
        lr = unet_lr * weights[block]
        if lr == 0:  # sd-scripts leaves out groups without a learning rate
            continue
        groups.append({"params": params[block], "lr": lr, "name": f"unet_block{block}"})
    return groups


def _log_blocks(unet: nn.Module, family: str, block_of: dict[str, int]) -> None:
    labels = layout(family).labels
    counts: dict[int, list[int]] = {}
    for name, layer in lora.lora_layers(unet):
        counts.setdefault(block_of[name], []).append(lora.lora_rank(layer))
    log.info(
        "UNet LoRA per block: %s",
        ", ".join(f"{labels[b]} {len(r)}x rank {max(r)}" for b, r in sorted(counts.items())),
    )
