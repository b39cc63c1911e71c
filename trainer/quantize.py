"""The frozen base model in 4 or 8 bits (QLoRA), through bitsandbytes.

Why bitsandbytes and not torchao or optimum-quanto: it is already the ``optimizers`` extra's
package (AdamW8bit); peft's LoRA wraps its ``Linear4bit``/``Linear8bitLt`` natively (the QLoRA
path peft tests), where peft takes only torchao's int8 layers; diffusers' own Flux QLoRA recipe
uses it; and optimum-quanto has had no release since 2025-03.

``nf4`` is QLoRA's 4-bit NormalFloat (Flux.1's transformer: 23.8 GB in bf16, about 6.7 GB);
``int8`` is LLM.int8 (about 12 GB, closer to the bf16 weights, slower steps). Only the base
weights shrink: the LoRA layers, their gradients and the optimizer state stay in full precision.

Every ``Linear`` is replaced one at a time on the training device, so the full-precision weights
never sit on a GPU all at once: that is what lets a 24 GB card hold Flux.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

import torch
from torch import nn

from .errors import TrainerError

log = logging.getLogger(__name__)
MODES = ("nf4", "int8")
LLM_INT8_THRESHOLD = 6.0  # bitsandbytes' default outlier threshold (the LLM.int8 paper's)


class QuantizeUnavailable(TrainerError, RuntimeError):
    """quantize_base was asked for and bitsandbytes is missing or broken."""


@dataclass(frozen=True)
class Quantized:
    """What :func:`quantize_linears` did: layers replaced and their weights' size before and after."""

    mode: str
    layers: int
    mb_before: float
    mb_after: float

    def describe(self) -> str:
        return (
            f"base weights in {self.mode}: {self.layers} linear layers, "
            f"{self.mb_before:.0f} MB -> {self.mb_after:.0f} MB"
        )


def require_bitsandbytes():
    """The bitsandbytes module, or a :class:`QuantizeUnavailable` that says how to install it."""
    try:
        return importlib.import_module("bitsandbytes")
    except Exception as exc:  # bitsandbytes raises more than ImportError on broken installs
        raise QuantizeUnavailable(
            "quantize_base needs the package 'bitsandbytes', which is not installed or does not load "
            f"({type(exc).__name__}): pip install 'bitsandbytes' (or the project's [optimizers] extra), "
            "or leave quantize_base out"
        ) from exc


def quantize_linears(
    model: nn.Module, mode: str, device: torch.device, compute_dtype: torch.dtype
) -> Quantized:
    """Replace every ``nn.Linear`` of ``model`` by its bitsandbytes ``mode`` layer on ``device``.

    Call it before LoRA is added (peft then wraps the quantized layers) and before the rest of the
    model moves to ``device``. The model is marked the way peft reads it
    (``is_loaded_in_4bit``/``is_loaded_in_8bit``) so its LoRA layers are peft's bitsandbytes ones.
    """
    if mode not in MODES:
        raise ValueError(f"quantize_base must be one of {', '.join(MODES)}, not {mode!r}")
    bnb = require_bitsandbytes()
    names = [n for n, m in model.named_modules() if type(m) is nn.Linear]
    before = after = 0
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        linear: nn.Linear = getattr(parent, attr)
        before += linear.weight.numel() * 2  # counted as bf16, the published weights
        layer = _quantized(bnb, linear, mode, device, compute_dtype)
        after += layer.weight.numel() * layer.weight.element_size()
        setattr(parent, attr, layer)
        del linear
    setattr(model, "is_loaded_in_4bit" if mode == "nf4" else "is_loaded_in_8bit", True)
    done = Quantized(mode, len(names), before / 2**20, after / 2**20)
    log.info("%s", done.describe())
    return done


def _quantized(bnb, linear: nn.Linear, mode: str, device: torch.device, compute_dtype: torch.dtype):
    """One Linear as a frozen bitsandbytes layer on ``device`` (moving it there quantizes it)."""
    bias = linear.bias is not None
    weight = linear.weight.detach().to(compute_dtype)
    if mode == "nf4":
        layer = bnb.nn.Linear4bit(
            linear.in_features, linear.out_features, bias=bias, compute_dtype=compute_dtype,
            quant_type="nf4", device="meta",
        )  # fmt: skip
        layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
    else:
        layer = bnb.nn.Linear8bitLt(
            linear.in_features, linear.out_features, bias=bias, has_fp16_weights=False,
            threshold=LLM_INT8_THRESHOLD, device="meta",
        )  # fmt: skip
        layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    if bias:
        layer.bias = nn.Parameter(linear.bias.detach().to(compute_dtype), requires_grad=False)
    return layer.to(device)


def is_quantized(model: nn.Module) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))
