"""The jobs of the contract: what the bot may ask the trainer to do, validated here.

A training job (:class:`TrainJob`) or a rendering job (:class:`GenerateJob`); reading them from
TOML or JSON with clear, per-key messages is :mod:`trainer.contract.loading`.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from ..errors import TrainerError
from .advanced import AdvancedOptions
from .blocks import uses_block_lr
from .families import family_info, refused_render_options
from .labels import GridLabels

SCHEMA_VERSION = 1

# Process exit codes of ``python -m trainer train|generate``.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID_JOB = 2
EXIT_CANCELLED = 3


def _known_family(key: str) -> str:
    return family_info(key).key


#: A row of :data:`trainer.contract.families.FAMILIES`.
Family = Annotated[str, AfterValidator(_known_family)]
Precision = Literal["fp16", "bf16", "no"]
SavePrecision = Literal["fp16", "bf16", "fp32"]
SchedulerName = Literal[
    "cosine_with_restarts", "cosine", "linear", "polynomial", "constant_with_warmup", "constant"
]
OptimizerName = Literal["AdamW", "AdamW8bit", "Adafactor", "Lion", "DAdaptation", "DAdaptAdam", "Prodigy"]
SamplerName = Literal["euler_a", "euler", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "pndm", "lms", "heun"]

#: Optimizers that estimate their own step size: the guide (and sd-scripts) run them at lr 1.0.
ADAPTIVE_OPTIMIZERS = frozenset({"DAdaptation", "DAdaptAdam", "Prodigy"})
DEFAULT_LEARNING_RATE = 1e-4
DEFAULT_PREVIEW_NEGATIVE = "lowres, bad anatomy, bad hands, worst quality, low quality, blurry"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class JobError(TrainerError, ValueError):
    """A job file that cannot run; ``problems`` are short lines a person can act on."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def total_steps(images: int, repeats: int, batch_size: int, epochs: int) -> int:
    """Optimizer steps of a job: ceil(images x repeats / batch_size) x epochs (the guide's rule)."""
    return steps_per_epoch(images, repeats, batch_size) * epochs


def steps_per_epoch(images: int, repeats: int, batch_size: int) -> int:
    if images < 0 or repeats < 1 or batch_size < 1:
        raise ValueError("images >= 0, repeats >= 1 and batch_size >= 1 are required")
    return math.ceil(images * repeats / batch_size)


def warmup_steps(total: int, warmup_percent: float) -> int:
    """Warmup steps for ``lr_warmup_percent`` (a percent of all steps, as in the guide's 10%)."""
    return int(total * warmup_percent / 100.0 + 1e-9)  # truncated, as sd-scripts' int(ratio * steps)


def default_clip_skip(family: str) -> int | None:
    """kohya/A1111 clip skip (2 for SD1.5, 1, the usual penultimate layer, for SDXL); None where
    the family has no clip skip."""
    return family_info(family).default_clip_skip


def default_resolution(family: str) -> int:
    return family_info(family).default_side


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSource(_Strict):
    """Where the base model comes from; shared by training and rendering jobs."""

    base_model: str = Field(description="diffusers folder, single-file .safetensors checkpoint, or hub id")
    model_family: Family | None = Field(
        None, description="a family of the contract's table; detected when left out"
    )
    base_model_config: str | None = Field(
        None, description="diffusers config folder for a single-file checkpoint (offline loading)"
    )
    device: str | None = Field(None, description="torch device; default cuda when available, else cpu")
    mixed_precision: Precision | None = Field(None, description="default fp16 on GPU, bf16 on CPU")
    schema_: int = Field(SCHEMA_VERSION, alias="schema", ge=1)

    @field_validator("schema_")
    @classmethod
    def _known_schema(cls, v: int) -> int:
        if v > SCHEMA_VERSION:
            raise ValueError(
                f"schema {v} is newer than this trainer understands ({SCHEMA_VERSION}); update it"
            )
        return v

    def changed_options(self) -> dict[str, Any]:
        """The options whose value differs from the default (what a family may refuse): an option
        a job leaves at its default (a rendering job's empty negative, say) passes on any family."""
        return {
            name: getattr(self, name)
            for name, spec in type(self).model_fields.items()
            if not spec.is_required() and getattr(self, name) != spec.get_default(call_default_factory=True)
        }


