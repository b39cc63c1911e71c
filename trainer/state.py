"""Training state for resume: LoRA weights, optimizer, scheduler, RNGs and the step.

One file per job (``{output_name}-state.pt`` in the output folder), rewritten
atomically at every saved epoch, so a job killed at any moment resumes from its
latest saved epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from .contract import TrainJob

# Options that do not change what is trained: a resumed job may differ in these.
_NOT_TRAINING = {
    "resume",
    "event_every_n_steps",
    "device",
    "previews",
    "preview_prompt",
    "preview_negative",
    "preview_steps",
    "preview_cfg",
    "preview_sampler",
    "preview_size",
    "preview_seed",
    "preview_weights",
    "grid_labels",  # the preview grids' words
    "gradient_checkpointing",  # speed/memory only: the same steps give the same weights
    "compile_unet",
}
# Options added after jobs were first saved: hashed only when set, so a state saved before they
# existed still matches its job (a job the upgrade's restart interrupted resumes).
_HASHED_WHEN_SET = {
    "v_parameterization", "zero_terminal_snr", "timestep_sampling", "sigmoid_scale",
    "discrete_flow_shift", "guidance_scale", "t5_max_length",
}  # fmt: skip


def state_path(job: TrainJob) -> Path:
    return Path(job.output_dir) / f"{job.output_name}-state.pt"


#: Where the job's files lie: a job resumed on another host (a cluster node, or the bot's own
#: after a node was lost) has other folders and the same training.
_PLACES = {"dataset_dir", "output_dir"}


def job_fingerprint(job: TrainJob, seed: int, with_places: bool = False) -> str:
    """What the saved state belongs to; ``with_places``: as states saved before the cluster hashed it."""
    skip = _NOT_TRAINING if with_places else _NOT_TRAINING | _PLACES
    data = {
        k: v
        for k, v in job.model_dump(by_alias=True).items()
        if k not in skip and not (k in _HASHED_WHEN_SET and v is None)
    }
    data["seed"] = seed
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)
