"""The advanced training options of the guide's step 5: the prediction type and noise schedule
(v-prediction, zero terminal SNR), loss weighting, noise, long and weighted captions, block-wise
learning rates and ranks, and speed/memory switches.

Values are checked here one by one; the checks that need the model family (how many blocks a
list must have) are in :mod:`trainer.contract.blocks`, run by the bot before it charges and by
the trainer once the model is loaded.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: sd-scripts' block learning-rate presets; ``name+0.25`` adds 0.25 to every block.
LR_WEIGHT_PRESETS = ("cosine", "sine", "linear", "reverse_linear", "zeros")
_PRESET = re.compile(r"^(" + "|".join(LR_WEIGHT_PRESETS) + r")(\+\d+(\.\d*)?)?$")

BlockWeight = Annotated[float, Field(ge=0.0, le=10.0)]
BlockDim = Annotated[int, Field(ge=0, le=1024)]
BlockAlpha = Annotated[float, Field(ge=0.0, le=1024.0)]


def _split_numbers(value: Any) -> Any:
    """``"1, 0.5,0"`` or ``"(1 0.5 0)"`` -> a list of strings the field's item type then checks."""
    if isinstance(value, str):
        body = value.strip().strip("[]()")
        return [part for part in re.split(r"[\s,;]+", body) if part]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    return value


class AdvancedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Prediction type and noise schedule (sd-scripts' options; the base model states its own) --------
    v_parameterization: bool | None = Field(
        None,
        description="train the v-prediction target (NoobAI-XL v-pred and kin); default: what the model says",
    )
    zero_terminal_snr: bool | None = Field(
        None,
        description="rescale the noise schedule to zero terminal SNR (with v-prediction); "
        "default: what the model says",
    )

    # Loss and noise ------------------------------------------------------------------------
    min_snr_gamma: float | None = Field(
        None,
        gt=0.0,
        le=20.0,
        description="Min-SNR-gamma loss weighting (5 is the paper's value); off when unset",
    )
    noise_offset: float = Field(
        0.0, ge=0.0, le=1.0, description="offset noise strength (0.05-0.1 usual); 0 = off"
    )
    multires_noise_iterations: int = Field(
        0, ge=0, le=10, description="pyramid (multi-resolution) noise levels (6-10 usual); 0 = off"
    )
    multires_noise_discount: float = Field(
        0.3, gt=0.0, le=1.0, description="weight of each coarser pyramid noise level"
    )

    # Flow matching (Flux): noise levels, guidance and T5 length, as sd-scripts' Flux training ---
    timestep_sampling: Literal["sigma", "uniform", "sigmoid", "shift", "flux_shift"] | None = Field(
        None,
        description="how training draws noise levels; default shift (sd-scripts' recommended Flux setting)",
    )
    sigmoid_scale: float | None = Field(
        None, gt=0.0, le=10.0, description="sigmoid and shift sampling; default 1.0"
    )
    discrete_flow_shift: float | None = Field(
        None, gt=0.0, le=100.0, description="shift sampling's shift; default 3.1582 (sd-scripts' Flux docs)"
    )
    guidance_scale: float | None = Field(
        None,
        ge=0.0,
        le=30.0,
        description="Flux dev's guidance input while training; default 1.0, as sd-scripts",
    )
    t5_max_length: int | None = Field(
        None, ge=16, le=512, description="T5 caption tokens; default 512 for Flux dev, 256 for schnell"
    )

    # Captions ------------------------------------------------------------------------------
    weighted_captions: bool = Field(
        False,
        description="read (tag:1.2), (tag) and [tag] in captions as weights; write \\( \\) for brackets",
    )
    max_token_length: Literal[75, 150, 225] = Field(
        75, description="caption tokens: 150 or 225 encode 2 or 3 chunks of 75, as sd-scripts does"
    )
    caption_variants: int = Field(
        4, ge=1, le=64,
        description="shuffled captions cached per image when the text encoders are frozen",
    )  # fmt: skip

    # Blocks (sd-scripts' block-wise learning rates and ranks) -----------------------------------
    down_lr_weight: str | list[BlockWeight] | None = Field(
        None,
        description="lr weights of the down blocks (12 SD1.5, 9 SDXL), or a preset: "
        "cosine, sine, linear, reverse_linear, zeros (optionally +0.5)",
    )
    mid_lr_weight: list[BlockWeight] | None = Field(
        None, min_length=1, max_length=3, description="lr weight of the middle block (1 SD1.5, 3 SDXL)"
    )
    up_lr_weight: str | list[BlockWeight] | None = Field(
        None, description="lr weights of the up blocks (12 SD1.5, 9 SDXL), or a preset like down_lr_weight"
    )
    block_lr_zero_threshold: float = Field(
        0.0, ge=0.0, le=10.0, description="block lr weights at or below this train nothing"
    )
    block_dims: list[BlockDim] | None = Field(
        None, min_length=23, max_length=25, description="rank per UNet block (25 SD1.5, 23 SDXL); 0 = no LoRA"
    )
    block_alphas: list[BlockAlpha] | None = Field(
        None, min_length=23, max_length=25, description="alpha per UNet block (25 SD1.5, 23 SDXL)"
    )

    # Speed and memory ----------------------------------------------------------------------
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: much less memory, about 25% slower"
    )
    compile_unet: bool = Field(
        False,
        description="torch.compile the UNet on a GPU when the job is long enough to pay the compile back",
    )
    quantize_base: Literal["nf4", "int8"] | None = Field(
        None,
        description="keep the frozen base model in 4-bit NF4 or 8-bit (QLoRA, bitsandbytes): "
        "Flux.1 in about 7 or 12 GB instead of 24; a little slower",
    )

    @field_validator("down_lr_weight", "up_lr_weight", mode="before")
    @classmethod
    def _preset_or_numbers(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip().lower().replace(" ", "")
            if _PRESET.match(text):
                return text
            if not re.search(r"\d", text):
                raise ValueError(
                    f"'{value}' is neither a preset ({', '.join(LR_WEIGHT_PRESETS)}, optionally +0.5) "
                    "nor comma-separated numbers"
                )
        return _split_numbers(value)

    @field_validator("mid_lr_weight", "block_dims", "block_alphas", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        return _split_numbers(value)