class PreviewOptions(_Strict):
    previews: bool = True
    preview_prompt: str | None = Field(None, description="default: the trigger word and the top tags")
    preview_negative: str = DEFAULT_PREVIEW_NEGATIVE
    preview_steps: int = Field(20, ge=1, le=150)
    preview_cfg: float | None = Field(
        None, ge=1.0, le=30.0, description="default: the family's (7, Flux 3.5)"
    )
    preview_sampler: SamplerName = "euler_a"
    preview_size: int | None = Field(None, ge=64, le=2048, description="square side; default resolution")
    preview_seed: int | None = Field(None, ge=0, description="default: the job's seed")
    preview_weights: list[Annotated[float, Field(ge=0.0, le=2.0)]] = Field(
        default_factory=lambda: [0.7, 0.8, 1.0], min_length=1, max_length=8
    )
    grid_labels: GridLabels | None = Field(
        None, description="the preview grids' words in the member's language (the bot sets them)"
    )

    @field_validator("preview_size")
    @classmethod
    def _multiple_of_8(cls, v: int | None) -> int | None:
        if v is not None and v % 8:
            raise ValueError("must be a multiple of 8")
        return v


class TrainJob(ModelSource, PreviewOptions, AdvancedOptions):
    """One training job. Every key of a job file is a field here; unknown keys are errors."""

    dataset_dir: str
    output_dir: str
    output_name: str = "lora"

    repeats: int = Field(10, ge=1, le=1000)
    epochs: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(1, ge=1, le=64)
    save_every_n_epochs: int = Field(1, ge=1, le=1000)
    save_precision: SavePrecision = "fp16"

    learning_rate: float | None = Field(
        None, gt=0.0, le=10.0, description="default 1e-4; 1.0 for D-Adapt/Prodigy"
    )
    unet_lr: float | None = Field(None, ge=0.0, le=10.0)
    text_encoder_lr: float | None = Field(None, ge=0.0, le=10.0)
    lr_warmup_percent: float = Field(0.0, ge=0.0, lt=100.0)
    lr_scheduler: SchedulerName = "cosine_with_restarts"
    lr_restart_cycles: int = Field(1, ge=1, le=100)
    optimizer: OptimizerName | None = Field(None, description="default AdamW8bit where available, else AdamW")

    unet_only: bool = False
    text_encoder_only: bool = False
    network_dim: int = Field(32, ge=1, le=1024)
    network_alpha: float = Field(16.0, gt=0.0, le=1024.0)
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="random when left out")
    clip_skip: int | None = Field(None, ge=1, le=12, description="default 2 for SD1.5, 1 for SDXL")
    shuffle_tags: bool = True
    keep_tokens: int = Field(1, ge=0, le=75)
    resolution: int | None = Field(None, ge=64, le=4096, description="default 512 (SD1.5) / 1024 (SDXL)")

    event_every_n_steps: int | None = Field(None, ge=1, description="default: about one step event a second")
    resume: bool = Field(False, description="continue from the saved state in output_dir, if there is one")
    init_weights: str | None = Field(
        None,
        description="a LoRA .safetensors to start from (train further); a saved state, when resuming, wins",
    )

    @field_validator("output_name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not _SAFE_NAME.match(v):
            raise ValueError(
                "use letters, digits, '.', '_' or '-' (at most 100), starting with a letter or digit"
            )
        return v

    @field_validator("resolution")
    @classmethod
    def _multiple_of_64(cls, v: int | None) -> int | None:
        if v is not None and v % 64:
            raise ValueError("must be a multiple of 64 (buckets step by 64 pixels)")
        return v

    @model_validator(mode="after")
    def _rules(self) -> TrainJob:
        problems = _incompatible_pairs(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # Resolved values -------------------------------------------------------------
    def resolved_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1.0 if self.optimizer in ADAPTIVE_OPTIMIZERS else DEFAULT_LEARNING_RATE

    def resolved_unet_lr(self) -> float:
        """The UNet's lr (0 when the UNet is not trained); unet_lr overrides learning_rate."""
        if self.text_encoder_only:
            return 0.0
        return self.unet_lr if self.unet_lr is not None else self.resolved_learning_rate()

    def resolved_text_encoder_lr(self) -> float:
        """The text encoders' lr (0 when they are not trained); text_encoder_lr overrides learning_rate."""
        if self.unet_only:
            return 0.0
        return self.text_encoder_lr if self.text_encoder_lr is not None else self.resolved_learning_rate()

    def trains_unet(self) -> bool:
        return self.resolved_unet_lr() > 0

    def trains_text_encoder(self) -> bool:
        return self.resolved_text_encoder_lr() > 0

    def for_family(self, family: str) -> TrainJob:
        """The job as ``family`` runs it: a family whose text encoders stay frozen unless asked
        (Flux) trains the denoiser only when neither text_encoder_lr nor text_encoder_only is set,
        and a job that names no precision gets the family's, if it has one."""
        info, update = family_info(family), {}
        if not (info.text_encoder_by_default or self.text_encoder_lr or self.text_encoder_only):
            update["unet_only"] = True
        if self.mixed_precision is None and info.default_precision:
            update["mixed_precision"] = info.default_precision
        return self.model_copy(update=update) if update else self

    def resolved_clip_skip(self, family: str) -> int | None:
        return self.clip_skip if self.clip_skip is not None else default_clip_skip(family)

    def resolved_resolution(self, family: str) -> int:
        return self.resolution if self.resolution is not None else default_resolution(family)


def _incompatible_pairs(job: TrainJob) -> list[str]:
    problems = []
    if job.unet_only and job.text_encoder_only:
        problems.append("unet_only and text_encoder_only exclude each other: pick at most one")
    if job.lr_scheduler == "constant" and job.lr_warmup_percent > 0:
        problems.append(
            "lr_scheduler 'constant' takes no warmup: set lr_warmup_percent = 0 or use constant_with_warmup"
        )
    if job.optimizer in ADAPTIVE_OPTIMIZERS:
        for key in ("learning_rate", "unet_lr", "text_encoder_lr"):
            value = getattr(job, key)
            if value is not None and value not in (0.0, 1.0):
                problems.append(
                    f"{job.optimizer} finds its own step size and wants {key} = 1.0 (got {value:g}); "
                    "set it to 1.0 or leave it out"
                )
    if job.unet_only and job.unet_lr == 0:
        problems.append("unet_only with unet_lr = 0 trains nothing: raise unet_lr")
    if job.text_encoder_only and job.text_encoder_lr == 0:
        problems.append("text_encoder_only with text_encoder_lr = 0 trains nothing: raise text_encoder_lr")
    if job.unet_lr == 0 and job.text_encoder_lr == 0:
        problems.append("unet_lr and text_encoder_lr are both 0: nothing would be trained")
    if job.text_encoder_only and job.unet_lr is not None:
        problems.append("text_encoder_only trains no UNet, so unet_lr would be ignored: remove one of them")
    if job.unet_only and job.text_encoder_lr is not None:
        problems.append(
            "unet_only trains no text encoder, so text_encoder_lr would be ignored: remove one of them"
        )
    if job.save_every_n_epochs > job.epochs:
        problems.append(
            f"save_every_n_epochs ({job.save_every_n_epochs}) is more than epochs ({job.epochs}): "
            "only the last epoch would be saved; lower it"
        )
    return problems + _block_pairs(job)


_BLOCK_KEYS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_dims", "block_alphas")


def _block_pairs(job: TrainJob) -> list[str]:
    problems = []
    given = [k for k in _BLOCK_KEYS if getattr(job, k) is not None]
    if given and job.text_encoder_only:
        problems.append(
            f"text_encoder_only trains no UNet, so {', '.join(given)} would be ignored: remove one"
        )
    block_lr = uses_block_lr(job)
    if job.block_alphas is not None and job.block_dims is None and not block_lr:
        problems.append("block_alphas needs block_dims (or block lr weights): set block_dims too")
    if job.block_lr_zero_threshold > 0 and not block_lr:
        problems.append("block_lr_zero_threshold needs down/mid/up_lr_weight: set them or remove it")
    return problems


class LoraRef(_Strict):
    path: str
    weight: float = Field(1.0, ge=-2.0, le=2.0)


class LabelledLora(_Strict):
    """One row of a compare grid: a LoRA file and the row's label (e.g. "epoch 3")."""

    path: str
    label: str = Field(min_length=1, max_length=40)


class GenerateJob(ModelSource):
    """A rendering job: prompts with a base model and zero or more LoRAs at given weights."""

    output_dir: str
    output_name: str = "image"
    prompt: str = Field(min_length=1)
    negative: str = ""
    loras: list[LoraRef] = Field(default_factory=list, max_length=8)
    compare_weights: list[Annotated[float, Field(ge=-2.0, le=2.0)]] | None = Field(
        None, min_length=1, max_length=8, description="render the first LoRA at each weight into one grid"
    )
    compare_loras: list[LabelledLora] | None = Field(
        None, min_length=1, max_length=8,
        description="grid rows: each LoRA at each compare_weights weight (one seed); loras apply in every cell",
    )  # fmt: skip
    steps: int | None = Field(None, ge=1, le=150, description="default: the family's (25, Flux 20)")
    cfg: float | None = Field(None, ge=1.0, le=30.0, description="default: the family's (7, Flux 3.5)")
    width: int | None = Field(None, ge=64, le=2048, description="default 512 (SD1.5) / 1024 (SDXL)")
    height: int | None = Field(None, ge=64, le=2048, description="default 512 (SD1.5) / 1024 (SDXL)")
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    count: int = Field(1, ge=1, le=16)
    sampler: SamplerName = "euler_a"
    clip_skip: int | None = Field(None, ge=1, le=12)
    grid_title: str | None = None
    grid_labels: GridLabels | None = Field(None, description="the grid's words in the member's language")

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, v: int | None) -> int | None:
        if v is not None and v % 8:
            raise ValueError("must be a multiple of 8")
        return v

    def resolved_steps(self, family: str) -> int:
        return self.steps if self.steps is not None else family_info(family).default_steps

    def resolved_cfg(self, family: str) -> float:
        return self.cfg if self.cfg is not None else family_info(family).default_cfg

    def resolved_size(self, family: str) -> tuple[int, int]:
        side = default_resolution(family)
        return (self.width or side, self.height or side)

    @field_validator("output_name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return TrainJob._safe_name(v)

    @model_validator(mode="after")
    def _compare_rules(self) -> GenerateJob:
        problems = []
        if self.compare_weights and not (self.loras or self.compare_loras):
            problems.append("compare_weights needs a LoRA in loras or compare_loras")
        if self.compare_loras and not self.compare_weights:
            problems.append("compare_loras needs compare_weights (the grid's columns, e.g. [0.6, 0.8, 1.0])")
        if self.compare_loras and self.count != 1:
            problems.append("compare_loras renders one grid with one seed: leave count at 1")
        if self.compare_loras and len({r.label for r in self.compare_loras}) < len(self.compare_loras):
            problems.append("compare_loras labels must differ (they name the grid's rows)")
        named = self.grid_labels.rows if self.grid_labels else None
        if named and len(named) != len(self.compare_loras or []):
            problems.append("grid_labels.rows names each row of compare_loras, in order")
        if self.model_family is not None:  # a detected family is checked once loaded (render_job)
            problems += refused_render_options(self.model_family, self.changed_options())
        if problems:
            raise ValueError("; ".join(problems))
        return self
