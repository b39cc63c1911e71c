"""Rendering: samplers by name, prompt embeddings with our clip skip, labelled grids.

This is the engine of the per-epoch previews, ``/generate`` and the compare grids.
The text is encoded by :func:`trainer.text.encode_texts` (diffusers' ``clip_skip``
crashes on transformers 5) and handed to the pipeline as embeddings.
"""

from __future__ import annotations

import gc
import inspect
import logging
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image, ImageDraw

from . import fonts
from .errors import TrainerError
from .families import get_family
from .models import BaseModel, autocast
from .text import Conditioning, encode_texts

log = logging.getLogger(__name__)

SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "lms": ("LMSDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
}


MIN_CELL = 192


class SamplerError(TrainerError, ValueError):
    """A sampler that cannot sample the model's noise schedule; the message names those that can."""


def make_sampler(name: str, scheduler_config: dict[str, Any]):
    """The sampler ``name`` on the model's schedule: its prediction type (epsilon or v) and, for a
    zero-terminal-SNR model, its rescaled betas and spacing (see :func:`trainer.models.prediction_config`)."""
    check_sampler(name, scheduler_config)
    return _sampler_class(name).from_config(scheduler_config, **SAMPLERS[name][1])


def check_sampler(name: str, scheduler_config: dict[str, Any]) -> None:
    """Raise :class:`SamplerError` when ``name`` cannot sample this schedule: diffusers' PNDM, LMS and
    Heun samplers have no ``rescale_betas_zero_snr`` and would sample a zero-terminal-SNR model on
    the betas it was not trained on."""
    if not scheduler_config.get("rescale_betas_zero_snr", False) or _rescales(name):
        return
    able = ", ".join(n for n in SAMPLERS if _rescales(n))
    raise SamplerError(f"sampler {name} cannot sample a zero-terminal-SNR model: use one of {able}")


def _sampler_class(name: str):
    import diffusers

    return getattr(diffusers, SAMPLERS[name][0])


def _rescales(name: str) -> bool:
    """Whether the sampler takes diffusers' ``rescale_betas_zero_snr``."""
    return "rescale_betas_zero_snr" in inspect.signature(_sampler_class(name).__init__).parameters


def build_pipeline(model: BaseModel, sampler: str):
    """A diffusers pipeline over the model's (possibly LoRA-wrapped) modules; no copies."""
    family = get_family(model.family)
    pipe = family.build_pipeline(model, family.make_scheduler(sampler, model.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def encode_prompts(
    model: BaseModel,
    prompt: str,
    negative: str,
    *,
    clip_skip: int | None,
    device: torch.device,
    dtype: torch.dtype,
    t5_max_length: int | None = None,
) -> tuple[Conditioning, Conditioning]:
    """The prompt's and the negative's conditioning, as :func:`render` uses them. A job whose text
    encoders are frozen encodes its preview prompt once (they then leave the GPU).
    ``t5_max_length``: the training job's, so a preview is conditioned as the job trained."""
    length = get_family(model.family).sequence_length(model, t5_max_length)
    with autocast(device, dtype):
        cond, uncond = (
            encode_texts(
                model.family,
                model.text_encoders,
                model.tokenizers,
                [text],
                clip_skip,
                device,
                sequence_length=length,
            )  # fmt: skip
            for text in (prompt, negative)
        )
    return cond, uncond


@torch.no_grad()
def render(
    pipe,
    model: BaseModel,
    prompt: str,
    negative: str,
    *,
    steps: int,
    cfg: float,
    width: int,
    height: int,
    seed: int,
    clip_skip: int | None,
    device: torch.device,
    dtype: torch.dtype,
    t5_max_length: int | None = None,
    conditioning: tuple[Conditioning, Conditioning] | None = None,
) -> Image.Image:
    """One image; the same seed gives the same starting noise on any device (CPU generator).
    ``conditioning``: the prompts already encoded (:func:`encode_prompts`), else they are now."""
    if conditioning is None:
        conditioning = encode_prompts(
            model, prompt, negative, clip_skip=clip_skip, device=device, dtype=dtype,
            t5_max_length=t5_max_length,
        )  # fmt: skip
    cond, uncond = (c.to(device) for c in conditioning)
    with autocast(device, dtype):
        kwargs: dict[str, Any] = get_family(model.family).render_inputs(cond, uncond)
        latents = pipe(
            num_inference_steps=steps,
            guidance_scale=cfg,
            width=width,
            height=height,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="latent",
            **kwargs,
        ).images
    return decode(pipe, model, latents, width, height)


def decode(pipe, model: BaseModel, latents: torch.Tensor, width: int, height: int) -> Image.Image:
    """Latents to a picture outside autocast, in the VAE's own dtype (SDXL's VAE stays fp32:
    decoding it in fp16 overflows into black images)."""
    with torch.autocast(latents.device.type, enabled=False):
        image = get_family(model.family).decode(pipe, model.vae, latents, width, height)
    return pipe.image_processor.postprocess(image.float(), output_type="pil")[0]


def release_memory(device: torch.device) -> None:
    """Drop sampling buffers so memory stays flat from epoch to epoch."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def make_grid(
    rows: Sequence[Sequence[Image.Image]],
    col_labels: Sequence[str],
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Image.Image:
    """Images in a labelled grid: a title line, a label above each column, one left of each row."""
    factor = max(1, -(-MIN_CELL // max(img.width for row in rows for img in row)))
    if factor > 1:  # tiny renders are enlarged so the labels fit and a person can see them
        rows = [
            [img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST) for img in row]
            for row in rows
        ]
    cell_w = max(img.width for row in rows for img in row)
    cell_h = max(img.height for row in rows for img in row)
    font_size = max(12, min(32, cell_w // 12))
    font = fonts.font_at(fonts.grid_font([*col_labels, *(row_labels or [])], title), font_size)
    label_h = font_size + 10
    title_h = label_h if title else 0
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = int(max(measure.textlength(r, font=font) for r in row_labels)) + 16 if row_labels else 0
    grid = Image.new(
        "RGB", (left + cell_w * len(col_labels), title_h + label_h + cell_h * len(rows)), "white"
    )
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((8, 4), _fit(draw, title, font, grid.width - 16), fill="black", font=font)
    for c, label in enumerate(col_labels):
        text = _fit(draw, label, font, cell_w - 12)
        draw.text((left + c * cell_w + 6, title_h + 4), text, fill="black", font=font)
    for r, row in enumerate(rows):
        top = title_h + label_h + r * cell_h
        if row_labels:
            draw.text((6, top + cell_h // 2 - font_size // 2), row_labels[r], fill="black", font=font)
        for c, img in enumerate(row):
            grid.paste(img, (left + c * cell_w, top))
    return grid


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text`` cut with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def weight_label(weight: float, template: str = "weight {weight}") -> str:
    """A weight's label: ``template`` (a GridLabels one) with the weight as ``0.8``."""
    return template.format(weight=f"{weight:g}")
