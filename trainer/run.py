"""One training job's state while it runs, and the job's own errors."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import data
from .contract import TrainJob
from .errors import TrainerError
from .events import StopFlag
from .models import BaseModel
from .text_cache import TextCache


class TrainError(TrainerError, RuntimeError):
    """A job that cannot continue; the message is for the user."""


class Cancelled(Exception):
    """A stop was requested (SIGTERM) while the job was loading, caching or rendering."""


@dataclass
class Run:
    """Everything one job needs while it trains."""

    job: TrainJob
    model: BaseModel
    device: torch.device
    dtype: torch.dtype
    seed: int
    clip_skip: int
    resolution: int
    items: list[data.TrainItem]
    steps_per_epoch: int
    total_steps: int
    optimizer_name: str
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    scaler: torch.amp.GradScaler | None = None
    noise_scheduler: object = None
    noise_gen: torch.Generator | None = None
    caption_rng: random.Random = field(default_factory=random.Random)
    step: int = 0
    epoch: int = 0
    started_at: float = field(default_factory=time.time)
    session_id: int = field(default_factory=lambda: random.SystemRandom().randint(0, 2**32))  # ss_session_id
    files: list[str] = field(default_factory=list)
    text_cache: TextCache | None = None  # frozen text encoders: their outputs, cached
    preview_text: tuple | None = None  # and the preview prompt's and negative's (render.encode_prompts)
    trainable: list[torch.nn.Parameter] = field(default_factory=list)

    @property
    def out_dir(self) -> Path:
        return Path(self.job.output_dir)

    def lora_unet(self):
        return self.model.unet if self.job.trains_unet() else None

    def lora_text_encoders(self):
        return self.model.text_encoders if self.job.trains_text_encoder() else []


def check_stop(stop: StopFlag | None) -> None:
    if stop is not None and stop.requested:
        raise Cancelled
