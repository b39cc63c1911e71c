"""The model families: what the bot needs to know of each without torch, in one table.

A family (SD1.5, SDXL, ...) is one row here plus one module under ``trainer/families/`` (loading,
text encoding, key names, rendering). Nothing else names a family: the bot reads labels, default
sizes, costs and the options a family refuses from this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FamilyInfo:
    """One family's facts for the bot and the job contract."""

    key: str  #: the registry's and the job's ``family`` value
    label: str  #: what members see ("SDXL")
    default_side: int  #: the training and rendering side in pixels when none is given
    default_clip_skip: int | None  #: kohya/A1111 clip skip; None: clip_skip does not apply
    step_cost: float  #: default stamina per 512-px image-step (``LORABOT_STEP_COSTS`` overrides)
    image_cost: float  #: default stamina per generated image at the default side
    steps_per_s: float  #: default speed for ETAs before one is measured (512 px, batch 1)
    block_layout: str | None = None  #: key of :data:`trainer.contract.blocks.LAYOUTS`, if any
    #: options of the guide that mean nothing for this family: refused, naming the family
    refused_options: frozenset[str] = field(default_factory=frozenset)
    #: options of a rendering job (/generate, compare grids) this family renders without: refused
    refused_render_options: frozenset[str] = field(default_factory=frozenset)
    #: whether a job trains text-encoder LoRA unless told not to (False: only with text_encoder_lr
    #: or text_encoder_only, as sd-scripts' Flux training, whose text encoders stay frozen and cached)
    text_encoder_by_default: bool = True
    default_steps: int = 25  #: sampling steps of /generate and previews when none are given
    default_cfg: float = 7.0  #: CFG scale (Flux dev: its distilled guidance) when none is given
    #: the precision a job that names none runs in (None: fp16 on a GPU, bf16 on a CPU); Flux's T5
    #: overflows in fp16
    default_precision: str | None = None
    #: seconds from a trainer's start to its first step (process, base model loaded, captions and
    #: latents cached), for ETAs: an estimate on a GPU host, so a short job never shows "0s"
    startup_s: float = 30.0
    #: the least GPU memory (GB) a job of this family trains in, with gradient checkpointing (and
    #: Flux's base quantized): a cluster node with smaller cards is never given one
    min_gpu_gb: float = 8.0


#: Job options the guide calls block-wise (they need a block layout).
BLOCK_OPTIONS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_dims", "block_alphas")
#: Options of flow-matching training (Flux): refused by the noise-prediction families.
FLOW_OPTIONS = frozenset(
    {"timestep_sampling", "sigmoid_scale", "discrete_flow_shift", "guidance_scale", "t5_max_length"}
)
#: Options of noise-prediction training that flow matching has no use for (sd-scripts' Flux
#: training takes none of them) or that need CLIP-only captions.
NOISE_OPTIONS = frozenset({
    "min_snr_gamma", "noise_offset", "multires_noise_iterations", "multires_noise_discount",
    "weighted_captions", "max_token_length", "v_parameterization", "zero_terminal_snr",
})  # fmt: skip
#: Render options a guidance-distilled flow model (Flux) has no use for: it takes no negative prompt
#: (no true CFG) and samples with its own flow-matching Euler scheduler whatever the sampler name.
DISTILLED_RENDER_OPTIONS = frozenset({"negative", "sampler"})
#: The same options of a training job's previews.
DISTILLED_PREVIEW_OPTIONS = frozenset(f"preview_{key}" for key in DISTILLED_RENDER_OPTIONS)


FAMILIES: dict[str, FamilyInfo] = {
    info.key: info
    for info in (
        FamilyInfo("sd15", "SD1.5", 512, 2, step_cost=0.1, image_cost=1, steps_per_s=2.0,
                   block_layout="sd15", refused_options=FLOW_OPTIONS, min_gpu_gb=6.0),
        # The SDXL rate makes the guide's job (700 steps, batch 1, 512 px) cost 157.
        FamilyInfo("sdxl", "SDXL", 1024, 1, step_cost=0.2243, image_cost=2, steps_per_s=1.0,
                   block_layout="sdxl", refused_options=FLOW_OPTIONS, startup_s=60.0, min_gpu_gb=12.0),
        # Flux.1 (a 12B transformer against SDXL's 2.6B UNet): bench/family_flops.py counts 11.0x
        # SDXL's FLOPs per step at 1024 px (its 512-token T5 sequence: 13.5x at 512), 4.4x per
        # picture (20 steps without CFG against 25 with). The same count gives SD1.5's rates
        # within 2% (0.113, 1.98 steps/s). Until bench/gpu_check.py measures step times on the
        # server's GPU, an upper bound: LORABOT_STEP_COSTS / _IMAGE_COSTS / _STEPS_PER_S set them.
        FamilyInfo("flux", "Flux.1", 1024, None, step_cost=2.47, image_cost=9, steps_per_s=0.091,
                   refused_options=NOISE_OPTIONS | DISTILLED_PREVIEW_OPTIONS,
                   refused_render_options=DISTILLED_RENDER_OPTIONS, text_encoder_by_default=False,
                   default_steps=20, default_cfg=3.5, default_precision="bf16", startup_s=180.0,
                   min_gpu_gb=16.0),
    )
}  # fmt: skip

#: The family of the offline demo and of examples that name none.
DEFAULT_FAMILY = "sd15"


class UnknownFamily(ValueError):
    """A family that is not a row of :data:`FAMILIES`."""


def family_info(key: str) -> FamilyInfo:
    try:
        return FAMILIES[key]
    except KeyError:
        raise UnknownFamily(f"unknown model family {key!r}: one of {', '.join(FAMILIES)}") from None


def family_label(key: str | None) -> str:
    """The row's label, or the key itself (``?`` when unknown) for a family this bot lacks."""
    info = FAMILIES.get(key or "")
    return info.label if info else (key or "?")


def refused_options(family: str, given: dict[str, object]) -> list[str]:
    """One line per option in ``given`` (the job's options that differ from their defaults, see
    ``TrainJob.changed_options``) that ``family`` does not take."""
    info = family_info(family)
    refused = set(info.refused_options)
    if info.block_layout is None:
        refused |= set(BLOCK_OPTIONS)
    if info.default_clip_skip is None:
        refused.add("clip_skip")
    return _refusals(info, refused, given)


def render_options_not_taken(family: str) -> frozenset[str]:
    """The rendering job's options ``family`` renders without (clip_skip where it has none)."""
    info = family_info(family)
    return info.refused_render_options | ({"clip_skip"} if info.default_clip_skip is None else set())


def refused_render_options(family: str, given: dict[str, object]) -> list[str]:
    """One line per option in ``given`` (a rendering job's options that differ from their defaults,
    see ``GenerateJob.changed_options``) that ``family`` renders without."""
    return _refusals(family_info(family), render_options_not_taken(family), given)


def _refusals(info: FamilyInfo, refused: set[str] | frozenset[str], given: dict[str, object]) -> list[str]:
    return [f"{key} does not apply to {info.label}: leave it out" for key in sorted(refused) if key in given]
