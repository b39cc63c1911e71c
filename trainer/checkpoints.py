"""Saving a trained epoch (the kohya file) and the training state that resume restores."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from . import delivered, kohya, metadata, state
from .run import Run, TrainError

SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def save_epoch(run: Run, epoch: int) -> Path:
    job = run.job
    tensors = kohya.export_state_dict(
        run.lora_unet(),
        run.lora_text_encoders(),
        run.model.family,
        SAVE_DTYPES[job.save_precision],
    )
    name = f"{job.output_name}-{epoch:06d}"
    meta = metadata.build(run, epoch, title=name)
    path = run.out_dir / f"{name}.safetensors"
    metadata.save_lora(path, tensors, meta)
    run.files.append(str(path))
    if epoch == job.epochs:
        final = run.out_dir / f"{job.output_name}.safetensors"
        tmp = delivered.temp_path(final)
        shutil.copyfile(path, tmp)
        delivered.publish(tmp, final)
        run.files.append(str(final))
    return path


def save_training_state(run: Run) -> None:
    lora_fp32 = kohya.export_state_dict(
        run.lora_unet(), run.lora_text_encoders(), run.model.family, torch.float32
    )
    state.save_state(
        state.state_path(run.job),
        {
            "fingerprint": state.job_fingerprint(run.job, run.seed),
            "seed": run.seed,
            "step": run.step,
            "epoch": run.epoch,
            "started_at": run.started_at,
            "session_id": run.session_id,
            "files": run.files,
            "lora": lora_fp32,
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler else None,
            "noise_gen": run.noise_gen.get_state(),
            "caption_rng": run.caption_rng.getstate(),
        },
    )


def restore_training_state(run: Run, saved: dict) -> None:
    fits = (
        state.job_fingerprint(run.job, saved["seed"]),
        state.job_fingerprint(run.job, saved["seed"], True),
    )
    if saved["fingerprint"] not in fits:
        raise TrainError(
            "the saved state belongs to a job with other settings; resume with the same job file"
        )
    problems = kohya.import_state_dict(
        saved["lora"], run.lora_unet(), run.lora_text_encoders(), run.model.family
    )
    if problems:
        raise TrainError("the saved state does not fit this model: " + "; ".join(problems))
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    if run.scaler is not None and saved["scaler"]:
        run.scaler.load_state_dict(saved["scaler"])
    run.noise_gen.set_state(saved["noise_gen"])
    run.caption_rng.setstate(saved["caption_rng"])
    run.step, run.epoch = saved["step"], saved["epoch"]
    run.started_at, run.files = saved["started_at"], list(saved["files"])
    run.session_id = saved.get("session_id", run.session_id)  # the epochs of one job share it


def load_init_weights(run: Run, path: str) -> None:
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise TrainError(f"init_weights file {path} does not exist")
    problems = kohya.import_state_dict(
        load_file(path), run.lora_unet(), run.lora_text_encoders(), run.model.family
    )
    if problems:
        raise TrainError(f"init_weights {Path(path).name} does not fit this job: " + "; ".join(problems))
