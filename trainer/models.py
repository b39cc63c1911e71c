"""Loading base models: a diffusers folder, a single-file checkpoint, or a hub id.

Tiny test models and real ones load through this same code. The family is detected
from the folder's ``model_index.json`` or the checkpoint's keys (each family module says
how), or given by the job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import TrainerError
from .families import all_families, get_family

log = logging.getLogger(__name__)


class ModelLoadError(TrainerError, RuntimeError):
    """The base model cannot be found or loaded; the message says what to fix."""


@dataclass
class BaseModel:
    """The parts of a Stable Diffusion model the trainer and the renderer use."""

    family: str
    name: str
    unet: nn.Module
    vae: nn.Module
    text_encoders: list[nn.Module]
    tokenizers: list[Any]
    scheduler_config: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    @property
    def zero_terminal_snr(self) -> bool:
        return bool(self.scheduler_config.get("rescale_betas_zero_snr", False))

    def modules(self) -> list[nn.Module]:
        return [self.unet, self.vae, *self.text_encoders]


def detect_family(source: str) -> str:
    """The family's key, from a diffusers folder's model_index.json or a checkpoint's tensor names."""
    path = Path(source)
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise ModelLoadError(f"{path} is a folder without model_index.json: not a diffusers model")
        data = json.loads(index.read_text())
        return _first_family(lambda f: f.matches_index(data), path.name)
    if path.is_file() and path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
        return _first_family(lambda f: any(k.startswith(f.checkpoint_markers) for k in keys), path.name)
    raise ModelLoadError(
        f"cannot detect the family of {source!r} (not a local folder or .safetensors); set model_family"
    )


def _first_family(matches, name: str) -> str:
    for family in all_families():
        if matches(family):
            return family.key
    known = ", ".join(f.info.label for f in all_families())
    raise ModelLoadError(f"{name}: not a model of a known family ({known}); set model_family")


def load_pipeline(source: str, family: str | None = None, config: str | None = None):
    """Load a diffusers pipeline (fp32, CPU) from a folder, a single file, or a hub id."""
    path = Path(source)
    local = path.exists()
    if not local and source.endswith((".safetensors", ".ckpt")):
        raise ModelLoadError(f"base model file {source} does not exist")
    if family is None:
        if not local:
            raise ModelLoadError(f"set model_family for the hub model {source!r}")
        family = detect_family(source)
    cls = get_family(family).pipeline_class()
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    # fp32 on the CPU; place() moves and casts
    kwargs: dict[str, Any] = get_family(family).pipeline_kwargs()
    try:
        if local and path.is_file():
            if config is not None:
                kwargs.update(config=config, local_files_only=True)
            pipe = cls.from_single_file(str(path), **kwargs)
        else:
            pipe = cls.from_pretrained(source, local_files_only=local or offline, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load base model {source}: {exc}") from exc
    return pipe, family


def load_base_model(source: str, family: str | None = None, config: str | None = None) -> BaseModel:
    pipe, family = load_pipeline(source, family, config)
    return base_model_from_pipeline(pipe, family, source)


def base_model_from_pipeline(pipe, family: str, source: str) -> BaseModel:
    """The parts of a loaded pipeline (its modules, not copies)."""
    fam = get_family(family)
    encoders = [getattr(pipe, name) for name in fam.text_encoder_attrs]
    tokenizers = [getattr(pipe, name) for name in fam.tokenizer_attrs]
    stated = fam.read_prediction(source)  # what it states adds to the loaded config, never removes
    schedule = prediction_config(
        dict(pipe.scheduler.config), stated.v_prediction or None, stated.zero_terminal_snr or None
    )
    return BaseModel(
        family=family,
        name=Path(source).name if Path(source).exists() else source,
        unet=getattr(pipe, fam.denoiser_attr),
        vae=pipe.vae,
        text_encoders=encoders,
        tokenizers=tokenizers,
        scheduler_config=schedule,
    )


def prediction_config(
    config: dict[str, Any], v_prediction: bool | None, zero_terminal_snr: bool | None
) -> dict[str, Any]:
    """A copy of the scheduler ``config`` with the prediction type and the noise schedule set where
    given (None keeps what ``config`` says): training and every sampler are built from it.

    v-prediction is diffusers' ``prediction_type="v_prediction"`` (sd-scripts' --v_parameterization);
    zero terminal SNR is ``rescale_betas_zero_snr=True`` (sd-scripts' --zero_terminal_snr: the same
    rescale of the betas, Lin et al. 2023), and sampling then starts at the last timestep, the
    paper's fix that diffusers' "trailing" spacing gives (a "leading" spacing becomes "trailing";
    ComfyUI's schedules start at the largest sigma already).
    """
    changed: dict[str, Any] = {}
    if v_prediction is not None:
        changed["prediction_type"] = "v_prediction" if v_prediction else "epsilon"
    if zero_terminal_snr is not None:
        changed["rescale_betas_zero_snr"] = zero_terminal_snr
        if zero_terminal_snr and config.get("timestep_spacing", "leading") == "leading":
            changed["timestep_spacing"] = "trailing"
    out = {**config, **changed}
    # diffusers' from_config ignores the keys listed as defaults: a key set here is not one any more
    if "_use_default_values" in out:
        out["_use_default_values"] = [k for k in out["_use_default_values"] if k not in changed]
    return out


def pick_device(requested: str | None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def weight_dtype(mixed_precision: str | None, device: torch.device) -> torch.dtype:
    """The frozen base weights' dtype. Default fp16 on GPU, bf16 on CPU (the spec's defaults)."""
    mp = mixed_precision or ("fp16" if device.type == "cuda" else "bf16")
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "no": torch.float32}[mp]


def autocast(device: torch.device, dtype: torch.dtype):
    """Autocast to ``dtype`` on ``device``; nothing for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def resolved_precision(mixed_precision: str | None, device: torch.device) -> str:
    return mixed_precision or ("fp16" if device.type == "cuda" else "bf16")


def place(model: BaseModel, device: torch.device, dtype: torch.dtype, *, denoiser: bool = True) -> None:
    """Move the model to ``device``: UNet and text encoders in ``dtype``, the VAE kept out of fp16
    where it overflows (SDXL's VAE in fp16 produces NaNs; it runs in fp32 there).

    ``denoiser=False`` leaves the UNet/transformer on the host in ``dtype``, for
    :func:`place_denoiser` once the frozen text encoders have been cached and left the GPU."""
    fp16_safe = get_family(model.family).vae_fp16_safe
    model.unet.to("cpu" if not denoiser else device, dtype)
    for te in model.text_encoders:
        te.to(device, dtype)
    vae_dtype = dtype
    if dtype == torch.float16 and (not fp16_safe or model.vae.config.get("force_upcast", False)):
        vae_dtype = torch.float32
    model.vae.to(device, vae_dtype)
    for m in model.modules():
        m.requires_grad_(False)


def place_denoiser(model: BaseModel, device: torch.device, dtype: torch.dtype, quantize: str | None):
    """The UNet/transformer onto ``device``, its linear layers first quantized there one by one
    when ``quantize`` names a mode (:mod:`trainer.quantize`); returns what quantizing did, or None."""
    done = None
    if quantize:
        from .quantize import quantize_linears

        done = quantize_linears(model.unet, quantize, device, dtype)
    model.unet.to(device, dtype)
    model.unet.requires_grad_(False)
    return done
