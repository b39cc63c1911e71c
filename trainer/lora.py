"""LoRA layers on the modules sd-scripts' ``networks/lora.py`` targets, through peft.

sd-scripts wraps every ``Linear`` and 1x1 ``Conv2d`` inside the UNet's transformer
blocks (``Transformer2DModel``: proj_in/proj_out, attention q/k/v/out, feed-forward)
and the text encoders' attention and MLP linears. We pick the same modules by class
and hand their exact names to peft, so the set of trained modules equals the set of
keys sd-scripts would write. Modules may have their own rank and alpha (block_dims /
block_alphas, see :mod:`trainer.blocks`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

ADAPTER = "default"
UNET_TARGET_CLASSES = ("Transformer2DModel",)
TEXT_TARGET_CLASSES = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")


def _is_target_layer(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)


def find_target_modules(model: nn.Module, container_classes: Iterable[str]) -> list[str]:
    """Full names of Linear / 1x1 Conv2d modules inside modules of the given class names."""
    containers = set(container_classes)
    names: list[str] = []
    for parent_name, parent in model.named_modules():
        if type(parent).__name__ not in containers:
            continue
        for child_name, child in parent.named_modules():
            if child_name and _is_target_layer(child):
                names.append(f"{parent_name}.{child_name}" if parent_name else child_name)
    return sorted(set(names))


def unet_target_modules(unet: nn.Module) -> list[str]:
    return find_target_modules(unet, UNET_TARGET_CLASSES)


def text_encoder_target_modules(text_encoder: nn.Module) -> list[str]:
    return find_target_modules(text_encoder, TEXT_TARGET_CLASSES)


def _exact(names: Iterable[str]) -> str:
    """A peft pattern key matching exactly these full module names.

    peft matches a pattern key with ``re.match(rf"(.*\\.)?({key})$", name)``: the ``^`` anchor stops
    a key from matching the tail of a longer name (``a.b`` must not match ``x.a.b``)."""
    return "^(?:" + "|".join(re.escape(n) for n in sorted(names)) + ")"


def add_lora(
    model: nn.Module,
    targets: list[str],
    dim: int,
    alpha: float,
    ranks: Mapping[str, tuple[int, float]] | None = None,
) -> None:
    """Inject LoRA (down: kaiming-uniform, up: zeros, scale alpha/dim, as sd-scripts) into ``targets``.

    ``ranks`` gives some targets their own (rank, alpha), as sd-scripts' block_dims/block_alphas
    do; a target with rank 0 gets no LoRA at all. Targets not in ``ranks`` get ``dim``/``alpha``.
    """
    if not targets:
        raise ValueError(f"{type(model).__name__} has no module that LoRA targets")
    ranks = dict(ranks or {})
    if unknown := sorted(set(ranks) - set(targets)):
        raise ValueError(f"ranks given for modules that are not LoRA targets: {unknown[:3]}")
    chosen = [t for t in targets if ranks.get(t, (dim, alpha))[0] > 0]
    if not chosen:
        raise ValueError(f"every module of {type(model).__name__} that LoRA targets has rank 0")
    # One pattern per distinct (rank, alpha): a few regexes, whatever the number of modules.
    by_value: dict[tuple[int, float], list[str]] = {}
    for name in chosen:
        value = ranks.get(name, (dim, alpha))
        if value != (dim, alpha):
            by_value.setdefault((int(value[0]), float(value[1])), []).append(name)
    patterns = {_exact(names): value for value, names in by_value.items()}
    config = LoraConfig(
        r=dim,
        lora_alpha=alpha,
        lora_dropout=0.0,
        init_lora_weights=True,
        target_modules=chosen,
        rank_pattern={key: r for key, (r, _) in patterns.items()},
        alpha_pattern={key: a for key, (_, a) in patterns.items()},
    )
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
    for _, layer in lora_layers(model):
        # peft would cast every input to the fp32 adapter dtype: a full activation copy per layer on
        # a half-precision base. Autocast handles the mixed dtypes without it.
        layer.cast_input_dtype_enabled = False


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoraLayer]]:
    """(module name, layer) for every LoRA-wrapped module of ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and ADAPTER in module.lora_A:
            yield name, module


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    params: list[nn.Parameter] = []
    for _, layer in lora_layers(model):
        params.append(layer.lora_A[ADAPTER].weight)
        params.append(layer.lora_B[ADAPTER].weight)
    return params


def lora_down_up(layer: LoraLayer) -> tuple[torch.Tensor, torch.Tensor]:
    return layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight


def lora_rank(layer: LoraLayer) -> int:
    return int(layer.r[ADAPTER])


def lora_alpha(layer: LoraLayer) -> float:
    """The layer's own alpha (its scale at weight 1.0 is alpha / rank, whatever set_scale did since)."""
    return float(layer.lora_alpha[ADAPTER])


def set_lora_weight(models: Iterable[nn.Module], weight: float) -> None:
    """Apply the LoRA at ``weight`` (1.0 = as trained, 0.0 = off) in every layer of ``models``."""
    for model in models:
        for _, layer in lora_layers(model):
            layer.set_scale(ADAPTER, weight)


def cast_lora_to_fp32(models: Iterable[nn.Module]) -> None:
    """Keep trainable LoRA weights in fp32 even when the frozen base runs in half precision."""
    for model in models:
        for param in lora_parameters(model):
            param.data = param.data.float()
