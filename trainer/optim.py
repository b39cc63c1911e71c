"""Optimizers by name (one registry) and the learning-rate schedule.

The optional optimizers come from their own packages (the ``optimizers`` extra). A
missing package is an error that says how to install it, never a silent swap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch

from .errors import TrainerError

ParamGroups = list[dict[str, Any]]
MAX_GRAD_NORM = 1.0  # gradients are clipped to this norm (sd-scripts' default max_grad_norm)


class OptimizerUnavailable(TrainerError, RuntimeError):
    pass


def _require(module: str, package: str, optimizer: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise OptimizerUnavailable(
            f"optimizer {optimizer} needs the package '{package}', which is not installed: "
            f"pip install '{package}' (or the project's [optimizers] extra), or pick another optimizer"
        ) from exc


def _adamw(groups: ParamGroups, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=lr, weight_decay=0.01)


def _adamw8bit(groups: ParamGroups, lr: float) -> torch.optim.Optimizer:
    bnb = _require("bitsandbytes.optim", "bitsandbytes", "AdamW8bit")
    return bnb.AdamW8bit(groups, lr=lr, weight_decay=0.01)


def _adafactor(groups: ParamGroups, lr: float) -> torch.optim.Optimizer:
    from transformers.optimization import Adafactor

    # A fixed lr driven by our scheduler, as sd-scripts' recommended Adafactor arguments.
    return Adafactor(groups, lr=lr, relative_step=False, scale_parameter=False, warmup_init=False)


def _lion(groups: ParamGroups, lr: float) -> torch.optim.Optimizer:
    lion = _require("lion_pytorch", "lion-pytorch", "Lion")
    # use_triton=True calls exit() when triton is missing.
    return lion.Lion(groups, lr=lr, use_triton=False)


def _dadaptation(groups: ParamGroups, lr: float) -> torch.optim.Optimizer:
    # sd-scripts' "DAdaptation" is the preprint's Adam variant; "DAdaptAdam" the packaged one.
    exp = _require("dadaptation.experimental", "dadaptation", "DAdaptation")
    return exp.DAdaptAdamPreprint(groups, lr=lr)


def _dadaptadam(groups: ParamGroups, lr: float) -> torch.optim.Optimizer:
    dadapt = _require("dadaptation", "dadaptation", "DAdaptAdam")
    return dadapt.DAdaptAdam(groups, lr=lr)


def _prodigy(groups: ParamGroups, lr: float) -> torch.optim.Optimizer:
    prodigy = _require("prodigyopt", "prodigyopt", "Prodigy")
    return prodigy.Prodigy(groups, lr=lr)


OPTIMIZERS: dict[str, Callable[[ParamGroups, float], torch.optim.Optimizer]] = {
    "AdamW": _adamw,
    "AdamW8bit": _adamw8bit,
    "Adafactor": _adafactor,
    "Lion": _lion,
    "DAdaptation": _dadaptation,
    "DAdaptAdam": _dadaptadam,
    "Prodigy": _prodigy,
}


def default_optimizer() -> str:
    """AdamW8bit where bitsandbytes is installed, else AdamW (the spec's default)."""
    try:
        importlib.import_module("bitsandbytes.optim")
    except Exception:  # bitsandbytes raises more than ImportError on broken installs
        return "AdamW"
    return "AdamW8bit"


def build_optimizer(name: str, groups: ParamGroups, lr: float) -> torch.optim.Optimizer:
    return OPTIMIZERS[name](groups, lr)


def optimizer_description(optimizer: torch.optim.Optimizer) -> str:
    """``module.Class`` as sd-scripts records it in ss_optimizer."""
    cls = type(optimizer)
    return f"{cls.__module__}.{cls.__name__}"


def build_scheduler(
    name: str, optimizer: torch.optim.Optimizer, warmup: int, total: int, cycles: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """diffusers' schedule of that name (restarts for cosine_with_restarts, power 1 polynomial)."""
    from diffusers.optimization import get_scheduler

    return get_scheduler(
        name,
        optimizer,
        num_warmup_steps=warmup,
        num_training_steps=total,
        num_cycles=cycles,
        power=1.0,
    )
